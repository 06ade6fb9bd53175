"""Gating, padding and the cost of skipping (docs/energy.md): engine == reference on every
integer field, and the invariants the counts obey."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import conv_geometry

import accelsim
from accelsim import load_hwconfig, reference
from accelsim.io.trace import conv1d, conv2d, conv3d, linear
from accelsim.model import engine

DATAFLOWS = ("os", "ws", "is")
POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")
FORMATS = ("dense", "bitmask", "rle", "csr", "coo")


def hw_of(rows=2, cols=2, p=1, flow="os", policy="gate", gate_on="a", **extra):
    raw = {"name": "t", "array": {"rows": rows, "cols": cols, "macs_per_pe": p},
           "dataflow": flow, "zero_policy": policy, "gate_on": gate_on}
    raw.update(extra)
    return load_hwconfig(raw)


def _operand(rng, shape, density):
    vals = rng.integers(1, 100, size=shape) * rng.choice([-1, 1], size=shape)
    return np.where(rng.random(shape) < density, vals, 0).astype(np.int8)


def _ints(d, keys):
    return {k: int(d[k]) for k in keys}


def check_layer(layer, hw):
    ref = reference.simulate_layer(layer, hw)
    got = engine.simulate_layer(layer, hw).as_dict()
    missing = set(ref) - set(got)
    assert not missing, missing
    diff = {k: (int(got[k]), v) for k, v in ref.items() if int(got[k]) != v}
    assert not diff, f"{hw.dataflow}/{hw.zero_policy} engine != reference: {diff}"
    return ref


# --------------------------------------------------------------------------- gating


@pytest.mark.parametrize("gate_on", ["a", "w", "both"])
def test_gate_on_counts_and_rf_reads(gate_on):
    rng = np.random.default_rng(1)
    a, w = _operand(rng, (9, 12), 0.4), _operand(rng, (12, 7), 0.6)
    hw = hw_of(3, 2, 1, "os", "gate", gate_on)
    got = engine.simulate_gemm(a, w, hw)
    az, wz = (a != 0).astype(int), (w != 0).astype(int)
    both = int((az @ wz).sum())
    perf = {"a": int(az.sum()) * w.shape[1], "w": int(wz.sum()) * a.shape[0],
            "both": both}[gate_on]
    assert got["macs_performed"] == perf
    assert got["macs_gated"] == a.size * w.shape[1] - perf
    # a gated pair reads no operand from the register files and does not accumulate
    assert got["rf_a_read_bytes"] == got["rf_w_read_bytes"] == perf
    dense = engine.simulate_gemm(a, w, hw_of(3, 2, 1, "os", "none"))
    assert dense["rf_w_read_bytes"] > got["rf_w_read_bytes"]
    assert dense["compute_cycles"] == got["compute_cycles"]  # gating never changes time


def test_gate_on_default_is_activations():
    assert load_hwconfig("gated_os_16x16").gate_on == "a"
    with pytest.raises(accelsim.ConfigError, match="gate_on: expected one of a, w, both"):
        hw_of(gate_on="x")


# --------------------------------------------------------------------------- properties


@st.composite
def layer_and_hw(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    da = draw(st.sampled_from([0.0, 1.0, 0.3, 0.7]), label="density a")
    dw = draw(st.sampled_from([0.0, 1.0, 0.4, 0.8]), label="density w")
    kind = draw(st.sampled_from(["conv2d", "conv1d", "conv3d", "linear"]), label="kind")
    frames = draw(st.sampled_from([0, 0, 2]), label="frames")
    lead = (frames,) if frames else ()
    if kind == "linear":
        x = _operand(rng, (*lead, draw(st.integers(1, 5)), draw(st.integers(1, 8))), da)
        layer = linear("l", x, _operand(rng, (draw(st.integers(1, 6)), x.shape[-1]), dw),
                       frames=bool(frames))
    else:
        nsp = {"conv1d": 1, "conv2d": 2, "conv3d": 3}[kind]
        kernel, stride, pad, dil, size = draw(conv_geometry(nsp, 2 if nsp == 3 else 3))
        groups = draw(st.integers(1, 2))
        c_g, n_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        x = _operand(rng, (*lead, 1, groups * c_g, *size), da)
        wt = _operand(rng, (groups * n_g, c_g, *kernel), dw)
        make = {1: conv1d, 2: conv2d, 3: conv3d}[nsp]
        layer = make("c", x, wt, stride=stride, padding=pad, dilation=dil, groups=groups,
                     frames=bool(frames))
    fmt = {x: {"kind": draw(st.sampled_from(FORMATS), label=f"format {x}"),
               "run_bits": draw(st.integers(1, 4)), "index_bits": draw(st.integers(1, 8))}
           for x in "aw"}
    hw = hw_of(draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
               draw(st.sampled_from(DATAFLOWS)), draw(st.sampled_from(POLICIES)),
               draw(st.sampled_from(["a", "w", "both"])),
               skip_padding=draw(st.booleans(), label="skip_padding"), formats=fmt)
    return layer, hw


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=layer_and_hw())
def test_engine_matches_reference_gate_padding_skip_cost(case):
    layer, hw = case
    ref = check_layer(layer, hw)
    assert (ref["macs_performed"] + ref["macs_gated"] + ref["macs_skipped"]
            + ref["macs_padding"] == ref["macs_dense"])
    if not hw.skip_padding:
        assert ref["macs_padding"] == 0
    if hw.zero_policy not in ("skip_a", "skip_w", "skip_both"):
        assert ref["skip_scan_ops"] == ref["skip_decode_ops"] == 0
