"""Run the fuzzing harness at any size and print the summary table.

    python tests/fuzz/run.py --cases 10000 --seed 1 --jobs 2

Cases are spread over the families in the issue's proportions (hardware configs 25%,
traces 35%, energy tables 10%, sweeps 15%, CLI 15%); each runs in a worker process
whose address space is capped (``--memory-gb``) and under a per-case time limit
(``--time-limit``, default 20 s). Prints one line per failing case (family, seed,
outcome, detail), then the table; exits 1 when any case failed. Reproduce a case with
``--family FAMILY --replay SEED``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_harness as fh  # noqa: E402

SHARES = {"hwconfig": 0.25, "trace": 0.35, "energy": 0.10, "sweep": 0.15, "cli": 0.15}


def _init(memory_gb: float) -> None:
    import resource

    if memory_gb > 0:
        lim = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2]
                                                 / ".numba_cache"))


def _one(args: tuple[str, int, float]) -> fh.Result:
    family, seed, limit = args
    try:
        return fh.run_case(family, seed, limit)
    except MemoryError:
        return fh.Result(family, seed, "internal error", "MemoryError (memory limit)")


def plan(cases: int, seed: int, families: list[str]) -> list[tuple[str, int]]:
    shares = {f: SHARES[f] for f in families}
    total = sum(shares.values())
    counts = {f: int(cases * s / total) for f, s in shares.items()}
    counts[families[0]] += cases - sum(counts.values())
    return [(f, seed * 1_000_000 + i) for f in families for i in range(counts[f])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--family", choices=fh.FAMILIES, action="append")
    ap.add_argument("--replay", type=int, help="run the one case with this seed, in process")
    ap.add_argument("--time-limit", type=float, default=fh.TIME_LIMIT_S)
    ap.add_argument("--memory-gb", type=float, default=6.0)
    a = ap.parse_args(argv)
    families = a.family or list(fh.FAMILIES)
    if a.replay is not None:
        r = fh.run_case(families[0], a.replay, a.time_limit)
        print(f"{r.family} {r.seed}: {r.outcome}: {r.detail}")
        return 0 if r.outcome in ("ok", "clean error") else 1
    todo = [(f, s, a.time_limit) for f, s in plan(a.cases, a.seed, families)]
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    results = []
    with ctx.Pool(a.jobs, initializer=_init, initargs=(a.memory_gb,),
                  maxtasksperchild=200) as pool:
        for r in pool.imap_unordered(_one, todo, chunksize=4):
            results.append(r)
            if r.outcome not in ("ok", "clean error"):
                print(f"FAIL {r.family} seed={r.seed}: {r.outcome}: {r.detail}", flush=True)
    wall = time.perf_counter() - t0
    print(f"\n{len(results)} cases, seed {a.seed}, {a.jobs} jobs, {wall:.0f} s\n")
    print(fh.summary_table(results))
    bad = sum(r.outcome not in ("ok", "clean error") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
