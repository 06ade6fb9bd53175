"""The result store's compaction (accelsim/analysis/sweep/store.py): point files become
batch files, readers see every point exactly once (also when a crash left a batch and
its inputs side by side, or stopped the deletions halfway), filters push down, a bad
batch is moved aside and rerun, and a sweep resumes on a compacted store."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from accelsim.analysis.sweep import load_results, load_spec, plan_sweep, stored_points, sweep
from accelsim.analysis.sweep import store as st
from accelsim.analysis.sweep.store import StoreWarning, compact
from accelsim.io.trace import linear, write_trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    x = (rng.random((6, 16)) < 0.5).astype(np.int8)
    w = (rng.random((8, 16)) < 0.5).astype(np.int8)
    return write_trace(tmp_path_factory.mktemp("tr") / "tr", [linear("fc", x, w)])


def _spec(tmp_path: Path, trace: Path, rows=(2, 4, 8), policies=("none", "skip_a")) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": "sparse_os_16x16", "traces": [str(trace)],
                                    "grid": {"array.rows": list(rows),
                                             "zero_policy": list(policies),
                                             "memory.glb.w_kib": [16, 64]}}))
    return spec


def _files(res: Path) -> tuple[list[Path], list[Path]]:
    files = sorted((res / "points").glob("*.parquet"))
    return ([f for f in files if not f.name.startswith("batch-")],
            [f for f in files if f.name.startswith("batch-")])


def _ids(spec: Path) -> list[str]:
    return sorted(p.point_id for p in plan_sweep(load_spec(spec)).points)


def _once(df: pd.DataFrame, ids: list[str]) -> None:
    tot = df[df.scope == "total"]
    assert sorted(tot.point_id) == ids  # every point, each exactly once
    assert (df[df.scope == "layer"].groupby("point_id").size() == 1).all()


def test_compaction_keeps_every_point_exactly_once_and_the_same_frame(tmp_path, trace):
    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    s = sweep(spec, res, workers=1, compact_every=0)  # point files only
    assert s.ok == 12 and len(_files(res)[0]) == 12
    before = load_results(res)
    assert compact(res, min_points=100) == 0  # below the threshold: nothing to do
    assert compact(res, min_points=1) == 12
    singles, batches = _files(res)
    assert singles == [] and len(batches) == 1
    meta = pq.read_schema(batches[0]).metadata[st.BATCH_IDS_KEY]
    assert sorted(yaml.safe_load(meta)) == _ids(spec)
    after = load_results(res)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert before.attrs == after.attrs
    _once(after, _ids(spec))
    assert stored_points(res) == {i: "ok" for i in _ids(spec)}


def test_crash_between_the_batch_and_the_deletions(tmp_path, trace, monkeypatch):
    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    sweep(spec, res, workers=1, compact_every=0)
    before = load_results(res)
    backup = tmp_path / "backup"
    shutil.copytree(res / "points", backup)
    real = Path.unlink
    for k in (0, 5, 11):  # a crash after the batch and k of the 12 deletions
        shutil.rmtree(res / "points")
        shutil.copytree(backup, res / "points")
        done = [0]

        def dying_unlink(self, *a, _k=k, _done=done, _real=real, **kw):
            if _done[0] >= _k:
                raise KeyboardInterrupt("killed")
            _done[0] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(Path, "unlink", dying_unlink)
        with pytest.raises(KeyboardInterrupt):
            compact(res, min_points=1)
        monkeypatch.setattr(Path, "unlink", real)
        singles, batches = _files(res)
        assert len(batches) == 1 and len(singles) == 12 - k
        pd.testing.assert_frame_equal(before, load_results(res), check_exact=True)
        assert stored_points(res) == {i: "ok" for i in _ids(spec)}
        s = sweep(spec, res, workers=1)  # resume: nothing to run; tidies up
        assert (s.ok, s.skipped) == (0, 12)
        compact(res, min_points=1)
        singles, batches = _files(res)
        assert singles == [] and len(batches) == 1
        pd.testing.assert_frame_equal(before, load_results(res), check_exact=True)


def test_merge_of_batches_and_newer_point_files_win(tmp_path, trace, monkeypatch):
    import accelsim.analysis.report

    real = accelsim.analysis.report.simulate

    def flaky(tr, hw, *a, **k):
        if hw.array.rows == 2:
            raise RuntimeError("injected")
        return real(tr, hw, *a, **k)

    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    monkeypatch.setattr(accelsim.analysis.report, "simulate", flaky)
    s = sweep(spec, res, workers=1, compact_every=0)
    assert (s.ok, s.failed) == (8, 4)
    compact(res, min_points=1)  # batch 1 holds the 4 failures
    monkeypatch.setattr(accelsim.analysis.report, "simulate", real)
    s = sweep(spec, res, workers=1, retry_failed=True, compact_every=0)
    assert (s.ok, s.skipped) == (4, 8)
    singles, batches = _files(res)
    assert len(singles) == 4 and len(batches) == 1
    df = load_results(res)  # the retried point files win over the batch's failures
    _once(df, _ids(spec))
    assert (df.status == "ok").all()
    compact(res, min_points=1)  # batch 2 holds them; batch 1's copies lose to it
    singles, batches = _files(res)
    assert singles == [] and len(batches) == 2
    pd.testing.assert_frame_equal(df, load_results(res), check_exact=True)
    assert set(stored_points(res).values()) == {"ok"}
    compact(res, min_points=10**6, max_batches=2)  # merge: one batch, same content
    singles, batches = _files(res)
    assert singles == [] and len(batches) == 1
    pd.testing.assert_frame_equal(df, load_results(res), check_exact=True)


def test_filters_read_only_matching_rows(tmp_path, trace):
    spec = _spec(tmp_path, trace, rows=(2, 4, 8, 16))
    res = tmp_path / "res"
    sweep(spec, res, workers=1, compact_every=0)
    compact(res, min_points=1)
    grow = _spec(tmp_path, trace, rows=(2, 4, 8, 16, 32))  # and a few point files
    sweep(grow, res, workers=1, compact_every=0)
    assert len(_files(res)[0]) == 4
    full = load_results(res)
    for filters in ({"zero_policy": "skip_a"}, {"array.rows": [4, 32], "scope": "total"},
                    {"memory.glb.w_kib": 64, "zero_policy": ["none"]},
                    {"array.rows": 1000}, {"no.such.key": 1}):
        got = load_results(res, filters=filters)
        want = full
        for col, v in filters.items():
            if col not in want:
                want = want.iloc[:0]
                continue
            want = want[want[col].isin(v if isinstance(v, list) else [v])]
        want = want.reset_index(drop=True)
        assert len(got) == len(want)
        if len(want):
            pd.testing.assert_frame_equal(got[want.columns], want, check_exact=True)
    cols = load_results(res, filters={"scope": "total"}, columns=["cycles", "array.rows"])
    assert set(cols.columns) == {"point_id", "swept", "cycles", "array.rows"}
    assert len(cols) == 20


def test_batches_keep_row_groups_narrow_for_pushdown(tmp_path, trace, monkeypatch):
    monkeypatch.setattr(st, "ROW_GROUP_ROWS", 8)
    spec = _spec(tmp_path, trace, rows=(2, 4, 8, 16))
    res = tmp_path / "res"
    sweep(spec, res, workers=1, compact_every=0)
    compact(res, min_points=1)
    (batch,) = _files(res)[1]
    meta = pq.ParquetFile(batch).metadata
    assert meta.num_row_groups == 4  # 16 points x 2 rows, 8 rows per group
    col = meta.schema.names.index("array.rows")
    ranges = [(meta.row_group(i).column(col).statistics.min,
               meta.row_group(i).column(col).statistics.max)
              for i in range(meta.num_row_groups)]
    assert ranges == sorted(ranges) and all(lo == hi for lo, hi in ranges)


def test_bad_batch_file_is_moved_aside_and_its_points_rerun(tmp_path, trace):
    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    sweep(spec, res, workers=1, compact_every=0)
    compact(res, min_points=1)
    (batch,) = _files(res)[1]
    batch.write_bytes(batch.read_bytes()[:200])  # truncated
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        df = load_results(res)
    assert len(df) == 0 and any(issubclass(x.category, StoreWarning) for x in w)
    with pytest.warns(StoreWarning, match=r"moved to .*bad.*rerun"):
        s = sweep(spec, res, workers=1)
    assert s.ok == 12 and len(list((res / "points" / "bad").iterdir())) == 1
    _once(load_results(res), _ids(spec))


def test_reader_retries_when_compaction_removes_a_file_under_it(tmp_path, trace,
                                                                monkeypatch):
    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    sweep(spec, res, workers=1, compact_every=0)
    before = load_results(res)
    real = st._check_point_file
    calls = [0]

    def compacting_meanwhile(f):
        calls[0] += 1
        if calls[0] == 3:  # another process compacts while this reader is listing
            compact(res, min_points=1)
        return real(f)

    monkeypatch.setattr(st, "_check_point_file", compacting_meanwhile)
    after = load_results(res)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert len(_files(res)[1]) == 1


def test_sweep_compacts_every_n_points_and_at_the_end(tmp_path, trace):
    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    s = sweep(spec, res, workers=1, compact_every=5)
    assert s.ok == 12
    singles, batches = _files(res)
    # batches after points 5 and 10; the 2 left wait (below COMPACT_MIN) for a later run
    assert len(batches) == 2 and len(singles) == 2
    _once(load_results(res), _ids(spec))
    s = sweep(_spec(tmp_path, trace, rows=(2, 4, 8, 16)), res, workers=1, compact_every=5)
    assert (s.ok, s.skipped) == (4, 12)
    _once(load_results(res), _ids(_spec(tmp_path, trace, rows=(2, 4, 8, 16))))


@pytest.mark.parametrize("trial", range(3))
def test_kill9_during_compaction_then_resume(tmp_path, trace, trial):
    import os
    import random
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    spec = _spec(tmp_path, trace)
    res = tmp_path / "res"
    sweep(spec, res, workers=1, compact_every=0)
    before = load_results(res)
    code = textwrap.dedent(f"""
        from accelsim.analysis.sweep.store import compact
        print("ready", flush=True)
        while True:  # every pass rewrites the whole store as a new batch
            compact({str(res)!r}, min_points=1, max_batches=1)
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(random.Random(trial).uniform(0.05, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pd.testing.assert_frame_equal(before, load_results(res), check_exact=True)
    assert stored_points(res) == {i: "ok" for i in _ids(spec)}
    s = sweep(spec, res, workers=1)  # resume: nothing to run, debris cleaned
    assert (s.ok, s.skipped, s.failed) == (0, 12, 0)
    assert not [p for p in (res / "points").iterdir() if "accelsim-tmp" in p.name]
    compact(res, min_points=1, max_batches=1)
    singles, batches = _files(res)
    assert singles == [] and len(batches) == 1
    pd.testing.assert_frame_equal(before, load_results(res), check_exact=True)


def test_driver_compaction_from_memory_equals_reading_the_files(tmp_path, trace):
    spec = _spec(tmp_path, trace, rows=(2, 4, 8, 16))
    files, mem = tmp_path / "files", tmp_path / "mem"
    sweep(spec, files, workers=1, compact_every=0)
    compact(files, min_points=1)  # tables read back from the point files
    sweep(spec, mem, workers=2, compact_every=3)  # tables the driver kept
    assert _files(mem)[1] and _files(files)[1]
    a = load_results(files).drop(columns=["sim_s"])
    b = load_results(mem).drop(columns=["sim_s"])
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    compact(mem, min_points=1, max_batches=1)
    (one,) = _files(mem)[1]
    assert pq.read_schema(one).equals(pq.read_schema(_files(files)[1][0]),
                                      check_metadata=False)
