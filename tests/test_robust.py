"""Issue 13: the pieces behind "no input may crash, hang or exhaust the machine":
memory budget, atomic writes, the store's bad files, the CLI's last resort, and the
property that every reported count is a non-negative integer and every energy finite."""

from __future__ import annotations

import dataclasses
import math
import os
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelsim.errors import ConfigError, SimulationError
from accelsim.io import atomic
from accelsim.io.hwconfig import load_hwconfig
from accelsim.io.trace import Trace, conv1d, conv2d, linear, matmul

# ------------------------------------------------------------------ memory budget


@pytest.mark.parametrize("layer", [
    conv2d("pad3000", np.ones((1, 3, 16, 16), np.int8), np.ones((8, 3, 3, 3), np.int8),
           padding=3000),
    conv2d("pad300", np.ones((1, 3, 16, 16), np.int8), np.ones((8, 3, 3, 3), np.int8),
           padding=300),
    conv1d("pad1e15", np.ones((1, 2, 8), np.int8), np.ones((4, 2, 3), np.int8),
           padding=10**15),
], ids=lambda layer: layer.name)
def test_tiny_trace_with_huge_padding_is_refused_before_allocating(layer):
    from accelsim.analysis.report import simulate

    hw = load_hwconfig("sparse_os_16x16", {"zero_policy": "skip_both"})
    tracemalloc.start()
    try:
        with pytest.raises(SimulationError, match=rf"layer '{layer.name}': needs about .* "
                                                  r"more than the budget of 64 MiB"):
            simulate(Trace.from_arrays("t", [layer]), hw, max_memory="64M")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # never more than the budget (the layer needs GiB to PiB)


@st.composite
def _layer(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def t(shape):
        return (rng.random(shape) < draw(st.floats(0, 1, allow_subnormal=False))).astype(np.int8)

    kind = draw(st.sampled_from(["linear", "conv2d", "conv1d", "matmul"]))
    if kind == "linear":
        k = draw(st.integers(1, 40))
        return linear("l", t((draw(st.integers(1, 40)), k)), t((draw(st.integers(1, 40)), k)))
    if kind == "matmul":
        b, m, k, n = (draw(st.integers(1, 12)) for _ in range(4))
        return matmul("m", t((b, m, k)), t((b, k, n)))
    pad = draw(st.integers(0, 20))
    if kind == "conv1d":
        return conv1d("c", t((1, 3, draw(st.integers(3, 30)))), t((4, 3, 3)), padding=pad)
    return conv2d("c", t((1, 3, draw(st.integers(3, 12)), 9)), t((4, 3, 3, 3)), padding=pad)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer=_layer(), dataflow=st.sampled_from(["os", "ws", "is"]),
       policy=st.sampled_from(["none", "gate", "skip_a", "skip_w", "skip_both"]),
       size=st.sampled_from([2, 16]), fmt=st.sampled_from(["dense", "rle", "csr"]))
def test_estimate_bounds_the_measured_peak(layer, dataflow, policy, size, fmt):
    from accelsim.model.budget import estimate_layer
    from accelsim.model.engine import simulate_layer

    hw = load_hwconfig("sparse_os_16x16", {"dataflow": dataflow, "zero_policy": policy,
                                           "array.rows": size, "array.cols": size,
                                           "formats.a.kind": fmt, "formats.w.kind": fmt})
    simulate_layer(layer, hw)  # compile / warm caches outside the measurement
    tracemalloc.start()
    try:
        simulate_layer(layer, hw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= estimate_layer(layer, hw).total


def test_parse_size():
    from accelsim.errors import AccelsimError
    from accelsim.model.budget import parse_size

    assert parse_size("4G") == 4 * 2**30
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1e9") == 10**9
    for bad in ("x", "-1", "64K", "1e400", "2P"):
        with pytest.raises(AccelsimError, match="--max-memory"):
            parse_size(bad)


# ------------------------------------------------------- counts and energies are sane


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(layers=st.lists(_layer(), min_size=1, max_size=2),
       dataflow=st.sampled_from(["os", "ws", "is"]),
       policy=st.sampled_from(["none", "gate", "skip_a", "skip_w", "skip_both"]),
       bw=st.sampled_from([1e-3, 0.37, 16.0, math.inf]),
       glb_bw=st.sampled_from([1e-3, 4.0, math.inf]),
       bits=st.sampled_from([1, 8, 16, 64]), macs=st.sampled_from([1, 3, 64]))
def test_every_count_is_a_nonnegative_int_and_every_energy_finite(
        layers, dataflow, policy, bw, glb_bw, bits, macs):
    from accelsim.analysis.report import simulate, with_totals

    named = [dataclasses.replace(la, name=f"{la.name}{i}") for i, la in enumerate(layers)]
    hw = load_hwconfig("sparse_os_16x16", {
        "dataflow": dataflow, "zero_policy": policy, "array.macs_per_pe": macs,
        "memory.dram.bandwidth_bytes_per_cycle": bw,
        "memory.glb.bandwidth_bytes_per_cycle": glb_bw, "precision.a_bits": bits,
        "memory.glb.a_kib": 1024, "memory.glb.out_kib": 1024})
    df = with_totals(simulate(Trace.from_arrays("p", named), hw))
    for col in df.columns:
        s = df[col]
        if col.endswith("_pj"):
            v = s.to_numpy(float)
            assert np.isfinite(v).all() and (v >= 0).all(), col
        if col.endswith(("_bytes", "_cycles")) or col.startswith("macs_") or col in (
                "cycles", "folds"):
            assert pd.api.types.is_integer_dtype(s), (col, s.dtype)
            assert (s >= 0).all(), col
    tot = df.iloc[-1]
    assert tot["cycles"] == tot["compute_cycles"] + tot["stall_cycles"]


# ------------------------------------------------------------------ atomic writes


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "x.txt"
    atomic.write_text(p, "old")
    with pytest.raises(RuntimeError), atomic.atomic_file(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_stale_temp_of_a_dead_process_is_removed_and_a_lost_dir_restored(tmp_path):
    dead = 2**22 + 12345  # above the usual pid_max
    (tmp_path / f".x.txt.accelsim-tmp.{dead}.ab").write_text("junk")
    mine = tmp_path / f".x.txt.accelsim-tmp.{os.getpid()}.cd"
    mine.write_text("in use")
    atomic.write_text(tmp_path / "x.txt", "new")
    assert sorted(os.listdir(tmp_path)) == sorted(["x.txt", mine.name])
    # a directory writer killed between its two renames: the next run restores it
    old = tmp_path / f".tr.accelsim-old.{dead}.ef"
    old.mkdir()
    (old / "manifest.yaml").write_text("kept")
    assert atomic.clean_stale(tmp_path / "tr") == 1
    assert (tmp_path / "tr" / "manifest.yaml").read_text() == "kept"


def test_atomic_dir_replaces_a_directory(tmp_path):
    target = tmp_path / "d"
    with atomic.atomic_dir(target) as t:
        (t / "a").write_text("1")
    with atomic.atomic_dir(target) as t:
        (t / "b").write_text("2")
    assert os.listdir(target) == ["b"]
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as t:
        (t / "c").write_text("3")
        raise RuntimeError
    assert os.listdir(target) == ["b"]
    assert os.listdir(tmp_path) == ["d"]


# ------------------------------------------------------------------ the store


def test_bad_point_files_are_moved_aside_and_rerun(tmp_path, root):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from accelsim.analysis.sweep import load_results, load_spec, plan_sweep, sweep
    from accelsim.analysis.sweep.store import StoreWarning
    from accelsim.io.trace import write_trace

    tr = write_trace(tmp_path / "tr", [linear("fc", np.ones((4, 8), np.int8),
                                              np.ones((3, 8), np.int8))])
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "sparse_os_16x16", "traces": [str(tr)],
                                    "grid": {"array.rows": [2, 4, 8]}}))
    res = tmp_path / "res"
    assert sweep(spec, res, workers=1).ok == 3
    ids = sorted(p.point_id for p in plan_sweep(load_spec(spec)).points)
    pts = res / "points"
    (pts / f"{ids[0]}.parquet").write_bytes(b"PAR1 garbage")           # corrupt
    pq.write_table(pa.table({"x": [1]}), pts / f"{ids[1]}.parquet")   # foreign
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_results(res)  # plot's path: skipped, not fatal
    assert sum(issubclass(x.category, StoreWarning) for x in w) == 2
    with pytest.warns(StoreWarning, match=r"moved to .*bad.*rerun"):
        s = sweep(spec, res, workers=1)
    assert (s.ok, s.skipped) == (2, 1)
    assert len(os.listdir(pts / "bad")) == 2
    df = load_results(res)
    assert (df[df["scope"] == "total"]["status"] == "ok").sum() == 3


# ------------------------------------------------------------------ CLI last resort


def test_cli_internal_error_is_one_line_exit_3_with_traceback_file(monkeypatch, capsys,
                                                                    tmp_path):
    import importlib

    cli = importlib.import_module("accelsim.cli.main")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)

    def boom(args):
        raise ZeroDivisionError("a bug\nspanning lines")

    monkeypatch.setattr(cli, "_cmd_inspect", boom)
    rc = cli.main(["inspect", "x"])
    err = capsys.readouterr().err.strip()
    assert rc == 3
    assert "\n" not in err
    assert err.startswith("accelsim: internal error: ZeroDivisionError: a bug spanning lines;"
                          " details in ")
    crash = err.rsplit("details in ", 1)[1]
    assert "Traceback" in open(crash).read()


def test_constraint_language_bounds():
    from accelsim.analysis.sweep.spec import eval_constraint, parse_constraint

    raw = load_hwconfig("sparse_os_16x16").to_dict()
    for text, what in (("9**9**9 > 1", "Pow not allowed"),
                       ("(" * 300 + "1" + ")" * 300, "not a valid expression|more than"),
                       ("x" * 2000, "longer than"),
                       ("array.rows == " + "1" * 60, "wider than")):
        with pytest.raises(ConfigError, match=what):
            parse_constraint(text, "s.yaml", 0)
    for text in ("'x' * 50000000 == dataflow",
                 "array.rows * 100000000000000000000 * 100000000000000000000 > 1",
                 "'%s' % dataflow == 'os'"):
        c = parse_constraint(text, "s.yaml", 0)
        with pytest.raises(ConfigError, match="cannot evaluate"):
            eval_constraint(c, raw, "s.yaml")


@pytest.mark.parametrize("argv", [
    ["simulate", "t", "--bogus", "x" * 5000],  # unrecognised argument (fuzz cli 2026000056)
    ["plot", "r.csv", "--kind", "y\n" * 3000],  # bad choice with line breaks
])
def test_cli_usage_error_is_one_short_line(capsys, argv):
    from accelsim.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    errs = [ln for ln in capsys.readouterr().err.splitlines() if ": error: " in ln]
    assert len(errs) == 1 and len(errs[0]) < 400, errs
