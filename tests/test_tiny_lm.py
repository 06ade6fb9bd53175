"""The bundled trained transformers (traces/make_tiny_lm_*.py): what they hold, their
attention and KV cache, thresholds on their FFN inputs, and that their scripts make them
again byte for byte."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from trace_scripts import load_script

import accelsim
from accelsim.model.kvcache import kv_use

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
TWINS = ["tiny_lm_relu", "tiny_lm_gelu"]


def _trace(name):
    return accelsim.load_trace(TRACES / name)


@pytest.mark.parametrize("name", TWINS)
def test_provenance_and_layers(name):
    tr = _trace(name)
    p = tr.provenance
    assert p["script"] == f"traces/make_{name}.py" and (ROOT / p["script"]).is_file()
    assert (ROOT / p["checkpoint"]).is_file() and p["skipped"] == []
    assert p["model_training_mode"] is False and p["torch_version"].startswith("2.13.0")
    ppl = p["validation_perplexity_ffn_threshold"]
    assert list(ppl) == ["0%", "25%", "50%", "75%"] and ppl["0%"] == p["validation_perplexity"]
    # a trained character model: far better than uniform over 96 symbols
    assert 1 < ppl["0%"] < 6
    assert ppl["0%"] <= ppl["25%"] <= ppl["50%"] <= ppl["75%"]
    kinds = {ly.kind for ly in tr}
    assert kinds == {"linear", "matmul"}
    for ly in tr:
        assert ly.a.dtype == np.int16  # activations; weights int8
        assert ly.w.dtype == (np.int8 if ly.kind == "linear" else np.int16)
        if ly.kind == "linear":
            assert ly.frames == ly.name.startswith("decode.")
            assert not ly.frames or ly.num_frames == p["decode_steps"]
        else:
            assert kv_use(ly) is not None


@pytest.mark.parametrize("name", TWINS)
def test_attention_layers_and_kv_cache(name):
    tr = _trace(name)
    attn = [ly for ly in tr if ly.kind == "matmul"]
    steps = tr.provenance["decode_steps"]
    assert len(attn) == 2 * 2 * (steps + 1)  # qk and pv, 2 blocks, prefill + steps
    prompt = len(tr.provenance["prompt"])
    for ly in attn:
        use = kv_use(ly)
        assert use.length == prompt + use.step
        assert use.appended == (prompt if use.step == 0 else 1)
        assert use.kv_heads == 2 and use.head_dim == 16
    # causal attention: softmax(q k^T) is exactly zero above the diagonal in the prefill
    p = np.asarray(tr["blocks.0.attn.pv"].a)  # [heads, T, T]
    assert not p[:, np.triu_indices(prompt, 1)[0], np.triu_indices(prompt, 1)[1]].any()
    # GQA: query heads 0, 1 share K/V head 0
    kt = np.asarray(tr["blocks.0.attn.qk"].w)  # [heads, head_dim, T]
    np.testing.assert_array_equal(kt[0], kt[1])


def test_decode_traffic_includes_the_kv_cache():
    tr = _trace("tiny_lm_gelu")
    df = accelsim.simulate(tr, "sparse_os_16x16",
                           overrides={"kv_cache.glb_kib": 1}).set_index("layer")
    for t in range(1, tr.provenance["decode_steps"] + 1):
        for blk in (0, 1):
            for op in ("qk", "pv"):
                row = df.loc[f"decode{t}.blocks.{blk}.attn.{op}"]
                length = len(tr.provenance["prompt"]) + t
                assert row.kv_in_dram == 1
                assert row.dram_kv_read_bytes == length * 2 * 16  # a_bits 8: 1 byte
                assert row.dram_kv_write_bytes == 2 * 16
    resident = accelsim.simulate(tr, "sparse_os_16x16")
    assert (resident.kv_in_dram == 0).all() and resident.dram_kv_read_bytes.sum() == 0


def test_threshold_at_half_sparsity_halves_the_ffn_macs():
    """The GELU twin's FFN inputs are dense; a threshold calibrated to 50% sparsity on
    them halves their performed MACs under skip_a (within 1%, per layer and in total)."""
    tr = _trace("tiny_lm_gelu")
    base = accelsim.simulate(tr, "cnvlutin_ws_16x16").set_index("layer")
    df = accelsim.simulate(tr, "cnvlutin_ws_16x16",
                           thresholds={"*ffn.fc1,*ffn.fc2": {"target": 0.5}}).set_index("layer")
    ffn = df.index[df.index.str.contains("ffn.fc")]
    assert len(ffn) == 8
    assert (base.loc[ffn, "density_a"] > 0.55).all()
    ratio = df.loc[ffn, "macs_performed"].sum() / df.loc[ffn, "macs_dense"].sum()
    assert abs(ratio - 0.5) <= 0.01
    # each layer: performed = (1 - sparsity reached) x dense, exactly (skip_a, linear)
    reached = df.loc[ffn, "thr_sparsity_a"]
    np.testing.assert_allclose(df.loc[ffn, "macs_performed"] / df.loc[ffn, "macs_dense"],
                               1 - reached, rtol=0, atol=1e-12)
    assert (abs(reached - 0.5) < 0.01).all()
    assert (df.loc[ffn, "thr_err_rel"] > 0).all() and df.loc[ffn, "thr_err_max"].notna().all()
    others = df.index.difference(ffn)
    assert df.loc[others, "macs_performed"].equals(base.loc[others, "macs_performed"])


def test_relu_ffn_has_exact_zeros_and_gelu_near_zeros():
    relu = accelsim.inspect(_trace("tiny_lm_relu")).set_index("layer")
    gelu = accelsim.inspect(_trace("tiny_lm_gelu")).set_index("layer")
    for b in (0, 1):
        fc2 = f"blocks.{b}.ffn.fc2"
        assert relu.loc[fc2, "density_a"] < 0.5 < gelu.loc[fc2, "density_a"]


def _script(name: str):
    return load_script(name)


def _same_up_to_rounding(old, new, path: str) -> None:
    """Equal, except where float32 rounding on another CPU (a different BLAS kernel)
    moves a value across a quantisation boundary: integers by at most one step, in at
    most 1% of a tensor's elements (2 of a small one); floats (scales, perplexities) to 1e-5."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and old.keys() == new.keys(), path
        for k in old:
            _same_up_to_rounding(old[k], new[k], f"{path}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), path
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _same_up_to_rounding(a, b, f"{path}[{i}]")
    elif isinstance(old, float):
        assert new == pytest.approx(old, rel=1e-5), path
    elif isinstance(old, np.ndarray):
        assert old.dtype == new.dtype and old.shape == new.shape, path
        if old.dtype.kind in "iu":
            d = np.abs(old.astype(np.int64) - new.astype(np.int64))
            assert d.max(initial=0) <= 1 and (d > 0).sum() <= max(2, 0.01 * d.size), path
        else:
            np.testing.assert_allclose(new, old, rtol=1e-5, err_msg=path)
    elif not (isinstance(old, str) and len(old) == 64 and path.endswith("sha256")):
        assert old == new, path


@pytest.mark.parametrize("name", TWINS)
def test_scripts_regenerate_the_same_trace(name, tmp_path):
    """The scripts regenerate the bundled trace from the committed checkpoint: byte for
    byte on the CPU that wrote it, and up to float32 rounding on any other."""
    pytest.importorskip("torch")
    import yaml

    _script(name).main(["--out", str(tmp_path / name)])
    old = sorted(p.name for p in (TRACES / name).iterdir())
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == old
    _, mismatch, errors = filecmp.cmpfiles(TRACES / name, tmp_path / name, old, shallow=False)
    assert errors == []
    for fname in mismatch:
        a, b = TRACES / name / fname, tmp_path / name / fname
        if fname.endswith(".npy"):
            _same_up_to_rounding(np.load(a, allow_pickle=False),
                                 np.load(b, allow_pickle=False), fname)
        else:
            _same_up_to_rounding(yaml.safe_load(a.read_text()),
                                 yaml.safe_load(b.read_text()), fname)
