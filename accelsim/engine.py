"""The fast engine: per-fold slot counts from real operand values, in bulk.

One engine serves every dataflow. A dataflow is a *plan* (:mod:`accelsim.dataflow`)
saying which GEMM dimension runs along rows, cols and time. For each fold the engine
needs only the slowest PE's slot count, and for every policy x dataflow that count is
a block-max over a matrix built from operand masks:

* the number of slot-needing pairs of PE (r, c) is a sum over the time dimension of
  ``[a != 0]``, ``[w != 0]`` or their product, chosen by the policy;
* for most combinations that sum factors into row/column nonzero counts, which cost
  O(MK + KN);
* only ``skip_both`` on ``os`` needs the full mask product ``[A!=0] @ [W!=0]``, which
  BLAS computes exactly in float32 (sums of 0/1 below 2**24) or float64.

No per-cycle loops: :mod:`accelsim.reference` is the cycle-stepping model the property
tests hold this engine to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataflow import Plan, make_plan
from .errors import SimulationError
from .hwconfig import HwConfig
from .memory import MemoryResult, simulate_memory
from .trace import Layer
from .workload import GemmShape, gemm_shape, lower_a, lower_w

INT64_LIMIT = 2**62  # headroom below 2**63 for sums of counts


def _block_max_1d(v: np.ndarray, size: int) -> np.ndarray:
    """Max over consecutive blocks of ``size`` along the last axis (zero padded)."""
    n = v.shape[-1]
    nb = -(-n // size)
    pad = nb * size - n
    if pad:
        v = np.concatenate([v, np.zeros(v.shape[:-1] + (pad,), v.dtype)], axis=-1)
    return v.reshape(v.shape[:-1] + (nb, size)).max(axis=-1)


def _block_max_2d(s: np.ndarray, r: int, c: int) -> np.ndarray:
    """Max over r x c blocks of the last two axes (zero padded)."""
    x, y = s.shape[-2:]
    nr, nc = -(-x // r), -(-y // c)
    px, py = nr * r - x, nc * c - y
    if px or py:
        s = np.pad(s, [(0, 0)] * (s.ndim - 2) + [(0, px), (0, py)])
    s = s.reshape(s.shape[:-2] + (nr, r, nc, c))
    return s.max(axis=(-3, -1))


def _mask_matmul(az: np.ndarray, wz: np.ndarray) -> np.ndarray:
    """Exact integer ``az @ wz`` for 0/1 masks via BLAS."""
    k = az.shape[-1]
    dt = np.float32 if k < 2**24 else np.float64
    return np.matmul(az.astype(dt), wz.astype(dt))


@dataclass
class GemmResult:
    """Counts for a batch of GEMMs ``A[F, P, M, K] @ W[Fw, P, K, N]``."""

    macs_dense: int
    macs_performed: int
    macs_gated: int
    macs_skipped: int
    folds: int
    compute_cycles: int
    #: slowest PE's slot count per fold, shape [F, P, folds_rows, folds_cols]
    fold_slots: np.ndarray
    #: compute cycles per fold (fill + slowest PE), same shape
    fold_cycles: np.ndarray

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in
                ("macs_dense", "macs_performed", "macs_gated", "macs_skipped", "folds",
                 "compute_cycles")}


def _pair_counts(az: np.ndarray, wz: np.ndarray) -> tuple[int, int, int, int]:
    """(dense, pairs with a!=0, pairs with w!=0, pairs with both != 0)."""
    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    dense = nf * npf * m * k * n
    if dense >= INT64_LIMIT:
        raise SimulationError(f"GEMM batch of {dense} MACs overflows 64-bit counters")
    ca = az.sum(axis=-2, dtype=np.int64)  # [F, P, K]: nonzeros per column of A
    rw = wz.sum(axis=-1, dtype=np.int64)  # [Fw, P, K]: nonzeros per row of W
    pairs_a = int(ca.sum()) * n
    pairs_w = int(rw.sum()) * m * (nf // wz.shape[0])
    pairs_both = int((ca * rw).sum())
    return dense, pairs_a, pairs_w, pairs_both


def fold_slot_max(az: np.ndarray, wz: np.ndarray, plan: Plan, policy: str) -> np.ndarray:
    """Slowest PE's slot count per fold: int64 array [F, P, nr, nc]."""
    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    r, c = plan.rows, plan.cols
    dims = {"m": m, "k": k, "n": n}
    nr = -(-dims[plan.row_dim] // r)
    nc = -(-dims[plan.col_dim] // c)
    shape = (nf, npf, nr, nc)
    t = dims[plan.time_dim]
    if policy in ("none", "gate"):
        return np.full(shape, t, dtype=np.int64)
    df = plan.dataflow
    if df == "os":  # rows M, cols N, time K
        if policy == "skip_a":
            bm = _block_max_1d(az.sum(axis=-1, dtype=np.int64), r)[..., :, None]
        elif policy == "skip_w":
            bm = _block_max_1d(wz.sum(axis=-2, dtype=np.int64), c)[..., None, :]
        else:
            bm = _block_max_2d(_mask_matmul(az, wz), r, c)
    elif df == "ws":  # rows K, cols N, time M
        if policy == "skip_a":
            bm = _block_max_1d(az.sum(axis=-2, dtype=np.int64), r)[..., :, None]
        elif policy == "skip_w":
            bm = _block_max_2d(wz, r, c).astype(np.int64) * m
        else:
            ca = az.sum(axis=-2, dtype=np.int64)  # [F, P, K]
            bm = _block_max_2d(wz * ca[..., :, None], r, c)
    else:  # "is": rows K, cols M, time N
        if policy == "skip_a":
            bm = _block_max_2d(np.swapaxes(az, -1, -2), r, c).astype(np.int64) * n
        elif policy == "skip_w":
            bm = _block_max_1d(wz.sum(axis=-1, dtype=np.int64), r)[..., :, None]
        else:
            rw = wz.sum(axis=-1, dtype=np.int64)  # [Fw, P, K]
            bm = _block_max_2d(np.swapaxes(az, -1, -2) * rw[..., :, None], r, c)
    return np.broadcast_to(bm, shape).astype(np.int64)


def simulate_masks(az: np.ndarray, wz: np.ndarray, hw: HwConfig) -> GemmResult:
    """Simulate ``A[F, P, M, K] @ W[Fw, P, K, N]`` given boolean nonzero masks."""
    if az.ndim != 4 or wz.ndim != 4:
        raise ValueError("expected A[F, P, M, K] and W[Fw, P, K, N] masks")
    plan = make_plan(hw)
    policy = hw.zero_policy
    dense, pairs_a, pairs_w, pairs_both = _pair_counts(az, wz)
    gated = skipped = 0
    if policy == "none":
        performed = dense
    elif policy == "gate":
        performed, gated = pairs_both, dense - pairs_both
    elif policy == "skip_a":
        performed, skipped = pairs_a, dense - pairs_a
    elif policy == "skip_w":
        performed, skipped = pairs_w, dense - pairs_w
    else:
        performed, skipped = pairs_both, dense - pairs_both
    slots = fold_slot_max(az, wz, plan, policy)
    p = hw.array.macs_per_pe
    fold_cycles = plan.fill + (slots + (p - 1)) // p
    return GemmResult(
        macs_dense=dense, macs_performed=performed, macs_gated=gated,
        macs_skipped=skipped, folds=int(slots.size),
        compute_cycles=int(fold_cycles.sum()), fold_slots=slots, fold_cycles=fold_cycles,
    )


def simulate_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig) -> dict[str, int]:
    """Simulate one GEMM ``a[M, K] @ w[K, N]`` as a linear layer; returns every integer
    count (MACs, folds, cycles, traffic)."""
    from .trace import linear

    layer = linear("gemm", np.asarray(a), np.ascontiguousarray(np.asarray(w).T))
    return simulate_layer(layer, hw).as_dict()


@dataclass
class LayerStats:
    """Everything the engine reports for one layer (integers are exact counts)."""

    shape: GemmShape
    gemm: GemmResult
    mem: MemoryResult
    nnz_a: int
    size_a: int
    nnz_w: int
    size_w: int

    @property
    def compute_cycles(self) -> int:
        return self.gemm.compute_cycles

    @property
    def stall_cycles(self) -> int:
        return self.mem.stall_cycles

    @property
    def cycles(self) -> int:
        return self.mem.cycles

    def as_dict(self) -> dict[str, int]:
        return (self.gemm.as_dict() | self.mem.counts
                | {"stall_cycles": self.stall_cycles, "cycles": self.cycles})


def layer_masks(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """Lowered nonzero masks of a layer: A[F, P, M, K], W[Fw, P, K, N] (bool)."""
    az = lower_a(layer, np.asarray(layer.a) != 0)
    wz = lower_w(layer, np.asarray(layer.w) != 0)
    return az, wz


def simulate_layer(layer: Layer, hw: HwConfig) -> LayerStats:
    """Simulate one traced layer on ``hw``."""
    shape = gemm_shape(layer)
    if shape.macs_dense >= INT64_LIMIT:
        raise SimulationError(f"layer {layer.name!r}: {shape.macs_dense} MACs overflow "
                              f"64-bit counters")
    az, wz = layer_masks(layer)
    res = simulate_masks(az, wz, hw)
    mem = simulate_memory(layer, az, wz, hw, make_plan(hw), res.fold_cycles,
                          res.macs_performed, res.macs_gated)
    a = np.asarray(layer.a)
    w = np.asarray(layer.w)
    return LayerStats(shape=shape, gemm=res, mem=mem, nnz_a=int(np.count_nonzero(a)),
                      size_a=a.size, nnz_w=int(np.count_nonzero(w)), size_w=w.size)
