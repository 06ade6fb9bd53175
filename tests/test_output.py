"""Output for people (issue 12 item 2): 100-column views with one engineering unit per
column, --format/-o checked before the simulation, docs/columns.md from the catalogue,
comparison lines that read both ways, and result files that carry their provenance and
are read back by reprice and plot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import accelsim
from accelsim.analysis import columns as C
from accelsim.analysis.output import hash_path, read_table
from accelsim.cli.main import SHOW_GROUPS, comparison_line, main, ratio_words

ROOT = Path(__file__).resolve().parent.parent
TRACES = sorted(p.name for p in (ROOT / "traces").iterdir()
                if (p / "manifest.yaml").is_file())


def _lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize("name", TRACES)
def test_default_views_fit_100_columns(name, capsys):
    assert len(TRACES) >= 7
    hw = "delta_ws_16x16" if name == "moving_digits" else "sparse_os_16x16"
    assert main(["simulate", str(ROOT / "traces" / name), "--hw", hw]) == 0
    out = capsys.readouterr().out
    assert "TOTAL" in out
    widest = max(len(x) for x in _lines(out))
    assert widest <= 100, (widest, [x for x in _lines(out) if len(x) > 100])
    # one table block: the default view is not cut into pieces
    table = [x for x in _lines(out) if x.startswith(("layer", "TOTAL"))]
    assert len(table) == 2
    assert main(["inspect", str(ROOT / "traces" / name)]) == 0
    out = capsys.readouterr().out
    assert max(len(x) for x in _lines(out)) <= 100


def _parse(text: str) -> tuple[list[str], dict[str, str], list[list[str]]]:
    """(header words per column, unit per column, rows) of a one-block rendered table,
    by the character spans of the data lines."""
    lines = [x for x in _lines(text) if x.strip()]
    unit_i = next(i for i, x in enumerate(lines) if "[" in x)
    head, units_line, body = lines[:unit_i], lines[unit_i], lines[unit_i + 1:]
    width = max(len(x) for x in lines)
    filled = np.zeros(width, bool)
    for x in [*head, units_line, *body]:
        for j, ch in enumerate(x):
            if ch != " ":
                filled[j] = True
    spans, j = [], 0
    while j < width:
        if filled[j]:
            k = j
            while k < width and filled[k]:
                k += 1
            spans.append((j, k))
            j = k
        else:
            j += 1
    names = ["_".join(x[a:b].strip() for x in head if x[a:b].strip()) for a, b in spans]
    units = {n: units_line[a:b].strip().strip("[]") for n, (a, b) in zip(names, spans, strict=True)}
    rows = [[x[a:b].strip() for a, b in spans] for x in body]
    return names, units, rows


def test_units_are_engineering_and_match_the_stored_values():
    df = accelsim.with_totals(accelsim.simulate(ROOT / "traces" / "digits_cnn",
                                                "sparse_os_16x16"))
    cols = ["layer", "kind", "macs_dense", "macs_performed", "cycles", "util",
            "dram_bytes", "energy_pj", "latency_s"]
    names, units, rows = _parse(C.render(df, cols))
    assert names == ["layer", "kind", "macs_dense", "macs_performed", "cycles", "util",
                     "dram", "energy", "latency"]
    scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "KiB": 1024, "MiB": 2**20, "pJ": 1,
             "nJ": 1e3, "µJ": 1e6, "mJ": 1e9, "ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1}
    assert units["macs_dense"] == "M" and units["energy"] == "µJ"
    assert units["cycles"] == "k" and units["dram"] == "KiB" and units["latency"] == "µs"
    for name, col in zip(names[2:], cols[2:], strict=True):
        shown = np.array([float(r[names.index(name)]) for r in rows])
        want = df[col].to_numpy(dtype=float) / scale[units[name]]
        dec = max(len(r[names.index(name)].partition(".")[2]) for r in rows)
        assert np.allclose(shown, want, atol=0.51 * 10.0 ** -dec, rtol=0), col
    # one unit per column: the TOTAL row and the smallest layer share it
    assert rows[-1][0] == "TOTAL"


def test_pick_unit():
    assert C.pick_unit("count", np.array([61606400.0, 64000.0])) == (1e6, "M")
    assert C.pick_unit("count", np.array([9999.0])) == (1.0, "")
    assert C.pick_unit("energy", np.array([1.279e8])) == (1e6, "µJ")
    assert C.pick_unit("bytes", np.array([626232.0])) == (1024.0, "KiB")
    assert C.pick_unit("time", np.array([2.5e-4])) == (1e-6, "µs")
    assert C.pick_unit("count", np.array([np.nan])) == (1.0, "")


def test_columns_show_and_all_columns(capsys):
    digits = str(ROOT / "traces" / "digits_cnn")
    assert main(["simulate", digits, "--hw", "sparse_os_16x16", "--columns",
                 "layer,macs_skipped,energy_dram_pj"]) == 0
    out = capsys.readouterr().out
    names, units, _ = _parse(out[out.index("GHz\n") + 4:out.index("total:")])
    assert names == ["layer", "macs_skipped", "energy_dram"] and units["energy_dram"] == "µJ"
    for show in SHOW_GROUPS:
        if show in ("delta", "threshold"):
            continue
        assert main(["simulate", digits, "--hw", "sparse_os_16x16", "--show", show]) == 0
        out = capsys.readouterr().out
        assert max(len(x) for x in _lines(out)) <= 100, show
    assert main(["simulate", digits, "--hw", "sparse_os_16x16", "--all-columns"]) == 0
    out = capsys.readouterr().out
    assert max(len(x) for x in _lines(out)) <= 100
    df = accelsim.simulate(digits, "sparse_os_16x16")
    # every column is in one of the blocks (a block repeats the layer column)
    words = set(out.split())
    for col in df.columns:
        assert set(C.header_of(col)) <= words, col
    assert main(["simulate", digits, "--hw", "sparse_os_16x16", "--columns",
                 "layer,macs_perfromed"]) == 2
    assert "unknown column 'macs_perfromed'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["-o", "{tmp}/x.xlsx"], "cannot tell the format"),
    (["-o", "{tmp}/nodir/x.csv"], "does not exist"),
    (["--format", "parquet"], "give -o FILE.parquet"),
    (["--format", "csv", "-o", "{tmp}/x.json"], "the name says json but --format is csv"),
])
def test_output_is_checked_before_the_simulation(argv, msg, tmp_path, capsys, monkeypatch):
    import accelsim.analysis.report as report

    def boom(*a, **k):
        raise AssertionError("simulated before checking -o/--format")

    monkeypatch.setattr(report, "simulate", boom)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["simulate", str(ROOT / "traces" / "digits_cnn"), "--hw",
                 "sparse_os_16x16", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_formats_to_stdout_and_files(tmp_path, capsys):
    digits = ROOT / "traces" / "digits_cnn"
    api = accelsim.with_totals(accelsim.simulate(digits, "sparse_os_16x16"))
    base = ["simulate", str(digits), "--hw", "sparse_os_16x16"]
    assert main([*base, "--format", "csv"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("# accelsim ")
    from io import StringIO
    got = pd.read_csv(StringIO(cap.out), comment="#")
    assert got["cycles"].tolist() == api["cycles"].astype(int).tolist()
    assert main([*base, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in doc["rows"]] == api["layer"].tolist()
    assert doc["units"]["energy_pj"] == "pJ" and doc["units"]["dram_bytes"] == "bytes"
    for fmt, name in (("parquet", "o.parquet"), ("csv", "o.csv"), ("json", "o.json"),
                      ("table", "o.txt")):
        path = tmp_path / name
        assert main([*base, "-o", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"wrote {path} ({fmt}" in out
        if fmt == "table":
            text = path.read_text()
            assert "TOTAL" in text and "[µJ]" in text and text.startswith("# accelsim")
            continue
        back = read_table(path)
        assert back["energy_pj"].astype(float).tolist() == pytest.approx(
            api["energy_pj"].tolist(), rel=1e-12)


def test_provenance_round_trip_and_reprice(tmp_path, capsys):
    digits = ROOT / "traces" / "digits_cnn"
    hw = accelsim.load_hwconfig("sparse_os_16x16", {"array.rows": 8})
    df = accelsim.simulate(digits, hw)
    table_yaml = (ROOT / "accelsim/hwconfigs/energy/45nm_horowitz.yaml").read_text()
    assert "  LPDDR4: 8.0\n" in table_yaml
    cheap = tmp_path / "cheap.yaml"
    cheap.write_text(table_yaml.replace("  LPDDR4: 8.0\n", "  LPDDR4: 2.0\n")
                     .replace("name: 45nm_horowitz", "name: cheap_dram"))
    want = accelsim.reprice(accelsim.with_totals(df), cheap)
    for ext in ("csv", "json", "parquet"):
        path = tmp_path / f"r.{ext}"
        argv = ["simulate", str(digits), "--hw", "sparse_os_16x16", "--set",
                "array.rows=8", "-o", str(path)]
        assert main(argv) == 0
        capsys.readouterr()
        back = read_table(path)
        prov = back.attrs["provenance"]
        assert prov["trace"]["sha256"] == hash_path(digits)
        assert prov["trace"]["path"] == str(digits)
        assert prov["hw"]["config_hash"] == hw.config_hash()
        assert prov["hw"]["config"] == hw.to_dict()
        assert prov["accelsim_version"] == accelsim.__version__
        assert prov["command"].split()[1:] == argv
        assert back.attrs["hwconfig"] == hw.to_dict()
        # the library's reprice on the file read back = on the frame in memory
        got = accelsim.reprice(back, cheap)
        assert got["energy_pj"].astype(float).tolist() == pytest.approx(
            want["energy_pj"].tolist(), rel=1e-12)
        assert got["energy_pj"].iloc[-1] < back["energy_pj"].astype(float).iloc[-1]
        # and the CLI's
        out = tmp_path / f"re.{ext}"
        assert main(["reprice", str(path), "--energy", str(cheap), "-o", str(out)]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "under 45nm_horowitz" in text and "under cheap_dram" in text
        again = read_table(out)
        assert again["energy_pj"].astype(float).tolist() == pytest.approx(
            want["energy_pj"].tolist(), rel=1e-12)
        assert again.attrs["provenance"]["repriced"]["to"] == "cheap_dram"
    # a hand-made CSV has no provenance: a clear error
    plain = tmp_path / "plain.csv"
    df.to_csv(plain, index=False)
    assert main(["reprice", str(plain), "--energy", "45nm_horowitz"]) == 2
    assert "carries no provenance" in capsys.readouterr().err


def test_trace_hash_changes_with_the_trace(tmp_path):
    import shutil

    copy = tmp_path / "t"
    shutil.copytree(ROOT / "traces" / "synthetic_tiny_cnn", copy)
    before = hash_path(copy)
    assert before == hash_path(ROOT / "traces" / "synthetic_tiny_cnn")
    f = sorted(copy.rglob("*.npy"))[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert hash_path(copy) != before


def test_plot_reads_simulate_files_as_one_config(tmp_path, capsys):
    from accelsim.analysis.sweep import totals_only

    digits = str(ROOT / "traces" / "digits_cnn")
    for ext in ("csv", "json", "parquet"):
        path = tmp_path / f"s.{ext}"
        assert main(["simulate", digits, "--hw", "sparse_os_16x16", "-o", str(path)]) == 0
        df = accelsim.load_results(path)
        tot = totals_only(df)
        assert len(tot) == 1 and tot["layer"].iloc[0] == "TOTAL"
        assert (df["scope"] == "layer").sum() == 5
        for kind in ("pareto", "cycles", "energy"):
            png = tmp_path / f"{ext}_{kind}.png"
            assert main(["plot", str(path), "--kind", kind, "-o", str(png)]) == 0
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        capsys.readouterr()
    import matplotlib

    matplotlib.use("Agg")
    ax = accelsim.plot.pareto(accelsim.load_results(tmp_path / "s.json"))
    n_points = sum(len(c.get_offsets()) for c in ax.collections)
    # the one config, its front marker and its star: never one point per layer
    assert n_points == 3


def test_comparison_lines_read_both_ways(capsys):
    assert ratio_words(116.0, 100.0, "slower", "faster", "as fast") == ("1.16× slower", True)
    assert ratio_words(100.0, 116.0, "slower", "faster", "as fast") == ("1.16× faster", True)
    assert ratio_words(100.1, 100.0, "slower", "faster", "as fast") == ("as fast", False)
    line = comparison_line({"cycles": 116, "energy_pj": 114e6, "macs_performed": 5},
                           {"cycles": 100, "energy_pj": 100e6, "macs_performed": 9}, "delta")
    assert line.startswith("with delta: 1.16× slower, 1.14× more energy than without delta")
    line = comparison_line({"cycles": 100, "energy_pj": 100e6, "macs_performed": 5},
                           {"cycles": 116, "energy_pj": 100e6, "macs_performed": 9}, "N:M")
    assert line.startswith("with N:M: 1.16× faster, the same energy as without N:M")
    # the CLI's line against the model's own numbers, in both directions
    video = ROOT / "traces" / "moving_digits"
    digits = ROOT / "traces" / "digits_cnn_pruned"
    for trace, hw, extra, off in (
            (video, "delta_ws_16x16", [], {"delta.enabled": False}),
            (digits, "sparse_tc_os_16x16", ["--prune", "nm:2:4"], {"structured.n": 0})):
        assert main(["simulate", str(trace), "--hw", hw, *extra]) == 0
        out = " ".join(capsys.readouterr().out.split())
        t = accelsim.load_trace(trace)
        if extra:
            t = accelsim.prune_nm(t, 2, 4)[0]
        on = accelsim.totals(accelsim.simulate(t, hw))
        base = accelsim.totals(accelsim.simulate(t, hw, off))
        r = on["cycles"] / base["cycles"]
        words = f"{r:.2f}× slower" if r > 1 else f"{1 / r:.2f}× faster"
        e = on["energy_pj"] / base["energy_pj"]
        ewords = f"{e:.2f}× more energy" if e > 1 else f"{1 / e:.2f}× less energy"
        name = "N:M" if extra else "delta"
        assert f"with {name}: {words}, {ewords} than without {name}" in out


def test_docs_columns_md_is_generated_from_the_catalogue():
    text = (ROOT / "docs" / "columns.md").read_text(encoding="utf-8")
    assert text == C.markdown(), "regenerate: python -m accelsim.analysis.columns > " \
                                 "docs/columns.md"
    for name in C.CATALOGUE:
        assert f"| `{name}` |" in text


def test_every_produced_column_is_catalogued():
    digits = ROOT / "traces" / "moving_digits"
    seen: set[str] = set()
    seen |= set(accelsim.simulate(digits, "delta_ws_16x16", functional=True,
                                  thresholds={"*": {"target": 0.5}}).columns)
    seen |= set(accelsim.simulate(ROOT / "traces" / "tiny_lm_relu", "sparse_os_16x16").columns)
    seen |= set(accelsim.simulate(digits, "delta_ws_16x16", per_frame=True).columns)
    seen |= set(accelsim.inspect(ROOT / "traces" / "tiny_lm_relu").columns)
    missing = sorted(seen - set(C.CATALOGUE))
    assert not missing, missing
    for col in C.CATALOGUE.values():
        assert col.kind in C.KINDS and col.meaning and not re.search(r"\s{2}", col.meaning)
