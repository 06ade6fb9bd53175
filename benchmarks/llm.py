"""LLM-sized layers: accelsim against numpy on the same GEMM, and peak memory against the
layer's int8 operands. Run from ``benchmarks/run.py`` or alone::

    python benchmarks/llm.py                      # the issue's two shapes
    python benchmarks/llm.py --shapes 2048x4096x11008

Each shape (tokens M x hidden K x out N) is a linear layer with activation density 0.5
and weight density 0.5, written as a trace in a temporary directory; a fresh process
loads it (memory-mapped), warms the engine up on a tiny layer, then simulates it on a
32x32 output-stationary array with two-sided zero skipping, bitmask operands, memory and
energy (the configuration of run.py's ResNet-18 line). That process reports the
simulation's seconds and its peak resident memory above what it held before simulating
(``ru_maxrss`` of the child, minus its resident set after loading). numpy's float32
``A @ W`` of the same shapes is timed in this process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = ((2048, 4096, 11008), (8192, 4096, 14336))
HW = {"zero_policy": "skip_both", "formats.a.kind": "bitmask", "formats.w.kind": "bitmask"}


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def child(trace_dir: str) -> None:
    """Simulate the trace's one layer; print a JSON line (seconds, peak growth KiB)."""
    import accelsim
    from accelsim.io.synthetic import linear_layer

    hw = accelsim.load_hwconfig("dense_os_32x32", HW)
    tiny = linear_layer("warm", np.random.default_rng(0), fin=64, fout=64, tokens=16)
    accelsim.simulate(accelsim.Trace("warm", [tiny]), hw)  # imports, numba cache
    trace = accelsim.load_trace(trace_dir)
    before = _rss_kib()
    t0 = time.perf_counter()
    df = accelsim.simulate(trace, hw)
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": sec, "peak_growth_kib": max(0, peak - before),
                      "cycles": int(df.cycles.sum())}))


def run_shape(m: int, k: int, n: int, repeat: int = 1) -> dict:
    import accelsim
    from accelsim.io.synthetic import linear_layer

    layer = linear_layer("fc", np.random.default_rng(1), fin=k, fout=n, tokens=m)
    operands = int(np.asarray(layer.a).size + np.asarray(layer.w).size)  # int8 bytes
    with tempfile.TemporaryDirectory(prefix="accelsim-llm-") as tmp:
        accelsim.write_trace(Path(tmp) / "t", accelsim.Trace("llm", [layer]))
        a = np.asarray(layer.a, np.float32).reshape(m, k)
        w = np.asarray(layer.w, np.float32).T.copy()
        del layer
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, w)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        del a, w
        proc = subprocess.run([sys.executable, __file__, "--child", str(Path(tmp) / "t")],
                              capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(shape=f"{m}x{k}x{n}", numpy_s=best, operand_bytes=operands,
               ratio=res["seconds"] / best,
               peak_over_operands=res["peak_growth_kib"] * 1024 / operands)
    return res


def report(shapes=SHAPES, repeat: int = 1) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        r = run_shape(m, k, n, repeat)
        rows.append(r)
        print(f"LLM layer {r['shape']:>17}: accelsim {r['seconds']:7.2f} s, numpy f32 "
              f"{r['numpy_s']:7.2f} s, ratio {r['ratio']:.2f}x; peak memory "
              f"{r['peak_growth_kib'] / 1024:7.1f} MiB = {r['peak_over_operands']:.2f}x the "
              f"int8 operands ({r['operand_bytes'] / 2**20:.1f} MiB)", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", help="comma-separated MxKxN (default: the two LLM shapes)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N numpy timings (1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    shapes = SHAPES
    if args.shapes:
        shapes = tuple(tuple(int(x) for x in s.split("x")) for s in args.shapes.split(","))
    report(shapes, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
