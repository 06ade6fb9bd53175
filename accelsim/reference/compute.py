"""Reference compute model: every PE of a fold steps its operand pairs cycle by cycle."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from accelsim.io.hwconfig import HwConfig
from accelsim.reference.fields import FIELDS

SKIP_FIELDS = ("skip_scan_ops", "skip_decode_ops", "rf_a_meta_read_bits",
               "rf_w_meta_read_bits")

SKIP, GATE, PERF = "skip", "gate", "perf"
def _classify(a: Any, w: Any, policy: str, gate_on: str = "a") -> str:
    """What happens to one operand pair under ``policy`` (``gate_on``: which operand's
    zero gates a pair under ``gate``)."""
    a_zero = a == 0
    w_zero = w == 0
    if policy == "skip_a" and a_zero:
        return SKIP
    if policy == "skip_w" and w_zero:
        return SKIP
    if policy == "skip_both" and (a_zero or w_zero):
        return SKIP
    if policy == "gate":
        if gate_on == "a" and a_zero:
            return GATE
        if gate_on == "w" and w_zero:
            return GATE
        if gate_on == "both" and (a_zero or w_zero):
            return GATE
    return PERF


class _SkipCost:
    """Scan / decode operations and metadata bits of one skipping design, pair by pair
    (docs/energy.md): operands in rle/csr/coo are enumerated (their zeros are never met;
    one decode per enumerated element, one per element of the union when both are),
    the others are scanned (one scan per dropped pair looked at, one mask bit per pair
    looked at for a bitmask)."""

    def __init__(self, hw: HwConfig, nm: bool) -> None:
        tested = {"skip_a": ["a"], "skip_w": ["w"], "skip_both": ["a", "w"]}.get(
            hw.zero_policy, [])
        fmts = {"a": hw.formats.a, "w": hw.formats.w}
        kinds = {"a": fmts["a"].kind, "w": "dense" if nm else fmts["w"].kind}
        self.enum = [x for x in tested if kinds[x] in ("rle", "csr", "coo")]
        self.mask = [x for x in tested if x not in self.enum and kinds[x] == "bitmask"]
        self.tested = tested
        self.bits = {}
        for x in self.enum:
            f = fmts[x]
            self.bits[x] = (f.run_bits if f.kind == "rle" else f.index_bits
                            if f.kind == "csr" else 2 * f.index_bits)

    def pair(self, a: Any, w: Any, kind: str, counts: dict[str, int]) -> None:
        """Account one pair a PE walks; ``kind`` is what the policy does with it."""
        if not self.tested:
            return
        nonzero = {"a": a != 0, "w": w != 0}
        if not self.enum:
            looked_at = True
        elif len(self.enum) == 1:
            looked_at = nonzero[self.enum[0]]
            if looked_at:
                counts["skip_decode_ops"] += 1
        else:
            if nonzero["a"] or nonzero["w"]:
                counts["skip_decode_ops"] += 1
            looked_at = nonzero["a"] and nonzero["w"]
        if looked_at and kind == SKIP:
            counts["skip_scan_ops"] += 1
        for x in self.enum:
            if nonzero[x]:
                counts[f"rf_{x}_meta_read_bits"] += self.bits[x]
        for x in self.mask:
            if looked_at:
                counts[f"rf_{x}_meta_read_bits"] += 1


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



def _compute_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig,
                  kept: list[list[int]] | None = None,
                  pad: list[list[bool]] | None = None,
                  ) -> tuple[dict[str, int], dict[tuple[int, int], int]]:
    """Step ``a[M, K] @ w[K, N]`` cycle by cycle: the MAC counts and the compute cycles
    of every fold, keyed by (rows-dim tile, cols-dim tile).

    ``kept`` (N:M weights) lists, per column n, the kept slots k in increasing order;
    a pair on any other k is skipped by the structure. On os the PE's walk over k meets
    those pairs as skips (free); on ws the rows dim is the compressed index k', so they
    are on no PE at all and are counted as skipped here.

    ``pad[m][k]`` (given when the design skips padding) marks A's im2col padding
    positions: their pairs are never issued, take no slot and count as padding."""
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    rows, cols, p = hw.array.rows, hw.array.cols, hw.array.macs_per_pe
    flow, policy = hw.dataflow, hw.zero_policy
    d_rows, d_cols, d_time = _dims(flow, m_dim, k_dim, n_dim)
    a_list = a.tolist()
    w_list = w.tolist()

    counts = dict.fromkeys(FIELDS + SKIP_FIELDS, 0)
    counts["macs_dense"] = m_dim * k_dim * n_dim
    cost = _SkipCost(hw, kept is not None)
    n_pad = 0  # padding pairs put in queues as free skips
    kept_sets = None
    if kept is not None:
        if flow not in ("os", "ws"):
            raise ValueError(f"N:M weights need dataflow os or ws, got {flow!r}")
        kept_sets = [set(col) for col in kept]
        k_kept = len(kept[0])
        if flow == "ws":
            d_rows = k_kept  # rows are the compressed index k'
            for n in range(n_dim):
                for k in range(k_dim):
                    if k not in kept_sets[n]:  # pairs on no PE
                        for m in range(m_dim):
                            key = "macs_padding" if pad and pad[m][k] else "macs_skipped"
                            counts[key] += 1
    fill = _fill(flow, rows, cols)
    fold_cycles: dict[tuple[int, int], int] = {}
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
                        if kept is not None and flow == "ws":
                            # PE (k', n) holds w[k, n], k the k'-th kept slot of column n
                            m, n = t, col_idx
                            k = kept[n][row_idx]
                        else:
                            m, k, n = _mnk(flow, row_idx, col_idx, t)
                        if pad is not None and pad[m][k]:
                            q.append(SKIP)  # padding: never issued
                            n_pad += 1
                        elif kept_sets is not None and k not in kept_sets[n]:
                            q.append(SKIP)  # not a kept slot: skipped by the structure
                        else:
                            kind = _classify(a_list[m][k], w_list[k][n], policy, hw.gate_on)
                            cost.pair(a_list[m][k], w_list[k][n], kind, counts)
                            q.append(kind)
                    queues.append(q)
            counts["folds"] += 1
            fold_cycles[(i, j)] = fill + _step_fold(queues, p, counts)
            counts["compute_cycles"] += fold_cycles[(i, j)]
    counts["macs_skipped"] -= n_pad
    counts["macs_padding"] += n_pad
    assert (
        counts["macs_performed"] + counts["macs_gated"] + counts["macs_skipped"]
        + counts["macs_padding"] == counts["macs_dense"]
    )
    return counts, fold_cycles
