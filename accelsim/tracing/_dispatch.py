"""Which aten operators are GEMMs and how :func:`accelsim.trace_torch` reads them.

:func:`trace_torch` runs the model under a :class:`GemmMode` (a
``TorchDispatchMode``): every aten operator PyTorch dispatches passes through it, after
composite functions (``F.linear``, ``torch.matmul``, ``einsum``, the math backend of
``scaled_dot_product_attention``, ``nn.MultiheadAttention``) have been decomposed. The
tables here say which operators are matrix products, where their two operands are, and
how many MACs the matrix-like operators that cannot be lowered to a trace layer cost
(fused attention kernels, transposed convolutions), so that those are reported by name
and share of MACs instead of vanishing.

This module imports torch; :mod:`accelsim.tracing.torch` imports it only while tracing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: matrix products: operator name -> (index of A, index of B); ``A[..., M, K] @ B[..., K, N]``
MM_OPS = {
    "mm": (0, 1), "addmm": (1, 2), "_addmm_activation": (1, 2), "bmm": (0, 1),
    "baddbmm": (1, 2), "addbmm": (1, 2), "mv": (0, 1), "addmv": (1, 2), "dot": (0, 1),
    "vdot": (0, 1), "_int_mm": (0, 1),
}
#: convolutions: (input, weight, bias, stride, padding, dilation, transposed, output_padding,
#: groups, ...) in this order
CONV_OPS = ("convolution", "_convolution")
#: softmax operators (their output, the attention probabilities, marks the next product
#: as softmax x V and their input's product as Q x K^T)
SOFTMAX_OPS = ("_softmax", "_safe_softmax", "softmax")
#: fused attention kernels (only reached when the math backend is not used)
ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable", "_flash_attention_forward",
    "_efficient_attention_forward",
)
#: fused recurrent kernels and cells (module hooks recompute nn.LSTM/GRU/RNN and cells; these
#: are reported when they run outside such a module)
RNN_OPS = (
    "mkldnn_rnn_layer", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell",
    "rnn_tanh_cell", "rnn_relu_cell", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell",
    "_cudnn_rnn", "miopen_rnn",
)
#: other matrix-like operators that cannot be lowered (MACs not estimated)
OTHER_OPS = (
    "_trilinear", "_sparse_mm", "_sparse_addmm", "sparse_sampled_addmm", "_scaled_mm",
    "_weight_int8pack_mm", "_weight_int4pack_mm", "mkldnn_linear", "mkldnn_convolution",
    "cudnn_convolution", "cudnn_convolution_transpose", "miopen_convolution", "conv_tbc",
    "_slow_conv2d_forward", "slow_conv3d_forward", "slow_conv_transpose2d",
    "slow_conv_transpose3d", "_conv_depthwise2d",
)


#: operator names :func:`unlowered_macs` knows (a quick membership test for every operator)
UNLOWERED_NAMES = frozenset(CONV_OPS + ATTENTION_OPS + RNN_OPS + OTHER_OPS + (
    "_native_multi_head_attention", "_transformer_encoder_layer_fwd"))


@dataclass
class Product:
    """One dispatched matrix product, operands as torch tensors (views, not copies)."""

    op: str
    a: Any  # A[..., M, K] (conv: the input)
    b: Any  # B[..., K, N] (conv: the weight [C_out, C/groups, *k])
    conv: dict[str, Any] | None = None  # stride, padding, dilation, groups


def _as_matrix_pair(op: str, a, b) -> tuple[Any, Any]:
    if op in ("mv", "addmv"):
        return a, b.unsqueeze(-1)
    if op in ("dot", "vdot"):
        return a.unsqueeze(0), b.unsqueeze(-1)
    if op == "addbmm":  # sum_i a[i] @ b[i]: one GEMM with K concatenated over i
        nb, m, k = a.shape
        return a.permute(1, 0, 2).reshape(m, nb * k), b.reshape(nb * k, b.shape[-1])
    return a, b


def product_of(name: str, args: tuple) -> Product | None:
    """The matrix product an operator computes, or None if it is not one we lower."""
    if name in MM_OPS:
        ia, ib = MM_OPS[name]
        a, b = _as_matrix_pair(name, args[ia], args[ib])
        return Product(name, a, b)
    if name == "linear":  # composite on CPU; some backends dispatch it whole
        x, w = args[0], args[1]
        return Product(name, x.reshape(-1, x.shape[-1]), w.t())
    if name in CONV_OPS:
        x, w = args[0], args[1]
        transposed = bool(args[6])
        if transposed:
            return None
        return Product(name, x, w, conv={
            "stride": tuple(int(s) for s in args[3]), "padding": tuple(int(p) for p in args[4]),
            "dilation": tuple(int(d) for d in args[5]), "groups": int(args[8])})
    return None


def unlowered_macs(name: str, args: tuple, is_param) -> tuple[bool, int | None]:
    """(is this a matrix-like operator we cannot lower, its MACs if known)."""
    tensors = [t for t in tree_leaves(args) if isinstance(t, torch.Tensor)]
    if name in CONV_OPS:  # only transposed convolutions get here
        x, w = args[0], args[1]
        return True, int(x.numel()) * int(math.prod(w.shape[1:]))
    if name in ATTENTION_OPS:
        q, k, v = args[0], args[1], args[2]
        return True, int(math.prod(q.shape[:-1])) * int(k.shape[-2]) * int(
            q.shape[-1] + v.shape[-1])
    if name == "_native_multi_head_attention":  # (query, key, value, embed_dim, ...)
        q, k = args[0], args[1]
        e = int(q.shape[-1])
        lq, lk = int(math.prod(q.shape[:-1])), int(math.prod(k.shape[:-1]))
        s = int(k.shape[-2]) if k.dim() > 1 else 1
        return True, (lq + 2 * lk) * e * e + 2 * lq * s * e + lq * e * e
    if name == "_transformer_encoder_layer_fwd":  # src[B, L, E], then the weights
        src = args[0]
        tokens = int(math.prod(src.shape[:-1]))
        w2 = sum(int(t.numel()) for t in tensors[1:] if t.dim() == 2)
        return True, tokens * w2 + 2 * tokens * int(src.shape[-2]) * int(src.shape[-1])
    if name in RNN_OPS:
        x = tensors[0]
        tokens = int(math.prod(x.shape[:-1]))
        w2 = sum(int(t.numel()) for t in tensors[1:] if t.dim() == 2 and is_param(t))
        return True, tokens * w2
    if name in OTHER_OPS:
        return True, None
    return False, None


def make_mode(rec):
    """A dispatch mode that calls ``rec.before(name, args)`` for every aten operator before
    it runs (operands are copied before an in-place operator could change them) and
    ``rec.after(name, args, out, token)`` after, with what ``before`` returned."""

    class GemmMode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func._overloadpacket.__name__
            token = rec.before(name, args)
            out = func(*args, **kwargs)
            rec.after(name, args, out, token)
            return out

    return GemmMode()


__all__ = ["ATTENTION_OPS", "CONV_OPS", "MM_OPS", "UNLOWERED_NAMES", "Product", "SOFTMAX_OPS",
           "make_mode", "product_of", "unlowered_macs"]
