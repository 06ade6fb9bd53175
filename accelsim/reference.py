"""Slow, obviously-correct reference model: steps every PE cycle by cycle.

This module is the test oracle for :mod:`accelsim.engine`. It is written from the
model's semantics (``DESIGN.md`` section 2), not from the engine, and favours plain
loops over speed: use it on small layers only.

The model, per GEMM ``Y[M, N] = A[M, K] @ W[K, N]`` on an ``R x C`` array with ``p``
MACs per PE:

* the dataflow maps (rows dim, cols dim, time dim) to os: (M, N, K), ws: (K, N, M),
  is: (K, M, N);
* fold (i, j) puts rows-dim index ``i*R + r`` and cols-dim index ``j*C + c`` on PE
  (r, c); PEs whose indices fall outside the dims are idle;
* each active PE walks its operand pairs along the time dim. A *skipped* pair costs
  nothing; every other pair takes one of the PE's ``p`` slots in a cycle and is
  *gated* (``gate`` policy, a zero operand) or *performed*;
* a fold takes ``fill`` cycles plus the cycles until its slowest PE is done, with
  ``fill = R + C - 2`` (os) or ``2R + C - 2`` (ws, is).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any

import numpy as np

from .hwconfig import HwConfig

__all__ = ["FIELDS", "simulate_gemm", "simulate_layer"]

#: the integer fields every result carries
FIELDS = (
    "macs_dense",
    "macs_performed",
    "macs_gated",
    "macs_skipped",
    "folds",
    "compute_cycles",
)

SKIP, GATE, PERF = "skip", "gate", "perf"


def _classify(a: Any, w: Any, policy: str) -> str:
    """What happens to one operand pair under ``policy``."""
    a_zero = a == 0
    w_zero = w == 0
    if policy == "skip_a" and a_zero:
        return SKIP
    if policy == "skip_w" and w_zero:
        return SKIP
    if policy == "skip_both" and (a_zero or w_zero):
        return SKIP
    if policy == "gate" and (a_zero or w_zero):
        return GATE
    return PERF


def _mnk(dataflow: str, row: int, col: int, t: int) -> tuple[int, int, int]:
    """GEMM indices (m, k, n) of the pair a PE at (row idx, col idx) meets at time t."""
    if dataflow == "os":
        return row, t, col
    if dataflow == "ws":
        return t, row, col
    if dataflow == "is":
        return col, row, t
    raise ValueError(f"unknown dataflow {dataflow!r}")


def _dims(dataflow: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    """(rows dim, cols dim, time dim) sizes."""
    return {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]


def _fill(dataflow: str, rows: int, cols: int) -> int:
    if dataflow == "os":
        return rows + cols - 2
    return 2 * rows + cols - 2


def _step_fold(queues: list[deque[str]], p: int, counts: dict[str, int]) -> int:
    """Step the PE queues of one fold cycle by cycle; return the stepped cycles."""
    cycles = 0
    while True:
        # skipped pairs at the head of a queue are dropped for free
        for q in queues:
            while q and q[0] == SKIP:
                q.popleft()
                counts["macs_skipped"] += 1
        if not any(queues):
            return cycles
        cycles += 1
        for q in queues:
            taken = 0
            while q and taken < p:
                kind = q.popleft()
                if kind == SKIP:
                    counts["macs_skipped"] += 1
                    continue
                taken += 1
                if kind == GATE:
                    counts["macs_gated"] += 1
                else:
                    counts["macs_performed"] += 1


def simulate_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig) -> dict[str, int]:
    """Simulate ``a[M, K] @ w[K, N]`` cycle by cycle on ``hw``; see the module doc."""
    a = np.asarray(a)
    w = np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"expected a[M, K] and w[K, N], got {a.shape} and {w.shape}")
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    rows, cols, p = hw.array.rows, hw.array.cols, hw.array.macs_per_pe
    flow, policy = hw.dataflow, hw.zero_policy
    d_rows, d_cols, d_time = _dims(flow, m_dim, k_dim, n_dim)
    a_list = a.tolist()
    w_list = w.tolist()

    counts = dict.fromkeys(FIELDS, 0)
    counts["macs_dense"] = m_dim * k_dim * n_dim
    fill = _fill(flow, rows, cols)
    for i in range(math.ceil(d_rows / rows)):
        for j in range(math.ceil(d_cols / cols)):
            queues: list[deque[str]] = []
            for r in range(rows):
                for c in range(cols):
                    row_idx, col_idx = i * rows + r, j * cols + c
                    if row_idx >= d_rows or col_idx >= d_cols:
                        continue  # idle PE in this fold
                    q: deque[str] = deque()
                    for t in range(d_time):
                        m, k, n = _mnk(flow, row_idx, col_idx, t)
                        q.append(_classify(a_list[m][k], w_list[k][n], policy))
                    queues.append(q)
            counts["folds"] += 1
            counts["compute_cycles"] += fill + _step_fold(queues, p, counts)
    assert (
        counts["macs_performed"] + counts["macs_gated"] + counts["macs_skipped"]
        == counts["macs_dense"]
    )
    return counts


# --------------------------------------------------------------------------- layers


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def _im2col(x: np.ndarray, weight: np.ndarray, stride, padding, dilation,
            groups: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Naive im2col of ``x[batch, C_in, *spatial]``: one (A, W) pair per group.

    A is [batch * prod(out), C_in/groups * prod(kernel)] with rows ordered (batch, out
    position row-major) and columns (channel, kernel position row-major); W is
    [C_in/groups * prod(kernel), C_out/groups].
    """
    batch, c_in = x.shape[0], x.shape[1]
    size = x.shape[2:]
    c_out, c_g = weight.shape[0], weight.shape[1]
    kernel = weight.shape[2:]
    n_g = c_out // groups
    out = [
        (size[d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
        for d in range(len(size))
    ]
    assert c_g * groups == c_in
    gemms = []
    for g in range(groups):
        rows = []
        for b in range(batch):
            for pos in itertools.product(*(range(o) for o in out)):
                row = []
                for c in range(c_g):
                    for kpos in itertools.product(*(range(kk) for kk in kernel)):
                        idx = [pos[d] * stride[d] - padding[d] + kpos[d] * dilation[d]
                               for d in range(len(size))]
                        inside = all(0 <= idx[d] < size[d] for d in range(len(size)))
                        row.append(x[(b, g * c_g + c, *idx)] if inside else 0)
                rows.append(row)
        cols = []
        for c in range(c_g):
            for kpos in itertools.product(*(range(kk) for kk in kernel)):
                cols.append([weight[(g * n_g + n, c, *kpos)] for n in range(n_g)])
        gemms.append((np.array(rows, dtype=x.dtype), np.array(cols, dtype=weight.dtype)))
    return gemms


def _gemms_of_frame(layer: Any, a: np.ndarray, w: np.ndarray):
    """The (A, W) GEMMs of one frame of ``layer`` (``a`` without the frames axis)."""
    if layer.kind == "linear":
        return [(a.reshape(-1, a.shape[-1]), w.T)]
    if layer.kind in ("conv1d", "conv2d"):
        return _im2col(a, w, layer.stride, layer.padding, layer.dilation, layer.groups)
    if layer.kind == "matmul":
        lead = a.shape[:-2]
        return [(a[idx], w[idx]) for idx in itertools.product(*(range(s) for s in lead))]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def simulate_layer(layer: Any, hw: HwConfig) -> dict[str, int]:
    """Simulate every GEMM of ``layer`` (frame-major, then group / batch index) and sum
    the per-GEMM counts."""
    a = np.asarray(layer.a)
    w = np.asarray(layer.w)
    if layer.frames:
        w_is_act = layer.kind == "matmul"
        frames = [(a[f], w[f] if w_is_act else w) for f in range(a.shape[0])]
    else:
        frames = [(a, w)]
    total = dict.fromkeys(FIELDS, 0)
    for fa, fw in frames:
        for ga, gw in _gemms_of_frame(layer, fa, fw):
            _add(total, simulate_gemm(ga, gw, hw))
    return total
