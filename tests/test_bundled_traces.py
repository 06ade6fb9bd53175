"""The bundled traces of real trained networks load, say where they came from, simulate,
and (with the torch extra) are what their scripts make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trace_scripts import load_script

import accelsim
import accelsim.tracing
from accelsim.analysis.inspect import inspect_trace
from accelsim.model.engine import simulate_layer

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
REAL = ["digits_cnn", "digits_cnn_pruned", "moving_digits", "silero_vad"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts)


def _script(name: str):
    return load_script(name)


@pytest.mark.parametrize("name", REAL)
def test_loads_with_provenance(name):
    tr = accelsim.load_trace(TRACES / name)
    assert tr.model == name and len(tr) >= 5
    p = tr.provenance
    assert p["tracer"] == "accelsim.trace_torch" and p["torch_version"].startswith("2.13.0")
    assert p["quantize"]["activations"].startswith("int8") and p["script"] == \
        f"traces/make_{name}.py"
    assert (ROOT / p["script"]).is_file()
    assert p["skipped"] == [] and p["model_training_mode"] is False
    for layer in tr:
        assert layer.a.dtype == np.int8 and layer.w.dtype == np.int8
        assert layer.quant_of("input").scheme == "symmetric"
        assert layer.quant_of("weight").scheme == "per_channel"
    if "checkpoint" in p:
        assert (ROOT / p["checkpoint"]).is_file()


def test_bundled_size_stays_small():
    assert _size(TRACES) < 4 * 2**20


def test_digits_accuracy_and_pruning():
    dense = accelsim.load_trace(TRACES / "digits_cnn")
    pruned = accelsim.load_trace(TRACES / "digits_cnn_pruned")
    assert dense.provenance["test_accuracy"] >= 0.97
    assert pruned.provenance["test_accuracy"] >= 0.96
    assert [ly.name for ly in dense] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    for ly in dense:
        assert not ly.frames and ly.a.shape[0] == 100
    for ly in pruned:
        assert np.count_nonzero(ly.w) / ly.w.size <= 0.26
    # activations after a ReLU are nonnegative and have real zeros
    df = inspect_trace(dense).set_index("layer")
    assert (dense["conv2"].a >= 0).all() and df.loc["conv2", "density_a"] < 0.9


def test_moving_digits_frames():
    tr = accelsim.load_trace(TRACES / "moving_digits")
    assert tr.provenance["test_accuracy"] >= 0.9
    for ly in tr:
        assert ly.frames and ly.num_frames == 16 and ly.a.shape[1] == 4
    df = inspect_trace(tr).set_index("layer")
    assert df.loc["conv1", "unchanged_frac_a"] > 0.5  # mostly static background


def test_silero_vad_frames_and_lstm():
    tr = accelsim.load_trace(TRACES / "silero_vad")
    names = [ly.name for ly in tr]
    assert names == ["stft", "encoder.0", "encoder.1", "encoder.2", "encoder.3", "rnn.ih",
                     "rnn.hh", "head"]
    n = tr["stft"].num_frames
    assert n >= 100 and all(ly.frames and ly.num_frames == n for ly in tr)
    assert tr["rnn.ih"].w.shape == (512, 128) and tr["rnn.hh"].w.shape == (512, 128)
    assert not tr["rnn.hh"].a[0].any()  # the LSTM starts from a zero state
    probs = tr.provenance["speech_prob_per_chunk"]
    assert len(probs) == n and 0 < tr.provenance["speech_chunks"] < n


@pytest.mark.parametrize("name", REAL)
def test_simulates(name):
    hw = accelsim.load_hwconfig("sparse_os_16x16")
    for layer in accelsim.load_trace(TRACES / name):
        st = simulate_layer(layer, hw).gemm
        assert 0 < st.macs_performed <= st.macs_dense
        assert (st.macs_performed + st.macs_gated + st.macs_skipped + st.macs_padding
                == st.macs_dense)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_cnn_pruned", "moving_digits"])
def test_scripts_regenerate_the_same_trace(name, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    _script(name).main(["--out", str(tmp_path / name)])
    new = accelsim.load_trace(tmp_path / name)
    old = accelsim.load_trace(TRACES / name)
    assert [ly.name for ly in new] == [ly.name for ly in old]
    for a, b in zip(new, old, strict=True):
        np.testing.assert_array_equal(a.a, b.a)
        np.testing.assert_array_equal(a.w, b.w)
    assert new.provenance["test_accuracy"] == old.provenance["test_accuracy"]


def test_silero_eager_model_matches_torchscript():
    torch = pytest.importorskip("torch")
    silero_vad = pytest.importorskip("silero_vad")
    mod = _script("silero_vad")
    audio = mod.read_wav(mod.WAV)
    chunks = [torch.from_numpy(audio[i:i + mod.CHUNK].copy())[None]
              for i in range(0, 40 * mod.CHUNK, mod.CHUNK)]
    jit = silero_vad.load_silero_vad()
    eager = mod.SileroVAD16k.from_jit(jit)
    p_jit = mod.speech_probs(jit, chunks, jit=True)
    p_eager = mod.speech_probs(eager, chunks, jit=False)
    np.testing.assert_allclose(p_eager, p_jit, atol=1e-5)
    # the bundled trace's first frames are these chunks' layer inputs
    eager.reset_states()
    res = accelsim.tracing.trace_torch(eager, chunks, None, quantize="none")
    old = accelsim.load_trace(TRACES / "silero_vad")
    for layer in res.trace:
        q = old[layer.name]
        scale = q.quant_of("input").scale
        want = np.clip(np.rint(layer.a / scale), -127, 127)
        got = np.asarray(q.a[:40], dtype=np.float64)
        assert np.abs(want - got).max() <= 1 and np.mean(want != got) < 1e-3
