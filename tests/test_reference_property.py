"""Property tests: the engine reports exactly what the cycle-stepping reference does.

Hypothesis draws small GEMMs and layers (all-zero and all-dense operands included),
arrays up to 4x4 PEs, every dataflow, zero policy and sync mode (with scope, look-ahead,
load balancing and fold overlap); every integer field must match.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import conv_geometry, sync_overrides

from accelsim import load_hwconfig, reference
from accelsim.io.trace import conv1d, conv2d, conv3d, linear, matmul, validate_layer

engine = pytest.importorskip("accelsim.model.engine")

DATAFLOWS = ("os", "ws", "is")
POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")
FIELDS = reference.FIELDS
#: density endpoints first so that shrinking goes to all-zero operands
DENSITIES = (0.0, 1.0, 0.1, 0.3, 0.5, 0.7, 0.9)


def hw_of(rows, cols, p, flow, policy, overrides=None):
    return load_hwconfig({"name": "t", "array": {"rows": rows, "cols": cols,
                                                 "macs_per_pe": p},
                          "dataflow": flow, "zero_policy": policy}, overrides)


def fields(res, keys=FIELDS) -> dict[str, int]:
    """The reference's integer fields of an engine result (dict or stats object)."""
    if not isinstance(res, Mapping):
        res = res.as_dict() if hasattr(res, "as_dict") else {k: getattr(res, k)
                                                              for k in keys}
    out = {k: res[k] for k in keys}
    for k, v in out.items():
        assert isinstance(v, (int, np.integer)), (k, type(v))
    return {k: int(v) for k, v in out.items()}


def check_gemm(a, w, hw):
    ref = reference.simulate_gemm(a, w, hw)
    got = fields(engine.simulate_gemm(a, w, hw), keys=list(ref))
    assert got == ref, (f"engine {got} != reference {ref} for {hw.dataflow}/{hw.zero_policy} "
                        f"sync {hw.sync} overlap {hw.fold_overlap}")


# --------------------------------------------------------------------------- strategies


@st.composite
def int8_operand(draw, shape):
    """An int8 array: either a given density of random nonzeros, or raw hypothesis
    elements biased to zero (good at finding structured edge cases)."""
    if draw(st.booleans(), label="by density"):
        dens = draw(st.sampled_from(DENSITIES), label="density")
        seed = draw(st.integers(0, 2**32 - 1), label="seed")
        rng = np.random.default_rng(seed)
        vals = rng.integers(1, 128, size=shape) * rng.choice([-1, 1], size=shape)
        return np.where(rng.random(shape) < dens, vals, 0).astype(np.int8)
    return draw(hnp.arrays(np.int8, shape,
                           elements=st.sampled_from([0, 0, 0, 1, -1, 5, 127, -128])))


@st.composite
def gemm_case(draw):
    m, k, n = (draw(st.integers(1, 10), label=x) for x in "MKN")
    rows, cols, p = (draw(st.integers(1, 4), label=x) for x in ("R", "C", "p"))
    flow = draw(st.sampled_from(DATAFLOWS), label="dataflow")
    policy = draw(st.sampled_from(POLICIES), label="policy")
    a = draw(int8_operand((m, k)), label="a")
    w = draw(int8_operand((k, n)), label="w")
    return a, w, hw_of(rows, cols, p, flow, policy, draw(sync_overrides(p), label="sync"))


def _case(m, k, n, rows, cols, p, flow, policy, a_val, w_val):
    return (np.full((m, k), a_val, np.int8), np.full((k, n), w_val, np.int8),
            hw_of(rows, cols, p, flow, policy))


# --------------------------------------------------------------------------- GEMM


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=gemm_case())
@example(case=_case(10, 10, 10, 4, 4, 4, "os", "skip_both", 0, 0))  # all zero
@example(case=_case(10, 10, 10, 3, 4, 3, "ws", "skip_both", 3, 0))
@example(case=_case(7, 9, 10, 4, 3, 2, "is", "gate", 0, 1))
@example(case=_case(10, 10, 10, 4, 4, 4, "os", "none", 1, 1))  # all dense
@example(case=_case(9, 10, 7, 3, 2, 3, "ws", "skip_a", -1, 2))
@example(case=_case(1, 1, 1, 1, 1, 1, "is", "skip_w", 1, -1))
def test_engine_gemm_matches_reference(case):
    check_gemm(*case)


@pytest.mark.parametrize("seed, flow, policy", [
    (i, f, p) for i, (f, p) in enumerate(itertools.product(DATAFLOWS, POLICIES))])
def test_engine_gemm_matches_reference_every_combo(seed, flow, policy):
    """Deterministic coverage of every dataflow x policy, endpoints included."""
    rng = np.random.default_rng(seed)
    for da, dw in ((0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0),
                                      (0.5, 0.5), (0.2, 0.8), (0.8, 0.3)):
        m, k, n = rng.integers(1, 11, size=3)
        rows, cols, p = rng.integers(1, 5, size=3)
        a = np.where(rng.random((m, k)) < da, rng.integers(1, 100, (m, k)), 0).astype(np.int8)
        w = np.where(rng.random((k, n)) < dw, -rng.integers(1, 100, (k, n)), 0).astype(np.int8)
        hw = hw_of(int(rows), int(cols), int(p), flow, policy)
        check_gemm(a, w, hw)


# --------------------------------------------------------------------------- layers


@st.composite
def conv_layer(draw, nsp, frames):
    groups = draw(st.integers(1, 3), label="groups")
    c_g, n_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2), label="batch")
    kernel, stride, pad, dil, size = draw(conv_geometry(nsp, 3))
    lead = (frames,) if frames else ()
    x = draw(int8_operand((*lead, batch, groups * c_g, *size)), label="x")
    wt = draw(int8_operand((groups * n_g, c_g, *kernel)), label="weight")
    make = {1: conv1d, 2: conv2d, 3: conv3d}[nsp]
    return make("c", x, wt, stride=stride, padding=pad, dilation=dil, groups=groups,
                frames=bool(frames))


@st.composite
def layer_case(draw):
    kind = draw(st.sampled_from(["conv2d", "conv1d", "linear", "matmul", "conv3d"]),
                label="kind")
    frames = draw(st.sampled_from([0, 0, 1, 2]), label="frames")
    lead = (frames,) if frames else ()
    if kind == "conv2d":
        layer = draw(conv_layer(2, frames))
    elif kind == "conv1d":
        layer = draw(conv_layer(1, frames))
    elif kind == "conv3d":
        layer = draw(conv_layer(3, frames))
    elif kind == "linear":
        batch_shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
        fin, fout = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        x = draw(int8_operand((*lead, *batch_shape, fin)), label="x")
        wt = draw(int8_operand((fout, fin)), label="weight")
        layer = linear("l", x, wt, frames=bool(frames))
    else:
        batch_shape = tuple(draw(st.lists(st.integers(1, 2), min_size=0, max_size=2)))
        m, k, n = (draw(st.integers(1, 6)) for _ in range(3))
        a = draw(int8_operand((*lead, *batch_shape, m, k)), label="a")
        b = draw(int8_operand((*lead, *batch_shape, k, n)), label="b")
        layer = matmul("m", a, b, frames=bool(frames))
    validate_layer(layer, where="test")
    rows, cols, p = (draw(st.integers(1, 4)) for _ in range(3))
    flow = draw(st.sampled_from(DATAFLOWS), label="dataflow")
    policy = draw(st.sampled_from(POLICIES), label="policy")
    return layer, hw_of(rows, cols, p, flow, policy, draw(sync_overrides(p), label="sync"))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=layer_case())
def test_engine_layer_matches_reference(case):
    layer, hw = case
    ref = reference.simulate_layer(layer, hw)
    got = fields(engine.simulate_layer(layer, hw), keys=list(ref))
    assert got == ref, (f"{layer.kind} a{layer.a.shape} w{layer.w.shape} "
                        f"frames={layer.frames} stride={layer.stride} pad={layer.padding} "
                        f"dil={layer.dilation} groups={layer.groups} "
                        f"{hw.dataflow}/{hw.zero_policy}: engine {got} != reference {ref}")
