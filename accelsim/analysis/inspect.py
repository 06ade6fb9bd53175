"""Per-layer statistics of a trace, before any simulation: GEMM shapes, densities,
delta density between frames and stored bytes.

Densities count exact zeros of the stored values. For quantised tensors (an integer
tensor with a ``symmetric`` or ``per_channel`` scheme) ``*_q1`` columns also give the
fraction with ``|q| > 1``, i.e. what survives if the two smallest nonzero levels were
zeroed too. Columns that do not apply to a layer are NaN.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from accelsim.errors import safe_text
from accelsim.io.trace import Layer, Trace, load_trace, tensor_bytes
from accelsim.model.workload import gemm_shape

COLUMNS = (
    "layer", "kind", "m", "k", "n", "groups", "frames", "macs_dense",
    "density_a", "density_w", "density_a_q1", "density_w_q1",
    "delta_density_a", "unchanged_frac_a", "size_a", "size_w", "bytes", "kv_cache",
)

_CHUNK = 1 << 22  # elements per block, so memory-mapped tensors stay mostly on disk


def _is_quantised(layer: Layer, role: str) -> bool:
    t = layer.tensors[role]
    return t.dtype.kind in "iu" and layer.quant_of(role).scheme != "none"


def _count(t: np.ndarray, pred) -> int:
    flat = t.reshape(-1)
    return int(sum(int(pred(flat[i:i + _CHUNK])) for i in range(0, flat.size, _CHUNK)))


def _nonzero(t: np.ndarray) -> int:
    return _count(t, np.count_nonzero)


def _above_one(t: np.ndarray) -> int:
    def pred(c: np.ndarray) -> int:
        c = c.astype(np.int64) if c.dtype.kind in "iu" else c
        return np.count_nonzero(np.abs(c) > 1)
    return _count(t, pred)


def _changed(t: np.ndarray) -> tuple[int, int]:
    """Elements of ``x_t - x_{t-1}`` (t >= 1, axis 0) that are nonzero, and how many."""
    changed = 0
    for i in range(1, t.shape[0]):
        changed += int(np.count_nonzero(t[i] != t[i - 1]))
    return changed, (t.shape[0] - 1) * int(np.prod(t.shape[1:]))


def layer_stats(layer: Layer) -> dict[str, Any]:
    """One row of :func:`inspect_trace` for ``layer``."""
    g = gemm_shape(layer)
    a, w = layer.a, layer.w
    nan = float("nan")
    row: dict[str, Any] = {
        "layer": safe_text(layer.name), "kind": layer.kind, "m": g.m, "k": g.k, "n": g.n,
        "groups": g.per_frame, "frames": g.frames, "macs_dense": int(g.macs_dense),
        "density_a": _nonzero(a) / a.size,
        "density_w": _nonzero(w) / w.size,
        "density_a_q1": _above_one(a) / a.size if _is_quantised(layer, "input"
                                                                if layer.kind != "matmul"
                                                                else "a") else nan,
        "density_w_q1": _above_one(w) / w.size if _is_quantised(layer, "weight"
                                                                if layer.kind != "matmul"
                                                                else "b") else nan,
        "delta_density_a": nan, "unchanged_frac_a": nan,
        "size_a": int(a.size), "size_w": int(w.size), "bytes": tensor_bytes(layer),
    }
    from accelsim.model.kvcache import describe, kv_use

    use = kv_use(layer)
    row["kv_cache"] = describe(use) if use is not None else ""
    if layer.frames and layer.num_frames > 1:
        changed, total = _changed(a)
        row["delta_density_a"] = changed / total
        row["unchanged_frac_a"] = 1.0 - changed / total
    return row


def inspect_trace(trace: Trace | str | os.PathLike) -> pd.DataFrame:
    """One row per layer; see :data:`COLUMNS`.

    ``m, k, n`` are the dimensions of one GEMM of one frame; ``groups`` is how many such
    GEMMs a frame runs (conv groups; the batch of a ``matmul``); ``frames`` the number of
    frames; ``macs_dense = frames * groups * m * k * n``. ``density_a``/``density_w`` are
    the fractions of nonzero stored elements (the unique input, not its im2col view);
    ``delta_density_a`` is the fraction of the elements of ``x_t - x_{t-1}`` (t >= 1)
    that are nonzero, ``unchanged_frac_a = 1 - delta_density_a``; ``size_a``/``size_w``
    are element counts and ``bytes`` the bytes stored for the layer. ``kv_cache`` labels
    attention layers that read the KV cache: tensor (K/V), block, step, cached rows +
    appended rows, and K/V heads x head_dim (docs/kv-cache.md).
    """
    if not isinstance(trace, Trace):
        trace = load_trace(trace)
    df = pd.DataFrame([layer_stats(layer) for layer in trace.layers], columns=list(COLUMNS))
    df.attrs["model"] = safe_text(trace.model)
    return df


def inspect_totals(df: pd.DataFrame) -> pd.Series:
    """Whole-trace figures: sums of MACs, bytes and elements; densities weighted by the
    elements they count (so ``density_a`` is the nonzero fraction of all stored
    activations, ``delta_density_a`` that of all frame-to-frame differences)."""
    out: dict[str, Any] = {
        "layers": len(df),
        "macs_dense": int(df["macs_dense"].sum()),
        "bytes": int(df["bytes"].sum()),
        "size_a": int(df["size_a"].sum()),
        "size_w": int(df["size_w"].sum()),
    }
    for col, size in (("density_a", "size_a"), ("density_w", "size_w"),
                      ("density_a_q1", "size_a"), ("density_w_q1", "size_w")):
        ok = df[col].notna()
        wsum = df.loc[ok, size].sum()
        out[col] = float((df.loc[ok, col] * df.loc[ok, size]).sum() / wsum) if wsum else np.nan
    ok = df["delta_density_a"].notna()
    deltas = df.loc[ok, "size_a"] * (df.loc[ok, "frames"] - 1) / df.loc[ok, "frames"]
    if deltas.sum():
        dd = float((df.loc[ok, "delta_density_a"] * deltas).sum() / deltas.sum())
        out["delta_density_a"] = dd
        out["unchanged_frac_a"] = 1.0 - dd
    else:
        out["delta_density_a"] = out["unchanged_frac_a"] = np.nan
    return pd.Series(out, name="total", dtype=object)


def kv_summary(trace: Trace) -> str | None:
    """One line on the trace's KV cache, or None when no layer reads one."""
    from accelsim.model.kvcache import kv_use

    uses = [u for u in (kv_use(layer) for layer in trace.layers) if u is not None]
    if not uses:
        return None
    blocks = sorted({u.block for u in uses})
    steps = sorted({u.step for u in uses})
    last = [u for u in uses if u.step == steps[-1]]
    elems = sum(u.elements(u.length) for u in last)
    heads = sorted({u.kv_heads for u in uses})
    dims = sorted({u.head_dim for u in uses})
    return (f"KV cache: {len(uses)} attention layers read it ({len(blocks)} blocks, "
            f"steps {steps[0]}..{steps[-1]}); {'/'.join(map(str, heads))} K/V heads x "
            f"head_dim {'/'.join(map(str, dims))}; length {min(u.length for u in uses)} -> "
            f"{max(u.length for u in uses)}; {elems} elements at step {steps[-1]}")


__all__ = ["COLUMNS", "inspect_totals", "inspect_trace", "kv_summary", "layer_stats"]
