"""Memory model property tests: engine == cycle-stepping reference on every integer key.

Hypothesis draws small layers (linear, conv1d / conv2d / conv3d with stride, padding,
dilation and groups, matmul, frames), arrays up to 4x4 PEs, every dataflow x zero policy x format
(dense, bitmask, rle, csr, coo with small run / index / pointer widths), double buffering
on and off, small finite and unlimited bandwidths, and GLB partitions from the smallest
the loader accepts (one R x C dense tile) up to a few KiB, so that residency flips both
ways and partial sums spill. All-zero and all-dense operands are included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import conv_geometry

from accelsim import SimulationError, load_hwconfig, reference
from accelsim.io.trace import conv1d, conv2d, conv3d, linear, matmul, validate_layer

engine = pytest.importorskip("accelsim.model.engine")

DATAFLOWS = ("os", "ws", "is")
POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")
KINDS = ("dense", "bitmask", "rle", "csr", "coo")
KEYS = reference.ALL_FIELDS
INF = math.inf
#: density endpoints first so that shrinking goes to all-zero operands
DENSITIES = (0.0, 1.0, 0.1, 0.3, 0.5, 0.8)


def make_hw(rows=2, cols=2, p=1, flow="os", policy="none", *, fa="dense", fw="dense",
            run_bits=4, index_bits=8, ptr_bits=16, a_bits=8, w_bits=8, out_bits=32,
            a_kib=64.0, w_kib=64.0, out_kib=64.0, dram_bw=INF, glb_bw=INF, db=True,
            timing="accelsim"):
    fmt = {"run_bits": run_bits, "index_bits": index_bits, "ptr_bits": ptr_bits}
    return load_hwconfig({
        "name": "t", "array": {"rows": rows, "cols": cols, "macs_per_pe": p},
        "dataflow": flow, "zero_policy": policy, "timing": timing,
        "precision": {"a_bits": a_bits, "w_bits": w_bits, "out_bits": out_bits},
        "memory": {"dram": {"bandwidth_bytes_per_cycle": dram_bw},
                   "glb": {"a_kib": a_kib, "w_kib": w_kib, "out_kib": out_kib,
                           "bandwidth_bytes_per_cycle": glb_bw, "double_buffer": db}},
        "formats": {"a": {"kind": fa, **fmt}, "w": {"kind": fw, **fmt}},
    })


def as_ints(res) -> dict[str, int]:
    if not isinstance(res, Mapping):
        res = res.as_dict()
    missing = [k for k in KEYS if k not in res]
    assert not missing, f"engine result lacks {missing}"
    for k in KEYS:
        assert isinstance(res[k], (int, np.integer)), (k, type(res[k]))
    return {k: int(res[k]) for k in KEYS}


def describe_hw(hw) -> str:
    m, f = hw.memory, hw.formats
    return (f"{hw.array.rows}x{hw.array.cols} p={hw.array.macs_per_pe} {hw.dataflow}/"
            f"{hw.zero_policy} bits={hw.precision.a_bits},{hw.precision.w_bits},"
            f"{hw.precision.out_bits} fmt a={f.a} w={f.w} kib a={m.glb.a_kib} "
            f"w={m.glb.w_kib} out={m.glb.out_kib} bw dram={m.dram.bandwidth_bytes_per_cycle} "
            f"glb={m.glb.bandwidth_bytes_per_cycle} db={m.glb.double_buffer}")


def diff(got: dict[str, int], ref: dict[str, int]) -> str:
    return ", ".join(f"{k}: engine {got[k]} ref {ref[k]}" for k in KEYS if got[k] != ref[k])


def check_layer(layer, hw):
    try:
        ref = reference.simulate_layer(layer, hw)
    except SimulationError:  # a csr/coo width too narrow for the layer: both refuse
        with pytest.raises(SimulationError):
            engine.simulate_layer(layer, hw)
        return
    got = as_ints(engine.simulate_layer(layer, hw))
    assert got == {k: ref[k] for k in KEYS}, (
        f"{layer.kind} a{layer.a.shape} w{layer.w.shape} frames={layer.frames} "
        f"stride={layer.stride} pad={layer.padding} dil={layer.dilation} "
        f"groups={layer.groups} | {describe_hw(hw)} | {diff(got, ref)}")


def check_gemm(a, w, hw):
    try:
        ref = reference.simulate_gemm(a, w, hw)
    except SimulationError:  # a csr/coo width too narrow for the GEMM: both refuse
        with pytest.raises(SimulationError):
            engine.simulate_gemm(a, w, hw)
        return
    got = as_ints(engine.simulate_gemm(a, w, hw))
    assert got == {k: ref[k] for k in KEYS}, (
        f"a={a.tolist()} w={w.tolist()} | {describe_hw(hw)} | {diff(got, ref)}")


# --------------------------------------------------------------------------- strategies


@st.composite
def operand(draw, shape):
    """int8 values: a density of random nonzeros (0 and 1 included), or raw hypothesis
    elements biased to zero (long zero runs exercise RLE)."""
    if draw(st.booleans(), label="by density"):
        dens = draw(st.sampled_from(DENSITIES), label="density")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
        vals = rng.integers(1, 128, size=shape) * rng.choice([-1, 1], size=shape)
        return np.where(rng.random(shape) < dens, vals, 0).astype(np.int8)
    return draw(hnp.arrays(np.int8, shape,
                           elements=st.sampled_from([0, 0, 0, 0, 1, -1, 7, 127])))


def partition(draw, need: int, label: str) -> float:
    """A partition size in KiB that the loader accepts (>= ``need`` bytes)."""
    choice = draw(st.sampled_from(["min", "1.5min", "2min", "kib", "big"]), label=label)
    if choice == "min":
        return need / 1024
    if choice == "1.5min":
        return 1.5 * need / 1024
    if choice == "2min":
        return 2 * need / 1024
    if choice == "big":
        return 64.0
    kib = draw(st.sampled_from([0.0625, 0.125, 0.25, 0.5, 1.0, 4.0]), label=label + " kib")
    return max(kib, need / 1024)


@st.composite
def hw_case(draw):
    rows, cols, p = (draw(st.integers(1, 4), label=x) for x in ("R", "C", "p"))
    a_bits = draw(st.sampled_from([8, 8, 4, 16, 3]), label="a_bits")
    w_bits = draw(st.sampled_from([8, 8, 4, 2]), label="w_bits")
    out_bits = draw(st.sampled_from([32, 32, 16, 24]), label="out_bits")
    kw = {
        "fa": draw(st.sampled_from(KINDS), label="format a"),
        "fw": draw(st.sampled_from(KINDS), label="format w"),
        "run_bits": draw(st.integers(1, 3), label="run_bits"),
        # auto, or fixed widths that small tiles fit and some they do not (both raise)
        "index_bits": draw(st.sampled_from(["auto", "auto", 1, 2, 3, 4, 5]),
                           label="index_bits"),
        "ptr_bits": draw(st.sampled_from(["auto", "auto", 3, 5, 6, 8]), label="ptr_bits"),
        "dram_bw": draw(st.sampled_from([INF, 1.0, 3.5, 8.0]), label="dram bw"),
        "glb_bw": draw(st.sampled_from([INF, 1.0, 2.5, 8.0]), label="glb bw"),
        "db": draw(st.booleans(), label="double buffer"),
        "a_kib": partition(draw, rows * cols * -(-a_bits // 8), "a_kib"),
        "w_kib": partition(draw, rows * cols * -(-w_bits // 8), "w_kib"),
        "out_kib": partition(draw, rows * cols * -(-out_bits // 8), "out_kib"),
    }
    flow = draw(st.sampled_from(DATAFLOWS), label="dataflow")
    policy = draw(st.sampled_from(POLICIES), label="policy")
    return make_hw(rows, cols, p, flow, policy, a_bits=a_bits, w_bits=w_bits,
                   out_bits=out_bits, **kw)


@st.composite
def conv_layer(draw, nsp, frames):
    groups = draw(st.integers(1, 3), label="groups")
    c_g, n_g = draw(st.integers(1, 2), label="c_g"), draw(st.integers(1, 3), label="n_g")
    batch = draw(st.integers(1, 2), label="batch")
    kernel, stride, pad, dil, size = draw(conv_geometry(nsp, 3))
    lead = (frames,) if frames else ()
    x = draw(operand((*lead, batch, groups * c_g, *size)), label="x")
    wt = draw(operand((groups * n_g, c_g, *kernel)), label="weight")
    make = {1: conv1d, 2: conv2d, 3: conv3d}[nsp]
    return make("c", x, wt, stride=stride, padding=pad, dilation=dil, groups=groups,
                frames=bool(frames))


@st.composite
def layer_of(draw):
    kind = draw(st.sampled_from(["linear", "conv2d", "conv1d", "matmul", "conv3d"]),
                label="kind")
    frames = draw(st.sampled_from([0, 0, 1, 2, 3]), label="frames")
    lead = (frames,) if frames else ()
    if kind == "conv2d":
        layer = draw(conv_layer(2, frames))
    elif kind == "conv1d":
        layer = draw(conv_layer(1, frames))
    elif kind == "conv3d":
        layer = draw(conv_layer(3, frames))
    elif kind == "linear":
        batch_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        fin, fout = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        x = draw(operand((*lead, *batch_shape, fin)), label="x")
        wt = draw(operand((fout, fin)), label="weight")
        layer = linear("l", x, wt, frames=bool(frames))
    else:
        batch_shape = tuple(draw(st.lists(st.integers(1, 2), min_size=0, max_size=2)))
        m, k, n = (draw(st.integers(1, 7), label=x) for x in "mkn")
        a = draw(operand((*lead, *batch_shape, m, k)), label="a")
        b = draw(operand((*lead, *batch_shape, k, n)), label="b")
        layer = matmul("m", a, b, frames=bool(frames))
    validate_layer(layer, where="test")
    return layer


def _dense_linear(val_x, val_w, frames=2):
    x = np.full((frames, 5, 6), val_x, np.int8)
    wt = np.full((7, 6), val_w, np.int8)
    return linear("l", x, wt, frames=True)


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(layer=layer_of(), hw=hw_case())
@example(layer=_dense_linear(0, 0),  # all zero
         hw=make_hw(3, 2, 1, "ws", "skip_both", fa="rle", fw="csr", run_bits=1,
                    index_bits="auto", ptr_bits="auto", a_kib=6 / 1024, out_kib=24 / 1024,
                    dram_bw=1.0, glb_bw=2.5, db=False))
@example(layer=_dense_linear(3, -2),  # all dense
         hw=make_hw(2, 3, 2, "is", "none", fa="bitmask", fw="coo", index_bits="auto",
                    a_kib=6 / 1024, w_kib=6 / 1024, out_kib=24 / 1024, dram_bw=3.5,
                    glb_bw=8.0))
@example(layer=_dense_linear(1, 1),  # all dense, os, W streamed once per M tile
         hw=make_hw(2, 2, 1, "os", "gate", fa="csr", fw="rle", run_bits=2,
                    a_kib=4 / 1024, w_kib=4 / 1024, out_kib=16 / 1024, dram_bw=1.0,
                    glb_bw=INF))
def test_engine_layer_memory_matches_reference(layer, hw):
    check_layer(layer, hw)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), hw=hw_case())
def test_engine_gemm_memory_matches_reference(data, hw):
    m, k, n = (data.draw(st.integers(1, 9), label=x) for x in "MKN")
    a = data.draw(operand((m, k)), label="a")
    w = data.draw(operand((k, n)), label="w")
    check_gemm(a, w, hw)


@pytest.mark.parametrize("flow", DATAFLOWS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_format_and_dataflow_both_residencies(flow, kind):
    """Deterministic coverage: each format x dataflow, with operands resident and not,
    psums spilling and not, stalls with and without double buffering."""
    rng = np.random.default_rng(hash((flow, kind)) % 2**32)
    for dens in (0.0, 1.0, 0.3):
        a = np.where(rng.random((7, 9)) < dens, rng.integers(1, 9, (7, 9)), 0).astype(np.int8)
        w = np.where(rng.random((9, 5)) < dens, rng.integers(1, 9, (9, 5)), 0).astype(np.int8)
        for small in (True, False):
            for db in (True, False):
                kib = dict(a_kib=4 / 1024, w_kib=4 / 1024, out_kib=16 / 1024) if small \
                    else {}
                # 9-long fibers need 4 index bits; 7x9 and 9x5 operands 6 pointer bits
                hw = make_hw(2, 2, 2, flow, "skip_a", fa=kind, fw=kind, run_bits=2,
                             index_bits=4, ptr_bits=6, dram_bw=3.5, glb_bw=2.5, db=db, **kib)
                check_gemm(a, w, hw)


# --------------------------------------------------------------------------- reference


def test_reference_hand_os_stalls():
    """os on 2x2, A 3x2 and W 2x3 all ones, dense int8: 4 folds of 2 + 2 cycles (fill
    per fold, SCALE-Sim's count).

    The GLB tile is the whole GEMM (A 6 bytes, W 6, x2 fits 64 KiB): one tile, its 12
    DRAM bytes on the first fold. GLB reads per fold: A (4, 4, 2, 2) + W (4, 2, 4, 2)
    bytes; outputs (4, 2, 2, 1) bytes. With dram 1 B/cycle and glb 2 B/cycle the
    demand-driven timeline (docs/memory-model.md, "Stalls"): the fetch lands at 12; GLB
    reads (4, 3, 3, 2) cycles, GLB writes (2, 1, 1, 1), DRAM writes (4, 2, 2, 1).
    Double buffered: reads 0 and 1 run 0-7 beside the fetch; fold 0 computes 12-16,
    then on the GLB port write 0 (16-18) and read 2 (18-21); fold 1 16-20, write 1
    21-22, read 3 22-24; fold 2 21-25, fold 3 25-29; on the DRAM channel the writes
    16-20, 20-22, 25-27 and 29-30: 30 cycles. Without, each fold's reads wait for the
    fold before and its writes on the port: fold 0 12-16, (write 2 + read 3) 16-21,
    fold 1 21-25, (1 + 3) 25-29, fold 2 29-33, (1 + 2) 33-36, fold 3 36-40, its
    writes 40-41: 41.
    """
    a, w = np.ones((3, 2), np.int8), np.ones((2, 3), np.int8)
    res = reference.simulate_gemm(a, w, make_hw(2, 2, 1, "os", dram_bw=1.0, glb_bw=2.0,
                                                timing="scalesim"), with_mapping=True)
    expect = {"folds": 4, "compute_cycles": 16, "dram_a_read_bytes": 6,
              "dram_w_read_bytes": 6, "glb_a_read_bytes": 12, "glb_w_read_bytes": 12,
              "glb_out_write_bytes": 9, "dram_out_write_bytes": 9, "rf_a_read_bytes": 18,
              "rf_out_read_bytes": 72, "rf_a_write_bytes": 12, "glb_psum_read_bytes": 0,
              "cycles": 30, "stall_cycles": 14,
              "map_order": "mnk", "map_tm": 3, "map_tn": 3, "map_tk": 2}
    assert {k: res[k] for k in expect} == expect
    res = reference.simulate_gemm(a, w, make_hw(2, 2, 1, "os", dram_bw=1.0, glb_bw=2.0,
                                                db=False, timing="scalesim"))
    assert res["cycles"] == 41


def test_reference_hand_ws_tiled():
    """ws on 2x2, A 3x3, W 3x4 all ones, a_kib 4 bytes, out_kib 16 bytes, no double
    buffering. auto halves from the whole GEMM (3, 4, 3): A 9 bytes > 4, halve k (an
    array dim) to 2: A 6 > 4, k is one fold, halve m (temporal) to 2: A 4 fits. Tk < K,
    so the 2x4 output tile (32 bytes) must fit 16: halve n to 2. Tile (2, 2, 2), order
    nmk, trips m 2, n 2, k 2. A (m, k) is fetched once per n: 2 x 9 = 18 bytes; W
    (n, k) once per m: 2 x 12 = 24; k runs inside the output tile's loops: no partial
    sums reach DRAM (the old model spilled 48 + 48 bytes here). GLB partial sums stay
    per array fold: 48 read, 48 written."""
    a, w = np.ones((3, 3), np.int8), np.ones((3, 4), np.int8)
    kw = dict(a_kib=4 / 1024, out_kib=16 / 1024, dram_bw=4.0, timing="scalesim")
    hw = make_hw(2, 2, 1, "ws", db=False, **kw)
    res = reference.simulate_gemm(a, w, hw, with_mapping=True)
    expect = {"compute_cycles": 28, "dram_a_read_bytes": 18, "glb_a_write_bytes": 18,
              "dram_w_read_bytes": 24, "dram_psum_read_bytes": 0,
              "dram_psum_write_bytes": 0, "glb_psum_read_bytes": 48,
              "glb_psum_write_bytes": 48, "glb_out_write_bytes": 12,
              "glb_a_read_bytes": 18, "glb_w_read_bytes": 12,
              "map_order": "nmk", "map_tm": 2, "map_tn": 2, "map_tk": 2}
    assert {k: res[k] for k in expect} == expect
    check_gemm(a, w, hw)
    # k outermost: each output tile is left after every K tile, (2 - 1) round trips of
    # its partial sums: 4 tiles (2x2, 1x2, ...) = 16 + 16 + 8 + 8 bytes each way
    hw_k = hw.with_overrides({"mapping.loop_order": "kmn", "mapping.glb_tile": [2, 2, 2]})
    res = reference.simulate_gemm(a, w, hw_k)
    assert res["dram_psum_read_bytes"] == res["dram_psum_write_bytes"] == 48
    check_gemm(a, w, hw_k)


def test_reference_weights_resident_across_frames():
    """A linear layer's weights that fit are read once per layer, not per frame; a
    matmul's b is per frame; conv A is the unique input, not the im2col view."""
    x = np.ones((3, 2, 4), np.int8)
    wt = np.ones((5, 4), np.int8)
    res = reference.simulate_layer(linear("l", x, wt, frames=True), make_hw(2, 2))
    assert res["dram_w_read_bytes"] == 20 and res["dram_a_read_bytes"] == 3 * 8
    hw = make_hw(2, 2, w_kib=16 / 1024)  # 20 bytes do not fit: os reads W per M tile
    res = reference.simulate_layer(linear("l", x, wt, frames=True), hw)
    assert res["dram_w_read_bytes"] == 3 * 1 * 20
    b = np.ones((3, 4, 5), np.int8)
    res = reference.simulate_layer(matmul("m", x, b, frames=True), make_hw(2, 2))
    assert res["dram_w_read_bytes"] == 3 * 20
    x = np.ones((1, 2, 5, 5), np.int8)
    wt = np.ones((4, 1, 3, 3), np.int8)
    res = reference.simulate_layer(conv2d("c", x, wt, padding=1, groups=2), make_hw(2, 2))
    assert res["dram_a_read_bytes"] == 50 and res["glb_a_read_bytes"] > 50


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), hw=hw_case())
def test_reference_zeroing_never_adds_traffic_or_cycles(data, hw):
    m, k, n = (data.draw(st.integers(1, 7), label=x) for x in "MKN")
    a = data.draw(operand((m, k)), label="a")
    w = data.draw(operand((k, n)), label="w")
    which = data.draw(st.sampled_from(["a", "w"]), label="which")
    t = a if which == "a" else w
    nz = np.argwhere(t != 0)
    if len(nz) == 0:
        return
    r, c = nz[data.draw(st.integers(0, len(nz) - 1), label="element")]
    t2 = t.copy()
    t2[r, c] = 0
    a2, w2 = (t2 if which == "a" else a), (t2 if which == "w" else w)
    try:
        before = reference.simulate_gemm(a, w, hw, with_mapping=True)
    except SimulationError:  # widths too narrow, or no legal GLB tile (zeroing may help)
        return
    # on the same GLB mapping (zeroing never grows a tile, so it stays legal)
    hw = hw.with_overrides({"mapping.loop_order": before["map_order"], "mapping.glb_tile":
                            [before["map_tm"], before["map_tn"], before["map_tk"]]})
    after = reference.simulate_gemm(a2, w2, hw)
    for key in reference.MEMORY_FIELDS:
        if key == "stall_cycles":  # less compute can expose more of a load
            continue
        if key == "cycles" and hw.memory.dram.bandwidth_bytes_per_cycle != INF:
            continue  # integer shares of a DRAM pass can move: see the test below
        assert after[key] <= before[key], key


def test_no_legal_tile_is_one_line_error():
    """A partition of one dense array tile cannot hold that tile twice: with double
    buffering no GLB tile is legal, and both models refuse the layer in one line that
    names the layer, the operand and the sizes; without it the tile fits."""
    a = np.array([[0, 1], [1, 0], [0, 1]], np.int8)
    w = np.ones((2, 1), np.int8)
    hw = make_hw(1, 1, 1, "is", "none", fa="bitmask", dram_bw=1.0, a_kib=1 / 1024,
                 w_kib=1 / 1024, out_kib=4 / 1024, timing="scalesim")
    with pytest.raises(SimulationError, match=r"'gemm'.*A tile.*a_kib") as err:
        engine.simulate_gemm(a, w, hw)
    assert "\n" not in str(err.value)
    with pytest.raises(SimulationError):
        reference.simulate_gemm(a, w, hw)
    check_gemm(a, w, make_hw(1, 1, 1, "is", "none", fa="bitmask", dram_bw=1.0,
                             a_kib=1 / 1024, w_kib=1 / 1024, out_kib=4 / 1024, db=False))
