"""Memory model v2 (issue 10, items 5 and 6): csr/coo widths checked against the layer's
tiles (or ``auto``), and complete delta accounting: reached accumulators only, the
encoder's dense read, ``a_bits + 1`` operands, state overlapped under double buffering,
the state buffer priced, ``state: glb`` taking out-partition room, per-layer thresholds.
Engine == reference on each example; the numbers are worked out in the docstrings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import accelsim
from accelsim import ConfigError, SimulationError, reference
from accelsim.io.trace import conv2d, linear
from accelsim.model import engine
from accelsim.model.area import SRAM_MM2_PER_KIB, area_of
from accelsim.model.energy import load_energy_table, prices
from accelsim.model.sparsity import delta_operand

ROOT = Path(__file__).resolve().parent.parent
KEYS = reference.ALL_FIELDS


def hw_of(flow="os", policy="skip_a", fa=None, delta=None, rows=4, cols=4, **mem):
    glb = {"a_kib": 64, "w_kib": 64, "out_kib": 64, "bandwidth_bytes_per_cycle": 8.0,
           "double_buffer": True} | mem
    return accelsim.load_hwconfig({
        "name": "t", "array": {"rows": rows, "cols": cols}, "dataflow": flow,
        "zero_policy": policy,
        "memory": {"dram": {"bandwidth_bytes_per_cycle": 4.0}, "glb": glb},
        "formats": {"a": fa or {"kind": "dense"}, "w": {"kind": "dense"}},
        "delta": delta or {"enabled": False}})


def same(layer, hw) -> dict[str, int]:
    ref = reference.simulate_layer(layer, hw)
    got = engine.simulate_layer(layer, hw).as_dict()
    bad = {k: (int(got[k]), ref[k]) for k in KEYS if int(got[k]) != ref[k]}
    assert not bad, bad
    return ref


# --------------------------------------------------------------------------- widths


def _k4608_conv():
    """A 3x3 conv over 512 channels: K = 4608, M = 2x2 outputs, N = 2."""
    rng = np.random.default_rng(0)
    x = np.where(rng.random((1, 512, 4, 4)) < 0.4, rng.integers(1, 9, (1, 512, 4, 4)),
                 0).astype(np.int8)
    w = rng.integers(-3, 4, (2, 512, 3, 3)).astype(np.int8)
    return conv2d("conv5", x, w)


def test_csr_8_bit_indices_on_4608_long_fibers_are_refused():
    layer = _k4608_conv()
    hw = hw_of(fa={"kind": "csr", "index_bits": 8, "ptr_bits": "auto"})
    with pytest.raises(SimulationError) as e:
        engine.simulate_layer(layer, hw)
    msg = str(e.value)
    assert msg == ("layer 'conv5': t: formats.a.index_bits: 8 bits cannot address the 4608 "
                   "positions of a fiber of a fold's A tile (csr needs 13; set index_bits: "
                   "13 or auto)")
    with pytest.raises(SimulationError):
        reference.simulate_layer(layer, hw)


def test_csr_auto_picks_13_bits_and_sizes_the_metadata_with_them():
    """os on 4x4: one fold (M = 4 <= R), A tile 4 x 4608; csr metadata = nnz·13 +
    (4 + 1)·ptr, ptr = bits(4·4608 + 1) = 15 for the fold tile, and the unique A (the
    input, 512·4 fibers of 4) needs bits(8193) = 14: auto takes the larger, 15."""
    layer = _k4608_conv()
    auto = hw_of(fa={"kind": "csr", "index_bits": "auto", "ptr_bits": "auto"})
    res = same(layer, auto)
    a = engine.layer_masks(layer)[0][0, 0]  # [M, K]
    nnz = int(a.sum())
    assert res["glb_a_read_meta_bytes"] == math.ceil((nnz * 13 + 5 * 15) / 8)
    fixed = hw_of(fa={"kind": "csr", "index_bits": 13, "ptr_bits": 15})
    assert same(layer, fixed)["glb_a_read_meta_bytes"] == res["glb_a_read_meta_bytes"]
    # what 8 bits claimed: 8/13 of the index metadata
    assert math.ceil((nnz * 8 + 5 * 15) / 8) < 0.65 * res["glb_a_read_meta_bytes"]


def test_csr_pointers_are_checked_against_the_tile_size():
    layer = _k4608_conv()  # the fold's A tile has 4 x 4608 = 18432 elements: 15 bits
    with pytest.raises(SimulationError, match=r"formats\.a\.ptr_bits: 14 bits cannot count "
                                              r"the up to 18432 nonzeros .*csr needs 15"):
        engine.simulate_layer(layer, hw_of(fa={"kind": "csr", "index_bits": 13,
                                              "ptr_bits": 14}))


def test_coo_checks_the_fiber_coordinate_too():
    """coo stores (fiber, position): 300 tokens x 4 features need 9 bits for the fiber,
    2 for the position; csr indexes positions only (2 bits are enough)."""
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, (300, 4)).astype(np.int8)
    layer = linear("fc", x, rng.integers(-2, 3, (3, 4)).astype(np.int8))
    with pytest.raises(SimulationError, match="address the 300 fibers and 4 positions .*"
                                              "coo needs 9"):
        engine.simulate_layer(layer, hw_of(fa={"kind": "coo", "index_bits": 8}))
    ok = same(layer, hw_of(fa={"kind": "coo", "index_bits": 9}))
    assert ok == same(layer, hw_of(fa={"kind": "coo", "index_bits": "auto"}))
    nnz = int(np.count_nonzero(x))
    assert ok["dram_a_read_meta_bytes"] == math.ceil(nnz * 2 * 9 / 8)
    same(layer, hw_of(fa={"kind": "csr", "index_bits": 2, "ptr_bits": "auto"}))


def test_auto_widths_load_and_round_trip():
    hw = accelsim.load_hwconfig("sparse_os_16x16", {"formats.w.kind": "csr",
                                                    "formats.w.index_bits": "auto"})
    assert hw.formats.w.index_bits == "auto"
    again = accelsim.load_hwconfig(hw.to_dict())
    assert again == hw
    with pytest.raises(ConfigError, match=r"formats\.w\.index_bits: expected an integer "
                                          r">= 1 and <= 32 or auto, got 'Auto'"):
        accelsim.load_hwconfig("sparse_os_16x16", {"formats.w.index_bits": "Auto"})


# --------------------------------------------------------------------------- delta


@pytest.fixture(scope="module")
def moving_digits():
    return accelsim.load_trace(ROOT / "traces" / "moving_digits")


def _reached_rows_by_window(x_changed: np.ndarray, kh: int, kw: int, pad: int) -> int:
    """Outputs (stride 1) whose kh x kw window holds a changed input, over every frame
    >= 1 and batch element, by explicit windows (independent of im2col)."""
    f, b, c, h, w = x_changed.shape
    p = np.pad(x_changed.any(axis=2), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    total = 0
    for i in range(h + 2 * pad - kh + 1):
        for j in range(w + 2 * pad - kw + 1):
            total += int(p[1:, :, i:i + kh, j:j + kw].any(axis=(-1, -2)).sum())
    return total


def test_moving_digits_conv1_moves_only_the_reached_accumulators(moving_digits):
    """conv1 (4 x 32 x 32 outputs, N = 8, int32 accumulators): 22% of output rows have a
    changed input in their receptive field; only those accumulators are read and
    written. Before: every accumulator every frame, 1,966,080 bytes read."""
    layer = moving_digits["conv1"]
    hw = accelsim.load_hwconfig("delta_ws_16x16")
    got = engine.simulate_layer(layer, hw).mem.counts
    x = np.asarray(layer.a)
    op, _ = delta_operand(x, hw.delta.threshold_for("conv1"))
    reached = _reached_rows_by_window(op != 0, 3, 3, 1)
    assert got["state_acc_read_bytes"] == reached * 8 * 4 == 433_984
    assert got["state_acc_write_bytes"] == 433_984 + 4096 * 8 * 4  # + frame 0, all
    assert 0.21 < 433_984 / 1_966_080 < 0.23
    # the encoder reads each frame's dense int8 input from DRAM: 15 x 4096 bytes
    assert got["state_enc_read_bytes"] == 15 * 4 * 32 * 32


def test_delta_operands_are_a_bits_plus_one_wide():
    """Dense formats: bytes follow the width only. 3 frames of a 2 x 8 input, linear to
    N = 4, os on 4x4 (one fold per frame): A tile 16 elements at 9 bits = 18 bytes."""
    rng = np.random.default_rng(3)
    x = rng.integers(-5, 6, (3, 2, 8)).astype(np.int8)
    layer = linear("l", x, rng.integers(-2, 3, (4, 8)).astype(np.int8), frames=True)
    on = same(layer, hw_of(policy="none", delta={"enabled": True}))
    off = same(layer, hw_of(policy="none"))
    assert off["glb_a_read_bytes"] == 3 * 16 and on["glb_a_read_bytes"] == 3 * 18
    assert on["dram_a_read_bytes"] == 3 * 18
    assert on["rf_a_read_bytes"] == 2 * on["macs_performed"]  # 9 bits: 2 bytes
    assert on["macs_wide_performed"] == on["macs_performed"] and off["macs_wide_performed"] == 0
    hw = hw_of(policy="none", delta={"enabled": True})
    df = accelsim.simulate(accelsim.Trace(model="m", layers=(layer,)), hw)
    p = prices(hw, load_energy_table(hw.energy))
    assert df.energy_mac_pj[0] == pytest.approx(on["macs_performed"] * p["mac_performed"]
                                                * 9 / 8)


def test_state_glb_takes_out_partition_room():
    """ws on 2x2, linear 6 x 4 -> N = 2: psum block Y[:, j] = 6 x 2 x 4 = 48 bytes.
    One frame's state = 6·4 + 6·2·4 = 72 bytes. out_kib = 100 B holds the psums alone
    but not next to the state under state: glb (100 − 72 = 28 < 48): the GLB mapping
    then cuts M (ws's temporal dim) to 3 rows (3 x 2 x 4 = 24 bytes of live psums), so
    no partial sums reach DRAM (W, a single GLB tile, is still fetched once); an 80-byte
    partition refuses the state outright (80 − 72 < one 2x2 tile, 16 bytes)."""
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, (2, 6, 4)).astype(np.int8)
    layer = linear("l", x, rng.integers(-2, 3, (2, 4)).astype(np.int8), frames=True)
    kw = dict(flow="ws", policy="none", rows=2, cols=2, out_kib=100 / 1024)
    hw_dram = hw_of(delta={"enabled": True, "state": "dram"}, **kw)
    hw_glb = hw_of(delta={"enabled": True, "state": "glb"}, **kw)
    dram, glb = same(layer, hw_dram), same(layer, hw_glb)
    assert dram["dram_psum_write_bytes"] == glb["dram_psum_write_bytes"] == 0
    assert engine.simulate_layer(layer, hw_dram).mem.mapping[1] == 6
    assert engine.simulate_layer(layer, hw_glb).mem.mapping[1] == 3
    assert glb["dram_w_read_bytes"] == dram["dram_w_read_bytes"] == 8
    with pytest.raises(SimulationError, match=r"delta\.state: glb: the 72-byte delta state "
                                              r"does not fit"):
        engine.simulate_layer(layer, hw_of(delta={"enabled": True, "state": "glb"},
                                           **kw | {"out_kib": 80 / 1024}))
    with pytest.raises(SimulationError):
        reference.simulate_layer(layer, hw_of(delta={"enabled": True, "state": "glb"},
                                              **kw | {"out_kib": 80 / 1024}))


def test_state_buffer_has_area_and_leakage():
    base = accelsim.load_hwconfig("delta_ws_16x16")  # state: auto, 256 KiB
    table = load_energy_table(base.energy)
    off = base.with_overrides({"delta.state": "dram"})
    glb = base.with_overrides({"delta.state": "glb"})
    assert area_of(base)["area_state_mm2"] == pytest.approx(256 * SRAM_MM2_PER_KIB)
    assert area_of(off)["area_state_mm2"] == area_of(glb)["area_state_mm2"] == 0
    assert area_of(base)["area_mm2"] - area_of(off)["area_mm2"] == pytest.approx(
        256 * SRAM_MM2_PER_KIB)
    leak = prices(base, table)["leakage_per_cycle"] - prices(off, table)["leakage_per_cycle"]
    assert leak == pytest.approx(256 * table.leak_sram_mw_per_kib / base.clock_ghz)
    # state: glb is priced as the out partition's SRAM (128 KiB), not the 256 KiB buffer
    assert prices(glb, table)["state_sram_read"] == table.sram_pj_per_byte(128)


def test_moving_digits_state_overlaps_compute_when_double_buffered(moving_digits):
    hw = accelsim.load_hwconfig("delta_ws_16x16")
    db = accelsim.simulate(moving_digits, hw)
    serial = accelsim.simulate(moving_digits, hw, {"memory.glb.double_buffer": False})
    assert (db.state_cycles == serial.state_cycles).all()
    assert (serial.state_stall_cycles == serial.state_cycles).all()
    assert db.state_stall_cycles.sum() < 0.05 * db.state_cycles.sum()
    assert int(db.state_cycles.sum()) == 25_244


# --------------------------------------------------------------------------- thresholds


def test_per_layer_thresholds(moving_digits):
    hw = accelsim.load_hwconfig("delta_ws_16x16",
                                {"delta.threshold": {"conv1": 0, "fc*": 8}})
    assert [hw.delta.threshold_for(n) for n in ("conv1", "conv2", "fc1", "fc2")] == \
        [0.0, 0.0, 8.0, 8.0]
    per = accelsim.simulate(moving_digits, hw).set_index("layer")
    for name, th in (("conv1", 0), ("fc1", 8), ("conv2", 0)):
        one = accelsim.simulate(moving_digits, "delta_ws_16x16",
                                {"delta.threshold": th}).set_index("layer")
        assert per.loc[name, "macs_performed"] == one.loc[name, "macs_performed"]
    default = accelsim.simulate(moving_digits, "delta_ws_16x16").set_index("layer")
    assert per.loc["fc1", "macs_performed"] < default.loc["fc1", "macs_performed"]
    layer = moving_digits["fc2"]
    small = accelsim.load_hwconfig("delta_ws_16x16", {"delta.threshold": {"fc2": 5}})
    assert engine.simulate_layer(layer, small).as_dict()["macs_performed"] == \
        reference.simulate_layer(layer, small)["macs_performed"]


def test_per_layer_threshold_errors(moving_digits):
    with pytest.raises(ConfigError, match=r"^t: delta\.threshold\.cnv1: matches no layer "
                                          r"of trace moving_digits \(did you mean 'conv1'\?\)$"):
        accelsim.simulate(moving_digits, accelsim.load_hwconfig(
            "delta_ws_16x16", {"delta.threshold": {"cnv1": 3}}).with_overrides({"name": "t"}))
    with pytest.raises(ConfigError, match=r"delta\.threshold\.conv1: expected a number >= 0, "
                                          r"got -1"):
        accelsim.load_hwconfig("delta_ws_16x16", {"delta.threshold": {"conv1": -1}})
    with pytest.raises(ConfigError, match=r"delta\.threshold: expected a number >= 0, or a "
                                          r"mapping from layer name"):
        accelsim.load_hwconfig("delta_ws_16x16", {"delta.threshold": "big"})


def test_sweep_specs_take_auto_widths_and_fixed_threshold_mappings(tmp_path):
    from accelsim.analysis.sweep import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(f"base: delta_ws_16x16\ntraces: [{ROOT / 'traces' / 'moving_digits'}]\n"
                    "fixed:\n  delta.threshold: {conv1: 0, 'fc*': 4}\n"
                    "grid:\n  formats.a.index_bits: [auto, 9]\n")
    s = load_spec(spec)
    assert s.grid["formats.a.index_bits"] == ("auto", 9)
    assert s.fixed["delta.threshold"] == {"conv1": 0.0, "fc*": 4.0}
    spec.write_text(f"base: delta_ws_16x16\ntraces: [{ROOT / 'traces' / 'moving_digits'}]\n"
                    "grid:\n  delta.threshold: [2, {conv1: 0}]\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: grid\.delta\.threshold: expected numbers "
                                          r"to sweep; put a per-layer mapping under fixed:"):
        load_spec(spec)


def test_state_energy_prices_the_encoder_read_as_dram(moving_digits):
    """energy_state = on-chip state reads/writes at the 256 KiB buffer's SRAM price (writes
    with the write factor) + the encoder's dense reads at the DRAM price."""
    hw = accelsim.load_hwconfig("delta_ws_16x16")
    row = accelsim.simulate(moving_digits, hw).set_index("layer").loc["conv2"]
    p = prices(hw, load_energy_table(hw.energy))
    assert row.state_in_dram == 0 and row.state_enc_read_bytes == 15 * 4 * 8 * 16 * 16
    reads = row.state_ref_read_bytes + row.state_acc_read_bytes
    writes = row.state_ref_write_bytes + row.state_acc_write_bytes
    want = (reads * p["state_sram_read"] + writes * p["state_sram_write"]
            + row.state_enc_read_bytes * p["dram"])
    assert row.energy_state_pj == pytest.approx(want, rel=1e-12)
    assert row.state_enc_read_bytes * p["dram"] > 0.4 * want  # DRAM reads dominate
