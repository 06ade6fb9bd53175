"""Fold timing: how many cycles each fold of a GEMM takes under the array's
synchronisation mode, load balancing and fold pipelining (``docs/timing.md``).

The masks are laid out for :func:`accelsim.model.kernels.fold_steps_kernel` (time last
and contiguous), which walks every PE of every fold over its time steps; this module
only prepares its arguments and turns its steps into cycles.
"""

from __future__ import annotations

import numpy as np

from accelsim.io.hwconfig import HwConfig
from accelsim.model.dataflow import Plan
from accelsim.model.kernels import balance_keys_kernel, fold_steps_kernel
from accelsim.model.sparsity import NMStructure

_FLOW = {"os": 0, "ws": 1, "is": 2}
#: the operands whose zeros a policy skips (a skipped pair needs no slot)
_TESTED = {"none": "", "gate": "", "skip_a": "a", "skip_w": "w", "skip_both": "aw"}
_MODE = {"lockstep": 0, "barrier": 1, "fifo": 2, "decoupled": 1}
_SCOPE = {"array": 0, "row": 1, "col": 2}


def _u8(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    return x.view(np.uint8) if x.dtype == np.bool_ else (x != 0).view(np.uint8)


def kernel_operands(az: np.ndarray, wz: np.ndarray, flow: str, nm: NMStructure | None,
                    rz: np.ndarray | None) -> tuple:
    """(a, w, pad, has_pad, idx, has_nm) in the kernel's layout for ``flow``."""
    pad = rz
    idx = None if nm is None else nm.idx
    if flow == "os":
        wz = np.swapaxes(wz, -1, -2)  # [Fw, P, N, K]
        idx = None if idx is None else np.swapaxes(idx, -1, -2)
    elif flow == "ws":
        az = np.swapaxes(az, -1, -2)  # [F, P, K, M]
        pad = None if pad is None else np.swapaxes(pad, -1, -2)
    dummy_u8 = np.zeros((1, 1, 1, 1), np.uint8)
    return (_u8(az), _u8(wz), dummy_u8 if pad is None else _u8(pad), pad is not None,
            np.zeros((1, 1, 1, 1), np.int64) if idx is None
            else np.ascontiguousarray(idx, dtype=np.int64), idx is not None)


def lane_union(wz: np.ndarray, lanes: int) -> np.ndarray:
    """W mask [.., K, N] -> [.., K, ceil(N / lanes)]: whether any lane of a SIMD PE has
    a nonzero weight. The lanes share the activation, so a PE needs a step when any
    lane needs it (docs/timing.md)."""
    n = wz.shape[-1]
    g = -(-n // lanes)
    padded = np.zeros(wz.shape[:-1] + (g * lanes,), np.bool_)
    padded[..., :n] = wz
    return padded.reshape(wz.shape[:-1] + (g, lanes)).any(axis=-1)


def time_steps(hw: HwConfig, m: int, k: int, n: int, nm: NMStructure | None) -> int:
    """Length of a fold's time dimension (k' on os with N:M weights)."""
    if hw.dataflow == "os":
        return k if nm is None else nm.k_kept
    return m if hw.dataflow == "ws" else n


def chunk_steps(hw: HwConfig, t: int) -> int:
    """Time steps between barriers: ``barrier_steps``, or what a decoupled PE's buffer
    holds; the whole fold for lockstep and fifo."""
    mode = hw.sync.mode
    if mode == "barrier":
        return max(1, min(hw.sync.barrier_steps, t))
    if mode == "decoupled":
        return max(1, min(hw.pe_buffer_steps(), t))
    return max(t, 1)


def _as_u8(x: np.ndarray) -> np.ndarray:
    """A 0/1 uint8 view (bool masks) or copy (other dtypes), strides kept."""
    return x.view(np.uint8) if x.dtype == np.bool_ else (x != 0).view(np.uint8)


def fold_steps(az: np.ndarray, wz: np.ndarray, hw: HwConfig, plan: Plan,
               nm: NMStructure | None, active: np.ndarray,
               rz: np.ndarray | None, method: str = "auto") -> np.ndarray:
    """Cycles each fold of each GEMM spends stepping its pairs, fill apart: int64
    [F, P, row folds, col folds] (0 for inactive GEMMs). ``method``: ``walk`` steps
    every PE (the numba kernel), ``product`` derives the steps from mask products on
    the config's backend (:mod:`accelsim.model.syncprod`, only where it applies),
    ``auto`` the product where it applies; both give the same integers."""
    from accelsim.model import syncprod

    lanes = hw.lanes
    if lanes > 1:
        wz = lane_union(wz, lanes)
    if method != "walk" and syncprod.applies(hw, nm):
        from accelsim.model import backend

        nf, npf, m, k = az.shape
        tested = _TESTED[hw.zero_policy]
        t = time_steps(hw, m, k, wz.shape[-1], None)
        return syncprod.fold_steps(
            _as_u8(az), _as_u8(np.swapaxes(wz, -1, -2)), None if rz is None else _as_u8(rz),
            int("a" not in tested), int("w" not in tested), active, plan.rows,
            hw.array.cols, hw.sync.mode, chunk_steps(hw, t), hw.sync.scope,
            backend.backend_for(hw.backend, m * k * wz.shape[-1]),
            backend.chunk_budget(az[:1, :1].size + wz[:1, :1].size), hw.dataflow)
    if method == "product":
        raise ValueError("fold steps from mask products need no N:M, one MAC per PE, "
                         "no balancing and sync lockstep, barrier or decoupled")
    ops = kernel_operands(az, wz, hw.dataflow, nm, rz)
    a, w, pad, has_pad, idx, has_nm = ops
    nf, npf, m, k = az.shape
    n = wz.shape[-1]  # SIMD: groups of `lanes` output columns
    t = time_steps(hw, m, k, n, nm)
    d_rows = (nm.k_kept if nm is not None and hw.dataflow == "ws"
              else {"m": m, "k": k, "n": n}[plan.row_dim])
    d_cols = {"m": m, "k": k, "n": n}[plan.col_dim]
    pe_cols = hw.array.cols
    nr, nc = -(-d_rows // plan.rows), -(-d_cols // pe_cols)
    chunk = chunk_steps(hw, t)
    flow = _FLOW[hw.dataflow]
    tested = _TESTED[hw.zero_policy]
    ua, uw = np.uint8("a" not in tested), np.uint8("w" not in tested)
    act = np.ascontiguousarray(active, dtype=np.bool_)
    sy = hw.sync
    if sy.balance == "none":
        perm = np.arange(d_cols, dtype=np.int64).reshape(1, 1, 1, d_cols)
    else:
        kchunk = chunk if sy.balance == "greedy_chunk" else max(t, 1)
        nch = -(-max(t, 1) // kchunk)
        keys = np.zeros((nf, npf, nch, d_cols), np.int64)
        balance_keys_kernel(a, w, pad, has_pad, idx, has_nm, act, flow, ua, uw, kchunk, keys)
        perm = np.ascontiguousarray(np.argsort(-keys, axis=-1, kind="stable"), np.int64)
    p = hw.array.macs_per_pe
    la = sy.lookahead or p
    out = np.zeros((nf, npf, nr, nc), np.int64)
    fold_steps_kernel(a, w, pad, has_pad, idx, has_nm, act, perm, flow, ua, uw,
                      plan.rows, pe_cols, p, la, _MODE[sy.mode], chunk, _SCOPE[sy.scope],
                      sy.fifo_depth, out)
    return out


def fold_cycles(steps: np.ndarray, hw: HwConfig, plan: Plan,
                active: np.ndarray) -> np.ndarray:
    """Compute cycles per fold from its steps. With fold overlap the fill is paid once
    per GEMM (charged to its first fold) and every fold occupies the array for at least
    ``rows`` cycles, the time its stationary data needs to move in or out; without it
    (``timing: scalesim``) every fold pays the fill."""
    if hw.fold_overlap:
        cyc = np.maximum(steps, plan.rows)
        cyc[..., 0, 0] += plan.fill
    else:
        cyc = steps + plan.fill
    return np.where(active[:, :, None, None], cyc, 0)
