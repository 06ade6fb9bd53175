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

import functools
from dataclasses import dataclass

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer
from accelsim.model.dataflow import Plan, make_plan
from accelsim.model.memory import MemoryResult, simulate_memory
from accelsim.model.skipcost import SKIP_KEYS, gemm_skip_costs
from accelsim.model.sparsity import NMStructure, check_nm, delta_operand, nm_structure
from accelsim.model.workload import GemmShape, gemm_shape, lower_a, lower_wt

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
    #: compute cycles per fold (fill + slowest PE), same shape; 0 for skipped GEMMs
    fold_cycles: np.ndarray
    #: per frame: performed MACs and compute cycles
    frame_performed: np.ndarray
    frame_cycles: np.ndarray
    #: [F, P] False for GEMMs skipped whole (delta frames without changes)
    active: np.ndarray
    #: pairs on im2col padding positions that the design never issues (skip_padding)
    macs_padding: int = 0
    #: what skipping costs (accelsim.model.skipcost.SKIP_KEYS)
    skip_counts: dict[str, int] | None = None

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in
                ("macs_dense", "macs_performed", "macs_gated", "macs_skipped",
                 "macs_padding", "folds", "compute_cycles")}


class MaskSums:
    """Nonzero counts along each axis of the masks, each computed once on first use."""

    def __init__(self, az: np.ndarray, wz: np.ndarray) -> None:
        self.az, self.wz = az, wz

    @functools.cached_property
    def ca(self) -> np.ndarray:  # [F, P, K]: nonzeros per column of A
        return self.az.sum(axis=-2, dtype=np.int64)

    @functools.cached_property
    def ra(self) -> np.ndarray:  # [F, P, M]: nonzeros per row of A
        return self.az.sum(axis=-1, dtype=np.int64)

    @functools.cached_property
    def rw(self) -> np.ndarray:  # [Fw, P, K]: nonzeros per row of W
        return self.wz.sum(axis=-1, dtype=np.int64)

    @functools.cached_property
    def cw(self) -> np.ndarray:  # [Fw, P, N]: nonzeros per column of W
        return self.wz.sum(axis=-2, dtype=np.int64)


def _pair_classes(az: np.ndarray, wz: np.ndarray, nm: NMStructure | None,
                  sums: MaskSums, cr: np.ndarray | None) -> dict[str, np.ndarray]:
    """Pairs of every GEMM by what their operands are, int64 arrays [F, P]:
    ``present`` (pairs a PE walks: not padding when padding is skipped, N:M kept slots),
    ``a`` (present, a != 0), ``w`` (present, w != 0), ``both`` and ``padding`` (pairs on
    im2col padding positions when the design skips them). ``cr`` [1, P, K]: real (non-
    padding) positions per column of A, or None when nothing is skipped as padding."""
    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    ca = sums.ca
    rw = np.broadcast_to(sums.rw, ca.shape)
    rk = (np.full(ca.shape, n, np.int64) if nm is None
          else np.broadcast_to(nm.kept.sum(axis=-1, dtype=np.int64), ca.shape))
    both = (ca * rw).sum(axis=-1)
    pa = (ca * rk).sum(axis=-1)
    if cr is None:
        present = (m * rk).sum(axis=-1)
        pw = m * rw.sum(axis=-1)
        padding = np.zeros((nf, npf), np.int64)
    else:
        crb = np.broadcast_to(cr, ca.shape)
        present = (crb * rk).sum(axis=-1)
        pw = (crb * rw).sum(axis=-1)
        padding = np.broadcast_to((m * k - cr.sum(axis=-1)) * n, (nf, npf))
    return {"present": np.asarray(present, np.int64), "a": pa, "w": np.asarray(pw, np.int64),
            "both": both, "padding": np.asarray(padding, np.int64)}


def _mac_counts(az: np.ndarray, wz: np.ndarray, policy: str,
                nm: NMStructure | None, sums: MaskSums | None = None,
                gate_on: str = "a", cr: np.ndarray | None = None,
                classes: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per-frame MAC counts (int64 arrays [F]) for masks A[F, P, M, K], W[Fw, P, K, N]."""
    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    dense = nf * npf * m * k * n
    if dense >= INT64_LIMIT:
        raise SimulationError(f"GEMM batch of {dense} MACs overflows 64-bit counters")
    sums = sums or MaskSums(az, wz)
    pc = classes if classes is not None else _pair_classes(az, wz, nm, sums, cr)
    pc = {key: v.sum(axis=1) for key, v in pc.items()}
    dense_f = np.full(nf, npf * m * k * n, np.int64)
    zero = np.zeros(nf, np.int64)
    if policy == "none":
        performed, gated = pc["present"], zero
    elif policy == "gate":  # a pair is gated when its gate_on operand(s) are zero
        performed = pc[{"a": "a", "w": "w", "both": "both"}[gate_on]]
        gated = pc["present"] - performed
    elif policy == "skip_a":
        performed, gated = pc["a"], zero
    elif policy == "skip_w":
        performed, gated = pc["w"], zero
    else:
        performed, gated = pc["both"], zero
    return {"dense": dense_f, "performed": np.asarray(performed, np.int64),
            "gated": np.asarray(gated, np.int64), "padding": pc["padding"],
            "skipped": dense_f - performed - gated - pc["padding"]}


def fold_slot_max(az: np.ndarray, wz: np.ndarray, plan: Plan, policy: str,
                  nm: NMStructure | None = None, sums: MaskSums | None = None) -> np.ndarray:
    """Slowest PE's slot count per fold: int64 array [F, P, nr, nc]."""
    sums = sums or MaskSums(az, wz)
    if nm is not None:
        return _fold_slot_max_nm(az, wz, plan, policy, nm, sums)
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
            bm = _block_max_1d(sums.ra, r)[..., :, None]
        elif policy == "skip_w":
            bm = _block_max_1d(sums.cw, c)[..., None, :]
        else:
            bm = _block_max_2d(_mask_matmul(az, wz), r, c)
    elif df == "ws":  # rows K, cols N, time M
        if policy == "skip_a":
            bm = _block_max_1d(sums.ca, r)[..., :, None]
        elif policy == "skip_w":
            bm = _block_max_2d(wz, r, c).astype(np.int64) * m
        else:
            bm = _block_max_2d(wz * sums.ca[..., :, None], r, c)
    else:  # "is": rows K, cols M, time N
        if policy == "skip_a":
            bm = _block_max_2d(np.swapaxes(az, -1, -2), r, c).astype(np.int64) * n
        elif policy == "skip_w":
            bm = _block_max_1d(sums.rw, r)[..., :, None]
        else:
            bm = _block_max_2d(np.swapaxes(az, -1, -2) * sums.rw[..., :, None], r, c)
    return np.broadcast_to(bm, shape).astype(np.int64)


def _fold_slot_max_nm(az: np.ndarray, wz: np.ndarray, plan: Plan, policy: str,
                      nm: NMStructure, sums: MaskSums) -> np.ndarray:
    """Slot counts with N:M weights: only kept slots take time (docs/delta-and-nm.md)."""
    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    r, c = plan.rows, plan.cols
    kk = nm.k_kept
    if plan.dataflow == "os":  # rows M, cols N, time: kept slots of the column
        nr, nc = -(-m // r), -(-n // c)
        if policy in ("none", "gate"):
            bm = np.full((1, 1, nr, nc), kk, np.int64)
        elif policy == "skip_a":
            bm = _block_max_2d(_mask_matmul(az, nm.kept), r, c)
        elif policy == "skip_w":
            bm = _block_max_1d(sums.cw, c)[..., None, :]
        else:
            bm = _block_max_2d(_mask_matmul(az, wz), r, c)
    else:  # ws: rows = compressed k', cols N, time M
        nr, nc = -(-kk // r), -(-n // c)
        if policy in ("none", "gate"):
            bm = np.full((1, 1, nr, nc), m, np.int64)
        else:
            wc = np.take_along_axis(wz, nm.idx, axis=-2)  # [Fw, P, K', N] kept weights != 0
            ca = sums.ca[..., :, None]  # [F, P, K, 1]
            cag = np.take_along_axis(np.broadcast_to(ca, ca.shape[:-1] + (n,)),
                                     np.broadcast_to(nm.idx, ca.shape[:2] + nm.idx.shape[2:]),
                                     axis=-2)  # [F, P, K', N]
            if policy == "skip_a":
                s = cag
            elif policy == "skip_w":
                s = wc.astype(np.int64) * m
            else:
                s = wc * cag
            bm = _block_max_2d(s, r, c)
    return np.broadcast_to(bm, (nf, npf, nr, nc)).astype(np.int64)


def _slot_operands(az: np.ndarray, wz: np.ndarray, rz: np.ndarray | None, policy: str,
                   sums: MaskSums) -> tuple[np.ndarray, str, MaskSums]:
    """(A mask, policy, sums) whose slot counts are those of ``policy`` when padding pairs
    (``rz`` False: not a real input element) take no slot: under none/gate a pair needs a
    slot iff it is real, which is skip_a on the real mask; under skip_w iff it is real and
    w != 0, which is skip_both on it. skip_a/skip_both already drop padding (a = 0)."""
    if rz is None or policy in ("skip_a", "skip_both"):
        return az, policy, sums
    return rz, ("skip_both" if policy == "skip_w" else "skip_a"), MaskSums(rz, wz)


def simulate_masks(az: np.ndarray, wz: np.ndarray, hw: HwConfig,
                   nm: NMStructure | None = None,
                   active: np.ndarray | None = None,
                   rz: np.ndarray | None = None) -> GemmResult:
    """Simulate ``A[F, P, M, K] @ W[Fw, P, K, N]`` given boolean nonzero masks; ``rz``
    [1, P, M, K] marks A's real (non-padding) positions when padding pairs are skipped."""
    if az.ndim != 4 or wz.ndim != 4:
        raise ValueError("expected A[F, P, M, K] and W[Fw, P, K, N] masks")
    plan = make_plan(hw)
    policy = hw.zero_policy
    sums = MaskSums(az, wz)
    cr = None if rz is None else rz.sum(axis=-2, dtype=np.int64)
    classes = _pair_classes(az, wz, nm, sums, cr)
    counts = _mac_counts(az, wz, policy, nm, sums, hw.gate_on, classes=classes)
    s_az, s_policy, s_sums = _slot_operands(az, wz, rz, policy, sums)
    slots = fold_slot_max(s_az, wz, plan, s_policy, nm, s_sums)
    slots = np.broadcast_to(slots, az.shape[:2] + slots.shape[2:])
    p = hw.array.macs_per_pe
    fold_cycles = plan.fill + (slots + (p - 1)) // p
    if active is None:
        active = np.ones(az.shape[:2], bool)
    fold_cycles = np.where(active[:, :, None, None], fold_cycles, 0)
    folds = int(active.sum()) * slots.shape[2] * slots.shape[3]
    skip_counts = gemm_skip_costs(classes, active, hw, nm is not None)
    frame_cycles = fold_cycles.sum(axis=(1, 2, 3))
    return GemmResult(
        macs_dense=int(counts["dense"].sum()), macs_performed=int(counts["performed"].sum()),
        macs_gated=int(counts["gated"].sum()), macs_skipped=int(counts["skipped"].sum()),
        folds=folds, compute_cycles=int(frame_cycles.sum()), fold_slots=slots,
        fold_cycles=fold_cycles, frame_performed=counts["performed"],
        frame_cycles=frame_cycles, active=active,
        macs_padding=int(counts["padding"].sum()), skip_counts=skip_counts,
    )


def simulate_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig) -> dict[str, int]:
    """Simulate one GEMM ``a[M, K] @ w[K, N]`` as a linear layer; returns every integer
    count (MACs, folds, cycles, traffic)."""
    from accelsim.io.trace import linear

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
    #: delta processing: nonzeros of the delta operand over frames >= 1 and their size
    delta_nnz: int = 0
    delta_size: int = 0
    nm_mux_ops: int = 0
    #: nonzeros of the A operand (the delta operand under delta processing) per frame
    frame_nnz_a: np.ndarray | None = None

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
        return (self.gemm.as_dict() | (self.gemm.skip_counts or dict.fromkeys(SKIP_KEYS, 0))
                | self.mem.counts
                | {"stall_cycles": self.stall_cycles, "cycles": self.cycles,
                   "nm_mux_ops": self.nm_mux_ops})


def layer_masks(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """Lowered nonzero masks of a layer: A[F, P, M, K], W[Fw, P, K, N] (bool)."""
    az = lower_a(layer, np.asarray(layer.a) != 0)
    wz = np.swapaxes(lower_wt(layer, np.asarray(layer.w) != 0), -1, -2)
    return az, wz


def real_mask(layer: Layer) -> np.ndarray | None:
    """[1, P, M, K] bool: the im2col positions of A that hold a real input element (False:
    zero padding), or None for a layer without padding."""
    if layer.kind not in ("conv1d", "conv2d", "conv3d") or not any(layer.padding):
        return None
    shape = np.shape(layer.a)[1:] if layer.frames else np.shape(layer.a)
    ones = np.ones(((1,) if layer.frames else ()) + tuple(shape), bool)
    return lower_a(layer, ones)[:1]


def delta_applies(layer: Layer, hw: HwConfig) -> bool:
    return bool(hw.delta.enabled and layer.frames and layer.kind != "matmul")


def nm_applies(layer: Layer, hw: HwConfig) -> bool:
    return bool(hw.structured.n and layer.kind != "matmul")


def simulate_layer(layer: Layer, hw: HwConfig, *,
                   max_memory: int | str | None = None) -> LayerStats:
    """Simulate one traced layer on ``hw``. Before anything is allocated the layer's
    working set is estimated (:mod:`accelsim.model.budget`) and a layer needing more
    than ``max_memory`` bytes (default: half the physical memory) is refused."""
    from accelsim.model.budget import check_layer

    shape = gemm_shape(layer)
    if shape.macs_dense >= INT64_LIMIT:
        raise SimulationError(f"layer {layer.name!r}: {shape.macs_dense} MACs overflow "
                              f"64-bit counters")
    check_layer(layer, hw, max_memory)
    a = np.asarray(layer.a)
    w = np.asarray(layer.w)
    changed = None
    if delta_applies(layer, hw):
        operand, changed = delta_operand(a, hw.delta.threshold)
        a_mask = operand != 0
    else:
        a_mask = a != 0
    az = lower_a(layer, a_mask)
    wz = np.swapaxes(lower_wt(layer, w != 0), -1, -2)  # [Fw, P, K, N], a view
    rz = real_mask(layer) if hw.skip_padding else None
    nm = None
    if nm_applies(layer, hw):
        check_nm(layer, wz, hw.structured.n, hw.structured.m)
        nm = nm_structure(wz, hw.structured.n, hw.structured.m)
    active = np.ones(az.shape[:2], bool)
    if changed is not None and hw.zero_policy in ("skip_a", "skip_both"):
        active[1:] = az[1:].any(axis=(-1, -2))
    res = simulate_masks(az, wz, hw, nm=nm, active=active, rz=rz)
    mem = simulate_memory(layer, az, wz, hw, make_plan(hw), res.fold_cycles,
                          res.macs_performed, res.macs_gated, a_mask=a_mask, nm=nm,
                          active=active, changed=changed)
    stats = LayerStats(shape=shape, gemm=res, mem=mem, nnz_a=int(np.count_nonzero(a)),
                       size_a=a.size, nnz_w=int(np.count_nonzero(w)), size_w=w.size,
                       nm_mux_ops=(res.macs_performed + res.macs_gated) if nm else 0)
    stats.frame_nnz_a = np.count_nonzero(
        a_mask.reshape(shape.frames, -1) if layer.frames else a_mask.reshape(1, -1), axis=1)
    if changed is not None:
        stats.delta_nnz = int(stats.frame_nnz_a[1:].sum())
        stats.delta_size = a_mask[1:].size
    return stats
