"""Dump an accelsim trace from a PyTorch model: every matrix product it dispatches.

The model is not modified. It runs under a dispatch mode (:mod:`accelsim.tracing._dispatch`)
that sees every aten operator after composite functions are decomposed, so ``F.linear``,
``torch.matmul``, ``torch.addmm`` (HF GPT-2's ``Conv1D``), ``einsum`` and attention are
recorded as well as modules. An operand whose storage belongs to a parameter is a weight
(``linear`` / ``conv1d`` / ``conv2d`` layers); a product of two activations is a ``matmul``
layer (attention's ``qk`` and ``pv``). While tracing, attention uses the math backend of
``scaled_dot_product_attention`` and the ``nn.MultiheadAttention`` fast path is off.
Module hooks name the layers (the parameter's name, or the innermost module that ran the
product plus ``qk`` / ``pv`` / ``matmul``) and handle what the dispatcher cannot:

* ``nn.Linear`` -> ``linear``; ``nn.Conv1d`` / ``nn.Conv2d`` -> ``conv1d`` / ``conv2d``
  with stride, padding, dilation and groups, the input as the module received it. A
  padding mode other than ``zeros`` is applied to the recorded input (the trace then says
  ``padding=0``); string padding (``"same"``, ``"valid"``) is resolved to integers.
* ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (any number of layers, bidirectional, batch
  first, LSTM projections), whose fused kernels hide the time steps: the layer is
  recomputed step by step from its own weights (checked against the module's output) and
  each time step's input GEMM ``x_t @ W_ih.T`` and hidden GEMM ``h_{t-1} @ W_hh.T`` are
  recorded as two ``linear`` layers whose frames are the time steps, in processing order.
* ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``: the same two GEMMs; successive
  calls of one cell within one forward pass are time steps (frames).

Matrix products that cannot be lowered (transposed convolutions, fused attention or RNN
kernels) are listed with their MACs and share of all MACs, and warned about; norms,
activations and elementwise operators are not GEMMs and never warn.

torch is imported only when :func:`trace_torch` runs.
"""

from __future__ import annotations

import math
import os
import re
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
    conv3d,
    linear,
    matmul,
    validate_layer,
    write_trace,
)
from accelsim.tracing.quantize import quantize_activation, quantize_weight

QUANTIZE = ("none", "int8")
_SUPPORTED_TEXT = ("every mm, addmm, bmm, baddbmm, addbmm, mv, dot, matmul, linear, einsum, "
                   "1-d/2-d/3-d convolution and math-backend attention, plus nn.LSTM/GRU/RNN "
                   "and their cells")


@dataclass(frozen=True)
class Skipped:
    """A module that ran during tracing but whose computation is not in the trace."""

    name: str  # the module that ran it
    type: str  # the module's class
    reason: str
    macs: int | None = None  # MACs of the matrix products left out, where known
    share: float | None = None  # of all matrix-product MACs (traced + left out)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "reason": self.reason}
        if self.macs is not None:
            d["macs"] = int(self.macs)
            d["share_of_macs"] = round(float(self.share or 0.0), 6)
        return d


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
    #: (producer entry, operators since its output) when ``a`` is a traced layer's
    #: output carried through single-tensor operators (meta.input_from / input_ops)
    src: Any = None


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


@dataclass
class _Entry:
    """One layer of one run: its name parts and capture (``None`` until a hook fills it)."""

    base: str  # the name before de-duplication (act x act products: the module's name)
    cap: _Capture | None
    group: int  # entries from one module call share one de-duplication counter
    sub: str = ""  # appended after the counted name (RNN layers: "l0.ih")
    fixed: str | None = None  # the final name (cells: their time steps are one layer)
    role: str | None = None  # act x act products: "matmul", "qk" or "pv"

    @property
    def stem(self) -> str:
        return f"{self.base}.{self.role}" if self.role else self.base


@dataclass
class _Frame:
    """A module running: the stack of these says which module ran each operator."""

    name: str
    mod: Any
    kind: str | None  # "gemm" (Linear, Conv1d, Conv2d), "rnn", "cell" or None
    claimed: _Entry | None = None


_WEIGHT_SUFFIX = re.compile(r"[._]?weight$")


class _Recorder:
    """Module hooks (names, nn.Linear/Conv inputs as the module got them, recurrent
    recomputation) plus a dispatch mode that sees every matrix product PyTorch runs."""

    def __init__(self, model) -> None:
        import torch
        import torch.nn as nn

        self.model = model
        self.root = type(model).__name__.lower()
        self.entries: list[_Entry] = []
        self.cells: dict[str, _Entry] = {}
        self.stack: list[_Frame] = []
        self.suppress = 0
        self.groups = 0
        self.unlowered: dict[str, dict[str, Any]] = {}
        self.handles: list[Any] = []
        self.params = {p.untyped_storage().data_ptr(): n
                       for n, p in model.named_parameters() if p.numel()}
        from torch.utils.weak import WeakTensorKeyDictionary

        self.tags = WeakTensorKeyDictionary()
        #: tensor -> (entry of the layer whose output it is, aten operators since)
        self.chain = WeakTensorKeyDictionary()
        cells = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)
        rnns = (nn.LSTM, nn.GRU, nn.RNN)
        scripted: list[str] = []
        for name, mod in model.named_modules():
            qual = name or self.root
            if any(qual.startswith(s + ".") for s in scripted):
                continue
            if isinstance(mod, torch.jit.ScriptModule):  # no hooks inside; the dispatch
                scripted.append(qual)  # mode still sees its operators
                continue
            if isinstance(mod, nn.Linear):
                kind, capture = "gemm", _capture_linear
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                kind, capture = "gemm", _capture_conv
            elif isinstance(mod, cells):
                kind, capture = "cell", _capture_cell
            elif isinstance(mod, rnns):
                kind, capture = "rnn", None
            else:
                kind, capture = None, None
            self.handles.append(mod.register_forward_pre_hook(self._pre(qual, kind)))
            self.handles.append(mod.register_forward_hook(self._post(qual, kind, capture),
                                                          with_kwargs=True))

    # ---------------------------------------------------------------- module hooks

    def _group(self) -> int:
        self.groups += 1
        return self.groups

    def _pre(self, name: str, kind: str | None):
        def hook(mod, args):
            self.stack.append(_Frame(name, mod, kind))
            if kind in ("rnn", "cell"):
                self.suppress += 1
        return hook

    def _post(self, name: str, kind: str | None, capture):
        def hook(mod, args, kwargs, output):
            # frames above this module's belong to calls that raised (and were caught)
            i = next((j for j in range(len(self.stack) - 1, -1, -1)
                      if self.stack[j].mod is mod), None)
            if i is None:
                raise TraceError(f"trace_torch: module {name!r}: forward hooks ran out of "
                                 f"order")
            for stale in self.stack[i + 1:]:
                if stale.kind in ("rnn", "cell"):
                    self.suppress -= 1
            frame = self.stack[i]
            del self.stack[i:]
            try:
                if kind == "gemm" and frame.claimed is not None:
                    cap = capture(mod, args, kwargs)[0]
                    if "padding_applied" not in cap.meta:  # else a padded copy
                        cap.src = self._chain_of(args[0] if args else kwargs["input"])
                    cap.meta["module"] = name
                    cap.meta["module_type"] = type(mod).__name__
                    frame.claimed.cap = cap
                elif kind == "cell":
                    self._cell(name, mod, capture(mod, args, kwargs))
                elif kind == "rnn":
                    self._rnn(name, mod, args, kwargs, output)
            finally:
                if kind in ("rnn", "cell"):
                    self.suppress -= 1
        return hook

    def _cell(self, name: str, mod, caps: list[_Capture]) -> None:
        """Repeated calls of a cell are time steps of one layer."""
        for cap, suffix in zip(caps, ("ih", "hh"), strict=True):
            key = f"{name}.{suffix}"
            prev = self.cells.get(key)
            if prev is None:
                cap.meta["module"] = name
                cap.meta["module_type"] = type(mod).__name__
                entry = _Entry(key, cap, self._group(), fixed=key)
                self.cells[key] = entry
                self.entries.append(entry)
            else:
                if prev.cap.a.shape[1:] != cap.a.shape[1:]:
                    raise TraceError(f"trace_torch: {name}: input shape changed between time "
                                     f"steps ({prev.cap.a.shape[1:]} then "
                                     f"{cap.a.shape[1:]})")
                prev.cap.a = np.concatenate([prev.cap.a, cap.a])

    def _rnn(self, name: str, mod, args, kwargs, output) -> None:
        try:
            caps = _capture_rnn(mod, args, kwargs, output)
        except _SkipModule as e:
            self._unlowered(name, type(mod).__name__, str(e), None)
            return
        group = self._group()
        for sub, cap in caps:
            cap.meta["module"] = name
            cap.meta["module_type"] = type(mod).__name__
            self.entries.append(_Entry(name, cap, group, sub=sub))

    # ---------------------------------------------------------------- dispatched operators

    def _param(self, t) -> str | None:
        try:
            return self.params.get(t.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # tensors without storage
            return None

    def _unlowered(self, where: str, mtype: str, what: str, macs: int | None) -> None:
        u = self.unlowered.setdefault(where, {"type": mtype, "what": [], "macs": 0})
        if what not in u["what"]:
            u["what"].append(what)
        u["macs"] = None if macs is None or u["macs"] is None else u["macs"] + macs

    def _frame(self) -> _Frame:
        return self.stack[-1] if self.stack else _Frame(self.root, self.model, None)

    def before(self, op: str, args: tuple):
        if self.suppress:
            return None
        from accelsim.tracing import _dispatch as D

        prod = D.product_of(op, args)
        frame = self._frame()
        if prod is None:
            unl, macs = (D.unlowered_macs(op, args, self._param)
                         if op in D.UNLOWERED_NAMES else (False, None))
            if unl:
                label = f"aten.{op}" + (" (transposed)" if op in D.CONV_OPS else "")
                self._unlowered(frame.name, type(frame.mod).__name__, label, macs)
            return None
        if frame.kind == "gemm" and frame.claimed is None and self._is_own(frame.mod, prod):
            frame.claimed = _Entry(frame.name, None, self._group())
            self.entries.append(frame.claimed)
            return ("claimed", frame.claimed)
        entry = self._capture(op, prod, frame)
        if entry is None:
            return None
        self.entries.append(entry)
        return ("entry", entry)

    def _is_own(self, mod, prod) -> bool:
        """Is this product the hooked module's own GEMM (its weight, by shape)?"""
        w = getattr(mod, "weight", None)
        if w is None:
            return False
        if prod.conv is not None:
            return tuple(prod.b.shape) == tuple(w.shape)
        return prod.b.dim() == 2 and tuple(prod.b.shape[::-1]) == tuple(w.shape)

    def _weight_name(self, pname: str, frame: _Frame) -> str:
        stem = _WEIGHT_SUFFIX.sub("", pname)
        if frame.name == self.root or pname.startswith(frame.name + "."):
            return stem or self.root
        return f"{frame.name}.{stem.replace('.', '_')}" if stem else frame.name

    def _capture(self, op: str, prod, frame: _Frame) -> _Entry | None:
        meta: dict[str, Any] = {"module": frame.name, "module_type": type(frame.mod).__name__,
                                "op": f"aten.{op}"}
        group = self._group()
        if prod.conv is not None:
            nsp = prod.b.dim() - 2
            if nsp not in (1, 2, 3):
                self._unlowered(frame.name, type(frame.mod).__name__,
                                f"aten.{op} ({nsp}-d)",
                                int(prod.a.shape[0]) * _conv_out_elems(prod)
                                * int(prod.b.numel()))
                return None
            pname = self._param(prod.b)
            if pname is None:
                meta["weight_is_activation"] = True
                base = f"{frame.name}.conv"
            else:
                meta["parameter"] = pname
                base = self._weight_name(pname, frame)
            cap = _Capture(f"conv{nsp}d", _np(prod.a), _np(prod.b), params=dict(prod.conv),
                           meta=meta, src=self._chain_of(prod.a))
            return _Entry(base, cap, group)
        a, b = prod.a, prod.b
        pa, pb = self._param(a), self._param(b)
        src = self._chain_of(a)
        if pb is None and pa is not None:  # W @ X: record X^T @ W^T, W as the weight
            a, b, pb = b.transpose(-1, -2), a.transpose(-1, -2), pa
            meta["operands_swapped"] = True
            src = None  # A is a transposed activation, not a layer's output as written
        if pb is not None and (b.dim() == 2 or b.shape[0] == 1 or b.stride(0) == 0):
            w = b if b.dim() == 2 else b[0]
            x = a if a.dim() == 2 else a.reshape(-1, a.shape[-1])
            meta["parameter"] = pb
            cap = _Capture("linear", _np(x), _np(w.transpose(0, 1)), meta=meta, src=src)
            return _Entry(self._weight_name(pb, frame), cap, group)
        if pb is not None:
            meta["b_parameter"] = pb
        role = "pv" if self._tag(a) == ("softmax", None) else "matmul"
        cap = _Capture("matmul", _np(a), _np(b), meta=meta, src=src)
        return _Entry(frame.name, cap, group, role=role)

    def _tag(self, t):
        try:
            return self.tags.get(t)
        except TypeError:
            return None

    def _chain_of(self, t):
        try:
            return self.chain.get(t)
        except TypeError:
            return None

    def _carry_chain(self, op: str, args: tuple, out, token) -> None:
        """A product's output starts a chain; an operator with one tensor operand that
        is on a chain continues it (its name appended); any other operator ends it."""
        import torch
        from torch.utils._pytree import tree_leaves

        if token is not None:
            link = (token[1], ())
        else:
            ins = [t for t in tree_leaves(args) if isinstance(t, torch.Tensor)]
            src = self._chain_of(ins[0]) if len(ins) == 1 else None
            if src is None:
                return
            link = (src[0], src[1] + (f"aten.{op}",))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.chain[t] = link

    def after(self, op: str, args: tuple, out, token) -> None:
        if self.suppress:
            return
        import torch
        from torch.utils._pytree import tree_leaves

        from accelsim.tracing import _dispatch as D

        self._carry_chain(op, args, out, token)
        if token is not None:
            tag = ("gemm", token[1] if token[0] == "entry" else None)
        elif op in D.SOFTMAX_OPS:
            src = self._tag(args[0])
            if src and src[0] == "gemm" and src[1] is not None and src[1].role == "matmul":
                src[1].role = "qk"
            tag = ("softmax", None)
        else:
            tag = None
            for t in tree_leaves(args):
                if isinstance(t, torch.Tensor):
                    tag = self._tag(t)
                    if tag is not None:
                        break
            if tag is None:
                return
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.tags[t] = tag

    # ---------------------------------------------------------------- one run

    def run(self, x: Any) -> list[tuple[str, _Capture]]:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from accelsim.tracing import _dispatch as D

        self.entries, self.cells, self.stack, self.suppress = [], {}, [], 0
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), D.make_mode(self):
                _call(self.model, x)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
        out: list[tuple[str, _Capture]] = []
        counts: dict[str, int] = {}
        names: dict[int, str] = {}
        final: dict[int, str] = {}  # id(entry) -> layer name
        for e in self.entries:
            if e.cap is None:
                continue
            if e.fixed is not None:
                out.append((e.fixed, e.cap))
                continue
            if e.group not in names:
                i = counts.get(e.stem, 0)
                counts[e.stem] = i + 1
                names[e.group] = e.stem if i == 0 else f"{e.stem}@{i}"
            out.append((names[e.group] + (f".{e.sub}" if e.sub else ""), e.cap))
            final[id(e)] = out[-1][0]
        for _, cap in out:  # the layer whose output is this layer's A operand
            src = cap.src
            if src is not None and id(src[0]) in final:
                cap.meta["input_from"] = final[id(src[0])]
                cap.meta["input_ops"] = list(src[1])
            cap.src = None
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def skipped(self, traced_macs: int) -> tuple[Skipped, ...]:
        out = []
        total = traced_macs + sum(u["macs"] or 0 for u in self.unlowered.values())
        for name, u in self.unlowered.items():
            macs = u["macs"]
            what = ", ".join(u["what"])
            if macs is None:
                reason = f"{what}: not lowered to a trace layer (MACs not estimated)"
                share = None
            else:
                share = macs / total if total else 0.0
                reason = (f"{what}: not lowered to a trace layer ({macs:,} MACs, "
                          f"{share:.1%} of all matrix-product MACs)")
            out.append(Skipped(name, u["type"], reason, macs, share))
        return tuple(out)


def _conv_out_elems(prod) -> int:
    """Output positions per image of a dispatched convolution."""
    from accelsim.io.trace import conv_out_size

    c = prod.conv
    sp = prod.a.shape[2:]
    k = prod.b.shape[2:]
    return int(math.prod(conv_out_size(int(sp[i]), int(k[i]), c["stride"][i], c["padding"][i],
                                       c["dilation"][i]) for i in range(len(sp))))


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
        if cap.kind == "matmul":
            shapes = {(p.shape, run[j][1].w.shape) for p, run in zip(parts, runs, strict=True)}
        if len(shapes) > 1:
            raise TraceError(f"trace_torch: layer {key!r}: input shapes differ between inputs "
                             f"({sorted(shapes)}); frames need equal shapes")
        a = np.stack(parts)
        w = cap.w
        if cap.kind == "matmul":  # b is an activation too: it gets frames
            w = np.stack([run[j][1].w for run in runs])
        elif cap.meta.get("weight_is_activation") and any(
                not np.array_equal(run[j][1].w, cap.w) for run in runs[1:]):
            raise TraceError(f"trace_torch: layer {key!r}: the convolution's weight is an "
                             f"activation that changes between inputs; trace each input "
                             f"on its own")
        if cap.seq:  # [inputs, steps, ...] -> frames in time order
            a = a.reshape((-1,) + a.shape[2:])
        out.append((key, _Capture(cap.kind, a, w, cap.seq, cap.params, cap.meta), True))
    return out


def _to_layer(name: str, cap: _Capture, frames: bool, quantize: str) -> Layer:
    a, w = cap.a, cap.w
    quant: dict[str, Quant] = {}
    meta = dict(cap.meta)
    if cap.kind == "matmul":
        if quantize == "int8":
            a, quant["a"] = quantize_activation(a)
            w, quant["b"] = quantize_activation(w)
        return matmul(name, a, w, frames=frames, quant=quant, meta=meta)
    if quantize == "int8":
        a, quant["input"] = quantize_activation(a)
        w, quant["weight"] = quantize_weight(w)
    if cap.kind == "linear":
        return linear(name, a, w, frames=frames, quant=quant, meta=meta)
    build = {"conv1d": conv1d, "conv2d": conv2d, "conv3d": conv3d}[cap.kind]
    return build(name, a, w, frames=frames, quant=quant, meta=meta, **cap.params)


def trace_torch(model, inputs: Any, path: str | os.PathLike | None = None, *,
                quantize: str = "none", model_name: str | None = None,
                input_description: str | None = None,
                provenance: Mapping[str, Any] | None = None) -> TorchTraceResult:
    """Run ``model`` on ``inputs`` and write every matrix product it computed.

    ``inputs`` is one input or a **list** of inputs. One input is a tensor (called as
    ``model(x)``), a tuple (``model(*x)``) or a dict (``model(**x)``). A list runs the
    model once per element, in order (a stateful model keeps its state between them),
    and each layer's captured input gets a leading frames axis, one frame per element.
    Recurrent layers always have frames: their time steps (times the list's length).

    ``quantize`` is ``"none"`` (tensors as the model holds them: float16/32/64) or
    ``"int8"``: symmetric per-tensor for activations and symmetric per-output-channel
    for weights, scales recorded in the manifest.

    ``path`` is the trace directory to write; with ``None`` nothing is written. Matrix
    products that ran but cannot be lowered are listed (module, MACs, share of all MACs) in
    the result's ``skipped`` and in the trace provenance, with a warning;
    :class:`~accelsim.errors.TraceError` is raised if nothing traceable ran. The model
    runs under ``torch.no_grad()`` in whatever train/eval mode it is in (recorded in the
    provenance).
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
    mname = model_name or type(model).__name__
    if not runs[0]:
        skipped = rec.skipped(0)
        listed = "; ".join(f"{s.name} ({s.type}): {s.reason}" for s in skipped) or "none"
        raise TraceError(f"trace_torch: no traceable layer ran in {mname} (traced: "
                         f"{_SUPPORTED_TEXT}); left out: {listed}")
    merged = _merge(runs, framed)
    layers = [_to_layer(name, cap, frames, quantize) for name, cap, frames in merged]
    for layer in layers:
        validate_layer(layer, where=f"trace_torch({mname})")
    from accelsim.model.workload import gemm_shape

    skipped = rec.skipped(sum(gemm_shape(layer).macs_dense for layer in layers))
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
        warnings.warn("trace_torch: matrix products not in the trace: " + "; ".join(
            f"{s.name} ({s.type}): {s.reason}" for s in skipped), stacklevel=2)
    return TorchTraceResult(trace=trace, path=out_path, skipped=skipped)


__all__ = ["Skipped", "TorchTraceResult", "quantize_activation", "quantize_weight",
           "trace_torch"]
