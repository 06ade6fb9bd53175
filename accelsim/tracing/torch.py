"""Dump an accelsim trace from a PyTorch model with forward hooks.

The model is not modified: a forward hook on every supported module copies the
module's GEMM operands (input activation and weight) while the model runs, and the
hooks are removed afterwards. Supported modules and what each records:

* ``nn.Linear`` -> ``linear``; ``nn.Conv1d`` / ``nn.Conv2d`` -> ``conv1d`` / ``conv2d``
  with stride, padding, dilation and groups. A padding mode other than ``zeros`` is
  applied to the recorded input (the trace then says ``padding=0``); string padding
  (``"same"``, ``"valid"``) is resolved to integers.
* ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (any number of layers, bidirectional, batch
  first, LSTM projections): the layer is recomputed step by step from its own weights
  (checked against the module's output) and each time step's input GEMM
  ``x_t @ W_ih.T`` and hidden GEMM ``h_{t-1} @ W_hh.T`` are recorded as two ``linear``
  layers whose frames are the time steps, in processing order.
* ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``: the same two GEMMs; successive
  calls of one cell within one forward pass are time steps (frames).

torch is imported only when :func:`trace_torch` runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.errors import TraceError
from accelsim.io.trace import (
    Layer,
    Quant,
    Trace,
    conv1d,
    conv2d,
    linear,
    validate_layer,
    write_trace,
)

QUANTIZE = ("none", "int8")
_SUPPORTED_TEXT = "Linear, Conv1d, Conv2d, LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell"
#: module types that hold parameters but do no GEMM; they are not reported as skipped
_NON_GEMM = (
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LayerNorm", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm", "RMSNorm",
    "PReLU", "Embedding", "EmbeddingBag",
)


@dataclass(frozen=True)
class Skipped:
    """A module that ran during tracing but whose computation is not in the trace."""

    name: str
    type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "reason": self.reason}


@dataclass(frozen=True)
class TorchTraceResult:
    """What :func:`trace_torch` made: the trace, where it was written, what was skipped."""

    trace: Trace
    path: Path | None
    skipped: tuple[Skipped, ...] = ()

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.trace.layers]


@dataclass
class _Capture:
    """One GEMM seen by a hook in one forward pass."""

    kind: str
    a: np.ndarray
    w: np.ndarray
    seq: bool = False  # ``a`` has a leading time-step axis
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _np(t) -> np.ndarray:
    """Detach a tensor to a numpy array of a dtype the trace format stores."""
    import torch

    t = t.detach().cpu()
    if t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.numpy().copy()


def _describe(x: Any) -> str:
    import torch

    if isinstance(x, torch.Tensor):
        return f"Tensor{list(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, tuple):
        return "(" + ", ".join(_describe(v) for v in x) + ")"
    return type(x).__name__


def _call(model, x: Any):
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple):
        return model(*x)
    return model(x)


def quantize_activation(x: np.ndarray) -> tuple[np.ndarray, Quant]:
    """Symmetric per-tensor int8: ``q = clip(round(x / s), -127, 127)``, ``s = max|x|/127``."""
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    scale = amax / 127.0 if amax > 0 else 1.0
    q = np.clip(np.rint(x.astype(np.float64) / scale), -127, 127).astype(np.int8)
    return q, Quant("symmetric", 8, scale)


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, Quant]:
    """Symmetric int8 with one scale per output channel (axis 0)."""
    amax = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    q = np.clip(np.rint(w.astype(np.float64) / s), -127, 127).astype(np.int8)
    return q, Quant("per_channel", 8, tuple(float(v) for v in scale), axis=0)


# --------------------------------------------------------------------------- per-module capture


def _capture_linear(mod, args, kwargs) -> list[_Capture]:
    x = args[0] if args else kwargs["input"]
    return [_Capture("linear", _np(x), _np(mod.weight))]


def _capture_conv(mod, args, kwargs) -> list[_Capture]:
    import torch.nn.functional as F

    x = args[0] if args else kwargs["input"]
    nsp = len(mod.kernel_size)
    if x.dim() == nsp + 1:  # unbatched input
        x = x.unsqueeze(0)
    meta: dict[str, Any] = {}
    ksize = tuple(mod.kernel_size)
    dil = tuple(mod.dilation)
    if mod.padding_mode != "zeros":
        x = F.pad(x, mod._reversed_padding_repeated_twice, mode=mod.padding_mode)
        pad = (0,) * nsp
        meta["padding_applied"] = {"mode": mod.padding_mode,
                                   "amount": [int(p) for p in mod.padding]}
    elif isinstance(mod.padding, str):
        if mod.padding == "valid":
            pad = (0,) * nsp
        else:  # "same": torch puts the odd extra element at the end
            total = [d * (k - 1) for k, d in zip(ksize, dil, strict=True)]
            pad = tuple(t // 2 for t in total)
            extra = [t - 2 * (t // 2) for t in total]
            if any(extra):
                spec: list[int] = []
                for e in reversed(extra):
                    spec += [0, e]
                x = F.pad(x, spec)
                meta["padding_applied"] = {"mode": "zeros", "end": extra}
        meta["padding_string"] = mod.padding
    else:
        pad = tuple(int(p) for p in mod.padding)
    kind = "conv1d" if nsp == 1 else "conv2d"
    params = {"stride": tuple(mod.stride), "padding": pad, "dilation": dil,
              "groups": int(mod.groups)}
    return [_Capture(kind, _np(x), _np(mod.weight), params=params, meta=meta)]


def _recurrent_weights(mod, suffix: str):
    w_ih = getattr(mod, f"weight_ih{suffix}")
    w_hh = getattr(mod, f"weight_hh{suffix}")
    b_ih = getattr(mod, f"bias_ih{suffix}", None) if mod.bias else None
    b_hh = getattr(mod, f"bias_hh{suffix}", None) if mod.bias else None
    return w_ih, w_hh, b_ih, b_hh


def _cell_step(mode: str, x, h, c, w_ih, w_hh, b_ih, b_hh, nonlinearity: str = "tanh"):
    """One recurrent step from the weights; returns (h, c). ``c`` is None unless LSTM."""
    import torch

    gi = x @ w_ih.T
    gh = h @ w_hh.T
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    pre = gi + gh
    return (torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)), None


def _mode_of(mod) -> str:
    import torch.nn as nn

    if isinstance(mod, (nn.LSTM, nn.LSTMCell)):
        return "LSTM"
    if isinstance(mod, (nn.GRU, nn.GRUCell)):
        return "GRU"
    return "RNN"


def _capture_cell(mod, args, kwargs) -> list[_Capture]:
    import torch

    x = args[0] if args else kwargs["input"]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    mode = _mode_of(mod)
    if hx is None:
        h = torch.zeros(x.shape[0], mod.hidden_size, dtype=x.dtype, device=x.device)
    else:
        h = hx[0] if mode == "LSTM" else hx
        if h.dim() == 1:
            h = h.unsqueeze(0)
    meta = {"recurrent": mode, "gates": mod.weight_ih.shape[0] // mod.hidden_size}
    return [
        _Capture("linear", _np(x)[None], _np(mod.weight_ih), seq=True,
                 meta={**meta, "gemm": "input"}),
        _Capture("linear", _np(h)[None], _np(mod.weight_hh), seq=True,
                 meta={**meta, "gemm": "hidden"}),
    ]


def _capture_rnn(mod, args, kwargs, output) -> list[tuple[str, _Capture]]:
    """Recompute a full recurrent layer step by step; two captures per layer/direction."""
    import torch

    x = args[0] if args else kwargs["input"]
    if not isinstance(x, torch.Tensor):
        raise _SkipModule(f"input is a {type(x).__name__} (PackedSequence is not supported)")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    mode = _mode_of(mod)
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif mod.batch_first:
        x = x.transpose(0, 1)
    steps, batch = x.shape[0], x.shape[1]
    dirs = 2 if mod.bidirectional else 1
    proj = getattr(mod, "proj_size", 0) or 0
    hsize = proj or mod.hidden_size
    if hx is None:
        h0 = x.new_zeros(mod.num_layers * dirs, batch, hsize)
        c0 = x.new_zeros(mod.num_layers * dirs, batch, mod.hidden_size)
    else:
        h0, c0 = (hx if mode == "LSTM" else (hx, None))
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
    nonlin = getattr(mod, "nonlinearity", "tanh")
    caps: list[tuple[str, _Capture]] = []
    layer_in = x
    for li in range(mod.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{li}" + ("_reverse" if d else "")
            w_ih, w_hh, b_ih, b_hh = _recurrent_weights(mod, sfx)
            w_hr = getattr(mod, f"weight_hr{sfx}") if proj else None
            h = h0[li * dirs + d]
            c = c0[li * dirs + d] if mode == "LSTM" else None
            order = range(steps - 1, -1, -1) if d else range(steps)
            xs, hs, hr_in = [], [], []
            out = [None] * steps
            for t in order:
                xs.append(layer_in[t])
                hs.append(h)
                h, c = _cell_step(mode, layer_in[t], h, c, w_ih, w_hh, b_ih, b_hh, nonlin)
                if w_hr is not None:
                    hr_in.append(h)
                    h = h @ w_hr.T
                out[t] = h
            outs.append(torch.stack(out))
            meta = {"recurrent": mode, "layer": li, "direction": "reverse" if d else "forward",
                    "frame_order": "processing order"}
            tag = sfx[1:]
            caps.append((f"{tag}.ih", _Capture("linear", _np(torch.stack(xs)), _np(w_ih),
                                               seq=True, meta={**meta, "gemm": "input"})))
            caps.append((f"{tag}.hh", _Capture("linear", _np(torch.stack(hs)), _np(w_hh),
                                               seq=True, meta={**meta, "gemm": "hidden"})))
            if w_hr is not None:
                caps.append((f"{tag}.hr", _Capture("linear", _np(torch.stack(hr_in)),
                                                   _np(w_hr), seq=True,
                                                   meta={**meta, "gemm": "projection"})))
        layer_in = torch.cat(outs, dim=2)
    # the recomputation must agree with what the module returned
    ref = output[0]
    mine = layer_in.squeeze(1) if unbatched else (
        layer_in.transpose(0, 1) if mod.batch_first else layer_in)
    if not mod.training and not torch.allclose(mine, ref, rtol=1e-3, atol=1e-4):
        err = float((mine - ref).abs().max())
        raise TraceError(f"trace_torch: recomputing {type(mod).__name__} step by step differs "
                         f"from its output (max abs difference {err:.3g})")
    return caps


class _SkipModule(Exception):
    pass


# --------------------------------------------------------------------------- the tracer


class _Recorder:
    def __init__(self, model) -> None:
        import torch.nn as nn

        self.model = model
        self.calls: list[tuple[str, _Capture]] = []  # this run, in call order
        self.ncalls: dict[str, int] = {}
        self.skipped: dict[str, Skipped] = {}
        self.handles: list[Any] = []
        root = type(model).__name__.lower()
        cells = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)
        rnns = (nn.LSTM, nn.GRU, nn.RNN)
        import torch

        scripted: list[str] = []
        for name, mod in model.named_modules():
            qual = name or root
            if any(qual.startswith(s + ".") for s in scripted):
                continue
            if isinstance(mod, torch.jit.ScriptModule):
                scripted.append(qual)
                self.skipped[qual] = Skipped(qual, type(mod).__name__, (
                    "TorchScript submodule: Python hooks cannot see inside it; trace an "
                    "eager equivalent"))
                continue
            if isinstance(mod, nn.Linear):
                fn = self._hook(qual, _capture_linear)
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                fn = self._hook(qual, _capture_conv)
            elif isinstance(mod, cells):
                fn = self._hook(qual, _capture_cell, cell=True)
            elif isinstance(mod, rnns):
                fn = self._rnn_hook(qual)
            else:
                own = any(True for _ in mod.parameters(recurse=False))
                tname = type(mod).__name__
                if own and tname not in _NON_GEMM:
                    reason = f"{tname} is not supported (supported: {_SUPPORTED_TEXT})"
                    self.handles.append(mod.register_forward_pre_hook(
                        self._skip_hook(qual, reason)))
                continue
            self.handles.append(mod.register_forward_hook(fn, with_kwargs=True))

    def _skip_hook(self, name: str, reason: str):
        def hook(mod, args):
            self.skipped.setdefault(name, Skipped(name, type(mod).__name__, reason))
        return hook

    def _key(self, name: str) -> str:
        i = self.ncalls.get(name, 0)
        self.ncalls[name] = i + 1
        return name if i == 0 else f"{name}@{i}"

    def _hook(self, name: str, capture, cell: bool = False):
        def hook(mod, args, kwargs, output):
            caps = capture(mod, args, kwargs)
            if cell:  # repeated calls of a cell are time steps of one layer
                for cap, suffix in zip(caps, ("ih", "hh"), strict=True):
                    key = f"{name}.{suffix}"
                    prev = next((c for k, c in self.calls if k == key), None)
                    if prev is None:
                        cap.meta["module"] = name
                        cap.meta["module_type"] = type(mod).__name__
                        self.calls.append((key, cap))
                    else:
                        if prev.a.shape[1:] != cap.a.shape[1:]:
                            raise TraceError(f"trace_torch: {name}: input shape changed "
                                             f"between time steps ({prev.a.shape[1:]} then "
                                             f"{cap.a.shape[1:]})")
                        prev.a = np.concatenate([prev.a, cap.a])
                return
            key = self._key(name)
            for cap in caps:
                cap.meta["module"] = name
                cap.meta["module_type"] = type(mod).__name__
                self.calls.append((key, cap))
        return hook

    def _rnn_hook(self, name: str):
        def hook(mod, args, kwargs, output):
            try:
                caps = _capture_rnn(mod, args, kwargs, output)
            except _SkipModule as e:
                self.skipped.setdefault(name, Skipped(name, type(mod).__name__, str(e)))
                return
            key = self._key(name)
            for sub, cap in caps:
                cap.meta["module"] = name
                cap.meta["module_type"] = type(mod).__name__
                self.calls.append((f"{key}.{sub}", cap))
        return hook

    def run(self, x: Any) -> list[tuple[str, _Capture]]:
        import torch

        self.calls = []
        self.ncalls = {}
        with torch.no_grad():
            _call(self.model, x)
        return self.calls

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _merge(runs: list[list[tuple[str, _Capture]]], framed: bool) -> list[tuple[str, _Capture,
                                                                              bool]]:
    """Stack each layer's captures over runs (frames); returns (name, capture, frames)."""
    first = runs[0]
    keys = [k for k, _ in first]
    out = []
    for i, run in enumerate(runs[1:], start=1):
        if [k for k, _ in run] != keys:
            raise TraceError(f"trace_torch: input {i} ran different layers than input 0 "
                             f"({[k for k, _ in run]} vs {keys}); every input must take the "
                             f"same path through the model")
    for j, key in enumerate(keys):
        cap = first[j][1]
        if not framed:
            out.append((key, cap, cap.seq))
            continue
        parts = [run[j][1].a for run in runs]
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            raise TraceError(f"trace_torch: layer {key!r}: input shapes differ between inputs "
                             f"({sorted(shapes)}); frames need equal shapes")
        a = np.stack(parts)
        if cap.seq:  # [inputs, steps, ...] -> frames in time order
            a = a.reshape((-1,) + a.shape[2:])
        out.append((key, _Capture(cap.kind, a, cap.w, cap.seq, cap.params, cap.meta), True))
    return out


def _to_layer(name: str, cap: _Capture, frames: bool, quantize: str) -> Layer:
    a, w = cap.a, cap.w
    quant: dict[str, Quant] = {}
    if quantize == "int8":
        a, quant["input"] = quantize_activation(a)
        w, quant["weight"] = quantize_weight(w)
    meta = dict(cap.meta)
    if cap.kind == "linear":
        return linear(name, a, w, frames=frames, quant=quant, meta=meta)
    build = conv1d if cap.kind == "conv1d" else conv2d
    return build(name, a, w, frames=frames, quant=quant, meta=meta, **cap.params)


def trace_torch(model, inputs: Any, path: str | os.PathLike | None = None, *,
                quantize: str = "none", model_name: str | None = None,
                input_description: str | None = None,
                provenance: Mapping[str, Any] | None = None) -> TorchTraceResult:
    """Run ``model`` on ``inputs`` with forward hooks and write what its layers computed.

    ``inputs`` is one input or a **list** of inputs. One input is a tensor (called as
    ``model(x)``), a tuple (``model(*x)``) or a dict (``model(**x)``). A list runs the
    model once per element, in order (a stateful model keeps its state between them),
    and each layer's captured input gets a leading frames axis, one frame per element.
    Recurrent layers always have frames: their time steps (times the list's length).

    ``quantize`` is ``"none"`` (tensors as the model holds them: float16/32/64) or
    ``"int8"``: symmetric per-tensor for activations and symmetric per-output-channel
    for weights, scales recorded in the manifest.

    ``path`` is the trace directory to write; with ``None`` nothing is written. Modules
    that ran but are not traceable are listed in the result's ``skipped`` and in the
    trace provenance (with a warning); :class:`~accelsim.errors.TraceError` is raised
    if nothing traceable ran. The model runs under ``torch.no_grad()`` in whatever
    train/eval mode it is in (recorded in the provenance).
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise TraceError("trace_torch needs PyTorch: pip install 'accelsim[torch]'") from None
    if quantize not in QUANTIZE:
        raise TraceError(f"trace_torch: quantize: expected one of {', '.join(QUANTIZE)}, "
                         f"got {quantize!r}")
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"trace_torch: model: expected a torch.nn.Module, got "
                         f"{type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TraceError("trace_torch: model is a TorchScript module; forward hooks do not run "
                         "inside TorchScript. Build the eager nn.Module (or an equivalent one "
                         "holding the same weights) and trace that")
    framed = isinstance(inputs, list)
    items: Sequence[Any] = inputs if framed else [inputs]
    if framed and not items:
        raise TraceError("trace_torch: inputs: the list of inputs is empty")
    rec = _Recorder(model)
    try:
        runs = [rec.run(x) for x in items]
    finally:
        rec.close()
    skipped = tuple(rec.skipped.values())
    mname = model_name or type(model).__name__
    if not runs[0]:
        listed = "; ".join(f"{s.name} ({s.type}): {s.reason}" for s in skipped) or "none"
        raise TraceError(f"trace_torch: no traceable layer ran in {mname} (supported: "
                         f"{_SUPPORTED_TEXT}); skipped modules: {listed}")
    merged = _merge(runs, framed)
    layers = [_to_layer(name, cap, frames, quantize) for name, cap, frames in merged]
    for layer in layers:
        validate_layer(layer, where=f"trace_torch({mname})")
    desc = (f"list of {len(items)} inputs (frames), each {_describe(items[0])}" if framed
            else _describe(inputs))
    prov: dict[str, Any] = {
        "tracer": "accelsim.trace_torch",
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "torch_version": str(torch.__version__),
        "quantize": ({"activations": "int8 symmetric per-tensor",
                      "weights": "int8 symmetric per-output-channel (axis 0)"}
                     if quantize == "int8" else "none"),
        "inputs": desc,
        "model_training_mode": bool(model.training),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "skipped": [s.to_dict() for s in skipped],
    }
    if input_description:
        prov["input_description"] = input_description
    prov.update(dict(provenance or {}))
    trace = Trace.from_arrays(mname, layers, prov)
    out_path = None
    if path is not None:
        out_path = write_trace(path, trace)
    if skipped:
        warnings.warn("trace_torch: skipped modules not in the trace: " + "; ".join(
            f"{s.name} ({s.type}): {s.reason}" for s in skipped), stacklevel=2)
    return TorchTraceResult(trace=trace, path=out_path, skipped=skipped)


__all__ = ["Skipped", "TorchTraceResult", "quantize_activation", "quantize_weight",
           "trace_torch"]
