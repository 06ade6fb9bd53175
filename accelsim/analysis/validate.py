"""``accelsim validate``: published and analytic results the model must reproduce.

Each check runs the model (never a stored number of accelsim's own) and compares one
quantity with what a source gives: a closed form, a SCALE-Sim run, or a paper's
figure. A check's row names the source beside the number it gives, accelsim's number,
the tolerance and whether it passed. Checks that need a bundled trace report
``skipped`` (with the reason) when the trace directory is not there, e.g. after a
plain ``pip install`` outside a checkout; pass ``traces=`` to point at it.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"
SCALESIM_CSV = DATA_DIR / "scalesim_cycles.csv"
#: where the bundled traces live in a source checkout
DEFAULT_TRACES = Path(__file__).resolve().parents[2] / "traces"

COLUMNS = ("check", "source", "source_value", "accelsim_value", "tolerance", "status",
           "detail")


@dataclass(frozen=True)
class Outcome:
    """What one check measured: ``value`` is accelsim's number (for the table),
    ``passed`` None when the check could not run (``detail`` says why)."""

    value: str
    passed: bool | None
    detail: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    source: str
    source_value: str
    tolerance: str
    run: Callable[[Path], Outcome]


# --- helpers -------------------------------------------------------------------------

def _hw(base: str | dict, overrides: dict[str, Any] | None = None):
    from accelsim.io.hwconfig import load_hwconfig

    return load_hwconfig(base, overrides=overrides)


def _compute(layer, hw) -> int:
    from accelsim.model.engine import simulate_layer

    return simulate_layer(layer, hw).compute_cycles


def _ones(shape) -> np.ndarray:
    return np.ones(shape, np.int8)


def _iid(rng: np.random.Generator, shape, density: float) -> np.ndarray:
    """int8 values, nonzero with probability ``density`` (1..127 in magnitude)."""
    from accelsim.io.synthetic import random_tensor

    return random_tensor(shape, density, rng)


def _trace(traces: Path, name: str):
    from accelsim.io.trace import load_trace

    path = traces / name
    if not (path / "manifest.yaml").is_file():
        return None
    return load_trace(path)


def _conv_cycles(trace, hw, layers: Sequence[str]) -> tuple[int, int, int]:
    """Compute cycles, real (unpadded) input elements and their nonzeros over
    ``layers``."""
    from accelsim.model.engine import simulate_layer

    cycles = nnz = size = 0
    for layer in trace.layers:
        if layer.name in layers:
            st = simulate_layer(layer, hw)
            cycles += st.compute_cycles
            nnz += st.nnz_a
            size += st.size_a
    return cycles, nnz, size


# --- the checks ----------------------------------------------------------------------

def _scalesim(_: Path) -> Outcome:
    """Dense compute cycles on the golden layers equal SCALE-Sim v3's Total Cycles + 1
    (SCALE-Sim reports the last cycle's index), under ``timing: scalesim``."""
    from accelsim.io import trace as tr
    from accelsim.model.workload import gemm_shape

    rows = list(csv.DictReader(SCALESIM_CSV.open(newline="")))
    bad = []
    for row in rows:
        hw = _hw({"name": "scalesim_golden",
                  "array": {"rows": int(row["array_rows"]), "cols": int(row["array_cols"])},
                  "dataflow": row["dataflow"], "zero_policy": "none", "timing": "scalesim"})
        m, k, n = int(row["m"]), int(row["k"]), int(row["n"])
        if row["kind"] == "gemm":
            layer = tr.linear(row["layer"], _ones((m, k)), _ones((n, k)))
        else:
            c, f = int(row["channels"]), int(row["num_filters"])
            kh, kw, s = int(row["filt_h"]), int(row["filt_w"]), int(row["stride"])
            layer = tr.conv2d(row["layer"], _ones((1, c, int(row["ifmap_h"]),
                                                   int(row["ifmap_w"]))),
                              _ones((f, c, kh, kw)), stride=s)
            shape = gemm_shape(layer)
            if (shape.m, shape.k, shape.n) != (m, k, n):
                # SCALE-Sim rounds the output size up; run the GEMM it actually ran
                layer = tr.linear(row["layer"], _ones((m, k)), _ones((n, k)))
        if _compute(layer, hw) != int(row["scalesim_total_cycles"]) + 1:
            bad.append(f"{row['layer']}/{row['dataflow']}/{row['array_rows']}x"
                       f"{row['array_cols']}")
    ok = len(rows) - len(bad)
    return Outcome(f"{ok}/{len(rows)} exact", not bad and len(rows) > 0,
                   "mismatch: " + ", ".join(bad[:5]) if bad else
                   f"{len(rows)} layer x dataflow x array runs")


def _lockstep_iid(density: float, rows: int = 16, cols: int = 16, k: int = 4096,
                  row_folds: int = 4, seed: int = 1) -> Callable[[Path], Outcome]:
    def run(_: Path) -> Outcome:
        from accelsim.io import trace as tr

        rng = np.random.default_rng(seed)
        m = rows * row_folds
        a = _iid(rng, (m, k), density)
        w = _ones((cols, k))
        base = {"name": "lockstep_iid", "array": {"rows": rows, "cols": cols},
                "dataflow": "os", "sync": {"mode": "lockstep"}}
        dense = _compute(tr.linear("dense", a, w), _hw(base | {"zero_policy": "none"}))
        sparse = _compute(tr.linear("sparse", a, w), _hw(base | {"zero_policy": "skip_a"}))
        # dense = fill + row_folds * K: the fill is taken from the dense twin, not assumed
        fill = dense - row_folds * k
        t_over_k = (sparse - fill) / (row_folds * k)
        expect = 1.0 - (1.0 - density) ** rows
        # each step is kept with probability `expect`, independently: binomial error
        sigma = math.sqrt(expect * (1 - expect) / (row_folds * k))
        ok = abs(t_over_k - expect) <= 4 * sigma
        return Outcome(f"{t_over_k:.4f}", ok,
                       f"closed form {expect:.4f}, d={density}, R={rows}, "
                       f"K={k} x {row_folds} folds, 4 sigma = {4 * sigma:.4f}")
    return run


def _nm_2to4(dataflow: str, k: int = 1024) -> Callable[[Path], Outcome]:
    def run(_: Path) -> Outcome:
        from accelsim.io import trace as tr
        from accelsim.model.sparsity import prune_nm

        rng = np.random.default_rng(7)
        m, n = 64, 64
        layer = tr.linear("fc", _iid(rng, (m, k), 1.0), _iid(rng, (n, k), 1.0))
        pruned = prune_nm(tr.Trace("nm", (layer,)), 2, 4)[0].layers[0]
        over = {"dataflow": dataflow}
        twin = _compute(layer, _hw("sparse_tc_os_16x16", over | {"structured.n": 0}))
        nm = _compute(pruned, _hw("sparse_tc_os_16x16", over))
        ratio = twin / nm
        return Outcome(f"{ratio:.4f}x", abs(ratio - 2.0) <= 0.02,
                       f"sparse_tc_os_16x16 dataflow {dataflow}, M=N=64, K={k}: {twin} / "
                       f"{nm} compute cycles (the fill, paid once, is what keeps it "
                       f"under 2)")
    return run


#: Cnvlutin's premise: conv layers whose inputs are ReLU outputs (conv1 takes the
#: image and is left out, as Cnvlutin processes the first layer densely), about 44% zeros
CNV_TRACE = "moving_digits"
CNV_LAYERS = ("conv2", "conv3")
CNV_RANGE = (1.24, 1.55)


@functools.lru_cache(maxsize=4)
def _cnvlutin_speedups(traces: Path) -> tuple[float, float, float] | str:
    """(brick, decoupled) speedups over the dense twin and the zero fraction, shared by
    the two Cnvlutin checks (simulated once per run)."""
    trace = _trace(traces, CNV_TRACE)
    if trace is None:
        return f"trace {traces / CNV_TRACE} not found"
    base = "cnvlutin_brick_16x16"
    dense, nnz, size = _conv_cycles(trace, _hw(base, {"zero_policy": "none",
                                                      "formats.a.kind": "dense"}),
                                    CNV_LAYERS)
    brick = _conv_cycles(trace, _hw(base), CNV_LAYERS)[0]
    # each PE holding a whole fiber of activations (4 KiB) may run on alone
    free = _conv_cycles(trace, _hw(base, {"sync.mode": "decoupled",
                                          "array.pe_buffer_bytes": 4096}), CNV_LAYERS)[0]
    return dense / brick, dense / free, 1.0 - nnz / size


def _cnvlutin_brick(traces: Path) -> Outcome:
    got = _cnvlutin_speedups(traces)
    if isinstance(got, str):
        return Outcome("-", None, got)
    brick, _, zeros = got
    lo, hi = CNV_RANGE
    return Outcome(f"{brick:.3f}x", lo <= brick <= hi,
                   f"{CNV_TRACE} {'+'.join(CNV_LAYERS)} ({zeros:.1%} zero inputs), "
                   f"cnvlutin_brick_16x16 over its zero_policy none twin, compute cycles")


def _cnvlutin_decoupled(traces: Path) -> Outcome:
    got = _cnvlutin_speedups(traces)
    if isinstance(got, str):
        return Outcome("-", None, got)
    brick, free, _ = got
    return Outcome(f"{free:.3f}x", free > brick,
                   f"the same array with decoupled PEs (4 KiB buffers): above the "
                   f"brick-synchronised {brick:.3f}x, i.e. the bricks cost speed")


CNV_WS_TRACE = "digits_cnn"


def _cnvlutin_ws_total(traces: Path) -> Outcome:
    """cnvlutin_ws_16x16 with mapping.search fixed over its dense twin (zero_policy
    none, dense activations): the speedup in total cycles (stalls included) within 10% of
    the speedup in compute cycles."""
    trace = _trace(traces, CNV_WS_TRACE)
    if trace is None:
        return Outcome("-", None, f"trace {traces / CNV_WS_TRACE} not found")
    from accelsim.analysis.report import simulate

    on = {"mapping.search": "fixed"}
    cnv = simulate(trace, _hw("cnvlutin_ws_16x16", on))
    dense = simulate(trace, _hw("cnvlutin_ws_16x16", {**on, "zero_policy": "none",
                                                      "formats.a.kind": "dense"}))
    comp = int(dense.compute_cycles.sum()) / int(cnv.compute_cycles.sum())
    total = int(dense.cycles.sum()) / int(cnv.cycles.sum())
    stall = int(cnv.stall_cycles.sum()) / int(cnv.cycles.sum())
    return Outcome(f"{total:.3f}x total / {comp:.3f}x compute", abs(total / comp - 1) <= 0.1,
                   f"{CNV_WS_TRACE}, all layers, search fixed (greedy legal tile); "
                   f"{stall:.1%} of cnvlutin_ws_16x16's cycles are stalls")


#: Timeloop's DRAM accesses (16-bit words) for timeloop-accelergy-exercises,
#: workspace/baseline_designs/example_designs/simple_weight_stationary/ref_outputs/
#: default_problem/timeloop-mapper.stats.txt: conv C=3 -> M=32, R=S=3, P=Q=112, stride 2,
#: pad 1, 224x224 input, N=1 (Level 7 DRAM: Weights reads 864, Inputs reads 156,600 with
#: an Inputs partition of 151,875 = 3 x 225 x 225, Outputs updates 401,408, no reads)
TIMELOOP_DRAM = {"weights": 864, "inputs_partition": 151_875, "inputs_read": 156_600,
                 "outputs": 401_408}


def timeloop_counts() -> dict[str, int]:
    """DRAM accesses (16-bit words) of the Timeloop layer above on a dense 16x16 ws array
    with 16-bit dense operands and the mapping pinned to ``mnk [1568, full, full]``:
    eight GLB tiles of 14 output rows each (every channel, all of C x R x S), the M loop
    outermost, as Timeloop's DRAM-level ``for Q in [0:8)``."""
    from accelsim.io import trace as tr
    from accelsim.model.engine import simulate_layer

    rng = np.random.default_rng(0)
    x = rng.integers(1, 100, size=(1, 3, 224, 224)).astype(np.int16)
    w = rng.integers(1, 100, size=(32, 3, 3, 3)).astype(np.int16)
    layer = tr.conv2d("timeloop_sws", x, w, stride=2, padding=1)
    hw = _hw("dense_os_32x32", {
        "dataflow": "ws", "array.rows": 16, "array.cols": 16, "precision.a_bits": 16,
        "precision.w_bits": 16, "zero_policy": "none", "formats.a.kind": "dense",
        "formats.w.kind": "dense", "memory.glb.a_kib": 128, "memory.glb.w_kib": 16,
        "memory.glb.out_kib": 128, "mapping.loop_order": "mnk",
        "mapping.glb_tile": [1568, "full", "full"]})
    c = simulate_layer(layer, hw).mem.counts
    return {"weights": c["dram_w_read_bytes"] // 2, "inputs": c["dram_a_read_bytes"] // 2,
            "outputs": c["dram_out_write_bytes"] // 2,
            "psum": (c["dram_psum_read_bytes"] + c["dram_psum_write_bytes"]) // 2}


def _timeloop(_: Path) -> Outcome:
    got = timeloop_counts()
    t = TIMELOOP_DRAM
    real = 3 * 224 * 224  # the input elements, padding excluded
    ok = (got["weights"] == t["weights"] and got["outputs"] == t["outputs"]
          and got["psum"] == 0 and got["inputs"] == real)
    return Outcome(f"W {got['weights']} / I {got['inputs']} / O {got['outputs']}", ok,
                   f"Timeloop W {t['weights']} / O {t['outputs']} equal; inputs: Timeloop's "
                   f"partition {t['inputs_partition']} counts the one padding row and "
                   f"column the windows reach (3 x 225 x 225), accelsim fetches the "
                   f"{real} real elements once (Timeloop's own mapping, Q 8 x P 2 tiles, "
                   f"re-fetches halos: {t['inputs_read']}; not expressible as contiguous M "
                   f"tiles)")


PSUM_KIB = range(64, 513)


@functools.lru_cache(maxsize=2)
def psum_sweep(traces: Path) -> dict[int, int] | str:
    """DRAM bytes that the searched mapping moves (A, W, partial sums; the output writes
    do not depend on the mapping) on digits_cnn conv2 with cnvlutin_ws_16x16 and
    mapping.search fixed, for memory.glb.out_kib 64..512 one KiB at a time (one set
    of tile statistics, repriced per size)."""
    trace = _trace(traces, CNV_WS_TRACE)
    if trace is None:
        return f"trace {traces / CNV_WS_TRACE} not found"
    from accelsim.model.dataflow import make_plan
    from accelsim.model.engine import layer_masks
    from accelsim.model.mapping import choose_mapping, price_mapping, tile_stats
    from accelsim.model.memory import a_operand_bits, resolve_formats

    layer = next(la for la in trace.layers if la.name == "conv2")
    hw = _hw("cnvlutin_ws_16x16", {"mapping.search": "fixed"})
    az, wz = layer_masks(layer)
    hw = resolve_formats(layer, hw, az.shape[-2], az.shape[-1], wz.shape[-1])
    plan = make_plan(hw)
    stats = tile_stats(layer, az, wz, hw, rows=plan.rows, cols=plan.cols,
                       a_bits=a_operand_bits(layer, hw), a_mask=None, nm=None,
                       active=np.ones(az.shape[:2], bool), out_cap=0)
    out = {}
    for kib in PSUM_KIB:
        stats.caps["out"] = kib * 1024
        mp = choose_mapping(stats, hw.with_overrides({"memory.glb.out_kib": kib}))
        out[kib] = price_mapping(stats, mp)["dram_bytes"]
    return out


def _psum_cliff(traces: Path) -> Outcome:
    got = psum_sweep(traces)
    if isinstance(got, str):
        return Outcome("-", None, got)
    v = np.array([got[k] for k in PSUM_KIB], np.float64)
    jump = float(np.max(np.abs(np.diff(v)) / np.minimum(v[1:], v[:-1])))
    return Outcome(f"{jump:.2%} largest step", jump <= 0.1,
                   f"digits_cnn conv2, cnvlutin_ws_16x16, search fixed (greedy legal tile): "
                   f"mapping DRAM bytes {int(v.min())}-{int(v.max())} over out_kib 64-512 "
                   f"({got[399]} at 399, {got[400]} at 400 KiB)")


SPARTEN_TRACE = "digits_cnn_pruned"
SPARTEN_LAYERS = ("conv1", "conv2", "conv3")
#: SparTen's average speedup over a dense array with greedy balancing (its abstract)
SPARTEN_OVER_DENSE = 4.7


def _sparten(traces: Path) -> Outcome:
    trace = _trace(traces, SPARTEN_TRACE)
    if trace is None:
        return Outcome("-", None, f"trace {traces / SPARTEN_TRACE} not found")
    base = "sparten_decoupled_16x16"
    cyc = {b: _conv_cycles(trace, _hw(base, {"sync.balance": b}), SPARTEN_LAYERS)[0]
           for b in ("none", "greedy_filter", "greedy_chunk")}
    dense = _conv_cycles(trace, _hw(base, {"zero_policy": "none", "sync.mode": "lockstep",
                                          "sync.balance": "none"}), SPARTEN_LAYERS)[0]
    gs = cyc["none"] / cyc["greedy_filter"]
    gh = cyc["none"] / cyc["greedy_chunk"]
    best = dense / cyc["greedy_chunk"]
    ok = 1.0 < gs <= gh and best <= SPARTEN_OVER_DENSE
    return Outcome(f"{gs:.3f}x / {gh:.3f}x", ok,
                   f"{SPARTEN_TRACE} conv layers, sparten_decoupled_16x16: greedy_filter / "
                   f"greedy_chunk over balance none; {best:.2f}x over the dense twin")


def _delta(_: Path) -> Outcome:
    """Delta processing of a linear layer: dense / performed MACs = 1 / (1 - Gamma),
    Gamma the fraction of zero deltas, computed here from the values with numpy."""
    from accelsim.io import trace as tr

    rng = np.random.default_rng(3)
    frames, tokens, fin, fout = 24, 4, 256, 64
    x = np.empty((frames, tokens, fin), np.int8)
    x[0] = rng.integers(-100, 100, (tokens, fin))
    for t in range(1, frames):  # ~70% of the inputs keep their value from frame to frame
        step = rng.integers(-3, 4, (tokens, fin)) * (rng.random((tokens, fin)) < 0.3)
        x[t] = np.clip(x[t - 1].astype(np.int16) + step, -127, 127)
    layer = tr.linear("rnn_fc", x, _iid(rng, (fout, fin), 1.0), frames=True)
    from accelsim.model.engine import simulate_layer

    st = simulate_layer(layer, _hw("delta_ws_16x16", {"delta.threshold": 0}))
    deltas = np.concatenate([x[:1], np.diff(x.astype(np.int16), axis=0)])
    gamma = float(np.mean(deltas == 0))
    expect = 1.0 / (1.0 - gamma)
    got = st.gemm.macs_dense / st.gemm.macs_performed
    return Outcome(f"{got:.4f}x", math.isclose(got, expect, rel_tol=1e-12),
                   f"Gamma = {gamma:.4f} over {frames} frames (frame 0 is its own delta), "
                   f"1/(1-Gamma) = {expect:.4f}; delta_ws_16x16, threshold 0")


#: EdgeDRNN's setting: a batch-1 GEMV stream with delta sparsity, weights in DRAM
EDGEDRNN_TRACE = "silero_vad"
EDGEDRNN_LAYER = "rnn.ih"  # the LSTM's input GEMV, one per 30 ms chunk
EDGEDRNN_RANGE = (5.0, 10.0)
#: the cycle ratio must follow the byte ratio this closely (relative) when memory-bound
EDGEDRNN_FOLLOW = 0.05


def _edgedrnn(traces: Path) -> Outcome:
    """DRAM weight bytes and cycles of silero_vad's rnn.ih on edgedrnn_gemv with and
    without fetch skipping, over the delta frames (frames >= 1: the full run minus a run
    of frame 0 alone, which processes x_0 in full in both). The bytes must equal the
    closed form from the delta vectors (computed here with numpy) and fall 5-10x; the
    cycles must fall by the same factor (within 5%), i.e. follow the DRAM bandwidth."""
    from accelsim.io import trace as tr
    from accelsim.model.engine import simulate_layer

    trace = _trace(traces, EDGEDRNN_TRACE)
    if trace is None:
        return Outcome("-", None, f"trace {traces / EDGEDRNN_TRACE} not found")
    layer = next(x for x in trace.layers if x.name == EDGEDRNN_LAYER)
    x = np.asarray(layer.a)
    first = tr.linear(layer.name, x[:1], np.asarray(layer.w), frames=True)
    on = _hw("edgedrnn_gemv")
    off = _hw("edgedrnn_gemv", {"fetch_skip.w_on_zero_a": "none"})

    def delta_frames(hw) -> tuple[int, int]:
        full, f0 = simulate_layer(layer, hw), simulate_layer(first, hw)
        def wb(st) -> int:
            return st.mem.counts["dram_w_read_bytes"] + st.mem.counts["dram_w_read_meta_bytes"]
        return wb(full) - wb(f0), full.cycles - f0.cycles

    b_on, c_on = delta_frames(on)
    b_off, c_off = delta_frames(off)
    # EdgeDRNN's own baseline: the same GEMVs without delta processing
    b_dense, c_dense = delta_frames(_hw("edgedrnn_gemv", {"fetch_skip.w_on_zero_a": "none",
                                                          "delta.enabled": False}))
    # the closed form: W rows of the nonzero deltas of every frame that runs, plus its
    # K-bit fetch mask; without fetch skipping the whole W per frame that runs
    k, n = x.shape[-1], np.asarray(layer.w).shape[0]
    wbytes = -(-on.precision.w_bits // 8)
    ref = x[0].astype(np.int64).ravel()
    nnz = []
    for t in range(1, x.shape[0]):
        d = x[t].astype(np.int64).ravel() - ref
        moved = np.abs(d) > on.delta.threshold
        ref = np.where(moved, x[t].ravel(), ref)
        nnz.append(int(moved.sum()))
    nnz_arr = np.array(nnz)
    runs = nnz_arr > 0  # frames without a change are skipped whole (docs/delta-and-nm.md)
    want_on = int((nnz_arr[runs] * n * wbytes).sum()) + int(runs.sum()) * -(-k // 8)
    want_off = int(runs.sum()) * k * n * wbytes
    want_dense = len(nnz) * k * n * wbytes
    density = nnz_arr.sum() / (len(nnz) * k)
    ratio, cyc = b_off / b_on, c_off / c_on
    vs_dense, cyc_dense = b_dense / b_on, c_dense / c_on
    lo, hi = EDGEDRNN_RANGE
    ok = (b_on == want_on and b_off == want_off and b_dense == want_dense
          and lo <= ratio <= hi and lo <= vs_dense <= hi
          and abs(cyc / ratio - 1) <= EDGEDRNN_FOLLOW
          and abs(cyc_dense / vs_dense - 1) <= EDGEDRNN_FOLLOW)
    return Outcome(f"{ratio:.2f}x bytes, {cyc:.2f}x cycles ({vs_dense:.2f}x, "
                   f"{cyc_dense:.2f}x against no delta)", ok,
                   f"{EDGEDRNN_TRACE} {EDGEDRNN_LAYER} (K={k}, N={n}) on edgedrnn_gemv, "
                   f"frames 1-{x.shape[0] - 1}: delta density {density:.3f} "
                   f"({density * len(nnz) / max(int(runs.sum()), 1):.3f} over the "
                   f"{int(runs.sum())} frames with a change); DRAM W bytes {b_off} "
                   f"fetch_skip off / {b_on} on (closed form {want_off} / {want_on}), "
                   f"{b_dense} without delta; cycles {c_off} / {c_on}, {c_dense} without "
                   f"delta")


CHECKS: tuple[Check, ...] = (
    Check("scalesim_dense_cycles",
          "SCALE-Sim v3 runs, 13 conv + 13 GEMM shapes x os/ws/is x 3 arrays "
          "(scalesim_cycles.csv; tests/golden/README.md)",
          "Total Cycles + 1", "exact", _scalesim),
    *(Check(f"lockstep_os_skip_a_d{d:g}",
            "closed form: a lockstep step is skipped only if all R rows' activations "
            "are zero, E[T]/K = 1 - (1 - d)^R (docs/timing.md)",
            f"{1 - (1 - d) ** 16:.4f}", "4 sigma (binomial)", _lockstep_iid(d))
      for d in (0.01, 0.05, 0.2)),
    *(Check(f"nm_2to4_dense_acts_{f}",
            "2:4 structured sparsity halves the MACs of every output on dense "
            "activations (NVIDIA A100 whitepaper, 2020: 2x math throughput)",
            "2x", "+-1%", _nm_2to4(f))
      for f in ("os", "ws")),
    Check("cnvlutin_brick_speedup",
          "Albericio et al., Cnvlutin, ISCA 2016, abstract: 1.24x-1.55x (1.37x on "
          "average) over DaDianNao, whose CNNs have 44% zero activations on average",
          "1.24x-1.55x", "inside the range", _cnvlutin_brick),
    Check("cnvlutin_decoupled_overshoots",
          "same paper: lanes wait for the brick with the most nonzeros; without that "
          "barrier the speedup must be higher",
          "> brick speedup", "strictly higher", _cnvlutin_decoupled),
    Check("timeloop_dram_accesses",
          "Timeloop, timeloop-accelergy-exercises simple_weight_stationary "
          "ref_outputs/default_problem (conv 3->32, 3x3, stride 2, 224x224): DRAM "
          "Weights 864, Outputs 401,408 accesses",
          "W 864 / O 401,408", "exact (16-bit words); inputs = the real elements",
          _timeloop),
    Check("cnvlutin_ws_total_speedup",
          "issue 10: a Cnvlutin-like config keeps its compute speedup in total cycles "
          "with the mapper on (the memory model must not erase it)",
          "total / compute speedup = 1", "within 10%", _cnvlutin_ws_total),
    Check("psum_cliff_gone",
          "issue 10: 13.1 MB of partial sums at out_kib 399, none at 400 (a 5.3x energy "
          "jump for one KiB); DRAM traffic must be continuous in the buffer size",
          "no step over 10%", "each 1 KiB step <= 10%", _psum_cliff),
    Check("sparten_greedy_balancing",
          "Gondimalla et al., SparTen, MICRO 2019, abstract: greedy "
          "balancing (GB-S whole filters, GB-H finer grain) removes load imbalance; "
          "4.7x over dense on average",
          "GB-S > none, GB-H >= GB-S, <= 4.7x over dense", "direction and bound",
          _sparten),
    Check("delta_linear_mac_reduction",
          "Neil et al., Delta Networks, ICML 2017: compute falls with the "
          "occupancy of the delta vector, dense/sparse = 1/(1 - Gamma)",
          "1/(1 - Gamma)", "exact (1e-12)", _delta),
    Check("edgedrnn_weight_traffic",
          "Gao et al., EdgeDRNN, IEEE JETCAS 2020, abstract: delta updates reduce DRAM "
          "weight memory access by up to 10x on batch-1 GRU GEMVs; latency follows the "
          "weight bandwidth",
          "up to 10x", "5x-10x against fetch_skip off and against no delta, bytes = "
          "closed form, cycle ratios within 5% of the byte ratios",
          _edgedrnn),
)


def check_names() -> list[str]:
    return [c.name for c in CHECKS]


def validate(traces: str | Path | None = None,
             checks: Iterable[str] | None = None):
    """Run the validation checks; one DataFrame row per check with the columns
    :data:`COLUMNS`. ``status`` is ``pass``, ``fail`` or ``skipped`` (a bundled trace is
    missing; ``detail`` says which). ``traces`` is the bundled-trace directory (default:
    the checkout's ``traces/``, else ``./traces``); ``checks`` selects checks by name."""
    import pandas as pd

    if traces is not None:
        root = Path(traces)
    else:  # the checkout this package runs from, else ./traces (an installed copy)
        root = DEFAULT_TRACES if DEFAULT_TRACES.is_dir() else Path.cwd() / "traces"
    chosen = list(CHECKS)
    if checks is not None:
        names = list(checks)
        known = set(check_names())
        unknown = [n for n in names if n not in known]
        if unknown:
            import difflib

            hint = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            raise ConfigError(f"validate: unknown check {unknown[0]!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else
                                 f"; the checks are {', '.join(sorted(known))}"))
        chosen = [c for c in CHECKS if c.name in names]
    _cnvlutin_speedups.cache_clear()
    psum_sweep.cache_clear()  # a run simulates afresh (the traces may have changed)
    rows = []
    for c in chosen:
        out = c.run(root)
        status = "skipped" if out.passed is None else ("pass" if out.passed else "fail")
        rows.append({"check": c.name, "source": c.source, "source_value": c.source_value,
                     "accelsim_value": out.value, "tolerance": c.tolerance,
                     "status": status, "detail": out.detail})
    return pd.DataFrame(rows, columns=list(COLUMNS))
