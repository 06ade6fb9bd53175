"""Sweep and result-store timings for ``benchmarks/run.py`` (prints, asserts nothing).

* the 1000-point ``benchmarks/sweep_digits_1000.yaml`` sweep with ``--workers`` local
  processes into a fresh temp directory: wall seconds per point, and the simulate time
  per point inside the workers;
* what one worker's per-point time is made of: a profile of ``profile_points`` points
  run in this process in the order a worker receives them (chunks of related points),
  split into config building, operand lowering, the compute model, the memory model,
  table building, Parquet encoding and the rest;
* ``load_results`` of that 1000-point store (full, and filtered by a swept key);
* a synthetic 10,000-point store: the 1000 points' rows written again as point files
  the way the runner writes them (new point ids, one more swept key ``replica``),
  compacted every 1000 points as a sweep does, then ``load_results`` full and filtered.

    python benchmarks/sweep_bench.py [--workers 2] [--store-points 10000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "sweep_digits_1000.yaml"


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


#: profile buckets: (label, qualified function names whose cumulative time they take)
BUCKETS = [
    ("config build + validation", ["hwconfig.py:build"]),
    ("operand lowering (misses)", ["engine.py:layer_operands"]),
    ("compute model (misses)", ["engine.py:simulate_masks"]),
    ("memory model", ["memory.py:simulate_memory", "gemv.py:simulate_gemv"]),
    ("per-layer rows + energy", ["report.py:layer_row"]),
    ("layer table (report._frame)", ["report.py:_frame"]),
    ("TOTAL row (with_totals)", ["report.py:with_totals"]),
    ("Parquet encoding", ["store.py:point_encode"]),
]
#: the rest of simulate_layer (budget check, formats, stats) after its own buckets
ENGINE_REST = ("engine.py:simulate_layer", ["engine.py:layer_operands",
                                            "engine.py:simulate_masks",
                                            "memory.py:simulate_memory",
                                            "gemv.py:simulate_gemv"])


def profile_worker(n: int) -> tuple[float, list[tuple[str, float]], str]:
    """Run ``n`` points in this process as a worker would; (seconds per point,
    [(bucket, seconds per point)], cache summary). The profile's own overhead inflates
    every bucket; read the shares, not the absolute numbers."""
    from accelsim.analysis.sweep import load_spec, plan_sweep
    from accelsim.analysis.sweep.runner import _CACHE, CHUNK, _chunks, run_points

    points = plan_sweep(load_spec(SPEC)).points
    chunks = _chunks(points, CHUNK)
    run_points(chunks[-1])  # warm-up: imports, numba cache, trace mapping
    _CACHE.clear()
    sel = [p for c in chunks[:max(1, n // CHUNK)] for p in c]
    t0 = time.perf_counter()
    run_points(sel)
    plain = (time.perf_counter() - t0) / len(sel)
    _CACHE.clear()
    prof = cProfile.Profile()
    prof.enable()
    run_points(sel)
    prof.disable()
    cache = _CACHE[0]
    stats = pstats.Stats(prof).stats
    cum = {}
    for (file, _line, name), v in stats.items():
        key = f"{Path(file).name}:{name}"
        cum[key] = cum.get(key, 0.0) + v[3]
    top = next(v[3] for (f, _l, nm), v in stats.items() if nm == "run_points"
               and f.endswith("runner.py"))
    rows = []
    for label, names in BUCKETS:
        rows.append((label, sum(cum.get(k, 0.0) for k in names) / len(sel)))
    whole, parts = ENGINE_REST
    rows.append(("rest of the engine per layer",
                 (cum.get(whole, 0.0) - sum(cum.get(k, 0.0) for k in parts)) / len(sel)))
    rows.append(("everything else", top / len(sel) - sum(r[1] for r in rows)))
    info = (f"{cache.hits} hits, {cache.misses} misses, {cache.bytes / 2**20:.1f} MiB held; "
            f"profiled {top / len(sel) * 1e3:.1f} ms/point vs {plain * 1e3:.1f} unprofiled")
    return plain, rows, info


def synthetic_store(src: Path, dest: Path, points: int) -> tuple[float, int]:
    """Write ``points`` point files from the rows of the store at ``src`` (new ids, a
    ``replica`` swept key), atomically one by one as the runner does (the same Parquet
    writer on the same table layout), compacting every 1000 as a sweep does; (seconds,
    batch files at the end)."""
    import hashlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from accelsim.analysis.sweep.store import _atomic_bytes, _by_point, compact

    files = sorted((src / "points").glob("*.parquet"))
    table = _by_point(pa.concat_tables([pq.read_table(f) for f in files],
                                       promote_options="permissive"))
    table = table.replace_schema_metadata({k: v for k, v in
                                           (table.schema.metadata or {}).items()
                                           if not k.startswith(b"accelsim")})
    ids = table.column("point_id")
    starts = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]] + [len(ids)]
    base = [table.slice(a, b - a) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    pts = dest / "points"
    pts.mkdir(parents=True)
    t0 = time.perf_counter()
    for i in range(points):
        t = base[i % len(base)]
        rep = i // len(base)
        n = t.num_rows
        pid = hashlib.sha256(f"{t.column('point_id')[0]}-{rep}".encode()).hexdigest()[:16]
        t = t.set_column(t.schema.get_field_index("point_id"), "point_id",
                         pa.array([pid] * n))
        t = t.add_column(6, "replica", pa.array([rep] * n, pa.int64()))
        swept = t.schema.field("swept")
        t = t.set_column(t.schema.get_field_index("swept"), swept,
                         pa.array([f"{t.column('swept')[0].as_py()},replica"] * n, swept.type))
        buf = io.BytesIO()
        pq.write_table(t, buf)
        _atomic_bytes(buf.getvalue(), pts / f"{pid}.parquet")
        if (i + 1) % 1000 == 0:
            compact(dest, min_points=1)
    compact(dest)
    return time.perf_counter() - t0, len(list(pts.glob("batch-*.parquet")))


def run(workers: int = 2, store_points: int = 10_000, profile_points: int = 200) -> None:
    import accelsim
    from accelsim.analysis.sweep import load_results

    with tempfile.TemporaryDirectory(prefix="accelsim-bench-") as tmp:
        res = Path(tmp) / "sweep1000"
        s = accelsim.sweep(SPEC, res, workers=workers)
        print(f"sweep {SPEC.name}: {s.ok} ok, {s.failed} failed, --workers {workers}: "
              f"{s.wall_s:.1f} s wall, {s.per_point_s:.4f} s per point (target: 1000 "
              f"points <= 60 s); simulate {s.sim_s / max(s.ran, 1):.4f} s per point in "
              f"the workers")
        plain, rows, info = profile_worker(profile_points)
        print(f"one worker, {profile_points} points in chunk order: {plain * 1e3:.1f} ms "
              f"per point; cache {info}")
        tot = sum(r[1] for r in rows)
        for label, sec in rows:
            print(f"    {label:28s} {sec / tot * 100:5.1f} %")
        t_full = _best(lambda: load_results(res))
        t_filt = _best(lambda: load_results(res, filters={"zero_policy": "skip_both",
                                                          "scope": "total"}))
        print(f"load_results, 1,000 points ({len(load_results(res))} rows): "
              f"{t_full:.3f} s; filtered (zero_policy=skip_both, totals) {t_filt:.3f} s")
        if store_points:
            big = Path(tmp) / "synthetic"
            gen_s, batches = synthetic_store(res, big, store_points)
            t_full = _best(lambda: load_results(big))
            n = len(load_results(big))
            t_tot = _best(lambda: load_results(big, filters={"scope": "total"}))
            t_key = _best(lambda: load_results(big, filters={"array.rows": 16,
                                                             "zero_policy": "skip_both"}))
            print(f"load_results, {store_points:,} points ({n:,} rows, {batches} batch "
                  f"files; written and compacted in {gen_s:.1f} s): {t_full:.3f} s "
                  f"(target <= 5 s); totals only {t_tot:.3f} s; array.rows=16 and "
                  f"skip_both {t_key:.3f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store-points", type=int, default=10_000)
    ap.add_argument("--profile-points", type=int, default=200)
    args = ap.parse_args()
    run(args.workers, args.store_points, args.profile_points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
