"""The GEMV engine (engine.kind gemv / auto, fetch_skip): engine == GEMV reference.

Hypothesis draws small linear / matmul / conv1d / conv2d layers (1-3 frames: static,
slightly changed or new frames, for delta processing; groups, padding), every zero
policy and gate operand, lanes, pipeline, unit_rows, DRAM bandwidths (including ones
that make GEMVs fetch-bound), weight partitions around W's size (so residency flips)
and every format. Every integer the engine reports must equal the reference's.

Targeted tests: the dense closed form of docs/memory-model.md, fetch skipping on a
known input, `auto` picking the engine per layer, and the loader's one-line refusals.
"""

from __future__ import annotations

import math

import hypothesis
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelsim import ConfigError, load_hwconfig, reference
from accelsim.io.trace import conv1d, conv2d, linear, matmul
from accelsim.model import engine

POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")
KINDS = ("dense", "bitmask", "rle", "csr", "coo")
KEYS = reference.ALL_FIELDS


def gemv_hw(lanes=4, pipeline=0, policy="skip_a", *, skip="none", unit=1, fa="dense",
            fw="dense", dram_bw=math.inf, w_kib=64.0, delta=False, threshold=0.0,
            kind="gemv", gate_on="a", skip_padding=True, a_bits=8, w_bits=8, run_bits=4):
    return load_hwconfig({
        "name": "g", "array": {"rows": 1, "cols": lanes}, "dataflow": "os",
        "zero_policy": policy, "gate_on": gate_on, "skip_padding": skip_padding,
        "engine": {"kind": kind, "lanes": lanes, "pipeline": pipeline},
        "fetch_skip": {"w_on_zero_a": skip, "unit_rows": unit},
        "precision": {"a_bits": a_bits, "w_bits": w_bits},
        "memory": {"dram": {"bandwidth_bytes_per_cycle": dram_bw},
                   "glb": {"w_kib": w_kib}},
        "formats": {"a": {"kind": fa, "run_bits": run_bits},
                    "w": {"kind": fw, "run_bits": run_bits, "index_bits": 5}},
        "delta": {"enabled": delta, "threshold": threshold},
    })


def engine_ints(layer, hw) -> dict[str, int]:
    stats = engine.simulate_layer(layer, hw)
    res = stats.as_dict()
    out = {}
    for k in KEYS:
        assert isinstance(res[k], (int, np.integer)), (k, type(res[k]))
        out[k] = int(res[k])
    out["delta_gemms_skipped"] = int((~stats.gemm.active).sum())
    return out


def check(layer, hw) -> dict[str, int]:
    ref = reference.simulate_layer(layer, hw, with_skipped=True)
    got = engine_ints(layer, hw)
    if hypothesis.control.currently_in_test_context():
        fetches = "fetch_skip" if hw.fetch_skip.w_on_zero_a == "rows" else "whole W"
        hypothesis.event(f"{layer.kind} frames={layer.frames} {fetches} "
                         f"stalls={ref['stall_cycles'] > 0}")
        hypothesis.event(f"W fetched={ref['dram_w_read_bytes'] > 0} "
                         f"GEMMs skipped whole={ref['delta_gemms_skipped'] > 0}")
    want = {k: ref[k] for k in got}
    bad = ", ".join(f"{k}: engine {got[k]} ref {want[k]}" for k in got if got[k] != want[k])
    assert got == want, f"{layer.kind} a{np.shape(layer.a)} w{np.shape(layer.w)} | {bad}"
    assert got["macs_performed"] + got["macs_gated"] + got["macs_skipped"] \
        + got["macs_padding"] == got["macs_dense"]
    return ref


def _values(rng, shape, density):
    vals = rng.integers(1, 128, size=shape) * rng.choice([-1, 1], size=shape)
    return np.where(rng.random(shape) < density, vals, 0).astype(np.int8)


def _frames(rng, shape, frames, density):
    out = [_values(rng, shape, density)]
    for _ in range(1, frames):
        how = rng.choice(["static", "few", "new"])
        if how == "static":
            out.append(out[-1].copy())
        elif how == "new":
            out.append(_values(rng, shape, density))
        else:
            nxt = out[-1].astype(np.int16).ravel()
            pos = rng.choice(nxt.size, size=min(int(rng.integers(0, 4)), nxt.size),
                             replace=False)
            nxt[pos] += rng.choice([-40, -2, -1, 1, 2, 40], size=pos.size)
            out.append(np.clip(nxt, -127, 127).astype(np.int8).reshape(shape))
    return np.stack(out)


@st.composite
def layers(draw, kinds=("linear", "linear", "linear", "matmul", "conv1d", "conv2d")):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    da = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]), label="density a")
    dw = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]), label="density w")
    frames = draw(st.integers(1, 3), label="frames")
    use_frames = frames > 1 or draw(st.booleans(), label="frames axis")
    kind = draw(st.sampled_from(kinds), label="kind")
    m = draw(st.integers(1, 3), label="m")
    k = draw(st.integers(1, 7), label="k")
    n = draw(st.integers(1, 6), label="n")
    if kind == "linear":
        shape = (m, k)
        x = _frames(rng, shape, frames, da) if use_frames else _values(rng, shape, da)
        return linear("fc", x, _values(rng, (n, k), dw), frames=use_frames)
    if kind == "matmul":
        b = draw(st.integers(1, 2), label="batch")
        xa = _frames(rng, (b, m, k), frames, da) if use_frames else _values(rng, (b, m, k), da)
        xb = (_frames(rng, (b, k, n), frames, dw) if use_frames
              else _values(rng, (b, k, n), dw))
        return matmul("mm", xa, xb, frames=use_frames)
    groups = draw(st.sampled_from([1, 2]), label="groups")
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    pad = draw(st.integers(0, 1), label="padding")
    if kind == "conv1d":
        ksz = (draw(st.integers(1, 3)),)
        size = (draw(st.integers(ksz[0], 5)),)
        fn = conv1d
    else:
        size = (draw(st.integers(2, 4)), draw(st.integers(2, 4)))
        ksz = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        fn = conv2d
    shape = (1, cin, *size)
    x = _frames(rng, shape, frames, da) if use_frames else _values(rng, shape, da)
    w = _values(rng, (cout, cin // groups, *ksz), dw)
    return fn("conv", x, w, stride=1, padding=pad, groups=groups, frames=use_frames)


@st.composite
def configs(draw):
    policy = draw(st.sampled_from(POLICIES), label="policy")
    skip = "rows" if policy in ("skip_a", "skip_both") and draw(st.booleans()) else "none"
    return dict(
        lanes=draw(st.sampled_from([1, 2, 3, 8]), label="lanes"),
        pipeline=draw(st.sampled_from([0, 0, 1, 5]), label="pipeline"),
        policy=policy, skip=skip, unit=draw(st.sampled_from([1, 2, 3]), label="unit_rows"),
        fa=draw(st.sampled_from(KINDS), label="format a"),
        fw=draw(st.sampled_from(KINDS), label="format w"),
        dram_bw=draw(st.sampled_from([math.inf, 0.5, 1.0, 3.0, 16.0]), label="dram bw"),
        w_kib=draw(st.sampled_from([0.01, 0.02, 0.04, 64.0]), label="w_kib"),
        delta=draw(st.booleans(), label="delta"),
        threshold=draw(st.sampled_from([0.0, 1.0, 3.0]), label="threshold"),
        gate_on=draw(st.sampled_from(["a", "w", "both"]), label="gate_on"),
        skip_padding=draw(st.booleans(), label="skip_padding"),
        run_bits=draw(st.sampled_from([1, 2, 4]), label="run_bits"),
        w_bits=draw(st.sampled_from([4, 8, 12]), label="w_bits"),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), configs())
def test_engine_matches_reference(layer, cfg):
    lanes = cfg["lanes"]
    if cfg["w_kib"] * 1024 < lanes * math.ceil(cfg["w_bits"] / 8):
        cfg["w_kib"] = 64.0  # the loader wants one 1 x lanes tile of W
    check(layer, gemv_hw(**cfg))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(kinds=("linear", "matmul")), configs())
def test_gemv_streams_match_reference(layer, cfg):
    """The GEMV engine's own case: linear and matmul layers, batch 1 or a few rows."""
    if cfg["w_kib"] * 1024 < cfg["lanes"] * math.ceil(cfg["w_bits"] / 8):
        cfg["w_kib"] = 64.0
    check(layer, gemv_hw(**cfg))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), configs())
def test_auto_matches_reference(layer, cfg):
    """engine.kind auto: M == 1 layers on the lanes, the rest on the 1 x lanes array."""
    cfg.update(kind="auto", w_kib=64.0)  # fetch_skip is left alone by systolic layers
    check(layer, gemv_hw(**cfg))


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("k,n,lanes,pipe,bw,w_bits", [
    (37, 20, 8, 3, 4.0, 8), (64, 512, 8, 0, 8.0, 8), (10, 7, 3, 2, 100.0, 8),
    (16, 33, 4, 1, 2.5, 16), (5, 5, 1, 0, math.inf, 8)])
def test_dense_gemv_closed_form(k, n, lanes, pipe, bw, w_bits):
    """cycles = max(K·ceil(N/lanes) + pipeline, ceil(K·N·w_bytes / bw)) per dense GEMV."""
    rng = np.random.default_rng(k * n)
    a = rng.integers(1, 100, (1, k)).astype(np.int8)
    w = rng.integers(1, 100, (n, k)).astype(np.int8)
    hw = gemv_hw(lanes, pipe, "none", dram_bw=bw, w_bits=w_bits)
    st_ = engine.simulate_layer(linear("fc", a, w), hw)
    compute = k * -(-n // lanes) + pipe
    fetch = 0 if math.isinf(bw) else math.ceil(k * n * (w_bits // 8) / bw)
    assert st_.compute_cycles == compute
    assert st_.cycles == max(compute, fetch)
    assert st_.mem.counts["dram_w_read_bytes"] == k * n * (w_bits // 8)
    assert st_.gemm.folds == 1 and st_.gemm.macs_performed == k * n


def test_fetch_skip_fetches_the_units_of_nonzero_inputs():
    k, n = 10, 6
    x = np.zeros((1, k), np.int8)
    x[0, [0, 1, 7]] = [3, -2, 5]  # units of 4 rows: 0 and 1 of 3 needed
    w = np.ones((n, k), np.int8)
    layer = linear("fc", x, w)
    on = engine.simulate_layer(layer, gemv_hw(2, 1, "skip_a", skip="rows", unit=4,
                                              dram_bw=2.0)).mem
    off = engine.simulate_layer(layer, gemv_hw(2, 1, "skip_a", dram_bw=2.0)).mem
    assert off.counts["dram_w_read_bytes"] == k * n
    assert on.counts["dram_w_read_bytes"] == 8 * n  # rows 0-3 and 4-7
    assert on.counts["dram_w_read_meta_bytes"] == 1  # 3 units, one mask byte
    assert on.compute_cycles == off.compute_cycles == 3 * 3 + 1
    assert on.cycles == math.ceil((8 * n + 1) / 2.0) and off.cycles == k * n // 2
    assert on.counts["glb_w_read_bytes"] == off.counts["glb_w_read_bytes"] == 3 * n


def test_resident_w_is_fetched_once_across_frames():
    """W that fits the GLB: each unit comes from DRAM the first time a GEMV needs it."""
    x = np.zeros((3, 1, 4), np.int8)
    x[0, 0, 0] = x[1, 0, 0] = x[2, 0, 2] = 1
    layer = linear("fc", x, np.ones((5, 4), np.int8), frames=True)
    res = engine.simulate_layer(layer, gemv_hw(1, 0, "skip_a", skip="rows")).mem.counts
    assert res["dram_w_read_bytes"] == 2 * 5  # rows 0 and 2, once each
    fit = engine.simulate_layer(layer, gemv_hw(1, 0, "skip_a", w_kib=0.01)).mem.counts
    assert fit["dram_w_read_bytes"] == 3 * 20  # 20 bytes > 10.24: whole W every GEMV
    check(layer, gemv_hw(1, 0, "skip_a", skip="rows"))


def test_auto_puts_decode_rows_on_the_lanes():
    w = np.ones((6, 8), np.int8)
    hw = gemv_hw(4, 2, "skip_a", kind="auto", dram_bw=1.0)
    one = engine.simulate_layer(linear("step", np.ones((1, 8), np.int8), w), hw)
    many = engine.simulate_layer(linear("prefill", np.ones((4, 8), np.int8), w), hw)
    assert one.compute_cycles == 8 * 2 + 2 and one.gemm.folds == 1
    sys_hw = gemv_hw(4, 2, "skip_a", kind="systolic", dram_bw=1.0)
    sys_many = engine.simulate_layer(linear("prefill", np.ones((4, 8), np.int8), w), sys_hw)
    assert many.as_dict() == sys_many.as_dict()


@pytest.mark.parametrize("over,msg", [
    ({"fetch_skip.w_on_zero_a": "rows"},
     "fetch_skip.w_on_zero_a: rows is only modelled on the GEMV engine"),
    ({"engine.kind": "gemv", "engine.lanes": 4, "fetch_skip.w_on_zero_a": "rows",
      "zero_policy": "gate"}, "needs zero_policy skip_a or skip_both, got gate"),
    ({"engine.kind": "gemv", "engine.lanes": 5}, "engine.lanes: expected the array's MACs"),
    ({"engine.kind": "gemv", "engine.lanes": 4, "structured.n": 2},
     "engine.kind: gemv is not modelled with these settings; it needs structured.n: 0"),
    ({"engine.kind": "gemvv"}, "engine.kind: expected one of systolic, gemv, auto"),
    ({"engine.lanes": -1}, "engine.lanes: expected an integer >= 0"),
    ({"fetch_skip.unit_rows": 0}, "fetch_skip.unit_rows: expected an integer >= 1"),
    ({"engine.pipeline": -1}, "engine.pipeline: expected an integer >= 0"),
])
def test_config_errors_are_one_line(over, msg):
    base = {"name": "e", "array": {"rows": 2, "cols": 2}, "dataflow": "os",
            "zero_policy": "skip_a"}
    with pytest.raises(ConfigError, match=msg) as e:
        load_hwconfig(base, over)
    assert "\n" not in str(e.value)


def test_lanes_default_to_the_arrays_macs():
    hw = load_hwconfig({"name": "l", "array": {"rows": 2, "cols": 3, "macs_per_pe": 2},
                        "dataflow": "os", "engine": {"kind": "gemv"}})
    assert hw.engine.lanes == 0 and hw.gemv_lanes == 12
    assert load_hwconfig(hw.to_dict(), {"engine.lanes": 12}).gemv_lanes == 12


def test_existing_configs_default_to_the_systolic_engine():
    from accelsim.io.hwconfig import shipped_configs

    for p in shipped_configs():
        hw = load_hwconfig(p)
        if p.stem not in ("edgedrnn_gemv", "llm_decode_gemv"):
            assert hw.engine.kind == "systolic" and hw.fetch_skip.w_on_zero_a == "none"
