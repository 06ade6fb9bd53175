"""Closed-form checks of the reference model and of the engine.

Each check runs against both :mod:`accelsim.reference.model` and :mod:`accelsim.model.engine`
(the engine's cases are skipped while it cannot be imported).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accelsim import load_hwconfig, reference
from accelsim.io.trace import conv1d, conv2d, conv_out_size, linear, matmul

DATAFLOWS = ("os", "ws", "is")
POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")
FIELDS = reference.FIELDS


def _engine_gemm():
    try:
        engine = importlib.import_module("accelsim.model.engine")
    except ImportError as e:  # the engine is written in parallel with these tests
        pytest.skip(f"accelsim.model.engine not importable: {e}")
    return engine.simulate_gemm


@pytest.fixture(params=["reference", "engine"], scope="module")
def sim(request):
    """``simulate_gemm`` of one implementation, returning a plain dict of ints."""
    fn = reference.simulate_gemm if request.param == "reference" else _engine_gemm()

    def run(a, w, hw):
        res = fn(a, w, hw)
        return {k: res[k] for k in FIELDS}

    return run


def hw_of(rows, cols, p, flow, policy, timing="accelsim", **extra):
    """A config; ``extra`` are dotted overrides (``**{"sync.mode": "barrier"}``)."""
    return load_hwconfig({"name": "t", "array": {"rows": rows, "cols": cols,
                                                 "macs_per_pe": p},
                          "dataflow": flow, "zero_policy": policy, "timing": timing},
                         extra)


#: PEs independent for the whole fold, with a look-ahead as long as the fold: each PE's
#: time is ceil(its slots / p), the fold's is its slowest PE's (the model before sync)
DECOUPLED = {"sync.mode": "decoupled", "array.pe_buffer_bytes": 2**20, "sync.lookahead": 4096}


def gemm_cycles(flow, rows, cols, fold_steps, timing):
    """Compute cycles of one GEMM from its folds' steps: SCALE-Sim pays the fill per
    fold; with fold overlap it is paid once and a fold lasts at least ``rows`` cycles."""
    f = fill(flow, rows, cols)
    if timing == "scalesim":
        return sum(f + s for s in fold_steps)
    return f + sum(max(s, rows) for s in fold_steps)


def dims(flow, m, k, n):
    return {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[flow]


def fill(flow, rows, cols):
    return rows + cols - 2 if flow == "os" else 2 * rows + cols - 2


def n_folds(flow, m, k, n, rows, cols):
    d_rows, d_cols, _ = dims(flow, m, k, n)
    return math.ceil(d_rows / rows) * math.ceil(d_cols / cols)


def nonzero_int8(rng, shape):
    vals = rng.integers(1, 128, size=shape) * rng.choice([-1, 1], size=shape)
    return vals.astype(np.int8)


def sparse_int8(rng, shape, density):
    return np.where(rng.random(shape) < density, nonzero_int8(rng, shape), 0).astype(np.int8)


gemm_cfg = st.tuples(
    st.integers(1, 9), st.integers(1, 9), st.integers(1, 9),  # M, K, N
    st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),  # R, C, p
    st.sampled_from(DATAFLOWS),
)


# --------------------------------------------------------------------------- hand cases


@pytest.mark.parametrize(
    "policy, performed, gated, skipped, stepped",
    [
        # one PE (os 1x1, p=1) walks k = 0..3 with pairs (1,1) (0,1) (1,0) (0,0)
        ("none", 4, 0, 0, 4),
        ("gate", 2, 2, 0, 4),  # gate_on a (default): pairs with a = 0 are gated
        ("skip_a", 2, 0, 2, 2),
        ("skip_w", 2, 0, 2, 2),
        ("skip_both", 1, 0, 3, 1),
    ],
)
def test_hand_single_pe(sim, policy, performed, gated, skipped, stepped):
    a = np.array([[1, 0, 1, 0]], dtype=np.int8)
    w = np.array([[1], [1], [0], [0]], dtype=np.int8)
    res = sim(a, w, hw_of(1, 1, 1, "os", policy))
    assert res == {"macs_dense": 4, "macs_performed": performed, "macs_gated": gated,
                   "macs_skipped": skipped, "macs_padding": 0, "folds": 1,
                   "compute_cycles": stepped}


@pytest.mark.parametrize("sync, steps", [
    # u (steps some PE needs) = {0, 1, 2, 4}; p = 2 from a window of 2 steps: {0, 1},
    # {2} (PE 0 has no second pair in [2, 4)), {4}
    ({}, 3),
    # barrier every 2 steps: chunks [0,2) [2,4) [4,5): slowest PE 1 + 1 + 1
    ({"sync.mode": "barrier", "sync.barrier_steps": 2}, 3),
    # barrier every 5: PE 0 has 3 pairs in [0, 5) under a window of 2: {0,1} {2}
    ({"sync.mode": "barrier", "sync.barrier_steps": 5}, 2),
    # fifo of depth 1: one element in flight, one per cycle: 4
    ({"sync.mode": "fifo", "sync.fifo_depth": 1}, 4),
    # fifo deep enough: PE 0 takes {0,1} then {2}; PE 1 takes {4} at cycle 0: 2
    ({"sync.mode": "fifo", "sync.fifo_depth": 8}, 2),
    # independent PEs, unbounded look-ahead: ceil(3 / 2) = 2
    (DECOUPLED, 2),
    # lookahead 4 in lockstep: window [0, 4) takes PE 0's {0, 1}; then [2, 6): {2}, {4}
    ({"sync.lookahead": 4}, 2),
])
def test_hand_load_imbalance(sim, sync, steps):
    # os on a 2x1 array: PE 0 holds row m=0 (3 nonzeros), PE 1 holds m=1 (1 nonzero)
    a = np.array([[1, 2, 3, 0, 0], [0, 0, 0, 0, 4]], dtype=np.int8)
    w = np.ones((5, 1), dtype=np.int8)
    res = sim(a, w, hw_of(2, 1, 2, "os", "skip_a", "scalesim", **sync))
    assert res["compute_cycles"] == 1 + steps  # fill 1
    assert res["macs_performed"] == 4 and res["macs_skipped"] == 6


@pytest.mark.parametrize("timing, cycles", [
    ("scalesim", 2 * (9 + 2)),  # fill per fold
    ("accelsim", 9 + 4 + 4),  # fill once; each fold lasts at least R = 4 cycles
])
def test_hand_partial_fold_keeps_full_fill(sim, timing, cycles):
    # ws on 4x3: K=5 rows -> 2 row folds, N=1 -> 1 col fold; fill = 2*4+3-2 = 9, M = 2
    a = np.ones((2, 5), dtype=np.int8)
    w = np.ones((5, 1), dtype=np.int8)
    res = sim(a, w, hw_of(4, 3, 1, "ws", "none", timing))
    assert res["folds"] == 2
    assert res["compute_cycles"] == cycles


def test_hand_skipped_between_slots(sim):
    # os 1x1, p=2: pairs perf skip skip perf perf -> 3 slots -> 2 cycles; trailing skips
    # and skips between slot pairs cost no cycle
    a = np.array([[1, 0, 0, 1, 1, 0, 0]], dtype=np.int8)
    w = np.ones((7, 1), dtype=np.int8)
    res = sim(a, w, hw_of(1, 1, 2, "os", "skip_a"))
    assert res["compute_cycles"] == 2
    assert res["macs_skipped"] == 4 and res["macs_performed"] == 3


def test_result_fields_are_python_ints():
    rng = np.random.default_rng(0)
    res = reference.simulate_gemm(sparse_int8(rng, (3, 4), 0.5), sparse_int8(rng, (4, 2), 0.5),
                                  hw_of(2, 2, 1, "os", "skip_both"))
    assert set(FIELDS) <= set(res)
    assert all(type(v) is int for v in res.values())


# --------------------------------------------------------------------------- dense


@settings(max_examples=40, deadline=None)
@given(cfg=gemm_cfg, policy=st.sampled_from(POLICIES), seed=st.integers(0, 2**16))
@example(cfg=(1, 1, 1, 1, 1, 1, "os"), policy="none", seed=0)
@example(cfg=(9, 9, 9, 4, 4, 4, "is"), policy="skip_both", seed=0)
@pytest.mark.parametrize("timing", ["accelsim", "scalesim"])
def test_dense_cycles_formula(sim, cfg, policy, seed, timing):
    m, k, n, rows, cols, p, flow = cfg
    rng = np.random.default_rng(seed)
    a, w = nonzero_int8(rng, (m, k)), nonzero_int8(rng, (k, n))
    res = sim(a, w, hw_of(rows, cols, p, flow, policy, timing))
    folds = n_folds(flow, m, k, n, rows, cols)
    t = dims(flow, m, k, n)[2]
    assert res["folds"] == folds
    assert res["compute_cycles"] == gemm_cycles(flow, rows, cols, [math.ceil(t / p)] * folds,
                                                timing)
    assert res["macs_dense"] == res["macs_performed"] == m * k * n
    assert res["macs_gated"] == res["macs_skipped"] == 0


# --------------------------------------------------------------------------- all zero


@settings(max_examples=30, deadline=None)
@given(cfg=gemm_cfg, which=st.sampled_from(["a", "w", "both"]))
@pytest.mark.parametrize("timing", ["accelsim", "scalesim"])
def test_all_zero_skip_both(sim, cfg, which, timing):
    m, k, n, rows, cols, p, flow = cfg
    a = np.zeros((m, k), np.int8) if which in ("a", "both") else np.ones((m, k), np.int8)
    w = np.zeros((k, n), np.int8) if which in ("w", "both") else np.ones((k, n), np.int8)
    res = sim(a, w, hw_of(rows, cols, p, flow, "skip_both", timing))
    folds = n_folds(flow, m, k, n, rows, cols)
    assert res["macs_performed"] == res["macs_gated"] == 0
    assert res["macs_skipped"] == m * k * n
    assert res["folds"] == folds
    assert res["compute_cycles"] == gemm_cycles(flow, rows, cols, [0] * folds, timing)


@pytest.mark.parametrize("flow", DATAFLOWS)
def test_all_zero_one_sided_skip(sim, flow):
    m, k, n = 3, 5, 4
    zeros_a, ones_w = np.zeros((m, k), np.int8), np.ones((k, n), np.int8)
    res = sim(zeros_a, ones_w, hw_of(2, 3, 2, flow, "skip_a"))
    assert res["compute_cycles"] == gemm_cycles(flow, 2, 3, [0] * res["folds"], "accelsim")
    assert res["macs_skipped"] == m * k * n
    # skip_w does not look at A: everything is performed, dense timing
    res = sim(zeros_a, ones_w, hw_of(2, 3, 2, flow, "skip_w"))
    t = dims(flow, m, k, n)[2]
    assert res["compute_cycles"] == gemm_cycles(flow, 2, 3, [math.ceil(t / 2)] * res["folds"],
                                                "accelsim")
    assert res["macs_performed"] == m * k * n


# --------------------------------------------------------------------------- sparse


density = st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0])


@settings(max_examples=40, deadline=None)
@given(cfg=gemm_cfg, da=density, dw=density, seed=st.integers(0, 2**16))
def test_gate_keeps_cycles(sim, cfg, da, dw, seed):
    m, k, n, rows, cols, p, flow = cfg
    rng = np.random.default_rng(seed)
    a, w = sparse_int8(rng, (m, k), da), sparse_int8(rng, (k, n), dw)
    none = sim(a, w, hw_of(rows, cols, p, flow, "none"))
    gate = sim(a, w, hw_of(rows, cols, p, flow, "gate"))
    a_nz = int((a != 0).sum()) * n  # gate_on a (default): a pair is gated when a = 0
    assert gate["compute_cycles"] == none["compute_cycles"]
    assert gate["folds"] == none["folds"]
    assert gate["macs_performed"] + gate["macs_gated"] == m * k * n
    assert gate["macs_performed"] == a_nz
    assert gate["macs_skipped"] == 0
    assert none["macs_performed"] == m * k * n


@settings(max_examples=40, deadline=None)
@given(cfg=gemm_cfg, da=density, dw=density, seed=st.integers(0, 2**16))
def test_skip_counts_and_slowest_pe(sim, cfg, da, dw, seed):
    """Skip counts equal mask sums. Decoupled PEs with an unbounded look-ahead: a fold
    takes its slowest PE's ceil(slots / p). Lockstep with p = 1: the number of steps
    some PE of the fold needs."""
    m, k, n, rows, cols, p, flow = cfg
    rng = np.random.default_rng(seed)
    a, w = sparse_int8(rng, (m, k), da), sparse_int8(rng, (k, n), dw)
    ma, mw = (a != 0).astype(np.int64), (w != 0).astype(np.int64)
    ones_a, ones_w = np.ones_like(ma), np.ones_like(mw)
    # slots[m, k, n] per policy: which pairs take a slot
    slot_masks = {
        "skip_a": np.einsum("mk,kn->mkn", ma, ones_w),
        "skip_w": np.einsum("mk,kn->mkn", ones_a, mw),
        "skip_both": np.einsum("mk,kn->mkn", ma, mw),
    }
    order = {"os": "mnk", "ws": "knm", "is": "kmn"}[flow]
    for policy, slots3 in slot_masks.items():
        res = sim(a, w, hw_of(rows, cols, p, flow, policy, "scalesim", **DECOUPLED))
        assert res["macs_performed"] == int(slots3.sum())
        assert res["macs_skipped"] == m * k * n - int(slots3.sum())
        need = np.einsum(f"mkn->{order}", slots3)  # [D_rows, D_cols, T]
        per_pe = need.sum(axis=2)
        d_rows, d_cols = per_pe.shape
        slowest, union = [], []
        for i in range(0, d_rows, rows):
            for j in range(0, d_cols, cols):
                slowest.append(math.ceil(int(per_pe[i:i + rows, j:j + cols].max()) / p))
                union.append(int(need[i:i + rows, j:j + cols].any(axis=(0, 1)).sum()))
        assert res["compute_cycles"] == gemm_cycles(flow, rows, cols, slowest, "scalesim"), \
            policy
        lock = sim(a, w, hw_of(rows, cols, 1, flow, policy))
        assert lock["compute_cycles"] == gemm_cycles(flow, rows, cols, union, "accelsim"), \
            policy


@settings(max_examples=40, deadline=None)
@given(cfg=gemm_cfg, policy=st.sampled_from(POLICIES), da=density, dw=density,
       seed=st.integers(0, 2**16), data=st.data())
def test_zeroing_is_monotone(sim, cfg, policy, da, dw, seed, data):
    m, k, n, rows, cols, p, flow = cfg
    rng = np.random.default_rng(seed)
    a, w = sparse_int8(rng, (m, k), da), sparse_int8(rng, (k, n), dw)
    hw = hw_of(rows, cols, p, flow, policy)
    before = sim(a, w, hw)
    if data.draw(st.booleans(), label="zero in a"):
        a = a.copy()
        a[data.draw(st.integers(0, m - 1)), data.draw(st.integers(0, k - 1))] = 0
    else:
        w = w.copy()
        w[data.draw(st.integers(0, k - 1)), data.draw(st.integers(0, n - 1))] = 0
    after = sim(a, w, hw)
    assert after["macs_performed"] <= before["macs_performed"]
    assert after["compute_cycles"] <= before["compute_cycles"]
    assert after["folds"] == before["folds"]
    assert after["macs_dense"] == before["macs_dense"]


# --------------------------------------------------------------------------- lowering


def _direct_conv(x, weight, stride, padding, dilation, groups):
    """Direct convolution by shifted, strided slices of the padded input."""
    nsp = x.ndim - 2
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0)] + [(q, q) for q in padding])
    out = [conv_out_size(x.shape[2 + d], weight.shape[2 + d], stride[d], padding[d],
                         dilation[d]) for d in range(nsp)]
    c_g, n_g = weight.shape[1], weight.shape[0] // groups
    y = np.zeros((x.shape[0], weight.shape[0], *out), np.int64)
    for g in range(groups):
        xg = xp[:, g * c_g:(g + 1) * c_g]
        wg = weight[g * n_g:(g + 1) * n_g].astype(np.int64)
        for kpos in np.ndindex(*weight.shape[2:]):
            sl = tuple(slice(kpos[d] * dilation[d],
                             kpos[d] * dilation[d] + stride[d] * (out[d] - 1) + 1, stride[d])
                       for d in range(nsp))
            patch = xg[(slice(None), slice(None), *sl)]  # [B, c_g, *out]
            y[:, g * n_g:(g + 1) * n_g] += np.einsum("bc...,oc->bo...", patch,
                                                     wg[(slice(None), slice(None), *kpos)])
    return y


@pytest.mark.parametrize(
    "xshape, wshape, stride, padding, dilation, groups",
    [
        ((2, 4, 5, 6), (6, 2, 3, 2), (1, 2), (1, 0), (1, 2), 2),
        ((1, 3, 4, 4), (3, 1, 3, 3), (2, 1), (1, 1), (1, 1), 3),
        ((2, 2, 7), (4, 2, 3), (2,), (2,), (2,), 1),
        ((1, 6, 5), (6, 1, 2), (1,), (0,), (3,), 6),
    ],
)
def test_reference_im2col_matches_direct_conv(xshape, wshape, stride, padding, dilation,
                                              groups):
    rng = np.random.default_rng(1)
    x = sparse_int8(rng, xshape, 0.7)
    wt = sparse_int8(rng, wshape, 0.7)
    gemms = reference.model._im2col(x, wt, stride, padding, dilation, groups)
    y = _direct_conv(x, wt, stride, padding, dilation, groups)
    batch, out = x.shape[0], y.shape[2:]
    n_g = wt.shape[0] // groups
    assert len(gemms) == groups
    for g, (ga, gw) in enumerate(gemms):
        assert ga.shape == (batch * math.prod(out), wt.shape[1] * math.prod(wt.shape[2:]))
        np.testing.assert_array_equal(gw, wt[g * n_g:(g + 1) * n_g].reshape(n_g, -1).T)
        yg = ga.astype(np.int64) @ gw.astype(np.int64)  # [(b, *out), n_g]
        expect = np.moveaxis(y[:, g * n_g:(g + 1) * n_g], 1, -1).reshape(-1, n_g)
        np.testing.assert_array_equal(yg, expect)


def _mac_fields(res):
    return {k: v for k, v in res.items() if k in FIELDS}


def test_reference_layer_sums_gemms():
    rng = np.random.default_rng(2)
    hw = hw_of(2, 3, 2, "ws", "skip_both")

    def total(pairs):
        out = dict.fromkeys(FIELDS, 0)
        for ga, gw in pairs:
            for key, v in reference.simulate_gemm(ga, gw, hw).items():
                if key in out:  # MAC and compute-cycle fields add up over GEMMs
                    out[key] += v
        return out

    # linear with frames: one GEMM per frame, input flattened to [-1, in]
    x, wt = sparse_int8(rng, (2, 3, 2, 5), 0.5), sparse_int8(rng, (4, 5), 0.5)
    got = _mac_fields(reference.simulate_layer(linear("l", x, wt, frames=True), hw))
    assert got == total([(x[f].reshape(-1, 5), wt.T) for f in range(2)])
    # matmul: one GEMM per leading index
    a, b = sparse_int8(rng, (2, 3, 4, 5), 0.5), sparse_int8(rng, (2, 3, 5, 2), 0.5)
    got = _mac_fields(reference.simulate_layer(matmul("m", a, b), hw))
    assert got == total([(a[i, j], b[i, j]) for i in range(2) for j in range(3)])
    # conv2d / conv1d: dense GEMM count and shape of the lowering
    x, wt = np.ones((1, 4, 5, 5), np.int8), np.ones((6, 2, 3, 3), np.int8)
    got = reference.simulate_layer(conv2d("c", x, wt, stride=2, padding=1, groups=2), hw)
    assert got["macs_dense"] == 2 * (1 * 3 * 3) * (2 * 9) * 3
    x, wt = np.ones((3, 1, 2, 6), np.int8), np.ones((4, 1, 2), np.int8)
    got = reference.simulate_layer(conv1d("c", x, wt, dilation=2, groups=2, frames=True), hw)
    assert got["macs_dense"] == 3 * 2 * (1 * 4) * 2 * 2


# --- SIMD PEs (array.pe_simd): lanes on adjacent output columns share one activation

def _simd_hw(rows, cols, flow, policy, lanes, **array):
    return load_hwconfig({"name": "simd", "dataflow": flow, "zero_policy": policy,
                          "array": {"rows": rows, "cols": cols,
                                    "pe_simd": {"dim": "n", "width": lanes}} | array})


def test_simd_lanes_need_a_step_when_any_lane_does(sim):
    # 1x1 PE with 2 lanes, os skip_w: lane 0 needs k = 0, 2; lane 1 needs k = 1
    a = np.ones((1, 4), np.int8)
    w = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], np.int8)  # [K=4, N=2]
    got = sim(a, w, _simd_hw(1, 1, "os", "skip_w", 2))
    assert got["compute_cycles"] == 3  # the lanes' union {0, 1, 2}; fill 1 + 1 - 2 = 0
    assert got["macs_performed"] == 3 and got["macs_skipped"] == 5 and got["folds"] == 1
    # the same two columns on two decoupled 1x1 PEs (a 1x2 array) take 2 steps
    two = hw_of(1, 2, 1, "os", "skip_w", **{"sync.mode": "decoupled",
                                             "array.pe_buffer_bytes": 8})
    assert sim(a, w, two)["compute_cycles"] == 2 + 1  # max(2, rows) + fill 1 + 2 - 2


@pytest.mark.parametrize("flow", DATAFLOWS)
def test_simd_dense_cycles_closed_form(sim, flow):
    m, k, n = 9, 7, 11
    a, w = np.ones((m, k), np.int8), np.ones((k, n), np.int8)
    rows, cols = 4, 3
    hw = _simd_hw(rows, cols, flow, "none", 2)
    got = sim(a, w, hw)["compute_cycles"]
    d_rows, d_cols, t = dims(flow, m, k, n)
    if flow == "is":
        t = math.ceil(t / 2)  # a PE takes two adjacent n at once
    else:
        d_cols = math.ceil(d_cols / 2)  # a PE column holds two adjacent n
    folds = math.ceil(d_rows / rows) * math.ceil(d_cols / cols)
    assert got == fill(flow, rows, cols) + folds * max(t, rows)
    from accelsim.model.dataflow import dense_cycles

    assert got == dense_cycles(hw, m, k, n)


def test_simd_refuses_what_it_cannot_model():
    from accelsim.errors import ConfigError

    with pytest.raises(ConfigError, match="width: 2 lanes per PE need array.macs_per_pe"):
        _simd_hw(2, 2, "os", "skip_a", 2, macs_per_pe=2)
    with pytest.raises(ConfigError, match="need sync.balance none"):
        load_hwconfig({"name": "s", "dataflow": "os", "zero_policy": "skip_a",
                       "array": {"rows": 2, "cols": 2, "pe_simd": {"width": 2}},
                       "sync": {"balance": "greedy_filter"}})
