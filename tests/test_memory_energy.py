"""Invariants of the memory, stall and energy model (docs/memory-model.md)."""

import math

import numpy as np
import pytest
from conftest import hw_dict
from hypothesis import given, settings
from hypothesis import strategies as st

import accelsim
from accelsim.errors import ConfigError, SimulationError
from accelsim.io import trace as tr
from accelsim.io.synthetic import random_tensor, tiny_cnn_trace
from accelsim.model.energy import (
    COMPONENTS,
    ENERGY_DIR,
    energy_of,
    load_energy_table,
    prices,
    reprice,
)
from accelsim.model.engine import simulate_layer
from accelsim.model.memory import TRAFFIC_KEYS

FORMATS = [{"kind": "dense"}, {"kind": "bitmask"}, {"kind": "rle", "run_bits": 2},
           {"kind": "csr", "index_bits": "auto", "ptr_bits": "auto"},
           {"kind": "coo", "index_bits": "auto"}]


def mem_hw(dataflow="os", policy="skip_both", rows=4, cols=4, kib=1.0, dram_bw=4.0,
           glb_bw=16.0, db=True, fa=None, fw=None, out_kib=None):
    return accelsim.load_hwconfig(hw_dict(
        rows, cols, dataflow, policy,
        memory={"dram": {"bandwidth_bytes_per_cycle": dram_bw},
                "glb": {"a_kib": kib, "w_kib": kib, "out_kib": out_kib or max(kib, 1.0),
                        "bandwidth_bytes_per_cycle": glb_bw, "double_buffer": db}},
        formats={"a": fa or {"kind": "bitmask"}, "w": fw or {"kind": "csr"}}))


@st.composite
def layer_and_hw(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    da, dw = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])), draw(st.sampled_from([0.0, 0.5, 1.0]))
    kind = draw(st.sampled_from(["linear", "conv2d", "matmul"]))
    frames = draw(st.booleans())
    if kind == "linear":
        x = random_tensor((3, 5, 12) if frames else (5, 12), da, rng)
        layer = tr.linear("l", x, random_tensor((7, 12), dw, rng), frames=frames)
    elif kind == "conv2d":
        x = random_tensor((2, 1, 4, 6, 6) if frames else (1, 4, 6, 6), da, rng)
        layer = tr.conv2d("c", x, random_tensor((6, 2, 3, 3), dw, rng), padding=1, groups=2,
                          frames=frames)
    else:
        layer = tr.matmul("m", random_tensor((2, 6, 9), da, rng),
                          random_tensor((2, 9, 5), da, rng))
    hw = mem_hw(draw(st.sampled_from(["os", "ws", "is"])),
                draw(st.sampled_from(["none", "gate", "skip_a", "skip_both"])),
                rows=draw(st.integers(1, 4)), cols=draw(st.integers(1, 4)),
                kib=draw(st.sampled_from([0.0625, 0.125, 0.5, 2.0])),
                dram_bw=draw(st.sampled_from([1.0, 2.5, 8.0, math.inf])),
                glb_bw=draw(st.sampled_from([2.0, 16.0, math.inf])), db=draw(st.booleans()),
                fa=draw(st.sampled_from(FORMATS)), fw=draw(st.sampled_from(FORMATS)))
    return layer, hw


@settings(max_examples=120, deadline=None)
@given(case=layer_and_hw(), grow=st.sampled_from(["a_kib", "w_kib", "out_kib"]))
def test_traffic_never_increases_when_a_buffer_grows(case, grow):
    """A 64x larger partition keeps the small buffer's mapping legal, and that mapping,
    pinned, moves the same bytes at every level (the reuse rule does not depend on
    capacity); below the GLB nothing changes either. (The auto mapping itself may pick a
    larger tile, whose total can carry a byte more metadata: monotonicity of the chosen
    mapping is the search's property, tests/test_mapping_property.py.)"""
    layer, hw = case
    try:
        small = simulate_layer(layer, hw)
    except SimulationError:  # no legal GLB tile in the small buffer
        return
    order, tile = small.mem.mapping[0], list(small.mem.mapping[1:])
    big_hw = hw.with_overrides({f"memory.glb.{grow}": getattr(hw.memory.glb, grow) * 64,
                                "mapping.loop_order": order, "mapping.glb_tile": tile})
    pinned_small = simulate_layer(layer, hw.with_overrides(
        {"mapping.loop_order": order, "mapping.glb_tile": tile})).as_dict()
    big = simulate_layer(layer, big_hw).as_dict()
    small = small.as_dict()
    assert pinned_small == small  # pinning the chosen mapping changes nothing
    for key in TRAFFIC_KEYS:
        if key.startswith("dram_") or key.startswith(("glb_a_write", "glb_w_write")):
            assert big[key] <= small[key], key
        else:
            assert big[key] == small[key], key


@settings(max_examples=120, deadline=None)
@given(case=layer_and_hw())
def test_dram_reads_at_least_compulsory(case):
    layer, hw = case
    res = simulate_layer(layer, hw).as_dict()
    a_bits, w_bits = hw.precision.a_bits, hw.precision.w_bits
    # compulsory: every nonzero value must come from DRAM at least once
    assert res["dram_a_read_bytes"] * 8 >= np.count_nonzero(layer.a) * a_bits
    assert res["dram_w_read_bytes"] * 8 >= np.count_nonzero(layer.w) * w_bits
    # outputs are written once, dense
    assert res["dram_out_write_bytes"] == res["glb_out_write_bytes"]


@settings(max_examples=80, deadline=None)
@given(case=layer_and_hw())
def test_unlimited_bandwidth_no_stalls_and_gating_keeps_cycles(case):
    layer, hw = case
    free = hw.with_overrides({"memory.dram.bandwidth_bytes_per_cycle": math.inf,
                              "memory.glb.bandwidth_bytes_per_cycle": math.inf})
    r = simulate_layer(layer, free)
    assert r.stall_cycles == 0 and r.cycles == r.compute_cycles
    none = simulate_layer(layer, hw.with_overrides({"zero_policy": "none"}))
    gate = simulate_layer(layer, hw.with_overrides({"zero_policy": "gate"}))
    assert none.cycles == gate.cycles and none.stall_cycles == gate.stall_cycles
    assert none.compute_cycles == gate.compute_cycles
    assert r.stall_cycles >= 0


@settings(max_examples=60, deadline=None)
@given(case=layer_and_hw())
def test_double_buffering_never_slower(case):
    """On the same GLB mapping (double buffering needs twice the room, so the auto
    mapping may differ: pin the double-buffered one, which fits single-buffered too)."""
    layer, hw = case
    try:
        on = simulate_layer(layer, hw.with_overrides({"memory.glb.double_buffer": True}))
    except SimulationError:  # no legal tile twice over
        return
    order, tm, tn, tk = on.mem.mapping
    off = simulate_layer(layer, hw.with_overrides({
        "memory.glb.double_buffer": False, "mapping.loop_order": order,
        "mapping.glb_tile": [tm, tn, tk]}))
    assert on.cycles <= off.cycles
    assert on.compute_cycles == off.compute_cycles


@settings(max_examples=60, deadline=None)
@given(case=layer_and_hw(), seed=st.integers(0, 1000))
def test_zeroing_an_element_never_increases_compressed_bytes(case, seed):
    layer, hw = case
    a = np.array(layer.a)
    nz = np.flatnonzero(a)
    if nz.size == 0:
        return
    a2 = a.copy()
    a2.flat[nz[seed % nz.size]] = 0
    layer2 = tr.Layer(layer.name, layer.kind, {**layer.tensors, tr.ROLES[layer.kind][0]: a2},
                      frames=layer.frames, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, groups=layer.groups)
    r1, r2 = simulate_layer(layer, hw).as_dict(), simulate_layer(layer2, hw).as_dict()
    for key in ("glb_a_read_bytes", "glb_a_read_meta_bytes", "dram_a_read_bytes",
                "macs_performed", "compute_cycles"):
        if key.endswith("meta_bytes") and hw.formats.a.kind == "rle":
            continue  # an RLE zero can lengthen a run past its limit: data+meta checked below
        assert r2[key] <= r1[key], key
    for lvl in ("glb_a_read", "dram_a_read"):
        if hw.formats.a.kind != "rle":
            continue
        # RLE: removing a nonzero merges two gaps; entries never grow
        assert r2[f"{lvl}_bytes"] + r2[f"{lvl}_meta_bytes"] <= \
            r1[f"{lvl}_bytes"] + r1[f"{lvl}_meta_bytes"]


def test_energy_is_linear_in_counts():
    trace = tiny_cnn_trace(seed=1)
    hw = accelsim.load_hwconfig("sparse_os_16x16")
    df = accelsim.simulate(trace, hw)
    p = prices(hw, load_energy_table(hw.energy))
    rows = df.to_dict("records")
    e0, e1 = energy_of(rows[0], p), energy_of(rows[1], p)
    summed = {k: rows[0][k] + rows[1][k] for k in rows[0] if isinstance(rows[0][k], int)}
    e01 = energy_of(summed, p)
    doubled = energy_of({k: 2 * v for k, v in summed.items()}, p)
    for k in e0:
        assert e01[k] == pytest.approx(e0[k] + e1[k], rel=1e-12)
        assert doubled[k] == pytest.approx(2 * e01[k], rel=1e-12)
    comp = [f"energy_{c}_pj" for c in COMPONENTS]
    assert np.allclose(df[comp].sum(axis=1), df.energy_pj)
    assert (df.energy_skip_pj > 0).all() and (df.energy_hop_pj > 0).all()


def test_reprice_same_table_changes_nothing_other_table_changes_energy():
    trace = tiny_cnn_trace(seed=1)
    df = accelsim.simulate(trace, "sparse_os_16x16")
    same = reprice(df, "45nm_horowitz")
    cols = [c for c in df.columns if c.startswith("energy")]
    np.testing.assert_array_equal(same[cols].to_numpy(), df[cols].to_numpy())
    table = load_energy_table(ENERGY_DIR / "45nm_horowitz.yaml")
    import dataclasses
    cheap = dataclasses.replace(table, dram_pj_per_bit={"LPDDR4": 1.0}, name="cheap")
    other = reprice(df, cheap)
    assert np.allclose(other.energy_dram_pj * 8.0, df.energy_dram_pj)
    assert (other.energy_mac_pj == df.energy_mac_pj).all()
    count_cols = [c for c in df.columns if c.endswith("_bytes") or c.startswith("macs_")]
    assert (other[count_cols] == df[count_cols]).all().all()


def test_sparsity_can_lose_on_dense_data():
    """Metadata costs: on fully dense operands a bitmask + skip_both config moves more
    bytes and spends more energy than the same array with dense formats and no policy."""
    rng = np.random.default_rng(0)
    layer = tr.conv2d("c", random_tensor((1, 16, 12, 12), 1.0, rng),
                      random_tensor((32, 16, 3, 3), 1.0, rng), padding=0)
    t = tr.Trace.from_arrays("dense", [layer])
    sparse = accelsim.simulate(t, "sparse_os_16x16")
    dense = accelsim.simulate(t, "sparse_os_16x16", overrides={
        "zero_policy": "none", "formats.a.kind": "dense", "formats.w.kind": "dense"})
    assert sparse.macs_performed[0] == dense.macs_performed[0]
    assert sparse.dram_bytes[0] > dense.dram_bytes[0]
    assert sparse.energy_pj[0] > dense.energy_pj[0]


def test_dram_dominates_when_refetched():
    """Dense 45 nm int8 os array with a small GLB (16 KiB for A and for W): the 72 KiB
    of weights cannot stay,
    so (order mnk, the W tile under m) they are fetched once per GLB M tile, and DRAM
    energy dominates every other component."""
    rng = np.random.default_rng(0)
    layer = tr.conv2d("c", random_tensor((1, 64, 28, 28), 1.0, rng),
                      random_tensor((128, 64, 3, 3), 1.0, rng), padding=1)
    t = tr.Trace.from_arrays("dense", [layer])
    df = accelsim.simulate(t, "dense_os_32x32", overrides={"memory.glb.w_kib": 16,
                                                           "memory.glb.a_kib": 16})
    row = df.iloc[0]
    assert row.map_order == "mnk" and row.map_tm < row.m
    assert row.dram_w_read_bytes == 128 * 64 * 9 * math.ceil(row.m / row.map_tm)
    others = ["energy_mac_pj", "energy_rf_pj", "energy_glb_pj", "energy_leakage_pj"]
    assert all(row.energy_dram_pj > row[c] for c in others)


def test_every_energy_table_loads():
    tables = sorted(ENERGY_DIR.glob("*.yaml"))
    assert tables
    for p in tables:
        t = load_energy_table(p)
        assert set(t.mac) >= {"int8", "int16", "fp16", "fp32"}
        assert t.sram_pj_per_byte(8) == pytest.approx(1.25)
        assert 1.25 < t.sram_pj_per_byte(16) < 2.5


def _table(**over):
    import yaml
    raw = yaml.safe_load((ENERGY_DIR / "45nm_horowitz.yaml").read_text())
    for k, v in over.items():
        node = raw
        parts = k.split(".")
        for p in parts[:-1]:
            node = node[p]
        if v is None:
            del node[parts[-1]]
        else:
            node[parts[-1]] = v
    return raw


@pytest.mark.parametrize("over,msg", [
    ({"mac.int8.performed": -1}, "mac.int8.performed: expected a number >= 0, got -1"),
    ({"rf.points": None}, "rf.points: expected a non-empty list"),
    ({"dram_pj_per_bit.SRAM": 1.0}, "dram_pj_per_bit.SRAM: unknown key"),
    ({"leakage.pe_mw": "a lot"}, "leakage.pe_mw: expected a number >= 0"),
    ({"bogus": 1}, "bogus: unknown key"),
])
def test_energy_table_errors(over, msg):
    with pytest.raises(ConfigError) as ei:
        load_energy_table(_table(**over))
    assert msg in str(ei.value) and "\n" not in str(ei.value)


def test_missing_energy_table_is_one_line():
    t = tiny_cnn_trace(seed=0)
    with pytest.raises(ConfigError, match="energy table 'no_such_table': not found"):
        accelsim.simulate(t, "sparse_os_16x16", overrides={"energy": "no_such_table"})


def test_partition_too_small_for_a_tile():
    with pytest.raises(ConfigError, match=r"memory.glb.out_kib: expected at least 1 KiB to "
                                          r"hold one 16x16 tile of 32-bit partial sums"):
        accelsim.load_hwconfig("sparse_os_16x16", {"memory.glb.out_kib": 0.5})
    with pytest.raises(ConfigError, match="memory.dram.type: expected one of LPDDR4"):
        accelsim.load_hwconfig("sparse_os_16x16", {"memory.dram.type": "SDRAM"})
    with pytest.raises(ConfigError, match="formats.a.kind: expected one of dense, bitmask"):
        accelsim.load_hwconfig("sparse_os_16x16", {"formats.a.kind": "zip"})


def _buf_layer():
    rng = np.random.default_rng(11)
    return tr.linear("fc", random_tensor((24, 40), 0.5, rng), random_tensor((12, 40), 0.6, rng))


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_decoupled_pe_buffers_are_counted_and_priced(dataflow):
    layer = _buf_layer()
    base = hw_dict(4, 4, dataflow, "skip_a")
    lock = accelsim.load_hwconfig(base)
    dec = accelsim.load_hwconfig(base | {"sync": {"mode": "decoupled"},
                                         "array": base["array"] | {"pe_buffer_bytes": 512}})
    s_lock, s_dec = simulate_layer(layer, lock), simulate_layer(layer, dec)
    c_lock, c_dec = s_lock.as_dict(), s_dec.as_dict()
    step = {"os": 2, "ws": 1, "is": 1}[dataflow]  # int8 operands streamed per time step
    slots = c_dec["macs_performed"] + c_dec["macs_gated"]
    assert c_dec["pe_buf_write_bytes"] == slots * step > 0
    assert c_dec["pe_buf_read_bytes"] == c_dec["macs_performed"] * step
    assert all(c_lock[k] == 0 for k in ("pe_buf_read_bytes", "pe_buf_write_bytes",
                                        "acc_buf_read_bytes", "acc_buf_write_bytes"))
    # decoupled ws/is rows drift apart: one partial-sum read and write per performed MAC
    acc = c_dec["macs_performed"] * 4 if dataflow != "os" else 0
    assert c_dec["acc_buf_read_bytes"] == c_dec["acc_buf_write_bytes"] == acc
    p = prices(dec, load_energy_table(dec.energy))
    e = energy_of(c_dec, p)
    without = energy_of(c_dec | dict.fromkeys(("pe_buf_read_bytes", "pe_buf_write_bytes",
                                               "acc_buf_read_bytes", "acc_buf_write_bytes"),
                                              0), p)
    extra = (c_dec["pe_buf_read_bytes"] + c_dec["pe_buf_write_bytes"]) * p["pe_buf"] + \
        (c_dec["acc_buf_read_bytes"] + c_dec["acc_buf_write_bytes"]) * p["acc_buf"]
    assert e["energy_rf_pj"] - without["energy_rf_pj"] == pytest.approx(extra, rel=1e-12)
    assert p["leakage_per_cycle"] > prices(lock, load_energy_table(lock.energy))[
        "leakage_per_cycle"]
    from accelsim.model.area import area_of

    assert area_of(dec)["area_pe_mm2"] > area_of(lock)["area_pe_mm2"]


def test_row_scope_on_ws_charges_the_accumulator_buffer():
    layer = _buf_layer()
    base = hw_dict(4, 4, "ws", "skip_a")
    row = accelsim.load_hwconfig(base | {"sync": {"mode": "barrier", "barrier_steps": 4,
                                                  "scope": "row"}})
    arr = accelsim.load_hwconfig(base | {"sync": {"mode": "barrier", "barrier_steps": 4}})
    c_row, c_arr = simulate_layer(layer, row).as_dict(), simulate_layer(layer, arr).as_dict()
    assert c_row["acc_buf_write_bytes"] == c_row["macs_performed"] * 4 > 0
    assert c_arr["acc_buf_write_bytes"] == 0
    os_row = accelsim.load_hwconfig(hw_dict(4, 4, "os", "skip_a") | {
        "sync": {"mode": "barrier", "barrier_steps": 4, "scope": "row"}})
    assert simulate_layer(layer, os_row).as_dict()["acc_buf_write_bytes"] == 0
