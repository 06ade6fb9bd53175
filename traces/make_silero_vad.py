"""Make ``traces/silero_vad``: the silero-vad voice-activity detector (its bundled
TorchScript model, 16 kHz) streaming over a few seconds of synthesized speech, one
512-sample chunk per frame, int8.

Forward hooks do not run inside TorchScript, so this script builds an eager
``nn.Module`` with the same computation, copies every weight from the model that
``silero_vad.load_silero_vad()`` returns (not from the package's ``.safetensors`` file,
which holds different weights), and checks that both give the same speech
probabilities on every chunk before tracing it.

The per-chunk computation: 64 samples of context + 512 new samples, reflect-padded by
64, an STFT as a Conv1d (258 filters of 256 taps, stride 128; fixed basis, not
trained) -> magnitude [129 x 4] -> 4x (Conv1d k=3 + ReLU) -> LSTMCell(128, 128) ->
ReLU -> Conv1d(128, 1, 1) -> sigmoid -> mean. The LSTM state and the context carry
over between chunks, so frame t of every layer is chunk t of the stream.

    pip install -e ".[torch]" && pip install --no-deps silero-vad==6.2.3 scipy
    python traces/make_silero_vad.py                # uses traces/inputs/speech_16k.wav
    apt-get install -y espeak-ng && python traces/make_silero_vad.py --resynthesize
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accelsim.analysis.inspect import inspect_trace  # noqa: E402
from accelsim.tracing import trace_torch  # noqa: E402

HERE = Path(__file__).resolve().parent
NAME = "silero_vad"
RATE = 16000
CHUNK = 512
WAV = HERE / "inputs" / "speech_16k.wav"
PHRASES = ("Sparse accelerators skip the zeros.", "Is anybody listening?")
SEED = 0


class SileroVAD16k(nn.Module):
    """Eager equivalent of silero-vad's 16 kHz TorchScript model, streaming one chunk
    per call; ``reset_states()`` starts a new stream."""

    CONTEXT = 64

    def __init__(self) -> None:
        super().__init__()
        self.stft = nn.Conv1d(1, 258, 256, stride=128, bias=False)
        self.encoder = nn.ModuleList([
            nn.Conv1d(129, 128, 3, stride=1, padding=1),
            nn.Conv1d(128, 64, 3, stride=2, padding=1),
            nn.Conv1d(64, 64, 3, stride=2, padding=1),
            nn.Conv1d(64, 128, 3, stride=1, padding=1),
        ])
        self.rnn = nn.LSTMCell(128, 128)
        self.head = nn.Conv1d(128, 1, 1)
        self.reset_states()

    def reset_states(self, batch: int = 1) -> None:
        self.context = torch.zeros(batch, self.CONTEXT)
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_jit(cls, jit_model) -> SileroVAD16k:
        m = jit_model._model
        eager = cls()
        with torch.no_grad():
            eager.stft.weight.copy_(m.stft.forward_basis_buffer)
            for i, conv in enumerate(eager.encoder):
                src = getattr(m.encoder, str(i)).reparam_conv
                conv.weight.copy_(src.weight)
                conv.bias.copy_(src.bias)
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(eager.rnn, k).copy_(getattr(m.decoder.rnn, k))
            head = getattr(m.decoder.decoder, "2")
            eager.head.weight.copy_(head.weight)
            eager.head.bias.copy_(head.bias)
        return eager.eval()

    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.context, chunk], dim=1)
        self.context = x[:, -self.CONTEXT:]
        x = F.pad(x, (0, 64), mode="reflect").unsqueeze(1)
        spec = self.stft(x)
        mag = torch.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)
        for conv in self.encoder:
            mag = F.relu(conv(mag))
        h, c = self.rnn(mag.squeeze(-1), self.state)
        self.state = (h, c)
        p = torch.sigmoid(self.head(F.relu(h).unsqueeze(-1)))
        return p.squeeze(1).mean(dim=1, keepdim=True)


def synthesize(path: Path) -> None:
    """Speech from espeak-ng, resampled to 16 kHz, with pauses and faint noise."""
    from scipy.signal import resample_poly

    rng = np.random.default_rng(SEED)
    parts = [np.zeros(int(0.5 * RATE))]
    for text in PHRASES:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "s.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(out), text],
                           check=True)
            with wave.open(str(out)) as w:
                rate = w.getframerate()
                pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
        parts += [resample_poly(pcm, RATE, rate), np.zeros(int(0.4 * RATE))]
    audio = np.concatenate(parts)
    audio = audio / np.abs(audio).max() * 0.5 + rng.normal(0, 1e-3, audio.size)
    audio = audio[: audio.size // CHUNK * CHUNK]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.rint(audio * 32767), -32768, 32767).astype("<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return (np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0).astype(np.float32)


def speech_probs(model, chunks: list[torch.Tensor], jit: bool) -> np.ndarray:
    model.reset_states()
    with torch.no_grad():
        return np.array([float(model(c, RATE) if jit else model(c)) for c in chunks])


def main(argv: list[str] | None = None) -> None:
    import silero_vad

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resynthesize", action="store_true",
                    help=f"make {WAV.name} again with espeak-ng")
    ap.add_argument("--out", default=str(HERE / NAME))
    args = ap.parse_args(argv)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    if args.resynthesize or not WAV.exists():
        synthesize(WAV)
    audio = read_wav(WAV)
    chunks = [torch.from_numpy(audio[i:i + CHUNK].copy())[None]
              for i in range(0, audio.size - CHUNK + 1, CHUNK)]
    jit = silero_vad.load_silero_vad()
    eager = SileroVAD16k.from_jit(jit)
    p_jit = speech_probs(jit, chunks, jit=True)
    p_eager = speech_probs(eager, chunks, jit=False)
    diff = float(np.abs(p_jit - p_eager).max())
    if diff > 1e-4:
        raise SystemExit(f"eager model differs from silero-vad's TorchScript model by {diff}")
    eager.reset_states()
    res = trace_torch(
        eager, chunks, args.out, quantize="int8", model_name=NAME,
        input_description=(f"{len(chunks)} chunks of {CHUNK} samples ({CHUNK / RATE * 1000:.0f} "
                           f"ms) streamed in order, {audio.size / RATE:.2f} s of 16 kHz audio: "
                           f"espeak-ng (en-us) saying {' / '.join(PHRASES)!r} with pauses "
                           "and faint noise (traces/inputs/speech_16k.wav)"),
        provenance={
            "source_model": (f"silero-vad {silero_vad.__version__}: load_silero_vad() "
                             "TorchScript model (silero_vad.jit), 16 kHz branch"),
            "equivalence": ("eager re-implementation with the TorchScript model's weights; "
                            f"max |p_eager - p_jit| over all chunks = {diff:.2e}"),
            "speech_chunks": int((p_jit > 0.5).sum()),
            "speech_prob_per_chunk": [round(float(p), 3) for p in p_jit],
            "layers_note": ("stft is the model's fixed STFT basis as a conv; rnn.ih / rnn.hh "
                            "are the LSTM cell's input and hidden GEMMs"),
            "script": f"traces/make_{NAME}.py",
        })
    print(f"{len(chunks)} chunks, {int((p_jit > 0.5).sum())} with speech; max |p diff| "
          f"{diff:.2e}; wrote {res.path}")
    print(inspect_trace(res.path).to_string())


if __name__ == "__main__":
    main()
