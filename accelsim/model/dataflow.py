"""Dataflows as plans: which GEMM dimension runs along the array's rows, its columns
and over time, and how long a fold's pipeline fill and drain take.

=========  ====  ====  ====  ===================
dataflow   rows  cols  time  stays in the PE
=========  ====  ====  ====  ===================
os         M     N     K     partial sum
ws         K     N     M     weight
is         K     M     N     input
=========  ====  ====  ====  ===================

The fill/drain term matches SCALE-Sim v3 with unlimited bandwidth: ``R + C - 2`` for
os, and ``2R + C - 2`` for ws and is, whose stationary operand is loaded into the
array (R cycles) before each fold. SCALE-Sim pays it per fold (``timing: scalesim``);
by default the next fold's fill overlaps this one's drain and it is paid once per GEMM
(:mod:`accelsim.model.sync`). Folds are visited row-fold outer, col-fold inner.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelsim.io.hwconfig import HwConfig

_DIMS = {"os": ("m", "n", "k"), "ws": ("k", "n", "m"), "is": ("k", "m", "n")}


@dataclass(frozen=True)
class Plan:
    dataflow: str
    rows: int
    cols: int
    row_dim: str
    col_dim: str
    time_dim: str
    fill: int

    def folds(self, m: int, k: int, n: int) -> tuple[int, int]:
        """(row folds, col folds) of an M x K x N GEMM."""
        d = {"m": m, "k": k, "n": n}
        return -(-d[self.row_dim] // self.rows), -(-d[self.col_dim] // self.cols)


def make_plan(hw: HwConfig) -> Plan:
    r, c = hw.array.rows, hw.array.cols
    row, col, time = _DIMS[hw.dataflow]
    fill = r + c - 2 if hw.dataflow == "os" else 2 * r + c - 2
    # SIMD PEs: tiles span lanes x cols output columns on os/ws; the fill is the
    # physical array's
    return Plan(hw.dataflow, r, hw.logical_cols(), row, col, time, fill)


def dense_cycles(hw: HwConfig, m: int, k: int, n: int) -> int:
    """Closed form: compute cycles of a dense M x K x N GEMM (no zero handling). With
    fold overlap the fill is paid once and each fold lasts at least ``rows`` cycles
    (docs/timing.md); without it (``timing: scalesim``) every fold pays the fill."""
    plan = make_plan(hw)
    fr, fc = plan.folds(m, k, n)
    t = {"m": m, "k": k, "n": n}[plan.time_dim]
    if hw.dataflow == "is":  # SIMD lanes take `lanes` adjacent time steps (N) at once
        t = -(-t // hw.lanes)
    steps = -(-t // hw.array.macs_per_pe)
    if hw.fold_overlap:
        return plan.fill + fr * fc * max(steps, plan.rows)
    return fr * fc * (plan.fill + steps)
