"""Decode steps of the bundled tiny_lm traces run on the GEMV engine under
llm_decode_gemv (engine.kind auto), prefill on its array; fetch skipping fetches exactly
the W rows of the nonzero decode activations (issue 11, item 4)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

import accelsim
from accelsim.model.engine import simulate_layer
from accelsim.model.workload import gemm_shape


@pytest.fixture(scope="module")
def trace():
    return accelsim.load_trace(ROOT / "traces" / "tiny_lm_relu")


@pytest.fixture(scope="module")
def runs(trace):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # w_bits 8 under the int16 attention operands
        on = accelsim.simulate(trace, "llm_decode_gemv")
        off = accelsim.simulate(trace, "llm_decode_gemv",
                                {"fetch_skip.w_on_zero_a": "none"})
        sys_ = accelsim.simulate(trace, "llm_decode_gemv", {"engine.kind": "systolic",
                                                            "fetch_skip.w_on_zero_a": "none"})
    return on, off, sys_


def test_decode_layers_are_gemvs_and_prefill_stays_on_the_array(trace, runs):
    on, _, sys_ = runs
    decode = on.layer.str.startswith("decode")
    assert (on.m[decode] == 1).all() and (on.m[~decode] > 1).all()
    # one fold per GEMV: GEMMs (frames x groups) x M
    assert (on.folds[decode] == on.gemms[decode] * on.m[decode]).all()
    cols = [c for c in on.columns if pd.api.types.is_integer_dtype(on[c])]
    pd_on, pd_sys = on[~decode][cols].reset_index(drop=True), sys_[~decode][cols].reset_index(
        drop=True)
    assert pd_on.equals(pd_sys)  # prefill: the array's numbers, unchanged
    assert not on[decode][cols].reset_index(drop=True).equals(
        sys_[decode][cols].reset_index(drop=True))


def test_fetch_skip_fetches_the_rows_of_nonzero_activations(trace, runs):
    on, off, _ = runs
    hw = accelsim.load_hwconfig("llm_decode_gemv")
    for layer in trace.layers:
        if not (layer.name.startswith("decode") and layer.name.endswith("ffn.fc2")):
            continue
        x = np.asarray(layer.a)  # [frames, 1, K]
        s = gemm_shape(layer)
        nz = np.count_nonzero(x.reshape(s.frames, s.k), axis=1)
        masks = int((nz > 0).sum()) * -(-s.k // 8)
        row = on.set_index("layer").loc[layer.name]
        assert row.dram_w_read_bytes == int(nz.sum()) * s.n  # int8 rows of N weights
        assert row.dram_w_read_meta_bytes == masks
        dense = off.set_index("layer").loc[layer.name]
        assert dense.dram_w_read_bytes == s.frames * s.k * s.n
        assert row.cycles < dense.cycles
        assert simulate_layer(layer, hw).cycles == row.cycles
    dec_on = on[on.layer.str.startswith("decode")]
    dec_off = off[off.layer.str.startswith("decode")]
    assert dec_on.dram_w_read_bytes.sum() < 0.8 * dec_off.dram_w_read_bytes.sum()
