"""Sweeps: strict specs, safe constraints, sampling, the resumable store (kill -9),
failure isolation, Dask, pareto and the area model."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import accelsim
from accelsim.analysis.sweep import (
    eval_constraint,
    load_spec,
    parse_constraint,
    plan_sweep,
    stored_points,
)
from accelsim.cli.main import main
from accelsim.errors import ConfigError
from accelsim.model.area import SRAM_MM2_PER_KIB, area_of

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces" / "digits_cnn"


def write_spec(tmp_path: Path, fname: str = "spec.yaml", **over) -> Path:
    spec = {
        "base": "sparse_os_16x16",
        "traces": [str(TRACE)],
        "grid": {"array.rows": [8, 16], "zero_policy": ["none", "skip_both"]},
    }
    spec.update(over)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = tmp_path / fname
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ----------------------------------------------------------------- spec errors

@pytest.mark.parametrize("over, needle", [
    ({"gird": {"array.rows": [8]}}, "gird: unknown key"),
    ({"grid": {"array.rowz": [8]}}, "grid.array.rowz: unknown config key 'rowz'"),
    ({"grid": {"array.rows": [8, 0]}}, "grid.array.rows: expected an integer >= 1"),
    ({"grid": {"zero_policy": ["skip_all"]}}, "grid.zero_policy: expected one of none"),
    ({"grid": {"array": [8]}}, "grid.array: is a section"),
    ({"grid": {"array.rows": 8}}, "grid.array.rows: expected a non-empty list"),
    ({"grid": {"array.rows": [8, 8]}}, "grid.array.rows: repeated value"),
    ({"traces": None}, "traces: missing required key"),
    ({"traces": ["no/such/trace"]}, "traces[0]: no/such/trace: not a trace directory"),
    ({"base": "no_such_config"}, "base: no_such_config: hardware config not found"),
    ({"fixed": {"clock_ghz": -1}}, "fixed.clock_ghz: expected a number > 0"),
    ({"constraints": ["__import__('os').system('true')"]}, "Call not allowed"),
    ({"constraints": ["array.rows ** 2 < 100"]}, "operator Pow not allowed"),
    ({"constraints": ["array.rowz < 100"]}, "constraints[0]: array.rowz: unknown config key"),
    ({"constraints": ["array.rows <"]}, "not a valid expression"),
    ({"constraints": ["zero_policy < 3"]}, "cannot evaluate"),
    ({"sample": {"method": "sobol", "n": 3}}, "sample.method: expected one of random, lhs"),
    ({"sample": {"method": "random", "n": 0}}, "sample.n: expected an integer >= 1"),
])
def test_spec_errors_are_one_line_naming_file_and_key(tmp_path, over, needle):
    path = write_spec(tmp_path, "bad_spec.yaml", **over)
    with pytest.raises(ConfigError) as ei:
        load_spec(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("bad_spec.yaml:"), msg
    assert needle in msg, msg


def test_spec_error_through_cli_is_one_line_exit_2(tmp_path, capsys):
    path = write_spec(tmp_path, "bad.yaml", grid={"array.rows": [0]})
    assert main(["sweep", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelsim: error: bad.yaml: grid.array.rows:") and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_invalid_yaml_and_empty(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("grid: [1, 2\n")
    with pytest.raises(ConfigError, match=r"^broken.yaml: line \d+: invalid YAML( \(.*\))?$"):
        load_spec(p)
    p.write_text("")
    with pytest.raises(ConfigError, match="broken.yaml: file is empty"):
        load_spec(p)


# ----------------------------------------------------------------- constraints

def test_constraint_grammar_rejects_code():
    for text in ["__import__('os')", "array.rows.__class__", "(lambda: 1)()",
                 "[x for x in (1, 2)]", "array.rows if 1 else 2", "a[0]", "f'{1}'",
                 "array.rows @ 2"]:
        with pytest.raises(ConfigError):
            parse_constraint(text, "s.yaml", 0)


def test_constraint_evaluation():
    raw = accelsim.load_hwconfig("sparse_os_16x16").to_dict()
    cases = {
        "array.rows * array.cols <= 256": True,
        "array.rows * array.cols < 256": False,
        "array.rows // 3 == 5 and array.cols % 5 == 1": True,
        "not (zero_policy == 'none')": True,
        "zero_policy in ('skip_a', 'skip_both') or array.rows > 100": True,
        "memory.glb.double_buffer == true": True,
        "-array.rows + 16 == 0": True,
        "8 < array.rows <= 16": True,
        "memory.glb.a_kib / 2 > 40": False,
    }
    for text, want in cases.items():
        assert eval_constraint(parse_constraint(text, "s", 0), raw, "s") is want, text


def test_constraints_drop_points_before_running(tmp_path):
    path = write_spec(tmp_path, grid={"array.rows": [8, 16, 32], "array.cols": [8, 16, 32]},
                      constraints=["array.rows * array.cols <= 256", "array.rows >= array.cols"])
    plan = plan_sweep(load_spec(path))
    kept = {(p.values["array.rows"], p.values["array.cols"]) for p in plan.points}
    assert kept == {(8, 8), (16, 8), (16, 16), (32, 8)}
    assert plan.dropped == 5 and plan.configs == 4


# -------------------------------------------------------------------- sampling

def _big_grid(tmp_path, sample):
    return load_spec(write_spec(
        tmp_path, grid={"array.rows": [4, 8, 16, 32, 64], "array.cols": [4, 8, 16, 32, 64],
                        "zero_policy": ["none", "gate", "skip_a", "skip_w", "skip_both"],
                        "memory.glb.w_kib": [16, 32, 64, 128]},
        sample=sample, constraints=["array.rows * array.cols <= 1024"]))


@pytest.mark.parametrize("method", ["random", "lhs"])
def test_sampling_is_seeded_and_deterministic(tmp_path, method):
    def ids(seed):
        spec = _big_grid(tmp_path, {"method": method, "n": 20, "seed": seed})
        return [p.point_id for p in plan_sweep(spec).points]

    a, b, c = ids(1), ids(1), ids(2)
    assert a == b
    assert a != c
    assert len(set(a)) == len(a)
    if method == "random":
        assert len(a) == 20  # constraints applied before counting n
    else:
        assert 0 < len(a) <= 20


def test_lhs_covers_every_value(tmp_path):
    spec = load_spec(write_spec(
        tmp_path, grid={"array.rows": [4, 8, 16, 32], "array.cols": [4, 8, 16, 32],
                        "zero_policy": ["none", "gate", "skip_a", "skip_both"]},
        sample={"method": "lhs", "n": 8, "seed": 3}))
    pts = plan_sweep(spec).points
    for key, values in spec.grid.items():
        counts = pd.Series([p.values[key] for p in pts]).value_counts()
        assert set(counts.index) == set(values)  # each value twice (unless deduplicated)


# ------------------------------------------------------------------- running

def test_inline_sweep_store_and_resume(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "res"
    s = accelsim.sweep(spec, out, workers=1)
    assert (s.ok, s.failed, s.skipped, s.points) == (4, 0, 0, 4)
    df = accelsim.load_results(out)
    assert df.attrs["swept_keys"] == ["array.rows", "zero_policy"]
    tot = df[df.scope == "total"]
    assert len(tot) == 4 and tot.point_id.is_unique
    assert (df[df.scope == "layer"].groupby("point_id").size() == 5).all()
    assert df["cycles"].dtype == np.int64 and df["macs_performed"].dtype == np.int64
    assert set(tot["array.rows"]) == {8, 16} and (tot.status == "ok").all()
    assert tot.config_hash.nunique() == 4 and (tot.area_mm2 > 0).all()
    # the total row equals the sum of the layers and agrees with simulate()
    one = tot[(tot["array.rows"] == 8) & (tot.zero_policy == "skip_both")].iloc[0]
    ref = accelsim.simulate(TRACE, "sparse_os_16x16",
                            {"array.rows": 8, "zero_policy": "skip_both"})
    assert one.cycles == ref.cycles.sum() and one.energy_pj == pytest.approx(ref.energy_pj.sum())
    # rerun: everything skipped; files untouched
    before = {f: f.stat().st_mtime_ns for f in (out / "points").iterdir()}
    s2 = accelsim.sweep(spec, out, workers=1)
    assert (s2.ok, s2.failed, s2.skipped) == (0, 0, 4)
    assert before == {f: f.stat().st_mtime_ns for f in (out / "points").iterdir()}
    assert (out / "spec.yaml").read_text() == spec.read_text()
    # growing the grid runs only the new points
    spec2 = write_spec(tmp_path, grid={"array.rows": [8, 16, 32],
                                       "zero_policy": ["none", "skip_both"]})
    s3 = accelsim.sweep(spec2, out, workers=1)
    assert (s3.ok, s3.skipped) == (2, 4)


def test_failed_point_is_recorded_and_sweep_goes_on(tmp_path, monkeypatch):
    import accelsim.analysis.report

    real = accelsim.analysis.report.simulate

    def flaky(trace, hw, *a, **k):
        if hw.array.rows == 16 and hw.zero_policy == "none":
            raise RuntimeError("injected failure\nsecond line")
        return real(trace, hw, *a, **k)

    monkeypatch.setattr(accelsim.analysis.report, "simulate", flaky)
    # 0.75 KiB cannot hold a 32x32 weight tile: those configs fail to resolve
    spec = write_spec(tmp_path, grid={"array.rows": [8, 16, 32],
                                      "zero_policy": ["none", "skip_both"]},
                      fixed={"array.cols": 32, "memory.glb.w_kib": 0.75})
    out = tmp_path / "res"
    events = []
    s = accelsim.sweep(spec, out, workers=1, progress=events.append)
    assert (s.ok, s.failed) == (3, 3), s.errors
    df = accelsim.load_results(out)
    bad = df[df.status == "failed"]
    assert len(bad) == 3 and (bad.scope == "total").all()
    msgs = set(bad.error)
    assert "RuntimeError: injected failure second line" in msgs
    assert any("memory.glb.w_kib: expected at least" in m for m in msgs)
    assert [e.kind for e in events].count("point") == 6
    # failed points are skipped on rerun unless asked; retrying runs only them
    monkeypatch.setattr(accelsim.analysis.report, "simulate", real)
    assert accelsim.sweep(spec, out, workers=1).skipped == 6
    s2 = accelsim.sweep(spec, out, workers=1, retry_failed=True)
    assert (s2.ok, s2.failed, s2.skipped) == (1, 2, 3)
    df = accelsim.load_results(out)
    assert df[df.scope == "total"].point_id.is_unique
    assert (df.status == "failed").sum() == 2


def test_process_pool_sweep(tmp_path, capsys):
    spec = write_spec(tmp_path)
    out = tmp_path / "res"
    assert main(["sweep", str(spec), "-o", str(out), "--workers", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ok 4, failed 0, skipped 0" in text
    assert main(["sweep", str(spec), "-o", str(out), "--dry-run"]) == 0
    assert "4 already stored" in capsys.readouterr().out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from accelsim.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))", *args]


def test_kill_9_midway_then_resume_stores_every_point_once(tmp_path):
    spec = write_spec(tmp_path, grid={"array.rows": [4, 8, 16, 32],
                                      "array.cols": [8, 16],
                                      "zero_policy": ["none", "gate", "skip_a", "skip_both"],
                                      "memory.glb.w_kib": [32, 64]})
    total = len(plan_sweep(load_spec(spec)).points)
    out = tmp_path / "res"
    pts = out / "points"
    env = dict(os.environ)
    proc = subprocess.Popen(_cli("sweep", str(spec), "-o", str(out), "--workers", "2",
                                 "--no-progress"), start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    n = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            n = len(list(pts.glob("*.parquet"))) if pts.is_dir() else 0
            if n >= 6:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    stored = stored_points(out)  # every stored file is complete and readable
    assert 6 <= len(stored) < total
    assert all(v == "ok" for v in stored.values())
    # rerun the same command: completes, skipping what was stored
    res = subprocess.run(_cli("sweep", str(spec), "-o", str(out), "--workers", "2",
                              "--no-progress"), capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"skipped {len(stored)}" in res.stdout
    assert f"ok {total - len(stored)}, failed 0" in res.stdout
    assert not list(pts.glob(".*"))  # no temp files left behind
    df = accelsim.load_results(out)
    tot = df[df.scope == "total"]
    assert len(tot) == total and tot.point_id.is_unique
    assert (tot.status == "ok").all()
    assert sorted(tot.point_id) == sorted(p.point_id for p in plan_sweep(load_spec(spec)).points)


def test_dask_local_cluster_sweep(tmp_path):
    pytest.importorskip("distributed")
    spec = write_spec(tmp_path)
    out = tmp_path / "res"
    s = accelsim.sweep(spec, out, dask_local=2)
    assert (s.ok, s.failed) == (4, 0) and s.backend.startswith("dask")
    inline = tmp_path / "inline"
    accelsim.sweep(spec, inline, workers=1)
    cols = ["point_id", "layer", "cycles", "energy_pj", "dram_bytes"]
    a = accelsim.load_results(out)[cols].sort_values(["point_id", "layer"])
    b = accelsim.load_results(inline)[cols].sort_values(["point_id", "layer"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# -------------------------------------------------------------------- pareto

def _brute_front(xs, ys):
    keep = []
    for i in range(len(xs)):
        dominated = any(xs[j] <= xs[i] and ys[j] <= ys[i] and (xs[j] < xs[i] or ys[j] < ys[i])
                        for j in range(len(xs)))
        if not dominated:
            keep.append(i)
    return keep


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=30))
def test_pareto_matches_brute_force(pairs):
    df = pd.DataFrame(pairs, columns=["latency_s", "energy_pj"])
    got = accelsim.pareto(df)
    assert sorted(got.index) == _brute_front(df.latency_s.tolist(), df.energy_pj.tolist())
    assert got.latency_s.is_monotonic_increasing
    # maximising y is minimising -y
    neg = df.assign(energy_pj=-df.energy_pj)
    assert sorted(accelsim.pareto(df, maximize=["energy_pj"]).index) == \
        sorted(accelsim.pareto(neg).index)


def test_pareto_uses_ok_totals_and_groups():
    df = pd.DataFrame({
        "scope": ["total", "total", "layer", "total", "total"],
        "status": ["ok", "ok", "ok", "failed", "ok"],
        "trace": ["a", "a", "a", "a", "b"],
        "latency_s": [1.0, 2.0, 0.1, 0.1, 5.0],
        "energy_pj": [2.0, 1.0, 0.1, 0.1, 5.0],
    })
    assert list(accelsim.pareto(df).index) == [0, 1]
    assert list(accelsim.pareto(df, by="trace").index) == [0, 1, 4]


# ---------------------------------------------------------------------- area

def test_area_model():
    base = accelsim.load_hwconfig("sparse_os_16x16")
    a = area_of(base)
    assert a["area_mm2"] == pytest.approx(a["area_pe_mm2"] + a["area_glb_mm2"])
    glb = base.memory.glb
    assert a["area_glb_mm2"] == pytest.approx((glb.a_kib + glb.w_kib + glb.out_kib)
                                              * SRAM_MM2_PER_KIB)
    assert 0.004 < SRAM_MM2_PER_KIB < 0.007
    big = area_of(base.with_overrides({"array.rows": 32}))
    assert big["area_pe_mm2"] == pytest.approx(2 * a["area_pe_mm2"])
    pe = {p: area_of(base.with_overrides({"zero_policy": p}))["area_pe_mm2"]
          for p in ("none", "gate", "skip_a", "skip_both")}
    assert pe["none"] == pe["gate"] < pe["skip_a"] < pe["skip_both"]
    # a 16-bit multiplier is ~4x an 8-bit one
    wide = area_of(base.with_overrides({"precision.a_bits": 16, "precision.w_bits": 16}))
    assert wide["area_pe_mm2"] > 1.3 * a["area_pe_mm2"]


def test_example_spec_loads():
    spec = load_spec(ROOT / "sweeps" / "array_and_policy.yaml")
    plan = plan_sweep(spec)
    assert 150 <= len(plan.points) <= 260
    assert all(p.error is None for p in plan.points)
    assert len({p.point_id for p in plan.points}) == len(plan.points)


def test_point_ids_are_stable_and_order_independent(tmp_path):
    a = plan_sweep(load_spec(write_spec(tmp_path, "a.yaml")))
    b = plan_sweep(load_spec(write_spec(
        tmp_path, "b.yaml", name="other",
        grid={"zero_policy": ["skip_both", "none"], "array.rows": [16, 8]})))
    assert {p.point_id for p in a.points} == {p.point_id for p in b.points}
    combos = set(itertools.product([8, 16], ["none", "skip_both"]))
    assert {(p.values["array.rows"], p.values["zero_policy"]) for p in a.points} == combos


# ------------------------------------------------------------- exit status (issue 12)

def test_sweep_exits_nonzero_when_points_fail(tmp_path, capsys):
    # 0.75 KiB cannot hold a 32x32 weight tile: the rows=32 configs fail to resolve
    spec = write_spec(tmp_path, grid={"array.rows": [8, 32]},
                      fixed={"array.cols": 32, "memory.glb.w_kib": 0.75})
    out = tmp_path / "res"
    assert main(["sweep", str(spec), "-o", str(out), "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "sweep: 1 of 2 points failed" in err
    # the failed point is stored; a rerun skips it, runs nothing and reports no new failure
    assert main(["sweep", str(spec), "-o", str(out), "--workers", "1", "--no-progress"]) == 0


def test_sweep_exits_nonzero_when_constraints_drop_every_point(tmp_path, capsys):
    spec = write_spec(tmp_path, constraints=["array.rows > 1000"])
    out = tmp_path / "res"
    assert main(["sweep", str(spec), "-o", str(out), "--workers", "1", "--no-progress"]) == 1
    assert "sweep: no point ran (4 of 4 dropped by the constraints)" in capsys.readouterr().err


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_driver_is_killed(tmp_path):
    spec = write_spec(tmp_path, grid={"array.rows": [4, 8, 16, 32],
                                      "array.cols": [8, 16],
                                      "zero_policy": ["none", "gate", "skip_a", "skip_both"]})
    out = tmp_path / "res"
    proc = subprocess.Popen(_cli("sweep", str(spec), "-o", str(out), "--workers", "2",
                                 "--no-progress"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            pts = out / "points"
            if pts.is_dir() and list(pts.glob("*.parquet")):
                workers = _children(proc.pid)
                if len(workers) >= 2:
                    break
            time.sleep(0.01)
        assert len(workers) >= 2, "the sweep never ran in two workers"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, not its process group
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} still running after the driver was killed"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
