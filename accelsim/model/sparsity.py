"""Temporal delta operands and N:M structured weights (``docs/delta-and-nm.md``).

Pure numpy, vectorised over elements; the only loop is over frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.trace import Layer, Trace
from accelsim.model.workload import lower_w


def delta_operand(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Thresholded delta operand of a frames-first tensor.

    Returns ``(operand, changed)``: ``operand[0] = x[0]``; for ``t >= 1``,
    ``operand[t] = d`` where ``|d| > threshold`` with ``d = x[t] - x_ref``, else 0, and the
    reference follows ``x`` only where it changed. ``changed[t]`` counts changed elements
    (``changed[0]`` = all of them). The operand is int64 for integer inputs, else float64.
    """
    x = np.asarray(x)
    wide = np.int64 if x.dtype.kind in "iu" else np.float64
    out = np.empty(x.shape, wide)
    changed = np.zeros(x.shape[0], np.int64)
    ref = x[0].astype(wide)
    out[0] = ref
    changed[0] = ref.size
    for t in range(1, x.shape[0]):
        xt = x[t].astype(wide)
        d = xt - ref
        ch = np.abs(d) > threshold
        out[t] = np.where(ch, d, 0)
        ref = np.where(ch, xt, ref)
        changed[t] = int(np.count_nonzero(ch))
    return out, changed


@dataclass(frozen=True)
class NMStructure:
    """Kept slots of N:M weights for a batch of W operands [Fw, P, K, N]."""

    n: int
    m: int
    kept: np.ndarray  # bool [Fw, P, K, N]: kept slots
    idx: np.ndarray  # int64 [Fw, P, K', N]: original k of compressed row k'
    k_kept: int  # K': kept slots per column

    @property
    def index_bits(self) -> int:
        return max(1, int(np.ceil(np.log2(self.m))))


def _group_view(x: np.ndarray, m: int, fill) -> np.ndarray:
    """[..., K, N] -> [..., G, m, N], padding K with ``fill``."""
    k = x.shape[-2]
    g = -(-k // m)
    pad = g * m - k
    if pad:
        x = np.concatenate([x, np.full(x.shape[:-2] + (pad, x.shape[-1]), fill, x.dtype)],
                           axis=-2)
    return x.reshape(x.shape[:-2] + (g, m, x.shape[-1]))


def nm_violation(wz: np.ndarray, n: int, m: int) -> tuple[int, int, int, int] | None:
    """First (p, column, group, nonzeros) whose K group holds more than ``n`` nonzeros,
    ordered by GEMM, then column, then group; None when W is N:M."""
    counts = _group_view(wz.astype(np.int64), m, 0).sum(axis=-2)  # [Fw, P, G, N]
    bad = counts > n
    if not bad.any():
        return None
    counts = counts.reshape((-1,) + counts.shape[-2:])
    bad = bad.reshape(counts.shape)
    order = np.argwhere(np.swapaxes(bad, -1, -2))  # rows: (p, column, group)
    p, col, grp = (int(v) for v in order[0])
    return p, col, grp, int(counts[p, grp, col])


def nm_structure(wz: np.ndarray, n: int, m: int) -> NMStructure:
    """Kept slots per column and K group: nonzeros first, then lowest-index zeros, at most
    ``min(n, group size)`` per group, sorted by k."""
    k = wz.shape[-2]
    nz = _group_view(np.asarray(wz, bool), m, False)  # [Fw, P, G, m, N]
    g = nz.shape[-3]
    pos = np.arange(m)[:, None]
    valid = (np.arange(g)[:, None, None] * m + pos) < k  # [G, m, 1]
    key = np.where(nz, 0, m) + pos + np.where(valid, 0, 4 * m)
    order = np.argsort(key, axis=-2, kind="stable")  # slot positions by priority
    keep_n = np.minimum(n, np.minimum(k - np.arange(g) * m, m))  # [G]
    rank_ok = np.arange(m)[None, :] < keep_n[:, None]  # [G, m]
    chosen = np.sort(np.where(rank_ok[:, :, None], order, m), axis=-2)  # m: not chosen
    kept = np.zeros(nz.shape[:-2] + (m + 1, nz.shape[-1]), bool)
    np.put_along_axis(kept, chosen, True, axis=-2)
    kept = kept[..., :m, :].reshape(nz.shape[:-3] + (g * m, nz.shape[-1]))[..., :k, :]
    k_kept = int(keep_n.sum())
    gk = chosen[..., :n, :] + (np.arange(g) * m)[:, None, None]
    idx = gk.reshape(gk.shape[:-3] + (g * n, gk.shape[-1]))[..., :k_kept, :]
    return NMStructure(n=n, m=m, kept=kept, idx=idx.astype(np.int64), k_kept=k_kept)


def check_nm(layer: Layer, wz: np.ndarray, n: int, m: int) -> None:
    """Raise a one-line :class:`SimulationError` if the layer's weights are not N:M."""
    v = nm_violation(wz, n, m)
    if v is None:
        return
    p, col, grp, cnt = v
    where = f"group {p}, " if wz.shape[1] > 1 else ""
    k0 = grp * m
    k1 = min(wz.shape[-2], k0 + m) - 1
    raise SimulationError(
        f"layer {layer.name!r}: weights are not {n}:{m} along K: {where}output column {col}, "
        f"K group {grp} (k {k0}..{k1}) has {cnt} nonzeros; prune with --prune nm:{n}:{m} "
        f"or accelsim.prune_nm(trace, {n}, {m})")


def _prune_lowered(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest magnitudes of every group of ``m`` along K ([..., K, N])."""
    k = w.shape[-2]
    mag = np.abs(w.astype(np.float64))
    gv = _group_view(mag, m, -1.0)  # padding never kept
    pos = np.arange(m)[:, None]
    # sort by magnitude descending, ties to the lower index
    order = np.lexsort((np.broadcast_to(pos, gv.shape), -gv), axis=-2)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(m)[:, None] + np.zeros(gv.shape, np.int64),
                      axis=-2)
    keep = (rank < n).reshape(gv.shape[:-3] + (-1, w.shape[-1]))[..., :k, :]
    return np.where(keep, w, 0).astype(w.dtype)


def prune_nm(trace: Trace, n: int, m: int) -> tuple[Trace, dict[str, float]]:
    """Magnitude-prune every linear/conv layer's weights to N:M along K.

    Returns the new trace (provenance records the transform) and, per layer, the fraction
    of its weights that pruning set to zero."""
    if not 1 <= n < m:
        raise SimulationError(f"prune nm:{n}:{m}: expected 1 <= N < M")
    layers = []
    removed: dict[str, float] = {}
    for layer in trace.layers:
        if layer.kind == "matmul":
            layers.append(layer)
            continue
        w = np.asarray(layer.w)
        low = lower_w(layer, w)[0]  # [P, K, N]
        pruned = _prune_lowered(low, n, m)
        if layer.kind == "linear":
            neww = np.ascontiguousarray(pruned[0].T)
        else:
            g = layer.groups
            neww = np.ascontiguousarray(pruned.transpose(0, 2, 1)).reshape(w.shape)
            assert neww.shape[0] == w.shape[0] and g == pruned.shape[0]
        removed[layer.name] = float(np.count_nonzero(w) - np.count_nonzero(neww)) / w.size
        role = "weight"
        layers.append(replace(layer, tensors={**layer.tensors, role: neww}))
    total = sum(np.asarray(la.w).size for la in trace.layers if la.kind != "matmul")
    frac = sum(removed[k] * np.asarray(trace[k].w).size for k in removed) / max(total, 1)
    prov = dict(trace.provenance)
    prov["transforms"] = [*prov.get("transforms", []),
                          {"prune_nm": f"{n}:{m}", "removed_fraction": round(frac, 6)}]
    return Trace(model=trace.model, layers=tuple(layers), provenance=prov), removed


def delta_outputs(layer: Layer, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Outputs along the delta path and directly: ``(y_delta, y_direct)``, each
    [F, P, M, N] in stored-value units (int64 for integer traces, exact).

    ``y_delta[t] = y_delta[t-1] + lower(d_t) @ W`` with the thresholded deltas ``d_t`` of
    :func:`delta_operand`; ``y_direct[t] = lower(x_t) @ W``."""
    from accelsim.model.workload import lower_a

    x = np.asarray(layer.a)
    wide = np.int64 if x.dtype.kind in "iu" and layer.w.dtype.kind in "iu" else np.float64
    op, _ = delta_operand(x, threshold)
    w = lower_w(layer, np.asarray(layer.w).astype(wide))
    y_delta = np.cumsum(np.matmul(lower_a(layer, op.astype(wide)), w), axis=0)
    y_direct = np.matmul(lower_a(layer, x.astype(wide)), w)
    return y_delta, y_direct


def _out_scale(layer: Layer, shape: tuple[int, ...]) -> np.ndarray | float:
    """Real-unit scale of an output element [.., P, M, N] (input scale x weight scale)."""
    qa, qw = layer.quant_of("input"), layer.quant_of("weight")
    sa = float(qa.scale) if qa.scheme == "symmetric" else 1.0
    if qw.scheme == "symmetric":
        return sa * float(qw.scale)
    if qw.scheme == "per_channel" and qw.axis in (0, -np.asarray(layer.w).ndim):
        sw = np.asarray(qw.scale, np.float64)  # per output channel
        if layer.kind == "linear":
            return sa * sw[None, None, None, :]
        p, n = shape[1], shape[-1]
        return sa * sw.reshape(p, 1, n)[None]
    return sa


def delta_error(layer: Layer, threshold: float) -> dict[str, float]:
    """Output error of delta processing against direct computation, in real units when
    the trace records quantisation scales: ``delta_err_max``, ``delta_err_rms``,
    ``delta_err_rel`` (RMS error over the RMS of the direct outputs) and ``delta_exact``
    (1.0 when the two agree exactly)."""
    y_delta, y_direct = delta_outputs(layer, threshold)
    diff = (y_delta - y_direct).astype(np.float64) * _out_scale(layer, y_delta.shape)
    ref = y_direct.astype(np.float64) * _out_scale(layer, y_delta.shape)
    exact = bool(np.array_equal(y_delta, y_direct))
    rms = float(np.sqrt(np.mean(diff ** 2)))
    ref_rms = float(np.sqrt(np.mean(ref ** 2)))
    return {"delta_err_max": float(np.abs(diff).max()), "delta_err_rms": rms,
            "delta_err_rel": rms / ref_rms if ref_rms else 0.0, "delta_exact": float(exact)}
