"""accelsim speed benchmark: prints ratios, asserts nothing.

    python benchmarks/run.py                 # accelsim vs numpy (and SCALE-Sim if found)
    python benchmarks/run.py --image 112     # smaller input, quicker
    python benchmarks/run.py --startup-only  # only the start-up time of `accelsim --help`
    python benchmarks/run.py --no-sweep      # without the sweep / result-store timings
    python benchmarks/run.py --no-llm        # without the LLM-sized layers

It first times ``accelsim --help`` (the console script beside this Python, else
``python -m accelsim``) in fresh processes, median of ``--startup-runs`` runs: the
start-up a user waits for before any command does work (imports only; the target is
under 0.3 s, which needs ``import accelsim`` not to load numba, pandas or pyarrow).

Then (``benchmarks/sweep_bench.py``) it runs the 1000-point ``digits_cnn`` sweep with
two workers (seconds per point, and what a worker's per-point time is made of) and
times ``load_results`` on that store and on a synthetic 10,000-point one.

After the ResNet-18 lines (below), ``benchmarks/llm.py`` times two LLM-sized linear layers
(2048x4096x11008 and 8192x4096x14336) against numpy and reports their peak memory against
the layers' int8 operands.

Then it simulates a ResNet-18-shaped synthetic trace (21 conv/fc layers, activation density
0.5, weight density 0.4) on a 32x32 output-stationary array with two-sided zero skipping,
and measures in the same run:

* numpy: float32 ``A @ W`` of the same lowered GEMMs (im2col done beforehand, untimed),
  i.e. the physical floor of a simulator that must look at every operand pair;
* SCALE-Sim v3 on the same layers (dense; it has no zero skipping), when a Python with
  ``scalesim==3.0.0`` is given by ``--scalesim-python`` or ``$ACCELSIM_SCALESIM_PYTHON``,
  or found at ``/work/scalesim-venv/bin/python``. Set one up with
  ``python -m venv /tmp/ss && /tmp/ss/bin/pip install scalesim==3.0.0 "numpy<2.4"``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import accelsim
from accelsim.io.synthetic import resnet18_trace
from accelsim.model.workload import gemm_shape, lower_a, lower_w

HERE = Path(__file__).resolve().parent


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def startup_command() -> list[str]:
    """``accelsim --help`` as installed beside this Python, else ``python -m accelsim``."""
    script = Path(sys.executable).with_name("accelsim")
    if script.is_file():
        return [str(script), "--help"]
    found = shutil.which("accelsim")
    return [found, "--help"] if found else [sys.executable, "-m", "accelsim", "--help"]


def startup_time(runs: int) -> tuple[float, list[float], list[str]]:
    """Median wall time of ``accelsim --help`` in fresh processes (one untimed run first,
    so that the bytecode cache is warm), the single times and the command."""
    cmd = startup_command()
    subprocess.run(cmd, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, cmd


def scalesim_layers(trace) -> list[dict]:
    """The trace's layers in SCALE-Sim's topology terms (padded ifmap, batch 1)."""
    out = []
    for layer in trace.layers:
        s = gemm_shape(layer)
        if layer.kind == "conv2d":
            c = layer.a.shape[1]
            kh, kw = layer.w.shape[2:]
            oh, ow = _out_hw(layer)
            # SCALE-Sim takes the padded ifmap and rounds the output size up; give it the
            # padded size cut to what the convolution reads, so that its M equals ours
            out.append(dict(name=layer.name, kind="conv2d",
                            ifmap_h=(oh - 1) * layer.stride[0] + kh,
                            ifmap_w=(ow - 1) * layer.stride[1] + kw, filt_h=kh, filt_w=kw,
                            channels=c, num_filters=layer.w.shape[0],
                            stride=layer.stride[0]))
        else:
            out.append(dict(name=layer.name, kind="gemm", m=s.m, k=s.k, n=s.n))
    return out


def _out_hw(layer) -> tuple[int, int]:
    from accelsim.io.trace import conv_out_size

    h, w = layer.a.shape[2:]
    kh, kw = layer.w.shape[2:]
    return (conv_out_size(h, kh, layer.stride[0], layer.padding[0], layer.dilation[0]),
            conv_out_size(w, kw, layer.stride[1], layer.padding[1], layer.dilation[1]))


def find_scalesim(arg: str | None) -> str | None:
    for cand in (arg, os.environ.get("ACCELSIM_SCALESIM_PYTHON"),
                 "/work/scalesim-venv/bin/python"):
        if cand and Path(cand).exists():
            return cand
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=int, default=224, help="input image size (224)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (3)")
    ap.add_argument("--scalesim-python", help="python with scalesim==3.0.0 installed")
    ap.add_argument("--search", default="exhaustive",
                    help="mapping.search of the simulated config (exhaustive; fixed: the "
                         "greedy mapping)")
    ap.add_argument("--no-scalesim", action="store_true", help="skip the SCALE-Sim run")
    ap.add_argument("--startup-runs", type=int, default=7,
                    help="runs of `accelsim --help` timed (median printed; 7)")
    ap.add_argument("--startup-only", action="store_true",
                    help="only time `accelsim --help`")
    ap.add_argument("--no-sweep", action="store_true",
                    help="skip the sweep and result-store timings (benchmarks/sweep_bench.py)")
    ap.add_argument("--sweep-workers", type=int, default=2,
                    help="workers of the 1000-point sweep (2)")
    ap.add_argument("--store-points", type=int, default=10_000,
                    help="points of the synthetic store load_results is timed on (10000)")
    ap.add_argument("--no-llm", action="store_true",
                    help="skip the LLM-sized layers (benchmarks/llm.py)")
    args = ap.parse_args()

    med, times, cmd = startup_time(max(1, args.startup_runs))
    print(f"start-up: {' '.join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))}"
          f" {med:.3f} s median of {len(times)} runs (min {min(times):.3f} s, max "
          f"{max(times):.3f} s; target < 0.3 s)")
    if args.startup_only:
        return 0
    if not args.no_sweep:
        sys.path.insert(0, str(HERE))
        import sweep_bench

        sweep_bench.run(workers=args.sweep_workers, store_points=args.store_points)

    trace = resnet18_trace(density_a=0.5, density_w=0.4, seed=0, image=args.image)
    hw = accelsim.load_hwconfig("dense_os_32x32", {"zero_policy": "skip_both",
                                                   "formats.a.kind": "bitmask",
                                                   "formats.w.kind": "bitmask",
                                                   "mapping.search": args.search})
    accelsim.simulate(trace, hw)  # warm-up (imports, numba compilation cache)
    t_sim = best_of(lambda: accelsim.simulate(trace, hw), args.repeat)
    df = accelsim.simulate(trace, hw)

    # the compute model alone (MACs and cycles, no memory or energy), for the cost of memory
    from accelsim.model.engine import layer_masks, simulate_masks

    def compute_only():
        for layer in trace.layers:
            simulate_masks(*layer_masks(layer), hw)

    t_compute = best_of(compute_only, args.repeat)
    gemms = [(lower_a(layer).astype(np.float32), lower_w(layer).astype(np.float32))
             for layer in trace.layers]
    t_np = best_of(lambda: [np.matmul(a, w) for a, w in gemms], args.repeat)
    macs = int(df.macs_dense.sum())
    print(f"workload: synthetic ResNet-18 shape, {len(trace)} layers at {args.image}x"
          f"{args.image}, {macs / 1e9:.2f} GMACs dense; hw: 32x32 os skip_both, bitmask "
          f"operands, memory hierarchy and energy modelled, mapping.search {args.search}")
    print(f"accelsim simulate : {t_sim:8.3f} s  ({int(df.cycles.sum())} cycles simulated)")
    print(f"numpy f32 GEMMs   : {t_np:8.3f} s  ({2 * macs / t_np / 1e9:.1f} GFLOP/s)")
    print(f"ratio accelsim/numpy: {t_sim / t_np:.2f}x")
    print(f"compute model only: {t_compute:8.3f} s  (ratio to numpy {t_compute / t_np:.2f}x; "
          f"memory + energy cost {t_sim / t_compute:.2f}x)")
    if not args.no_llm:
        sys.path.insert(0, str(HERE))
        import llm

        llm.report()

    py = None if args.no_scalesim else find_scalesim(args.scalesim_python)
    if py is None:
        print("SCALE-Sim: skipped (no python with scalesim==3.0.0; see --help)")
        return 0
    dense_hw = accelsim.load_hwconfig("dense_os_32x32")
    t_dense = best_of(lambda: accelsim.simulate(trace, dense_hw), args.repeat)
    dense = accelsim.simulate(trace, dense_hw)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "layers.json"
        spec.write_text(json.dumps(scalesim_layers(trace)))
        t0 = time.perf_counter()
        proc = subprocess.run([py, str(HERE / "scalesim_runner.py"), str(spec), "--rows", "32",
                               "--cols", "32", "--dataflow", "os"], capture_output=True,
                              text=True)
        t_ss = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"SCALE-Sim: failed ({proc.stderr.strip().splitlines()[-1:]})")
        return 0
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    ss_cycles = [int(r["total_cycles"]) for r in res["layers"]]
    agree = sum(int(a) == b + 1 for a, b in zip(dense.compute_cycles, ss_cycles, strict=True))
    print(f"accelsim dense    : {t_dense:8.3f} s")
    print(f"SCALE-Sim v3 dense: {t_ss:8.3f} s wall ({res['wall_s']:.3f} s in its API)")
    print(f"ratio SCALE-Sim/accelsim (dense): {t_ss / t_dense:.0f}x; compute cycles agree "
          f"(accelsim == SCALE-Sim + 1) on {agree}/{len(ss_cycles)} layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
