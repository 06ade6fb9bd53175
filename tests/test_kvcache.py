"""The KV cache region of decoding (docs/kv-cache.md): closed forms, residency, GQA,
energy, and errors for bad meta."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import accelsim
from accelsim.errors import TraceError
from accelsim.io import trace as tr
from accelsim.io.synthetic import decode_attention_trace
from accelsim.model.kvcache import KV_KEYS, kv_cache_meta, kv_use
from tests.conftest import hw_dict


def _hw(**over):
    return accelsim.load_hwconfig(hw_dict(policy="skip_both"), over)


@settings(max_examples=25, deadline=None)
@given(blocks=st.integers(1, 3), kvh=st.integers(1, 3), rep=st.integers(1, 3),
       hd=st.integers(1, 12), prompt=st.integers(1, 9), steps=st.integers(1, 3),
       bits=st.sampled_from([0, 4, 8, 16]))
def test_decode_step_bytes_match_the_closed_form_when_the_cache_does_not_fit(
        blocks, kvh, rep, hd, prompt, steps, bits):
    trace = decode_attention_trace(blocks, kvh * rep, kvh, hd, prompt, steps, seed=1)
    df = accelsim.simulate(trace, _hw(**{"kv_cache.placement": "dram",
                                         "kv_cache.bits": bits})).set_index("layer")
    e_bits = bits or 8
    for step in range(1, steps + 1):
        length = prompt + step
        for b in range(blocks):
            for op in ("qk", "pv"):
                row = df.loc[f"step{step}.b{b}.{op}"]
                # bytes per step = cache length x (K/V) heads x head_dim x bytes, per layer
                assert row.dram_kv_read_bytes == -(-length * kvh * hd * e_bits // 8)
                assert row.dram_kv_write_bytes == -(-kvh * hd * e_bits // 8)
                assert row.kv_in_dram == 1
                # the b operand's ordinary fetch is replaced by the cache's traffic
                assert row.dram_w_read_bytes == 0 and row.dram_w_read_meta_bytes == 0
    pre = df.loc["prefill.b0.qk"]
    assert pre.dram_kv_write_bytes == -(-prompt * kvh * hd * e_bits // 8)


def test_residency_follows_the_whole_cache_size():
    trace = decode_attention_trace(blocks=2, heads=4, kv_heads=2, head_dim=16, prompt=30,
                                   steps=4)
    # a step's cache: 2 blocks x K and V x length x 2 heads x 16 x 1 byte
    size = {s: 2 * 2 * (30 + s) * 2 * 16 for s in range(5)}
    kib = (size[2] + 1) / 1024  # steps 0..2 fit, 3 and 4 do not
    df = accelsim.simulate(trace, _hw(**{"kv_cache.glb_kib": kib}))
    for _, row in df.iterrows():
        step = kv_use(trace[row.layer]).step
        fits = size[step] <= kib * 1024
        assert row.kv_in_dram == (0 if fits else 1), row.layer
        if fits:
            assert row.dram_kv_read_bytes == 0 and row.dram_kv_write_bytes == 0
            assert row.glb_kv_write_bytes == (30 if step == 0 else 1) * 2 * 16
        else:
            assert row.dram_kv_read_bytes == (30 + step) * 2 * 16
    assert "glb_kv_write_bytes" in accelsim.totals(df)


def test_kv_traffic_is_priced():
    trace = decode_attention_trace(blocks=1, prompt=16, steps=2)
    glb = accelsim.simulate(trace, _hw(**{"kv_cache.placement": "glb"}))
    dram = accelsim.simulate(trace, _hw(**{"kv_cache.placement": "dram"}))
    assert (dram.energy_dram_pj > glb.energy_dram_pj).all()
    assert dram.macs_performed.equals(glb.macs_performed)
    assert (dram.dram_bytes - glb.dram_bytes).equals(
        dram.dram_kv_read_bytes + dram.dram_kv_write_bytes)


def test_gqa_reads_kv_heads_not_query_heads():
    mha = accelsim.simulate(decode_attention_trace(heads=4, kv_heads=4, steps=1),
                            _hw(**{"kv_cache.placement": "dram"}))
    gqa = accelsim.simulate(decode_attention_trace(heads=4, kv_heads=1, steps=1),
                            _hw(**{"kv_cache.placement": "dram"}))
    assert (mha.macs_dense == gqa.macs_dense).all()
    assert (mha.dram_kv_read_bytes == 4 * gqa.dram_kv_read_bytes).all()


def test_layers_without_a_cache_are_unchanged(root):
    df = accelsim.simulate(root / "traces" / "digits_cnn", "sparse_os_16x16")
    assert (df[list(KV_KEYS)] == 0).all().all() and (df.dram_w_read_bytes > 0).all()


def _layer(meta, b_shape=(2, 4, 5)):
    return tr.matmul("qk", np.ones((2, 1, b_shape[1]), np.int8),
                     np.ones(b_shape, np.int8), meta={"kv_cache": meta})


@pytest.mark.parametrize("meta, msg", [
    ({"tensor": "q"}, "missing key 'block'"),
    ({**kv_cache_meta("k", 0, 1, 1, 4, 5, 1), "extra": 1}, "unknown key 'extra'"),
    (kv_cache_meta("x", 0, 1, 1, 4, 5, 1), "tensor: expected k or v"),
    (kv_cache_meta("k", 0, 1, 0, 4, 5, 1), "kv_heads: expected an integer >= 1"),
    (kv_cache_meta("k", 0, 1, 1, 4, 5, 6), "appended: expected at most length = 5"),
    (kv_cache_meta("k", 0, 1, 1, 4, 6, 1), r"b's last two dims are \[4, 5\], expected "
                                           r"\[4, 6\]"),
    (kv_cache_meta("k", 0, 1, 3, 4, 5, 1), "expected a divisor of the layer's 2 heads"),
])
def test_bad_meta_is_one_line(meta, msg):
    with pytest.raises(TraceError, match=msg):
        kv_use(_layer(meta))


def test_only_matmul_layers_read_the_cache():
    layer = tr.linear("fc", np.ones((1, 4), np.int8), np.ones((3, 4), np.int8),
                      meta={"kv_cache": kv_cache_meta("k", 0, 0, 1, 4, 3, 3)})
    with pytest.raises(TraceError, match="only matmul layers read the KV cache"):
        kv_use(layer)


def test_kv_config_keys():
    hw = accelsim.load_hwconfig("sparse_os_16x16")
    assert hw.kv_cache.placement == "auto" and hw.kv_cache.bits == 0
    with pytest.raises(accelsim.ConfigError, match="kv_cache.placement: expected one of"):
        accelsim.load_hwconfig("sparse_os_16x16", {"kv_cache.placement": "l2"})
