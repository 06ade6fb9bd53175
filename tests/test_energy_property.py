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
from accelsim.model.energy import load_energy_table, prices

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
               "run_bits": draw(st.integers(1, 4)),
               "index_bits": draw(st.sampled_from(["auto", 6, 7, 8]))}
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


# --------------------------------------------------------------------------- per design


@pytest.mark.parametrize("fmt", FORMATS)
def test_cost_of_skipping_depends_on_how_the_design_finds_work(fmt):
    """At activation density 0.05, a design that enumerates activations (rle, csr, coo)
    pays per nonzero, never per zero pair; one that scans them pays per skipped pair."""
    rng = np.random.default_rng(3)
    a, w = _operand(rng, (32, 64), 0.05), _operand(rng, (64, 16), 1.0)
    hw = hw_of(4, 4, 1, "ws", "skip_a", formats={"a": {"kind": fmt}})
    df = accelsim.simulate(accelsim.Trace("t", [linear("l", a, w.T.copy())]), hw)
    r = df.iloc[0]
    if fmt in ("rle", "csr", "coo"):
        assert r.skip_scan_ops == 0
        assert r.skip_decode_ops == r.macs_performed
        bits = {"rle": 4, "csr": 8, "coo": 16}[fmt]
        assert r.rf_a_meta_read_bits == bits * r.macs_performed
        # the price per performed MAC does not depend on how many zeros were passed over
        p = prices(hw, load_energy_table(hw.energy))
        assert r.energy_skip_pj == pytest.approx(
            r.macs_performed * (p["decode"] + bits * p["rf_a"] / 8))
    else:
        assert r.skip_scan_ops == r.macs_skipped and r.skip_decode_ops == 0
        assert r.rf_a_meta_read_bits == (r.macs_dense if fmt == "bitmask" else 0)
    assert r.rf_w_meta_read_bits == 0


def test_two_enumerated_operands_merge():
    rng = np.random.default_rng(4)
    a, w = _operand(rng, (6, 20), 0.3), _operand(rng, (20, 5), 0.4)
    hw = hw_of(2, 2, 1, "os", "skip_both",
               formats={"a": {"kind": "csr"}, "w": {"kind": "coo", "index_bits": 5}})
    got = engine.simulate_gemm(a, w, hw)
    az, wz = (a != 0).astype(int), (w != 0).astype(int)
    both = int((az @ wz).sum())
    pa, pw = int(az.sum()) * w.shape[1], int(wz.sum()) * a.shape[0]
    assert got["macs_performed"] == both and got["skip_scan_ops"] == 0
    assert got["skip_decode_ops"] == pa + pw - both  # one merge step per union element
    assert got["rf_a_meta_read_bits"] == 8 * pa and got["rf_w_meta_read_bits"] == 10 * pw


def test_padding_is_not_sparsity():
    """A 3x3 convolution, padding 1, on a dense 8x8 input: 92 of 576 MACs are padding."""
    x, wt = np.ones((1, 1, 8, 8), np.int8), np.ones((1, 1, 3, 3), np.int8)
    layer = conv2d("c", x, wt, padding=1)
    for policy in POLICIES:
        on = engine.simulate_layer(layer, hw_of(4, 1, 1, "os", policy)).as_dict()
        off = engine.simulate_layer(layer, hw_of(4, 1, 1, "os", policy,
                                                 skip_padding=False)).as_dict()
        assert on["macs_padding"] == 92 and on["macs_skipped"] == 0
        assert on["macs_performed"] == 484 and off["macs_padding"] == 0
        assert on["compute_cycles"] <= off["compute_cycles"]
        if policy in ("skip_a", "skip_both"):
            assert off["macs_skipped"] == 92  # the old view: padding as zero activations
        else:
            assert off["macs_performed"] + off["macs_gated"] == 576
    df = accelsim.simulate(accelsim.Trace("t", [layer]), hw_of(4, 1, 1, "os", "skip_a"))
    assert df.density_a[0] == 1.0  # over the real input elements
