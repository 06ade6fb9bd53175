"""Lowering: every layer becomes a batch of GEMMs ``Y[b] = A[b] @ W[b]``.

The batch axis ``b`` enumerates the GEMMs a layer runs one after another, frame-major:
``b = frame * per_frame + j`` where ``j`` is the group (conv) or the matmul batch
index. ``M, K, N`` are the dimensions of one GEMM.

The lowering works on any dtype, so the engine can lower the 0/1 masks it needs and the
functional delta path can lower real values with the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from accelsim.io.trace import Layer, conv_out_size


@dataclass(frozen=True)
class GemmShape:
    """Shape of the GEMM batch a layer lowers to."""

    name: str
    kind: str
    frames: int
    per_frame: int  # GEMMs per frame: groups (conv) or batch (matmul), else 1
    m: int
    k: int
    n: int
    groups: int
    unique_a: int  # unique elements of the A operand per frame (conv: input, not im2col)
    unique_w: int  # unique elements of the W operand per frame (matmul: b per frame)

    @property
    def batch(self) -> int:
        return self.frames * self.per_frame

    @property
    def macs_dense(self) -> int:
        return self.batch * self.m * self.k * self.n


def gemm_shape(layer: Layer) -> GemmShape:
    """The GEMM dimensions of ``layer`` without touching its values."""
    f = 1 if layer.frames else 0
    a, w = layer.a, layer.w
    frames = layer.num_frames
    if layer.kind == "linear":
        m = math.prod(a.shape[f:-1])
        return GemmShape(layer.name, layer.kind, frames, 1, m, w.shape[1], w.shape[0], 1,
                         math.prod(a.shape[f:]), w.size)
    if layer.kind == "matmul":
        batch = math.prod(a.shape[f:-2])
        return GemmShape(layer.name, layer.kind, frames, batch, a.shape[-2], a.shape[-1],
                         w.shape[-1], 1, math.prod(a.shape[f:]), math.prod(w.shape[f:]))
    g = layer.groups
    nb = a.shape[f]
    spatial = a.shape[f + 2:]
    ksize = w.shape[2:]
    out = [conv_out_size(spatial[i], ksize[i], layer.stride[i], layer.padding[i],
                         layer.dilation[i]) for i in range(len(spatial))]
    m = nb * math.prod(out)
    k = w.shape[1] * math.prod(ksize)
    n = w.shape[0] // g
    return GemmShape(layer.name, layer.kind, frames, g, m, k, n, g,
                     math.prod(a.shape[f:]), w.size)


def _im2col(x: np.ndarray, ksize, stride, padding, dilation, groups: int) -> np.ndarray:
    """x[F, N, C, *spatial] -> [F*G, N*prod(out), C/G*prod(k)], K ordered (c, *k)."""
    nsp = len(ksize)
    pad = [(0, 0)] * 3 + [(p, p) for p in padding]
    if any(padding):
        x = np.pad(x, pad)
    span = [d * (k - 1) + 1 for k, d in zip(ksize, dilation, strict=True)]
    axes = tuple(range(3, 3 + nsp))
    v = sliding_window_view(x, span, axis=axes)  # [F, N, C, *out_full, *span]
    sl = [slice(None)] * 3
    sl += [slice(None, None, s) for s in stride]
    sl += [slice(None, None, d) for d in dilation]
    v = v[tuple(sl)]  # [F, N, C, *out, *k]
    nf, nb, c = v.shape[:3]
    out = v.shape[3:3 + nsp]
    g = groups
    v = v.reshape((nf, nb, g, c // g) + out + tuple(ksize))
    # -> [F, G, N, *out, C/G, *k]
    order = (0, 2, 1) + tuple(range(4, 4 + nsp)) + (3,) + tuple(range(4 + nsp, 4 + 2 * nsp))
    v = v.transpose(order)
    return np.ascontiguousarray(v).reshape(nf * g, nb * math.prod(out),
                                           (c // g) * math.prod(ksize))


def lower_a(layer: Layer, x: np.ndarray | None = None) -> np.ndarray:
    """The A operand as a [F, P, M, K] array (F frames, P GEMMs per frame).

    ``x`` replaces ``layer.a`` (same shape), e.g. a mask or a delta tensor."""
    x = layer.a if x is None else x
    if not layer.frames:
        x = x[None]
    nf = x.shape[0]
    if layer.kind == "linear":
        return np.ascontiguousarray(x).reshape(nf, 1, -1, x.shape[-1])
    if layer.kind == "matmul":
        return np.ascontiguousarray(x).reshape(nf, -1, x.shape[-2], x.shape[-1])
    cols = _im2col(x, layer.w.shape[2:], layer.stride, layer.padding, layer.dilation,
                   layer.groups)
    return cols.reshape(nf, layer.groups, cols.shape[1], cols.shape[2])


def lower_w(layer: Layer, w: np.ndarray | None = None) -> np.ndarray:
    """The W operand as a [Fw, P, K, N] array, where P is GEMMs per frame and ``Fw`` is
    the number of frames (matmul, whose ``b`` is an activation) or 1 (weights, shared by
    every frame; broadcast against A's frames axis)."""
    w = layer.w if w is None else w
    if layer.kind == "matmul":
        if not layer.frames:
            w = w[None]
        nf = w.shape[0]
        return np.ascontiguousarray(w).reshape(nf, -1, w.shape[-2], w.shape[-1])
    if layer.kind == "linear":
        return np.ascontiguousarray(w.T)[None, None]  # [1, 1, K, N]
    g = layer.groups
    cout = w.shape[0]
    return np.ascontiguousarray(w.reshape(g, cout // g, -1).transpose(0, 2, 1))[None]


def lower_wt(layer: Layer, w: np.ndarray | None = None) -> np.ndarray:
    """The W operand transposed, [Fw, P, N, K] and C-contiguous: each row is one output
    column's fiber along K. For weights this is the stored layout (no copy needed), so
    ``np.swapaxes(lower_wt(layer), -1, -2)`` is a free view of :func:`lower_w`."""
    w = layer.w if w is None else w
    if layer.kind == "matmul":
        return np.ascontiguousarray(np.swapaxes(lower_w(layer, w), -1, -2))
    if layer.kind == "linear":
        return np.ascontiguousarray(w)[None, None]  # [1, 1, N, K]
    g = layer.groups
    return np.ascontiguousarray(w).reshape(1, g, w.shape[0] // g, -1)
