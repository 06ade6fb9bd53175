"""Mapping at the global buffer (docs/memory-model.md): engine == reference for pinned
random mappings (random loop orders, tile sizes in fold units or full, temporal tiles
of any size), on random layers incl. convolutions, frames, delta and N:M weights; the
chosen mapping itself agrees; price_mapping prices a mapping as the engine charges it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_delta_nm_property import case, check
from test_memory_property import check_layer, hw_case, layer_of

from accelsim import SimulationError, reference
from accelsim.io.hwconfig import LOOP_ORDERS
from accelsim.model import engine
from accelsim.model.mapping import TEMPORAL, Mapping, price_mapping

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def units(hw) -> dict[str, int]:
    r, c = hw.array.rows, hw.logical_cols()
    return {"os": {"m": r, "n": c, "k": 1}, "ws": {"m": 1, "n": c, "k": r},
            "is": {"m": hw.array.cols, "n": 1, "k": r}}[hw.dataflow]


@st.composite
def pinned(draw, hw):
    """``hw`` with a random loop order and a tile: full, or 1..3 fold units per array
    dim, or 1..5 elements along the temporal dim."""
    order = draw(st.sampled_from(LOOP_ORDERS), label="loop order")
    u = units(hw)
    tile = []
    for d in "mnk":
        if draw(st.booleans(), label=f"T{d} full"):
            tile.append("full")
        elif d == TEMPORAL[hw.dataflow]:
            tile.append(draw(st.integers(1, 5), label=f"T{d}"))
        else:
            tile.append(u[d] * draw(st.integers(1, 3), label=f"T{d} units"))
    return hw.with_overrides({"mapping.loop_order": order, "mapping.glb_tile": tile})


def same_mapping(layer, hw) -> None:
    try:
        ref = reference.simulate_layer(layer, hw, with_mapping=True)
    except SimulationError:
        return
    if "map_order" not in ref:  # the GEMV engine has no GLB mapping
        return
    got = engine.simulate_layer(layer, hw).mem.mapping
    assert got == (ref["map_order"], ref["map_tm"], ref["map_tn"], ref["map_tk"])


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_pinned_mapping_engine_matches_reference(data):
    layer = data.draw(layer_of(), label="layer")
    hw = data.draw(pinned(data.draw(hw_case(), label="hw")), label="mapping")
    check_layer(layer, hw)
    same_mapping(layer, hw)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_pinned_mapping_delta_nm_engine_matches_reference(data):
    layer, hw = data.draw(case(), label="case")
    hw = data.draw(pinned(hw), label="mapping")
    check(layer, hw)
    same_mapping(layer, hw)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_auto_mapping_is_the_reference_choice(data):
    layer = data.draw(layer_of(), label="layer")
    hw = data.draw(hw_case(), label="hw")
    order = data.draw(st.sampled_from(("auto",) + LOOP_ORDERS), label="order")
    hw = hw.with_overrides({"mapping.loop_order": order})
    same_mapping(layer, hw)


def _stats_of(layer, hw):
    """The engine's per-layer tile statistics (what a search would price from)."""
    from accelsim.model.dataflow import make_plan
    from accelsim.model.engine import layer_masks
    from accelsim.model.mapping import tile_stats
    from accelsim.model.memory import a_operand_bits

    az, wz = layer_masks(layer)
    plan = make_plan(hw)
    return tile_stats(layer, az, wz, hw, rows=plan.rows, cols=plan.cols,
                      a_bits=a_operand_bits(layer, hw), a_mask=None, nm=None,
                      active=np.ones(az.shape[:2], bool),
                      out_cap=int(hw.memory.glb.out_kib * 1024))


def test_price_mapping_prices_what_the_engine_charges():
    """For the chosen and for other pinned mappings of a conv layer, price_mapping's
    DRAM bytes are the engine's (computed from the per-layer statistics, no
    re-simulation)."""
    from test_memory_property import make_hw

    from accelsim.io.trace import conv2d

    rng = np.random.default_rng(5)
    x = np.where(rng.random((2, 3, 7, 7)) < 0.4, rng.integers(1, 9, (2, 3, 7, 7)), 0)
    wt = np.where(rng.random((5, 3, 3, 3)) < 0.6, rng.integers(1, 9, (5, 3, 3, 3)), 0)
    layer = conv2d("c", x.astype(np.int8), wt.astype(np.int8), padding=1)
    hw = make_hw(2, 2, 1, "ws", fa="bitmask", fw="csr", index_bits="auto",
                 ptr_bits="auto", a_kib=0.25, w_kib=0.125, out_kib=0.5)
    keys = ("dram_a_read_bytes", "dram_a_read_meta_bytes", "dram_w_read_bytes",
            "dram_w_read_meta_bytes", "dram_psum_read_bytes", "dram_psum_write_bytes")
    from accelsim.model.memory import resolve_formats

    for order, tile in (("auto", "auto"), ("nmk", [8, 2, 2]), ("kmn", [16, 2, 4]),
                        ("mkn", [4, 4, "full"])):
        h = hw.with_overrides({"mapping.loop_order": order, "mapping.glb_tile": tile})
        try:
            st_ = engine.simulate_layer(layer, h)
        except SimulationError:
            continue
        mo, tm, tn, tk = st_.mem.mapping
        stats = _stats_of(layer, resolve_formats(layer, h, 49 * 2, 27, 5))
        priced = price_mapping(stats, Mapping(mo, (tm, tn, tk)))
        assert priced["legal"] == 1
        assert {k: priced[k] for k in keys} == {k: st_.mem.counts[k] for k in keys}
        check_layer(layer, h)


def test_psum_cliff_gone_digits_conv2_ws():
    """The issue's cliff: digits_cnn conv2 on cnvlutin_ws_16x16 moved 13.1 MB of
    partial sums with out_kib <= 399 and none at 400. Under the mapping partial sums
    stay on chip (k runs inside the output tile's loops) and DRAM bytes change by
    less than 10% from 399 to 400 KiB."""
    from pathlib import Path

    import accelsim

    root = Path(__file__).resolve().parents[1]
    trace = accelsim.load_trace(root / "traces" / "digits_cnn")
    layer = next(la for la in trace.layers if la.name == "conv2")
    out = {}
    for kib in (399, 400):
        hw = accelsim.load_hwconfig("cnvlutin_ws_16x16", {"memory.glb.out_kib": kib})
        c = engine.simulate_layer(layer, hw).mem.counts
        out[kib] = sum(v for k, v in c.items() if k.startswith("dram_"))
        assert c["dram_psum_write_bytes"] == 0
    assert abs(out[399] - out[400]) <= 0.1 * out[400], out


def test_mapping_config_round_trip_and_errors():
    """`mapping:` loads, shows and reloads; bad values are one-line ConfigErrors naming
    the key; a pinned size that is not a multiple of the fold extent is a one-line
    SimulationError naming the layer."""
    import yaml
    from test_memory_property import make_hw

    from accelsim import ConfigError, load_hwconfig
    from accelsim.io.hwconfig import hwconfig_to_yaml

    hw = load_hwconfig("cnvlutin_ws_16x16", {"mapping.loop_order": "knm",
                                             "mapping.glb_tile": [64, "full", 32]})
    assert hw.mapping.glb_tile == (64, "full", 32)
    again = load_hwconfig(yaml.safe_load(hwconfig_to_yaml(hw)))
    assert again == hw and again.config_hash() == hw.config_hash()
    assert load_hwconfig("cnvlutin_ws_16x16").mapping.glb_tile == "auto"
    for key, value, msg in (("mapping.glb_tile", [1, 2], r"mapping\.glb_tile: expected auto"),
                            ("mapping.glb_tile", [1, 0, 2], r"glb_tile: Tn: expected"),
                            ("mapping.glb_tile", [1, "half", 2], r"glb_tile: Tn: expected"),
                            ("mapping.loop_order", "mkk", r"mapping\.loop_order: expected")):
        with pytest.raises(ConfigError, match=msg) as err:
            load_hwconfig("cnvlutin_ws_16x16", {key: value})
        assert "\n" not in str(err.value)
    a, w = np.ones((5, 6), np.int8), np.ones((6, 7), np.int8)
    bad = make_hw(2, 2, 1, "os").with_overrides({"mapping.glb_tile": [3, "full", "full"]})
    with pytest.raises(SimulationError, match=r"'gemm'.*Tm = 3 is not a multiple of the "
                                              r"fold extent 2") as err:
        engine.simulate_gemm(a, w, bad)
    assert "\n" not in str(err.value)
    with pytest.raises(SimulationError):
        reference.simulate_gemm(a, w, bad)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_block_prefix_sums_equal_tiles_cut_from_the_mask(data):
    """Any GLB tile made of whole fold blocks (or reaching the edge) is priced from the
    per-block prefix sums exactly as when it is cut out of the mask."""
    from accelsim.io.hwconfig import FormatConfig
    from accelsim.model.mapping import BlockSums
    from accelsim.model.memory import tile_bytes

    b, x, y = (data.draw(st.integers(1, 9), label=v) for v in "bxy")
    ux, uy = data.draw(st.integers(1, 4), label="ux"), data.draw(st.integers(1, 4), label="uy")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    mask = rng.random((b, x, y)) < data.draw(st.sampled_from([0.0, 0.3, 1.0]), label="d")
    tx = data.draw(st.sampled_from([ux * i for i in range(1, 4)] + [x]), label="tx")
    ty = data.draw(st.sampled_from([uy * i for i in range(1, 4)] + [y]), label="ty")
    kind = data.draw(st.sampled_from(["dense", "bitmask", "rle", "csr", "coo"]), label="k")
    fmt = FormatConfig(kind=kind, run_bits=2, index_bits=5, ptr_bits=9)
    got = BlockSums(mask, ux, uy).tiles(min(tx, x), min(ty, y), fmt, 8)
    want = tile_bytes(mask, min(tx, x), min(ty, y), fmt, 8)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
