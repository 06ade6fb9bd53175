"""docs/errors.md is true: every catalogue row is reproduced here and gets the message the
doc prints, and every family of the fuzzing harness has rows in the catalogue."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from accelsim.errors import AccelsimError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
try:
    from fuzz_harness import FAMILIES, LABELS
finally:
    sys.path.remove(str(ROOT / "tests" / "fuzz"))


def _rows() -> list[dict[str, str]]:
    text = (ROOT / "docs" / "errors.md").read_text()
    cat = text.split("## Catalogue", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in cat.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[0] not in ("id", "---") and not cells[0].startswith("-"):
            msg = cells[3]
            assert msg.startswith("`") and msg.endswith("`"), line
            rows.append({"id": cells[0], "family": cells[1], "message": msg[1:-1]})
    return rows


ROWS = _rows()


def _err(fn) -> str:
    with pytest.raises(AccelsimError) as ei:
        fn()
    return str(ei.value)


def _cli(argv: list[str]) -> str:
    from accelsim.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    assert rc == 2
    return err.getvalue().strip().splitlines()[-1]


def _trace(d: Path) -> Path:
    from accelsim.io.trace import linear, write_trace

    return write_trace(d / "tr", [linear("fc", np.ones((2, 4), np.int8),
                                         np.ones((3, 4), np.int8))])


def _mutated(d: Path, mutate) -> Path:
    from accelsim.io.trace import load_trace

    t = _trace(d)
    m = yaml.safe_load((t / "manifest.yaml").read_text())
    mutate(m)
    (t / "manifest.yaml").write_text(yaml.safe_dump(m))
    return lambda: load_trace(t)


def _spec(d: Path, **extra) -> Path:
    t = _trace(d)
    spec = {"base": "sparse_os_16x16", "traces": [str(t)], "grid": {"array.rows": [2, 4]},
            **extra}
    p = d / "s.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def case(row_id: str, d: Path) -> str:
    from accelsim.analysis.report import simulate
    from accelsim.analysis.sweep import load_spec, plan_sweep
    from accelsim.io.hwconfig import load_hwconfig, parse_override
    from accelsim.io.trace import Trace, conv2d, load_trace, write_trace
    from accelsim.model.energy import ENERGY_DIR, load_energy_table

    def hw_file(name: str, data: bytes):
        (d / name).write_bytes(data)
        return lambda: load_hwconfig(d / name)

    inp = lambda m: m["layers"][0]["tensors"]["input"]  # noqa: E731
    if row_id == "yaml-aliases":
        doc = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True))
        return _err(hw_file("bomb.yaml", doc.encode()))
    if row_id == "yaml-deep":
        return _err(hw_file("deep.yaml", b"[" * 100 + b"]" * 100))
    if row_id == "yaml-binary":
        return _err(hw_file("bin.yaml", b"\xff\xfe\x00"))
    if row_id == "yaml-python-tag":
        return _err(hw_file("code.yaml", b"!!python/object/apply:os.system ['echo hi']\n"))
    if row_id == "set-bad-yaml":
        return _err(lambda: parse_override("array.rows=[1, 2"))
    if row_id == "bandwidth-tiny":
        return _err(lambda: load_hwconfig("sparse_os_16x16",
                                          {"memory.dram.bandwidth_bytes_per_cycle": 1e-15}))
    if row_id == "size-nan":
        return _err(lambda: load_hwconfig("sparse_os_16x16", {"memory.glb.a_kib": np.nan}))
    if row_id == "int-huge":
        return _err(lambda: load_hwconfig("sparse_os_16x16", {"array.rows": 10**400}))
    if row_id == "csr-index-narrow":
        x = np.ones((1, 512, 4, 4), np.int8)
        hw = load_hwconfig("sparse_os_16x16", {"formats.a": {"kind": "csr", "index_bits": 8}})
        return _err(lambda: simulate(Trace("m", (conv2d("conv5", x, x[:2, :, :3, :3]),)),
                                     hw))
    if row_id == "delta-threshold-layer":
        return _err(lambda: simulate(ROOT / "traces" / "moving_digits", "delta_ws_16x16",
                                     {"delta.threshold": {"cnv1": 3}}))
    if row_id == "delta-state-glb":
        return _err(lambda: simulate(ROOT / "traces" / "moving_digits", "delta_ws_16x16",
                                     {"delta.state": "glb", "memory.glb.out_kib": 2}))
    if row_id == "path-nosuchuser":
        return _err(lambda: load_hwconfig("~nosuchuser/x.yaml"))
    if row_id == "path-not-string":
        return _err(lambda: load_hwconfig(["a"]))
    if row_id == "trace-file-list":
        return _err(_mutated(d, lambda m: inp(m).__setitem__("file", ["a"])))
    if row_id == "trace-axis-float":
        return _err(_mutated(d, lambda m: inp(m)["quant"].update(scheme="per_channel",
                                                                 axis=1.0)))
    if row_id == "trace-outside":
        return _err(_mutated(d, lambda m: inp(m).__setitem__("file", "../x.npy")))
    if row_id == "npy-empty":
        t = _trace(d)
        (t / "0000_fc.input.npy").write_bytes(b"")
        return _err(lambda: load_trace(t)).replace(str(t), "<dir>")
    if row_id == "npy-0d":
        t = _trace(d)
        np.save(t / "0000_fc.input.npy", np.array(3, np.int8))
        return _err(lambda: load_trace(t)).replace(str(t), "<dir>")
    if row_id == "trace-loop":
        os.symlink("loop", d / "loop")
        return _err(lambda: load_trace(d / "loop")).replace(str(d), "<dir>")
    if row_id == "trace-surrogate-write":
        a, w = np.ones((2, 4), np.int8), np.ones((3, 4), np.int8)
        from accelsim.io.trace import linear, write_trace

        return _err(lambda: write_trace(d / "s", [linear("bad\udc80", a, w)])
                    ).replace(str(d / "s"), "<dir>")
    if row_id == "trace-surrogate-manifest":
        t = _trace(d)
        m = t / "manifest.yaml"
        m.write_text(m.read_text().replace("name: fc", 'name: "bad\\uDC80"', 1))
        return _err(lambda: load_trace(t)).replace(str(t), "<dir>")
    if row_id == "layer-budget":
        t = write_trace(d / "pad", [conv2d("c", np.ones((1, 3, 16, 16), np.int8),
                                           np.ones((8, 3, 3, 3), np.int8), padding=3000)])
        return _err(lambda: simulate(load_trace(t), "sparse_os_16x16", max_memory="1G"))
    if row_id == "energy-nan":
        e = yaml.safe_load((ENERGY_DIR / "45nm_horowitz.yaml").read_text())
        e["sram"]["write_factor"] = float("nan")
        (d / "e.yaml").write_text(yaml.safe_dump(e))
        return _err(lambda: load_energy_table(d / "e.yaml"))
    if row_id == "constraint-string":
        return _err(lambda: load_spec(_spec(d, constraints=["'x' * 50000000 == dataflow"])))
    if row_id == "constraint-pow":
        return _err(lambda: load_spec(_spec(d, constraints=["9**9**9 > 1"])))
    if row_id == "sample-never":
        p = _spec(d, constraints=["array.rows < 1"], sample={"method": "random", "n": 3})
        s = yaml.safe_load(p.read_text())
        s["grid"] = {"array.rows": list(range(1, 200)), "array.cols": list(range(1, 200)),
                     "array.macs_per_pe": list(range(1, 10))}
        p.write_text(yaml.safe_dump(s))
        return _err(lambda: plan_sweep(load_spec(p)))
    if row_id == "cli-dpi":
        (d / "r.csv").write_text("layer,cycles\nA,1\n")
        return _cli(["plot", str(d / "r.csv"), "-o", str(d / "p.png"), "--dpi", "1"])
    if row_id == "cli-unwritable":
        (d / "r.csv").write_text("layer,cycles\nA,1\n")
        return _cli(["plot", str(d / "r.csv"), "-o", "/nonexistent/p.png"])
    if row_id == "cli-max-memory":
        return _cli(["simulate", str(_trace(d)), "--hw", "sparse_os_16x16",
                     "--max-memory", "64K"])
    raise AssertionError(f"docs/errors.md row {row_id!r} has no reproduction here")


def _pattern(doc_msg: str) -> re.Pattern:
    parts = re.split(r"(<dir>|…)", doc_msg)
    rx = "".join({"<dir>": r".*", "…": r".*"}.get(p, re.escape(p)) for p in parts)
    return re.compile(rx)


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_catalogue_row(row, tmp_path):
    msg = case(row["id"], tmp_path)
    assert "\n" not in msg
    assert _pattern(row["message"]).search(msg), f"{row['id']}: got {msg!r}"


def test_every_harness_family_is_catalogued():
    fams = {r["family"] for r in ROWS}
    assert fams <= set(LABELS.values())
    assert {LABELS[f] for f in FAMILIES} <= fams
