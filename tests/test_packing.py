"""Grouped convolutions packed side by side (``array.pack_groups``, docs/timing.md):
closed forms, MAC counts unchanged, utilisation, and engine == reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from strategies import conv_geometry, sync_overrides
from test_reference_property import DATAFLOWS, POLICIES, fields, int8_operand

from accelsim import load_hwconfig, reference
from accelsim.errors import ConfigError
from accelsim.io.trace import conv1d, conv2d, validate_layer
from accelsim.model import engine
from accelsim.model.dataflow import dense_cycles

MAC_KEYS = ("macs_dense", "macs_performed", "macs_gated", "macs_skipped", "macs_padding",
            "skip_scan_ops", "skip_decode_ops", "rf_a_meta_read_bits", "rf_w_meta_read_bits")


def _hw(flow, policy="none", pack="auto", rows=32, cols=32, **extra):
    return load_hwconfig({"name": "t", "array": {"rows": rows, "cols": cols,
                                                 "pack_groups": pack},
                          "dataflow": flow, "zero_policy": policy, **extra})


def _depthwise(channels=8, size=6, density=1.0, seed=0, padding=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 100, (1, channels, size, size)).astype(np.int8)
    w = rng.integers(1, 100, (channels, 1, 3, 3)).astype(np.int8)
    if density < 1.0:
        x = np.where(rng.random(x.shape) < density, x, 0).astype(np.int8)
        w = np.where(rng.random(w.shape) < density, w, 0).astype(np.int8)
    return conv2d("dw", x, w, padding=padding, groups=channels)


# 3x3 depthwise, 8 channels of 8x8 (no padding): per group M = 36, K = 9, N = 1
@pytest.mark.parametrize("flow, width", [("os", 8), ("ws", 3), ("is", 3)])
def test_dense_depthwise_closed_form(flow, width):
    """Dense 3x3 depthwise on 32x32: G' = C // N (os), min(R // K, C // N) (ws),
    R // K (is); the packs of a frame (8 groups: os one of 8, ws/is 3 + 3 + 2) are dense
    block-diagonal GEMMs M x G'K x G'N, each timed by the dense closed form."""
    layer = _depthwise(size=8, padding=0)
    hw = _hw(flow)
    m, k, n, g = 36, 9, 1, 8
    sizes = [min(width, g - g0) for g0 in range(0, g, width)]
    want = sum(dense_cycles(hw, m, s * k, s * n) for s in sizes)
    # the same by hand for ws: one fold per pack of M = 36 steps (>= rows: 36), fill
    # 2R + C - 2 = 94 once per pack
    if flow == "ws":
        assert want == 3 * (94 + 36)
    stats = engine.simulate_layer(layer, hw)
    assert stats.gemm.packed_groups == width
    assert stats.compute_cycles == want
    off = engine.simulate_layer(layer, _hw(flow, pack="off"))
    assert off.gemm.packed_groups == 1
    assert off.compute_cycles == g * dense_cycles(hw, m, k, n)
    assert stats.compute_cycles < off.compute_cycles


@pytest.mark.parametrize("flow", DATAFLOWS)
@pytest.mark.parametrize("policy", POLICIES)
def test_mac_counts_unchanged_and_utilisation_improves(flow, policy):
    layer = _depthwise(channels=12, size=7, density=0.6, seed=3)
    on = engine.simulate_layer(layer, _hw(flow, policy))
    off = engine.simulate_layer(layer, _hw(flow, policy, pack="off"))
    d_on, d_off = on.as_dict(), off.as_dict()
    assert {k: d_on[k] for k in MAC_KEYS} == {k: d_off[k] for k in MAC_KEYS}
    # every traffic byte is the same data, moved as before
    for key, value in d_off.items():
        if key.endswith("_bytes") and not key.startswith("state_"):
            assert d_on[key] == value, key
    assert on.gemm.packed_groups > 1
    assert on.compute_cycles < off.compute_cycles  # same MACs in fewer cycles
    assert on.gemm.folds < off.gemm.folds


def test_not_packed_when_a_group_fills_the_array():
    x = np.ones((1, 8, 5, 5), np.int8)
    w = np.ones((8, 4, 3, 3), np.int8)  # K = 36 > 32 rows
    layer = conv2d("g", x, w, groups=2)
    assert engine.simulate_layer(layer, _hw("ws")).gemm.packed_groups == 1
    assert engine.simulate_layer(layer, _hw("is")).gemm.packed_groups == 1
    # os packs along N: N = 4 of 32 columns, at most the 2 groups
    assert engine.simulate_layer(layer, _hw("os")).gemm.packed_groups == 2


def test_report_column_and_config_error():
    import accelsim
    from accelsim.io.trace import Trace

    df = accelsim.simulate(Trace("dw", [_depthwise()]), _hw("ws"))
    assert df["packed_groups"].iloc[0] == 3
    with pytest.raises(ConfigError, match=r"array\.pack_groups: expected one of auto, off"):
        _hw("ws", pack="yes")


@st.composite
def grouped_case(draw):
    nsp = draw(st.sampled_from([1, 2]), label="spatial dims")
    groups = draw(st.integers(2, 6), label="groups")
    depthwise = draw(st.booleans(), label="depthwise")
    c_g = 1 if depthwise else draw(st.integers(1, 2), label="c_g")
    n_g = 1 if depthwise else draw(st.integers(1, 2), label="n_g")
    kernel, stride, pad, dil, size = draw(conv_geometry(nsp, 2))
    frames = draw(st.sampled_from([0, 0, 2]), label="frames")
    lead = (frames,) if frames else ()
    x = draw(int8_operand((*lead, 1, groups * c_g, *size)), label="x")
    if frames and draw(st.booleans(), label="unchanged groups"):
        # later frames repeat frame 0 on the first j groups: under delta with skip_a
        # those GEMMs are skipped whole, inside packs that still run
        j = c_g * draw(st.integers(1, groups), label="unchanged")
        x[1:, :, :j] = x[:1, :, :j]
    wt = draw(int8_operand((groups * n_g, c_g, *kernel)), label="weight")
    make = conv1d if nsp == 1 else conv2d
    layer = make("g", x, wt, stride=stride, padding=pad, dilation=dil, groups=groups,
                 frames=bool(frames))
    validate_layer(layer, where="test")
    rows, cols = (draw(st.integers(1, 8), label=x) for x in ("R", "C"))
    p = draw(st.integers(1, 3), label="p")
    flow = draw(st.sampled_from(DATAFLOWS), label="dataflow")
    policy = draw(st.sampled_from(POLICIES), label="policy")
    over = draw(sync_overrides(p), label="sync")
    over["skip_padding"] = draw(st.booleans(), label="skip_padding")
    if frames and draw(st.booleans(), label="delta"):
        over["delta.enabled"] = True
    hw = load_hwconfig({"name": "t", "array": {"rows": rows, "cols": cols, "macs_per_pe": p},
                        "dataflow": flow, "zero_policy": policy}, over)
    return layer, hw


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=grouped_case())
def test_grouped_engine_matches_reference(case):
    layer, hw = case
    ref = reference.simulate_layer(layer, hw)
    stats = engine.simulate_layer(layer, hw)
    event(f"packed: {stats.gemm.packed_groups > 1}")
    got = fields(stats, keys=list(ref))
    assert got == ref, (f"{layer.kind} a{layer.a.shape} w{layer.w.shape} "
                        f"groups={layer.groups} {hw.dataflow}/{hw.zero_policy} "
                        f"{hw.array.rows}x{hw.array.cols}: engine {got} != reference {ref}")


def test_report_dir_mapping_efficiency_counts_the_packed_groups():
    """SCALE-Sim's Mapping Efficiency %: 8 depthwise groups on 32x32 ws are 3 packs, each
    fold holding 8/3 groups' 9 x 1 blocks of 1024 PEs on average."""
    import accelsim
    from accelsim.analysis.reportdir import scalesim_reports
    from accelsim.io.trace import Trace

    trace = Trace("dw", [_depthwise(size=8, padding=0)])
    for pack, want in (("auto", 100.0 * (8 / 3) * 9 / 1024), ("off", 100.0 * 9 / 1024)):
        hw = _hw("ws", pack=pack)
        comp, _ = scalesim_reports(accelsim.simulate(trace, hw), hw)
        assert comp["Mapping Efficiency %"].iloc[0] == pytest.approx(want)


def test_pack_timing_sits_on_its_first_active_group():
    """Delta frames: a group whose input did not change is skipped whole (skip_a); its
    pack still runs, and the packed cycles sit on the first group that runs."""
    rng = np.random.default_rng(5)
    x = rng.integers(1, 50, (2, 1, 4, 5, 5)).astype(np.int8)
    x[1, :, :2] = x[0, :, :2]  # groups 0 and 1 unchanged in frame 1
    w = rng.integers(1, 50, (4, 1, 3, 3)).astype(np.int8)
    layer = conv2d("dw", x, w, groups=4, frames=True)
    hw = _hw("ws", "skip_a", rows=32, cols=8, delta={"enabled": True})
    stats = engine.simulate_layer(layer, hw)
    assert stats.gemm.packed_groups == 3  # 32 // 9
    assert stats.gemm.active[1].tolist() == [False, False, True, True]
    cyc = stats.gemm.fold_cycles[:, :, 0, 0]
    assert (cyc[0] > 0).tolist() == [True, False, False, True]  # packs {0, 1, 2}, {3}
    assert (cyc[1] > 0).tolist() == [False, False, True, True]
    ref = reference.simulate_layer(layer, hw)
    assert fields(stats, keys=list(ref)) == ref
