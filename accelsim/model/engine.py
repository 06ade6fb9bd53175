"""The fast engine: MAC counts and fold cycles from real operand values, in bulk.

One engine serves every dataflow. A dataflow is a *plan* (:mod:`accelsim.model.dataflow`)
saying which GEMM dimension runs along rows, cols and time. MAC counts come from
nonzero counts along each axis of the operand masks (O(MK + KN) per GEMM, no pair
enumeration). Fold timing needs every PE's time steps under the synchronisation mode
and is one compiled walk over the pairs (:mod:`accelsim.model.sync`).
:mod:`accelsim.reference` is the cycle-stepping model the property tests hold this
engine to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer
from accelsim.model.dataflow import make_plan
from accelsim.model.memory import (
    MemoryResult,
    a_operand_bits,
    delta_on,
    resolve_formats,
    simulate_memory,
)
from accelsim.model.outwrite import OutWrite
from accelsim.model.packing import pack_width, packed_timing
from accelsim.model.skipcost import SKIP_KEYS, gemm_skip_costs
from accelsim.model.sparsity import NMStructure, check_nm, delta_operand, nm_structure
from accelsim.model.sync import fold_cycles as sync_fold_cycles
from accelsim.model.sync import fold_steps
from accelsim.model.workload import GemmShape, gemm_shape, lower_a, lower_wt

INT64_LIMIT = 2**62  # headroom below 2**63 for sums of counts


@dataclass
class GemmResult:
    """Counts for a batch of GEMMs ``A[F, P, M, K] @ W[Fw, P, K, N]``."""

    macs_dense: int
    macs_performed: int
    macs_gated: int
    macs_skipped: int
    folds: int
    compute_cycles: int
    #: cycles each fold spends stepping its pairs under the sync mode, fill apart,
    #: shape [F, P, folds_rows, folds_cols]
    fold_slots: np.ndarray
    #: compute cycles per fold (accelsim.model.sync.fold_cycles), same shape; 0 for
    #: GEMMs skipped whole. Packed groups (packed_groups > 1): a pack's folds sit on its
    #: first active group, the pack's other groups hold 0
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
    #: groups run side by side in one packed GEMM (accelsim.model.packing; 1: none)
    packed_groups: int = 1

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


def simulate_masks(az: np.ndarray, wz: np.ndarray, hw: HwConfig,
                   nm: NMStructure | None = None,
                   active: np.ndarray | None = None,
                   rz: np.ndarray | None = None, groups: bool = False) -> GemmResult:
    """Simulate ``A[F, P, M, K] @ W[Fw, P, K, N]`` given boolean nonzero masks; ``rz``
    [1, P, M, K] marks A's real (non-padding) positions when padding pairs are skipped.
    ``groups``: the P GEMMs of a frame are a convolution's groups, which
    ``array.pack_groups`` may run side by side (:mod:`accelsim.model.packing`): the
    fold timing then comes from the packed GEMMs, the MAC counts stay the groups'."""
    if az.ndim != 4 or wz.ndim != 4:
        raise ValueError("expected A[F, P, M, K] and W[Fw, P, K, N] masks")
    plan = make_plan(hw)
    policy = hw.zero_policy
    sums = MaskSums(az, wz)
    cr = None if rz is None else rz.sum(axis=-2, dtype=np.int64)
    classes = _pair_classes(az, wz, nm, sums, cr)
    counts = _mac_counts(az, wz, policy, nm, sums, hw.gate_on, classes=classes)
    if active is None:
        active = np.ones(az.shape[:2], bool)
    width = (pack_width(hw, plan, az.shape[-1], wz.shape[-1], az.shape[1], nm is not None)
             if groups else 1)
    if width > 1:
        steps, fold_cycles, folds = packed_timing(az, wz, hw, plan, active, rz, width,
                                                  fold_steps, sync_fold_cycles)
    else:
        steps = fold_steps(az, wz, hw, plan, nm, active, rz)
        fold_cycles = sync_fold_cycles(steps, hw, plan, active)
        folds = int(active.sum()) * steps.shape[2] * steps.shape[3]
    skip_counts = gemm_skip_costs(classes, active, hw, nm is not None)
    frame_cycles = fold_cycles.sum(axis=(1, 2, 3))
    return GemmResult(
        macs_dense=int(counts["dense"].sum()), macs_performed=int(counts["performed"].sum()),
        macs_gated=int(counts["gated"].sum()), macs_skipped=int(counts["skipped"].sum()),
        folds=folds, compute_cycles=int(frame_cycles.sum()), fold_slots=steps,
        fold_cycles=fold_cycles, frame_performed=counts["performed"],
        frame_cycles=frame_cycles, active=active,
        macs_padding=int(counts["padding"].sum()), skip_counts=skip_counts,
        packed_groups=width,
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
    #: bits of the A operand as moved and multiplied (a_bits + 1 under delta), and the
    #: config's a_bits
    a_operand_bits: int = 0
    shape_a_bits: int = 0
    #: how the output is written (accelsim.model.outwrite.OutWrite; None: dense)
    out_write: OutWrite | None = None

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
                   "nm_mux_ops": self.nm_mux_ops} | self.wide_macs())

    def wide_macs(self) -> dict[str, int]:
        """The performed and gated MACs whose A operand is a_bits + 1 wide (delta)."""
        wide = self.a_operand_bits > self.shape_a_bits
        return {"macs_wide_performed": self.gemm.macs_performed if wide else 0,
                "macs_wide_gated": self.gemm.macs_gated if wide else 0}


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
    return delta_on(layer, hw)


def check_delta_thresholds(trace, hw: HwConfig) -> None:
    """Every key of a per-layer ``delta.threshold`` mapping must name (or, as a glob,
    match) a layer of ``trace``: a key that matches none is a one-line
    :class:`~accelsim.errors.ConfigError` (a typo would silently leave a layer at 0)."""
    import fnmatch

    from accelsim.errors import ConfigError, did_you_mean

    th = hw.delta.threshold
    if not hw.delta.enabled or not isinstance(th, dict):
        return
    names = [la.name for la in trace.layers]
    for key in th:
        if not any(fnmatch.fnmatchcase(nm, key) for nm in names):
            raise ConfigError(f"{hw.name}: delta.threshold.{key}: matches no layer of trace "
                              f"{trace.model}{did_you_mean(key, names)}")


def nm_applies(layer: Layer, hw: HwConfig) -> bool:
    return bool(hw.structured.n and layer.kind != "matmul")


@dataclass
class LayerOperands:
    """A layer's lowered operand masks and their nonzero counts: what the compute and
    memory models read, independent of the array, the policy and the memory."""

    #: nonzero mask of the A operand (of the delta operand under delta) as traced
    a_mask: np.ndarray
    #: delta processing: elements changed per frame, else None
    changed: np.ndarray | None
    az: np.ndarray  # [F, P, M, K]
    wz: np.ndarray  # [Fw, P, K, N]
    rz: np.ndarray | None  # [1, P, M, K] real positions when padding is skipped
    nm: NMStructure | None
    nnz_a: int
    size_a: int
    nnz_w: int
    size_w: int
    frame_nnz_a: np.ndarray
    #: identity for a :class:`~accelsim.model.reuse.WorkCache` (None: not cacheable)
    key: tuple | None = None

    def active(self, hw: HwConfig) -> np.ndarray:
        """[F, P] False for GEMMs skipped whole (delta frames without changes)."""
        active = np.ones(self.az.shape[:2], bool)
        if self.changed is not None and hw.zero_policy in ("skip_a", "skip_both"):
            active[1:] = self.az[1:].any(axis=(-1, -2))
        return active


def layer_operands(layer: Layer, hw: HwConfig, cache=None) -> LayerOperands:
    """Lower ``layer``'s operand masks for ``hw``, through ``cache`` (a
    :class:`~accelsim.model.reuse.WorkCache`) when one is given and the layer's tensors
    are file mappings; only the delta threshold, ``skip_padding`` and ``structured``
    of ``hw`` matter here."""
    from accelsim.model.reuse import layer_identity

    delta = delta_applies(layer, hw)
    use_nm = nm_applies(layer, hw)
    key = None
    if cache is not None:
        ident = layer_identity(layer)
        if ident is not None:
            key = ("operands", ident, hw.delta.threshold_for(layer.name) if delta else None,
                   bool(hw.skip_padding),
                   (hw.structured.n, hw.structured.m) if use_nm else None)
            hit = cache.get(key)
            if hit is not None:
                return hit
    a = np.asarray(layer.a)
    w = np.asarray(layer.w)
    changed = None
    if delta:
        operand, changed = delta_operand(a, hw.delta.threshold_for(layer.name))
        a_mask = operand != 0
    else:
        a_mask = a != 0
    az = lower_a(layer, a_mask)
    wz = np.swapaxes(lower_wt(layer, w != 0), -1, -2)  # [Fw, P, K, N], a view
    rz = real_mask(layer) if hw.skip_padding else None
    nm = None
    if use_nm:
        check_nm(layer, wz, hw.structured.n, hw.structured.m)
        nm = nm_structure(wz, hw.structured.n, hw.structured.m)
    frame_nnz_a = np.count_nonzero(
        a_mask.reshape(layer.num_frames, -1) if layer.frames else a_mask.reshape(1, -1),
        axis=1)
    ops = LayerOperands(a_mask=a_mask, changed=changed, az=az, wz=wz, rz=rz, nm=nm,
                        nnz_a=int(np.count_nonzero(a)), size_a=a.size,
                        nnz_w=int(np.count_nonzero(w)), size_w=w.size,
                        frame_nnz_a=frame_nnz_a, key=key)
    if key is not None:
        cache.put(key, ops)
    return ops


def simulate_layer(layer: Layer, hw: HwConfig, *,
                   max_memory: int | str | None = None,
                   consumer: Layer | None = None, cache=None) -> LayerStats:
    """Simulate one traced layer on ``hw``. Before anything is allocated the layer's
    working set is estimated (:mod:`accelsim.model.budget`) and a layer needing more
    than ``max_memory`` bytes (default: half the physical memory) is refused.
    ``consumer``: the layer whose input is this layer's output
    (:func:`accelsim.model.outwrite.consumers`); the output is then written in its A
    format where the chain is exact, else dense.
    ``cache``: a :class:`~accelsim.model.reuse.WorkCache` that keeps the lowered masks
    and the compute model's result for later calls (same results, less work)."""
    from accelsim.model.budget import check_layer
    from accelsim.model.outwrite import plan_output

    shape = gemm_shape(layer)
    if shape.macs_dense >= INT64_LIMIT:
        raise SimulationError(f"layer {layer.name!r}: {shape.macs_dense} MACs overflow "
                              f"64-bit counters")
    check_layer(layer, hw, max_memory)
    ops = layer_operands(layer, hw, cache)
    az, wz, rz, nm, a_mask, changed = ops.az, ops.wz, ops.rz, ops.nm, ops.a_mask, ops.changed
    out_write = plan_output(layer, consumer, hw)  # before this layer's widths resolve
    hw = resolve_formats(layer, hw, az.shape[-2], az.shape[-1], wz.shape[-1], nm)
    active = ops.active(hw)
    from accelsim.model.gemv import engine_for, simulate_gemv

    if engine_for(hw, shape) == "gemv":
        res, mem = simulate_gemv(layer, az, wz, hw, rz=rz, active=active, a_mask=a_mask,
                                 changed=changed, out_write=out_write)
    else:
        # the compute result depends on the operands (ops.key) and on hw minus
        # reuse.NON_COMPUTE_KEYS; anything else simulate_masks is given must join the key
        key = None if ops.key is None else ("gemm", ops.key, cache.compute_key(hw))
        res = None if key is None else cache.get(key)
        if res is None:
            res = simulate_masks(az, wz, hw, nm=nm, active=active, rz=rz,
                                 groups=layer.kind != "matmul" and shape.groups > 1)
            if key is not None:
                cache.put(key, res)
        mem = simulate_memory(layer, az, wz, hw, make_plan(hw), res.fold_cycles,
                              res.macs_performed, res.macs_gated, a_mask=a_mask, nm=nm,
                              active=active, changed=changed, out_write=out_write)
    stats = LayerStats(shape=shape, gemm=res, mem=mem, nnz_a=ops.nnz_a,
                       size_a=ops.size_a, nnz_w=ops.nnz_w, size_w=ops.size_w,
                       nm_mux_ops=(res.macs_performed + res.macs_gated) if nm else 0,
                       a_operand_bits=a_operand_bits(layer, hw),
                       shape_a_bits=hw.precision.a_bits, out_write=out_write)
    stats.frame_nnz_a = ops.frame_nnz_a
    if changed is not None:
        stats.delta_nnz = int(stats.frame_nnz_a[1:].sum())
        stats.delta_size = a_mask[1:].size
    return stats
