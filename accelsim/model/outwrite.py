"""Output writes in the consumer's format (docs/memory-model.md, "Output writes").

A layer's output is written compressed when the trace knows that output tensor: when a
later layer's ``meta.input_from`` names this layer and only *output-stage* operators sit
between them (``meta.input_ops``: elementwise activations applied as the output is
written, and views that keep the row-major element order). The consumer's input is then
exactly the producer's output, and the trace holds its quantised values; the producer
writes it in the consumer's A format, with the bytes the consumer's unique A operand
takes (data and metadata apart). Everything else is written dense, as before: no
consumer, a chain through an operator that changes which elements exist or where they
sit (pooling, transposes, concatenation), a consumer under temporal delta (its encoder
reads the dense tensor), or a consumer whose input does not have the producer's output
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer, Trace

#: operators between a producer and its consumer that keep the output exactly the
#: consumer's input: elementwise functions of one output element, applied by the output
#: stage as the element is written, and reshapes that keep row-major order (aten names,
#: as trace_torch records them, without a trailing ``_`` or ``.variant``)
OUTPUT_STAGE_OPS = frozenset({
    "relu", "relu6", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "hardtanh",
    "hardswish", "hardsigmoid", "elu", "mish", "softplus", "threshold", "clamp",
    "clamp_min", "clamp_max",
    "view", "_unsafe_view", "reshape", "flatten", "unsqueeze", "squeeze", "alias",
    "clone", "contiguous", "detach", "dropout", "identity", "_to_copy",
})


def _op_name(op: str) -> str:
    name = op.removeprefix("aten.").split(".")[0]
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


def stage_op(op: str) -> bool:
    """Is ``op`` an output-stage operator (see :data:`OUTPUT_STAGE_OPS`)?"""
    return _op_name(op) in OUTPUT_STAGE_OPS


@dataclass(frozen=True)
class OutWrite:
    """How a layer's output is written: ``fmt`` (the format kind), ``consumer`` (the
    layer that reads it, "" when written dense for want of one) and, when compressed,
    the bytes of each frame's output in that format: ``data`` and ``meta`` [F] int64."""

    fmt: str = "dense"
    consumer: str = ""
    data: np.ndarray | None = None
    meta: np.ndarray | None = None


DENSE = OutWrite()


def output_elements(layer: Layer) -> int:
    """Elements of the layer's output over all frames (every GEMM's M x N)."""
    from accelsim.model.workload import gemm_shape

    s = gemm_shape(layer)
    return s.batch * s.m * s.n


def consumers(trace: Trace) -> dict[str, Layer]:
    """Producer layer name -> the first later layer whose input is exactly its output
    (``meta.input_from`` names it and every ``meta.input_ops`` is an output-stage
    operator). A reference to a layer that is not earlier in the trace is ignored."""
    out: dict[str, Layer] = {}
    before: set[str] = set()
    for layer in trace.layers:
        src = layer.meta.get("input_from")
        ops = layer.meta.get("input_ops") or []
        if (isinstance(src, str) and src in before and src not in out
                and all(isinstance(op, str) and stage_op(op) for op in ops)):
            out[src] = layer
        before.add(layer.name)
    return out


def exact_chain(layer: Layer, consumer: Layer | None, hw: HwConfig) -> bool:
    """The consumer's A operand is this layer's output, and the model may charge the
    write at the consumer's compressed size."""
    from accelsim.model.memory import delta_on

    if consumer is None or consumer.meta.get("input_from") != layer.name:
        return False
    if delta_on(consumer, hw):  # the delta encoder reads the tensor dense
        return False
    if bool(consumer.frames) != bool(layer.frames) or consumer.num_frames != layer.num_frames:
        return False
    return int(np.asarray(consumer.a).size) == output_elements(layer)


def consumer_bytes(consumer: Layer, hw: HwConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Per frame, (data, metadata) bytes of the consumer's unique A operand in its A
    format (widths resolved for the consumer), and the format kind: what the consumer's
    DRAM read of a resident A costs."""
    from accelsim.model.engine import nm_applies
    from accelsim.model.memory import (
        _unique_a_mask,
        a_operand_bits,
        resolve_formats,
        tile_bytes,
    )
    from accelsim.model.sparsity import check_nm, nm_structure
    from accelsim.model.workload import gemm_shape, lower_a, lower_wt

    shape = gemm_shape(consumer)
    mask = np.asarray(consumer.a) != 0
    conv = consumer.kind in ("conv1d", "conv2d", "conv3d")  # unique A: the input itself
    az = None if conv else lower_a(consumer, mask)
    nm = None
    if nm_applies(consumer, hw):
        wz = np.swapaxes(lower_wt(consumer, np.asarray(consumer.w) != 0), -1, -2)
        check_nm(consumer, wz, hw.structured.n, hw.structured.m)
        nm = nm_structure(wz, hw.structured.n, hw.structured.m)
    chw = resolve_formats(consumer, hw, shape.m, shape.k, shape.n, nm)
    ua = _unique_a_mask(consumer, az, mask)
    d, m = tile_bytes(ua, ua.shape[1], ua.shape[2], chw.formats.a,
                      a_operand_bits(consumer, hw))
    nf = consumer.num_frames
    return (d.reshape(nf, -1).sum(axis=1, dtype=np.int64),
            m.reshape(nf, -1).sum(axis=1, dtype=np.int64), chw.formats.a.kind)


def plan_output(layer: Layer, consumer: Layer | None, hw: HwConfig) -> OutWrite:
    """How ``layer`` writes its output given the layer that consumes it (or None)."""
    if not exact_chain(layer, consumer, hw):
        return DENSE
    data, meta, kind = consumer_bytes(consumer, hw)
    return OutWrite(fmt=kind, consumer=consumer.name, data=data, meta=meta)


def shares(dense: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Split each frame's ``total`` bytes over the output writes of that frame in
    proportion to their dense bytes, in memory order: ``dense`` [F, ...] holds each
    fold's dense output bytes (0 where a fold writes nothing); the result has its shape
    and sums to ``total[f]`` over frame f (0 where the frame writes nothing). Integer
    shares ``floor(T*c_i/D) - floor(T*c_{i-1}/D)`` of the running sum ``c``."""
    dense = np.asarray(dense, np.int64)
    nf = dense.shape[0]
    flat = dense.reshape(nf, -1)
    cum = np.cumsum(flat, axis=1)
    d_tot = cum[:, -1:]
    t = np.asarray(total, np.int64).reshape(nf, 1)
    limit = max((int(tv) * int(dv) for tv, dv in zip(t[:, 0], d_tot[:, 0], strict=True)),
                default=0)  # in Python integers: the product may not fit int64
    if limit < 2**62:
        safe = np.maximum(d_tot, 1)
        upto = t * cum // safe
    else:  # exact in Python integers
        upto = np.array([[int(tv) * int(c) // max(int(dv), 1) for c in row]
                         for row, tv, dv in zip(cum, t[:, 0], d_tot[:, 0], strict=True)],
                        dtype=np.int64)
    upto = np.where(d_tot > 0, upto, 0)
    prev = np.concatenate([np.zeros((nf, 1), np.int64), upto[:, :-1]], axis=1)
    return (upto - prev).reshape(dense.shape)


def charge(dense: np.ndarray, ow: OutWrite | None) -> tuple[np.ndarray, np.ndarray]:
    """(data, metadata) bytes per fold of the output writes: ``dense`` as it is when the
    output is written dense, else the consumer-format bytes split by :func:`shares`."""
    dense = np.asarray(dense, np.int64)
    if ow is None or ow.data is None:
        return dense, np.zeros_like(dense)
    return shares(dense, ow.data), shares(dense, ow.meta)


def described(ow: OutWrite | None) -> dict[str, str]:
    """The report columns ``out_format`` and ``out_consumer``."""
    ow = ow or DENSE
    return {"out_format": ow.fmt, "out_consumer": ow.consumer}


__all__ = ["DENSE", "OUTPUT_STAGE_OPS", "OutWrite", "charge", "consumer_bytes", "consumers",
           "described", "exact_chain", "output_elements", "plan_output", "shares",
           "stage_op"]

