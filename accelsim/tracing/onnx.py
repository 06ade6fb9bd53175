"""Dump an accelsim trace from an ONNX model, run with onnxruntime on real inputs.

Every ``Conv`` (1-d and 2-d), ``Gemm`` and ``MatMul`` node of the main graph is a layer.
The model is run once per input with the operands of those nodes added as graph outputs,
so the trace holds the values the model really computed. An operand that does not depend
on any graph input (an initializer, a ``Constant``, or a constant expression such as a
transposed initializer) is a weight; a ``MatMul`` or ``Gemm`` of two activations is a
``matmul`` layer. ``Conv`` attributes become ``stride`` / ``padding`` / ``dilation`` /
``groups``; asymmetric or ``auto_pad`` padding is applied to the recorded input (the layer
then says ``padding=0``). Other matrix products (``ConvTranspose``, ``Einsum``, quantised
and contrib operators, anything inside ``If`` / ``Loop`` / ``Scan`` bodies) are listed in
the provenance and warned about, never dropped silently.

onnx and onnxruntime (the ``onnx`` extra) are imported only when :func:`trace_onnx` runs.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.errors import TraceError
from accelsim.io.trace import (
    DTYPES,
    Layer,
    Quant,
    Trace,
    conv1d,
    conv2d,
    linear,
    matmul,
    validate_layer,
    write_trace,
)
from accelsim.tracing.quantize import INT8_PROVENANCE, quantize_activation, quantize_weight

QUANTIZE = ("none", "int8")
_TRACED = ("Conv", "Gemm", "MatMul")
#: matrix products this importer does not lower (reported, not traced)
_UNLOWERED = ("ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
              "Einsum", "Attention", "MultiHeadAttention", "FusedMatMul", "FusedConv",
              "FusedGemm", "QGemm", "DynamicQuantizeMatMul", "MatMulNBits")


@dataclass(frozen=True)
class OnnxSkipped:
    """A node whose matrix product is not in the trace."""

    name: str
    op_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op_type": self.op_type, "reason": self.reason}


@dataclass(frozen=True)
class OnnxTraceResult:
    """What :func:`trace_onnx` made: the trace, where it was written, what was skipped."""

    trace: Trace
    path: Path | None
    skipped: tuple[OnnxSkipped, ...] = ()


@dataclass
class _Node:
    index: int
    name: str
    op: str
    a: str
    b: str
    attrs: dict[str, Any]


def _imports():
    try:
        import onnx
        import onnxruntime
    except ImportError:  # pragma: no cover - depends on the environment
        raise TraceError("trace_onnx needs onnx and onnxruntime: pip install "
                         "'accelsim[onnx]'") from None
    return onnx, onnxruntime


def _load_model(onnx, model: Any, where: str):
    if isinstance(model, onnx.ModelProto):
        return model
    p = Path(model)
    if not p.is_file():
        raise TraceError(f"{where}: ONNX model not found")
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf's DecodeError and friends
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TraceError(f"{where}: not a readable ONNX model ({first})") from None


def load_inputs_npz(path: str | os.PathLike, frames: bool = False
                    ) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
    """Model inputs from an ``.npz`` (one array per graph input, by name; never pickles).
    With ``frames=True`` every array's leading axis is split into a list of inputs."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TraceError(f"{p}: not a readable .npz file of arrays ({first})") from None
    if not arrays:
        raise TraceError(f"{p}: holds no arrays")
    if not frames:
        return arrays
    lengths = {k: (a.shape[0] if a.ndim else 0) for k, a in arrays.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise TraceError(f"{p}: frames: every array needs the same leading (frames) axis, "
                         f"got {lengths}")
    n = next(iter(lengths.values()))
    return [{k: a[i] for k, a in arrays.items()} for i in range(n)]


def _attrs(onnx, node) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _source(name: str, producers: Mapping[str, Any]) -> str:
    """The initializer a constant comes from through Transpose/Identity/Cast/Reshape."""
    for _ in range(8):
        node = producers.get(name)
        if node is None or node.op_type not in ("Transpose", "Identity", "Cast", "Reshape"):
            break
        name = node.input[0]
    return name


def _layer_names(nodes: list[_Node], weights: set[str], producers: Mapping[str, Any]
                 ) -> dict[int, str]:
    """Names: the weight initializer's without ``.weight`` (``fc.weight`` -> ``fc``, like
    trace_torch's module names), else the node's (``/attn/MatMul`` -> ``attn.MatMul``),
    else ``MatMul_7``; made unique."""
    out: dict[int, str] = {}
    used: set[str] = set()
    for n in nodes:
        name = ""
        for operand in (n.b, n.a):
            src = _source(operand, producers) if operand in weights else ""
            if src.endswith(".weight"):
                name = src[: -len(".weight")]
                break
        if not name and n.name:
            name = re.sub(r"/+", ".", n.name).strip(".")
        name = name or f"{n.op}_{n.index}"
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out[n.index] = name
    return out


def _float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.name not in DTYPES or x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


def _conv_padding(x: np.ndarray, w: np.ndarray, attrs: Mapping[str, Any], where: str
                  ) -> tuple[np.ndarray, tuple[int, ...]]:
    """The input to record and the symmetric padding to declare."""
    n = w.ndim - 2
    stride = list(attrs.get("strides", [1] * n))
    dil = list(attrs.get("dilations", [1] * n))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for i in range(n):
            size = x.shape[2 + i]
            out = -(-size // stride[i])
            total = max(0, (out - 1) * stride[i] + dil[i] * (w.shape[2 + i] - 1) + 1 - size)
            small, big = total // 2, total - total // 2
            pads_b.append(big if auto == "SAME_LOWER" else small)
            pads_e.append(small if auto == "SAME_LOWER" else big)
    elif auto == "VALID":
        pads_b, pads_e = [0] * n, [0] * n
    elif auto == "NOTSET":
        pads = list(attrs.get("pads", [0] * (2 * n)))
        pads_b, pads_e = pads[:n], pads[n:]
    else:
        raise TraceError(f"{where}: auto_pad: expected NOTSET, SAME_UPPER, SAME_LOWER or "
                         f"VALID, got {auto!r}")
    if pads_b == pads_e:
        return x, tuple(int(p) for p in pads_b)
    width = [(0, 0), (0, 0)] + [(int(b), int(e)) for b, e in zip(pads_b, pads_e, strict=True)]
    return np.pad(x, width), (0,) * n


def trace_onnx(model: Any, inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | str
               | os.PathLike, path: str | os.PathLike | None = None, *,
               quantize: str = "none", model_name: str | None = None,
               provenance: Mapping[str, Any] | None = None) -> OnnxTraceResult:
    """Run an ONNX model (a path or an ``onnx.ModelProto``) with onnxruntime on ``inputs``
    and write every Conv, Gemm and MatMul it computed as a trace.

    ``inputs`` maps graph input names to arrays, or is an ``.npz`` path; a **list** of
    mappings runs the model once per element and gives every layer a frames axis, as
    :func:`accelsim.trace_torch` does. ``quantize`` is ``"none"`` (float values as computed)
    or ``"int8"``: the same symmetric quantisation as ``trace_torch`` (per tensor for
    activations, per output channel for weights). ``path`` is the trace directory to write;
    with ``None`` nothing is written."""
    onnx, ort = _imports()
    if quantize not in QUANTIZE:
        raise TraceError(f"trace_onnx: quantize: expected one of {', '.join(QUANTIZE)}, got "
                         f"{quantize!r}")
    where = str(model) if not isinstance(model, onnx.ModelProto) else "trace_onnx(model)"
    proto = _load_model(onnx, model, where)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = load_inputs_npz(inputs)
    framed = isinstance(inputs, (list, tuple))
    items = list(inputs) if framed else [inputs]
    if not items:
        raise TraceError("trace_onnx: inputs: the list of inputs is empty")
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in inits]
    feeds_all = []
    for j, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TraceError(f"trace_onnx: inputs: expected a mapping of input names to "
                             f"arrays, got {type(item).__name__}")
        feeds_all.append(_feeds(onnx, real_inputs, inits, item,
                                f"{where}: inputs" + (f"[{j}]" if framed else "")))
    fed = set(feeds_all[0])
    const_inits = {k for k in inits if k not in fed}

    dynamic = set(fed)
    nodes: list[_Node] = []
    skipped: list[OnnxSkipped] = []
    for i, node in enumerate(graph.node):
        if any(x in dynamic for x in node.input if x):
            dynamic.update(o for o in node.output if o)
        label = node.name or f"{node.op_type}_{i}"
        if node.op_type in _TRACED and node.domain in ("", "ai.onnx"):
            nodes.append(_Node(i, node.name, node.op_type, node.input[0], node.input[1],
                               _attrs(onnx, node)))
        elif node.op_type in _UNLOWERED:
            skipped.append(OnnxSkipped(label, node.op_type, "matrix product not lowered by "
                                       "trace_onnx"))
        for attr in node.attribute:
            subs = list(attr.g.node) if attr.HasField("g") else []
            for g in attr.graphs:
                subs.extend(g.node)
            for sub in subs:
                if sub.op_type in _TRACED + _UNLOWERED:
                    skipped.append(OnnxSkipped(label, node.op_type,
                                               f"{sub.op_type} inside a subgraph"))
                    break
    if not nodes:
        listed = "; ".join(f"{s.name} ({s.op_type})" for s in skipped) or "none"
        raise TraceError(f"{where}: no Conv, Gemm or MatMul node in the main graph (left out: "
                         f"{listed})")

    operands = sorted({x for n in nodes for x in (n.a, n.b) if x not in const_inits})
    have = {o.name for o in graph.output}
    run_model = onnx.ModelProto()
    run_model.CopyFrom(proto)
    run_model.graph.output.extend(onnx.ValueInfoProto(name=x) for x in operands
                                  if x not in have)
    try:
        sess = ort.InferenceSession(run_model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:
        raise TraceError(f"{where}: onnxruntime cannot load the model "
                         f"({_first_line(e)})") from None
    runs = []
    for feeds in feeds_all:
        try:
            values = sess.run(operands, feeds)
        except Exception as e:
            raise TraceError(f"{where}: onnxruntime failed on the inputs "
                             f"({_first_line(e)})") from None
        runs.append(dict(zip(operands, values, strict=True)))

    from onnx import numpy_helper

    def value(name: str, run: dict[str, np.ndarray]) -> np.ndarray:
        if name in const_inits:
            return numpy_helper.to_array(inits[name])
        return run[name]

    weights = {x for n in nodes for x in (n.a, n.b) if x not in dynamic}
    producers = {o: node for node in graph.node for o in node.output}
    names = _layer_names(nodes, weights, producers)
    layers = [_layer(names[n.index], n, [value(n.a, r) for r in runs],
                     [value(n.b, r) for r in runs], n.a in weights, n.b in weights, framed,
                     quantize, where) for n in nodes]
    mname = model_name or graph.name or Path(where).stem
    for layer in layers:
        validate_layer(layer, where=f"trace_onnx({mname})")
    prov: dict[str, Any] = {
        "tracer": "accelsim.trace_onnx",
        "onnx_version": str(onnx.__version__),
        "onnxruntime_version": str(ort.__version__),
        "opset": [{"domain": o.domain or "ai.onnx", "version": int(o.version)}
                  for o in proto.opset_import],
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "quantize": dict(INT8_PROVENANCE) if quantize == "int8" else "none",
        "inputs": (f"list of {len(items)} inputs (frames), each " if framed else "")
        + ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds_all[0].items()),
        "skipped": [s.to_dict() for s in skipped],
    }
    if not isinstance(model, onnx.ModelProto):
        prov["model_file"] = str(model)
    prov.update(dict(provenance or {}))
    trace = Trace.from_arrays(mname, layers, prov)
    out = write_trace(path, trace) if path is not None else None
    if skipped:
        warnings.warn("trace_onnx: matrix products not in the trace: " + "; ".join(
            f"{s.name} ({s.op_type}): {s.reason}" for s in skipped), stacklevel=2)
    return OnnxTraceResult(trace=trace, path=out, skipped=tuple(skipped))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _feeds(onnx, real_inputs, inits, item: Mapping[str, Any], where: str
           ) -> dict[str, np.ndarray]:
    names = [i.name for i in real_inputs]
    for key in item:
        if key not in names and key not in inits:
            raise TraceError(f"{where}: unknown input {key!r} (the model's inputs: "
                             f"{', '.join(names)})")
    feeds = {}
    for vi in real_inputs:
        if vi.name not in item:
            raise TraceError(f"{where}: missing input {vi.name!r} (the model's inputs: "
                             f"{', '.join(names)})")
        arr = np.asarray(item[vi.name])
        if arr.dtype == object:
            raise TraceError(f"{where}: input {vi.name!r}: expected a numeric array")
        elem = vi.type.tensor_type.elem_type
        if elem:
            arr = arr.astype(onnx.helper.tensor_dtype_to_np_dtype(elem), copy=False)
        feeds[vi.name] = arr
    for key in item:  # an initializer fed by the user overrides it
        if key in inits:
            feeds[key] = np.asarray(item[key])
    return feeds


def _stack(parts: list[np.ndarray], framed: bool, what: str) -> np.ndarray:
    if not framed:
        return parts[0]
    if len({p.shape for p in parts}) != 1:
        raise TraceError(f"{what}: shapes differ between inputs "
                         f"({sorted({p.shape for p in parts})}); frames need equal shapes")
    return np.stack(parts)


def _layer(name: str, node: _Node, a_runs: list[np.ndarray], b_runs: list[np.ndarray],
           a_const: bool, b_const: bool, framed: bool, quantize: str, where: str) -> Layer:
    loc = f"{where}: node {node.name or node.op + '_' + str(node.index)!r}"
    a_runs = [_float(x) for x in a_runs]
    b_runs = [_float(x) for x in b_runs]
    meta: dict[str, Any] = {"onnx": {"node": node.name, "op_type": node.op}}
    if node.op == "Gemm" and float(node.attrs.get("alpha", 1.0)) != 1.0:
        meta["onnx"]["alpha"] = float(node.attrs["alpha"])  # scales Y, not the operands
    if node.op == "Conv":
        if not b_const:
            raise TraceError(f"{loc}: Conv weight {node.b!r} depends on the model's inputs; "
                             f"only constant weights are supported")
        w = b_runs[0]
        if w.ndim not in (3, 4):
            raise TraceError(f"{loc}: only 1-d and 2-d Conv are supported, got a weight of "
                             f"shape {list(w.shape)}")
        xs, pads = zip(*(_conv_padding(x, w, node.attrs, loc) for x in a_runs), strict=True)
        x = _stack(list(xs), framed, loc)
        n = w.ndim - 2
        params = dict(stride=tuple(node.attrs.get("strides", [1] * n)), padding=pads[0],
                      dilation=tuple(node.attrs.get("dilations", [1] * n)),
                      groups=int(node.attrs.get("group", 1)))
        quant: dict[str, Quant] = {}
        if quantize == "int8":
            x, quant["input"] = quantize_activation(x)
            w, quant["weight"] = quantize_weight(w)
        build = conv2d if n == 2 else conv1d
        return build(name, x, w, frames=framed, quant=quant, meta=meta, **params)

    # Gemm and MatMul: Y = A @ B
    if node.op == "Gemm":
        if node.attrs.get("transA", 0):
            a_runs = [x.T for x in a_runs]
        if node.attrs.get("transB", 0):
            b_runs = [x.T for x in b_runs]
    else:  # MatMul: numpy semantics for 1-d operands
        a_runs = [x[None] if x.ndim == 1 else x for x in a_runs]
        b_runs = [x[:, None] if x.ndim == 1 else x for x in b_runs]
    if a_const and not b_const and a_runs[0].ndim == 2:
        # W @ X: the transposed product X^T @ W^T has the same MACs, activations left
        meta["onnx"]["transposed"] = True
        a_runs, b_runs = ([np.swapaxes(x, -1, -2) for x in b_runs],
                          [x.T for x in a_runs])
        a_const, b_const = False, True
    if b_const and b_runs[0].ndim == 2:
        x = _stack([np.ascontiguousarray(v) for v in a_runs], framed, loc)
        w = np.ascontiguousarray(b_runs[0].T)  # [out, in]
        quant = {}
        if quantize == "int8":
            x, quant["input"] = quantize_activation(x)
            w, quant["weight"] = quantize_weight(w)
        return linear(name, x, w, frames=framed, quant=quant, meta=meta)
    # a product of two activations (or a batched weight): a matmul layer, batch broadcast
    pairs = []
    for x, y in zip(a_runs, b_runs, strict=True):
        batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        pairs.append((np.ascontiguousarray(np.broadcast_to(x, batch + x.shape[-2:])),
                      np.ascontiguousarray(np.broadcast_to(y, batch + y.shape[-2:]))))
    a = _stack([p[0] for p in pairs], framed, loc)
    b = _stack([p[1] for p in pairs], framed, loc)
    quant = {}
    if quantize == "int8":
        a, quant["a"] = quantize_activation(a)
        b, quant["b"] = quantize_activation(b)
    return matmul(name, a, b, frames=framed, quant=quant, meta=meta)


__all__ = ["OnnxSkipped", "OnnxTraceResult", "load_inputs_npz", "trace_onnx"]
