"""Shared pieces of the scripts that make the tiny_lm traces (not part of accelsim).

Data: the Python documentation text that ships with the standard library
(``pydoc_data.topics``: every topic, in sorted key order, joined by newlines), character
level. Characters outside printable ASCII become ``?``. The first 90% trains, the last
10% is the validation text for perplexity.

Model: a decoder-only transformer (pre-LayerNorm, learned positions, 2 blocks, d_model
64, 4 query heads sharing 2 K/V heads (grouped-query attention), head_dim 16, FFN 256
with ReLU or GELU), with a KV cache for generation. Attention is two explicit
``torch.matmul`` calls, which ``accelsim.trace_torch`` records as ``matmul`` layers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
CHECKPOINTS = HERE / "checkpoints"
SEED = 0
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))  # 96 symbols
D_MODEL, HEADS, KV_HEADS, HEAD_DIM, D_FFN, BLOCKS, CONTEXT = 64, 4, 2, 16, 256, 2, 64
STEPS, BATCH, LR = 6000, 64, 3e-3
PROMPT = "def read_file(path):\n    with open(path) as f:\n"
DECODE_STEPS = 3


def seed_everything(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)


def text() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def encode(s: str) -> np.ndarray:
    table = {c: i for i, c in enumerate(VOCAB)}
    q = table["?"]
    return np.array([table.get(c, q) for c in s], np.int64)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def split() -> tuple[np.ndarray, np.ndarray]:
    ids = encode(text())
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:]


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(D_MODEL, HEADS * HEAD_DIM)
        self.k = nn.Linear(D_MODEL, KV_HEADS * HEAD_DIM)
        self.v = nn.Linear(D_MODEL, KV_HEADS * HEAD_DIM)
        self.o = nn.Linear(HEADS * HEAD_DIM, D_MODEL)
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.use_cache = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k(x).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v(x).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        past = 0
        if self.use_cache:
            if self.cache is not None:
                past = self.cache[0].shape[2]
                k = torch.cat([self.cache[0], k], dim=2)
                v = torch.cat([self.cache[1], v], dim=2)
            self.cache = (k, v)
        rep = HEADS // KV_HEADS
        kk = k.repeat_interleave(rep, dim=1)
        vv = v.repeat_interleave(rep, dim=1)
        kt = kk.transpose(-1, -2)
        s = torch.matmul(q, kt) / math.sqrt(HEAD_DIM)
        n = kk.shape[2]
        mask = torch.ones(t, n, dtype=torch.bool, device=x.device).tril(diagonal=past)
        p = F.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
        y = torch.matmul(p, vv)
        return self.o(y.transpose(1, 2).reshape(b, t, HEADS * HEAD_DIM))


class FFN(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D_MODEL, D_FFN)
        self.fc2 = nn.Linear(D_FFN, D_MODEL)
        self.act = nn.ReLU() if act == "relu" else nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.attn = Attention()
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.ffn = FFN(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.tok = nn.Embedding(len(VOCAB), D_MODEL)
        self.pos = nn.Embedding(CONTEXT, D_MODEL)
        self.blocks = nn.ModuleList(Block(act) for _ in range(BLOCKS))
        self.ln = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, len(VOCAB))
        self.offset = 0  # position of the next token when generating with the cache

    def set_cache(self, on: bool) -> None:
        self.offset = 0
        for blk in self.blocks:
            blk.attn.use_cache = on
            blk.attn.cache = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        start = self.offset if self.blocks[0].attn.use_cache else 0
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.tok(idx) + self.pos(pos)[None]
        for blk in self.blocks:
            x = blk(x)
        if self.blocks[0].attn.use_cache:
            self.offset += t
        return self.head(self.ln(x))


def _batches(ids: np.ndarray, gen: torch.Generator, device: str):
    data = torch.from_numpy(ids)
    while True:
        starts = torch.randint(0, len(data) - CONTEXT - 1, (BATCH,), generator=gen)
        x = torch.stack([data[s:s + CONTEXT] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + 1 + CONTEXT] for s in starts.tolist()])
        yield x.to(device), y.to(device)


def train(model: TinyLM, ids: np.ndarray, steps: int = STEPS, log=print,
          device: str = "cpu") -> float:
    """AdamW (weight decay 0.01) with linear warm-up and cosine decay; seconds taken.
    The committed checkpoints were trained with ``device="cuda"`` (an H200; on 2 CPU
    cores this takes over an hour); the model is moved back to the CPU at the end."""
    t0 = time.time()
    model.to(device)
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    it = _batches(ids, gen, device)
    for s in range(steps):
        x, y = next(it)
        loss = F.cross_entropy(model(x).reshape(-1, len(VOCAB)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log and (s % 500 == 0 or s == steps - 1):
            log(f"  step {s}/{steps}: loss {float(loss):.4f}")
    model.eval()
    model.to("cpu")
    return time.time() - t0


@torch.no_grad()
def perplexity(model: TinyLM, ids: np.ndarray, windows: int | None = None) -> float:
    """exp(mean next-character NLL) over non-overlapping windows of CONTEXT + 1
    characters of ``ids`` (the first ``windows`` of them, or all)."""
    model.eval()
    model.set_cache(False)
    n = (len(ids) - 1) // CONTEXT
    if windows is not None:
        n = min(n, windows)
    data = torch.from_numpy(ids[:n * CONTEXT + 1])
    x = data[:-1].view(n, CONTEXT)
    y = data[1:].view(n, CONTEXT)
    nll = 0.0
    for i in range(0, n, 128):
        logits = model(x[i:i + 128])
        nll += float(F.cross_entropy(logits.reshape(-1, len(VOCAB)), y[i:i + 128].reshape(-1),
                                     reduction="sum"))
    return math.exp(nll / (n * CONTEXT))


def save_checkpoint(model: TinyLM, name: str) -> Path:
    """A small file: every matrix as int8 with one float32 scale per row (symmetric,
    ``scale = max|row| / 127``), vectors (biases, LayerNorm) as float16. The model then
    runs these values in float32."""
    CHECKPOINTS.mkdir(exist_ok=True)
    path = CHECKPOINTS / f"{name}.pt"
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().float().cpu()
        if v.dim() == 2:
            scale = v.abs().amax(dim=1).clamp_min(1e-12) / 127
            state[k] = torch.round(v / scale[:, None]).clamp(-127, 127).to(torch.int8)
            state[k + ".scale"] = scale
        else:
            state[k] = v.half()
    torch.save(state, path)
    return path


def load_checkpoint(model: TinyLM, name: str) -> bool:
    path = CHECKPOINTS / f"{name}.pt"
    if not path.exists():
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {}
    for k, v in state.items():
        if k.endswith(".scale"):
            continue
        weights[k] = (v.float() * state[k + ".scale"][:, None] if v.dtype == torch.int8
                      else v.float())
    model.load_state_dict(weights)
    model.eval()
    return True


def trained_model(name: str, act: str, retrain: bool = False) -> tuple[TinyLM, dict]:
    seed_everything()
    model = TinyLM(act)
    info: dict = {"checkpoint": f"traces/checkpoints/{name}.pt"}
    if retrain or not load_checkpoint(model, name):
        train_ids, _ = split()
        secs = train(model, train_ids)
        save_checkpoint(model, name)
        load_checkpoint(model, name)  # evaluate exactly what is committed
        print(f"trained {name} in {secs:.1f} s")
    info["training"] = (f"AdamW lr {LR} (100 warm-up steps, cosine), weight decay 0.01, "
                        f"batch {BATCH} x {CONTEXT} characters, {STEPS} steps, seed {SEED}; "
                        f"on an H200 GPU; checkpoint stored with int8 matrices (per-row "
                        f"scales) and float16 vectors")
    return model, info


# --------------------------------------------------------------------------- tracing

FFN_LAYERS = "blocks.*.ffn.fc1,blocks.*.ffn.fc2"  # the FFN inputs, prefill layers
TARGETS = (0.0, 0.25, 0.5, 0.75)


def quantize_activation(x: np.ndarray):
    """Symmetric per-tensor int16: ``q = clip(round(x / s), -32767, 32767)``,
    ``s = max|x| / 32767``. Finer than int8, so that near-zeros stay nonzero (GELU has
    almost no exact zeros) and thresholds calibrate to a target sparsity closely."""
    from accelsim.io.trace import Quant

    x = np.asarray(x, np.float64)
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    scale = amax / 32767.0 if amax > 0 else 1.0
    q = np.clip(np.rint(x / scale), -32767, 32767).astype(np.int16)
    return q, Quant("symmetric", 16, scale)


def _quant_linear(name: str, a: np.ndarray, w: np.ndarray, frames: bool, meta: dict):
    from accelsim.io.trace import linear
    from accelsim.tracing.torch import quantize_weight

    qa, sa = quantize_activation(a)
    qw, sw = quantize_weight(w)
    return linear(name, qa, qw, frames=frames, quant={"input": sa, "weight": sw}, meta=meta)


def _quant_matmul(name: str, a: np.ndarray, b: np.ndarray, meta: dict):
    from accelsim.io.trace import matmul

    qa, sa = quantize_activation(np.asarray(a))
    qb, sb = quantize_activation(np.ascontiguousarray(b))
    return matmul(name, qa, qb, quant={"a": sa, "b": sb}, meta=meta)


def _kv_meta(name: str, shape_b: tuple[int, ...], step: int, appended: int) -> dict:
    """meta.kv_cache of an attention matmul ``blocks.<i>.attn.qk|pv``."""
    from accelsim.model.kvcache import kv_cache_meta

    block = int(name.split(".")[-3])
    tensor = "k" if name.endswith(".qk") else "v"
    length = shape_b[-1] if tensor == "k" else shape_b[-2]
    return kv_cache_meta(tensor, block, step, KV_HEADS, HEAD_DIM, length, appended)


@torch.no_grad()
def trace_generation(model: TinyLM, prompt: str, steps: int):
    """Trace the prefill of ``prompt`` and ``steps`` greedy decode steps with the KV
    cache: :func:`accelsim.trace_torch` once per step (the model keeps its cache between
    calls). Returns (layers, generated text, skipped modules).

    Prefill layers keep trace_torch's names (``blocks.0.attn.q``; the attention matmuls
    ``blocks.0.attn.qk`` and ``blocks.0.attn.pv``). A decode step's Linear layers are
    stacked as the frames of ``decode.<name>`` (one frame per step; their shapes agree);
    each step's attention matmuls, whose K/V length grows, are ``decode<t>.<name>``.
    Attention matmuls get ``meta.kv_cache`` (docs/kv-cache.md)."""
    from accelsim.tracing import trace_torch

    model.eval()
    model.set_cache(True)
    logits: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda m, a, out: logits.append(out))
    try:
        x = torch.from_numpy(encode(prompt))[None]
        runs, tokens = [], []
        for _ in range(steps + 1):
            runs.append(trace_torch(model, x, None, quantize="none"))
            tokens.append(int(logits[-1][0, -1].argmax()))
            x = torch.tensor([[tokens[-1]]])
    finally:
        hook.remove()
        model.set_cache(False)
    skipped = [s for r in runs for s in r.skipped]
    n_prompt = len(prompt)

    def meta_of(ly, prefix="", **extra):
        chain = {}  # the producer layer, under its name in this trace (kept if it is one)
        if "input_from" in ly.meta:
            chain = {"input_from": prefix + ly.meta["input_from"],
                     "input_ops": list(ly.meta.get("input_ops", []))}
        return {"module": ly.meta.get("module", ly.name), **extra, **chain}

    layers = []
    for ly in runs[0].trace.layers:
        if ly.kind == "matmul":
            layers.append(_quant_matmul(ly.name, ly.a, ly.w, meta_of(
                ly, op=ly.meta.get("op", ""), step=0,
                kv_cache=_kv_meta(ly.name, ly.w.shape, 0, n_prompt))))
        else:
            layers.append(_quant_linear(ly.name, np.asarray(ly.a), np.asarray(ly.w), False,
                                        meta_of(ly, step=0)))
    for j, ly in enumerate(runs[1].trace.layers):
        if ly.kind == "matmul":
            if ly.name.endswith(".pv"):
                continue  # emitted with its qk, step by step
            for t in range(1, steps + 1):
                for lt in runs[t].trace.layers[j:j + 2]:  # qk, then pv
                    layers.append(_quant_matmul(f"decode{t}.{lt.name}", lt.a, lt.w, meta_of(
                        lt, "decode.", op=lt.meta.get("op", ""), step=t,
                        kv_cache=_kv_meta(lt.name, lt.w.shape, t, 1))))
        else:
            a = np.stack([np.asarray(r.trace.layers[j].a) for r in runs[1:]])
            layers.append(_quant_linear(f"decode.{ly.name}", a, np.asarray(ly.w), True,
                                        meta_of(ly, "decode.",
                                                steps=list(range(1, steps + 1)))))
    seen: set[str] = set()
    for i, ly in enumerate(layers):  # a producer that is not an earlier layer: no chain
        if ly.meta.get("input_from") is not None and ly.meta["input_from"] not in seen:
            meta = {k: v for k, v in ly.meta.items() if k not in ("input_from", "input_ops")}
            layers[i] = dataclasses.replace(ly, meta=meta)
        seen.add(ly.name)
    return layers, decode(tokens), skipped


def make(name: str, act: str, out: str, retrain: bool = False, log=print):
    """Write the trace ``name`` of the ``act`` twin to ``out``; returns its path."""
    import accelsim
    from accelsim.io.trace import Trace, write_trace
    from accelsim.model.threshold import resolve_thresholds
    from accelsim.tracing.thresholds import apply_thresholds, model_thresholds

    model, info = trained_model(name, act, retrain)
    _, val = split()
    layers, generated, skipped = trace_generation(model, PROMPT, DECODE_STEPS)
    trace = Trace.from_arrays(name, layers)
    ppl = {}
    for target in TARGETS:
        resolved = resolve_thresholds(trace, None, {FFN_LAYERS: {"target": target}}) \
            if target else {}
        with apply_thresholds(model, model_thresholds(trace, resolved)):
            ppl[f"{round(100 * target)}%"] = round(perplexity(model, val), 4)
        log(f"  FFN-input threshold target {target:.0%}: validation perplexity "
            f"{ppl[f'{round(100 * target)}%']}")
    prov = {
        "tracer": "accelsim.trace_torch",
        "attention": "the two attention matmuls per block as trace_torch records them "
                     "(activation x activation), int16 symmetric per tensor (roles a, b)",
        "model_class": f"traces._tiny_lm.TinyLM({act!r})",
        "torch_version": str(torch.__version__),
        "quantize": {"activations": "int16 symmetric per-tensor",
                     "weights": "int8 symmetric per-output-channel (axis 0)"},
        "model_training_mode": False,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "skipped": [s.to_dict() for s in skipped],
        "architecture": (f"decoder-only, pre-LayerNorm, {BLOCKS} blocks, d_model {D_MODEL}, "
                         f"{HEADS} query heads sharing {KV_HEADS} K/V heads, head_dim "
                         f"{HEAD_DIM}, FFN {D_FFN} with {act.upper()}, context {CONTEXT}, "
                         f"character vocabulary of {len(VOCAB)}"),
        "dataset": "pydoc_data.topics of the Python standard library (every topic in "
                   "sorted key order, joined by newlines), characters; first 90% train, "
                   "last 10% validation",
        "validation_perplexity": ppl["0%"],
        "validation_perplexity_ffn_threshold": ppl,
        "perplexity_note": (f"float32 model from the checkpoint's values; thresholds "
                            f"calibrated per layer on the traced prefill's FFN inputs "
                            f"({FFN_LAYERS}) and applied in the model with "
                            f"accelsim.tracing.thresholds.apply_thresholds"),
        "prompt": PROMPT,
        "generated": generated,
        "decode_steps": DECODE_STEPS,
        "input_description": (f"prefill of the {len(PROMPT)}-character prompt, then "
                              f"{DECODE_STEPS} greedy decode steps with the KV cache"),
        "script": f"traces/make_{name}.py",
        **info,
    }
    path = write_trace(out, Trace.from_arrays(name, layers, prov))
    log(f"validation perplexity {ppl['0%']}; generated {generated!r}; wrote {path}")
    log(accelsim.inspect(path).to_string())
    return path
