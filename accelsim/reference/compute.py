"""Reference compute model: every PE of a fold steps its operand pairs cycle by cycle."""

from __future__ import annotations

import math
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


def _dims(dataflow: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    """(rows dim, cols dim, time dim) sizes."""
    return {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]


def _fill(dataflow: str, rows: int, cols: int) -> int:
    if dataflow == "os":
        return rows + cols - 2
    return 2 * rows + cols - 2


# --------------------------------------------------------------------------- timing
# need[q][t]: PE q = r * cols + c of a fold needs a slot at time step t (docs/timing.md)

def _pe_window_cycles(needs: list[list[bool]], t0: int, t1: int, p: int, la: int) -> int:
    """PEs sharing one stream pointer over steps [t0, t1), stepped cycle by cycle."""
    h, cycles = t0, 0
    while True:
        while h < t1 and not any(nd[h] for nd in needs):
            h += 1  # a step nobody needs passes free
        if h >= t1:
            return cycles
        cycles += 1
        window_end = min(h + la, t1)
        cuts = []
        for nd in needs:
            taken, cut = 0, window_end
            for t in range(h, window_end):
                if nd[t]:
                    taken += 1
                    if taken == p:
                        cut = t + 1
                        break
            cuts.append(cut)
        h = min(cuts)  # every PE took its needed steps before h (at most p each)


def _fifo_cycles(needs: list[list[bool]], p: int, depth: int) -> int:
    """PEs fed by one stream through a FIFO of ``depth`` elements, stepped cycle by cycle:
    the stream carries the steps some PE needs; an element enters once every PE is past
    the element ``depth`` places before it; each cycle a PE passes elements it does not
    need for free and takes up to ``p`` it needs among those that have entered."""
    t_len = len(needs[0]) if needs else 0
    stream = [t for t in range(t_len) if any(nd[t] for nd in needs)]
    n = len(stream)
    ptr = [0] * len(needs)  # next stream element each PE looks at
    last = [-1] * len(needs)  # cycle of each PE's last take
    cycle = 0
    while True:
        while True:  # entries and free passes at the start of the cycle, to a fixpoint
            entered = min(n, min(ptr) + depth)
            moved = False
            for q, nd in enumerate(needs):
                while ptr[q] < entered and not nd[stream[ptr[q]]]:
                    ptr[q] += 1
                    moved = True
            if not moved:
                break
        if all(p_ >= n for p_ in ptr):
            return max(last) + 1 if n else 0
        for q, nd in enumerate(needs):
            taken = 0
            while ptr[q] < entered and taken < p:
                if nd[stream[ptr[q]]]:
                    taken += 1
                    last[q] = cycle
                ptr[q] += 1
        cycle += 1


def _groups(rows: int, cols: int, scope: str) -> list[list[int]]:
    if scope == "array":
        return [list(range(rows * cols))]
    if scope == "row":
        return [[r * cols + c for c in range(cols)] for r in range(rows)]
    return [[r * cols + c for r in range(rows)] for c in range(cols)]


def _fold_steps(need: list[list[bool]], hw: HwConfig, chunk: int) -> int:
    """Cycles a fold spends stepping its pairs under ``hw.sync``, fill apart."""
    sy = hw.sync
    p = hw.array.macs_per_pe
    la = sy.lookahead or p
    t_len = len(need[0]) if need else 0
    worst = 0
    for group in _groups(hw.array.rows, hw.array.cols, sy.scope):
        needs = [need[q] for q in group]
        if sy.mode == "lockstep":
            v = _pe_window_cycles(needs, 0, t_len, p, la)
        elif sy.mode == "fifo":
            v = _fifo_cycles(needs, p, sy.fifo_depth)
        else:  # barrier, decoupled: PEs independent between barriers
            v = sum(max(_pe_window_cycles([nd], t0, min(t0 + chunk, t_len), p, la)
                        for nd in needs) for t0 in range(0, t_len, chunk))
        worst = max(worst, v)
    return worst


def _compute_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig,
                  kept: list[list[int]] | None = None,
                  pad: list[list[bool]] | None = None,
                  ) -> tuple[dict[str, int], dict[tuple[int, int], int]]:
    """``a[M, K] @ w[K, N]`` pair by pair: the MAC counts and the compute cycles of every
    fold, keyed by (rows-dim tile, cols-dim tile).

    ``kept`` (N:M weights) lists, per column n, the kept slots k in increasing order;
    a pair on any other k is skipped by the structure and takes no time: on os a PE
    walks the kept slots of its column (time is the compressed index k'), on ws the
    rows dim is the compressed index k'.

    ``pad[m][k]`` (given when the design skips padding) marks A's im2col padding
    positions: their pairs are never issued, take no slot and count as padding."""
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    rows, pe_cols = hw.array.rows, hw.array.cols
    flow, policy = hw.dataflow, hw.zero_policy
    # SIMD PEs (array.pe_simd): `lanes` MAC lanes per PE on adjacent output columns n.
    # On os and ws they are adjacent columns of the fold: a fold holds lanes x pe_cols
    # of them; on is, n is time and a PE takes `lanes` adjacent steps at once.
    lanes = hw.array.pe_simd.width
    cols = pe_cols * lanes if flow in ("os", "ws") else pe_cols
    a_list = a.tolist()
    w_list = w.tolist()
    counts = dict.fromkeys(FIELDS + SKIP_FIELDS, 0)
    counts["macs_dense"] = m_dim * k_dim * n_dim
    cost = _SkipCost(hw, kept is not None)
    if kept is not None and flow not in ("os", "ws"):
        raise ValueError(f"N:M weights need dataflow os or ws, got {flow!r}")
    kept_sets = None if kept is None else [set(col) for col in kept]

    kinds: dict[tuple[int, int, int], str] = {}  # (m, k, n) -> what the pair is
    for m in range(m_dim):
        for k in range(k_dim):
            for n in range(n_dim):
                if pad is not None and pad[m][k]:
                    counts["macs_padding"] += 1
                    continue
                if kept_sets is not None and k not in kept_sets[n]:
                    counts["macs_skipped"] += 1  # not a kept slot: skipped by the structure
                    continue
                kind = _classify(a_list[m][k], w_list[k][n], policy, hw.gate_on)
                cost.pair(a_list[m][k], w_list[k][n], kind, counts)
                counts[{SKIP: "macs_skipped", GATE: "macs_gated",
                        PERF: "macs_performed"}[kind]] += 1
                kinds[(m, k, n)] = kind
    assert (counts["macs_performed"] + counts["macs_gated"] + counts["macs_skipped"]
            + counts["macs_padding"] == counts["macs_dense"])

    def pair_at(y: int, x: int, t: int) -> tuple[int, int, int]:
        """(m, k, n) met at step t by the PE holding rows-dim y and cols-dim x."""
        if flow == "os":
            return y, (t if kept is None else kept[x][t]), x
        if flow == "ws":
            return t, (y if kept is None else kept[x][y]), x
        return x, y, t

    def needs(y: int, x: int, t: int) -> bool:
        kind = kinds.get(pair_at(y, x, t))  # None: padding or not a kept slot
        return kind is not None and kind != SKIP

    d_rows, d_cols, d_time = _dims(flow, m_dim, k_dim, n_dim)
    if kept is not None:
        if flow == "os":
            d_time = len(kept[0])
        else:
            d_rows = len(kept[0])
    step_time = math.ceil(d_time / lanes) if flow == "is" else d_time  # PE time steps
    chunk = _chunk(hw, step_time)
    perm = _balance(hw, d_rows, d_cols, d_time, chunk, needs)
    fill = _fill(flow, rows, pe_cols)
    fold_cycles: dict[tuple[int, int], int] = {}
    for i in range(math.ceil(d_rows / rows)):
        for j in range(math.ceil(d_cols / cols)):
            need = []
            for r in range(rows):
                for c in range(cols):
                    y, slot = i * rows + r, j * cols + c
                    if y >= d_rows or slot >= d_cols:
                        need.append([False] * d_time)  # idle PE in this fold
                    else:
                        need.append([needs(y, perm[min(t // chunk, len(perm) - 1)][slot], t)
                                     for t in range(d_time)])
            if lanes > 1:
                need = _simd_needs(need, rows, pe_cols, lanes, flow)
            steps = _fold_steps(need, hw, chunk)
            if hw.fold_overlap:
                fold_cycles[(i, j)] = max(steps, rows) + (fill if (i, j) == (0, 0) else 0)
            else:
                fold_cycles[(i, j)] = fill + steps
            counts["folds"] += 1
            counts["compute_cycles"] += fold_cycles[(i, j)]
    return counts, fold_cycles


def _simd_needs(need: list[list[bool]], rows: int, pe_cols: int, lanes: int,
                flow: str) -> list[list[bool]]:
    """Needs of the physical PEs of a fold from those of their lanes: a PE needs a step
    when any of its lanes does. On os/ws lane l of PE column c is fold column
    c * lanes + l; on is lane l of PE step s is time step s * lanes + l."""
    if flow == "is":
        out = []
        for nd in need:
            n_steps = math.ceil(len(nd) / lanes)
            out.append([any(nd[s * lanes:(s + 1) * lanes]) for s in range(n_steps)])
        return out
    width = pe_cols * lanes
    return [[any(need[r * width + c * lanes + lane][t] for lane in range(lanes))
             for t in range(len(need[0]))]
            for r in range(rows) for c in range(pe_cols)]


def _chunk(hw: HwConfig, d_time: int) -> int:
    """Time steps between barriers (the whole fold for lockstep and fifo)."""
    if hw.sync.mode == "barrier":
        return max(1, min(hw.sync.barrier_steps, d_time))
    if hw.sync.mode == "decoupled":
        return max(1, min(hw.pe_buffer_steps(), d_time))
    return max(1, d_time)


def _balance(hw: HwConfig, d_rows: int, d_cols: int, d_time: int, chunk: int,
             needs: Any) -> list[list[int]]:
    """perm[chunk][slot]: the cols-dim index PE column slot holds in each chunk (one
    chunk unless greedy_chunk): indices sorted by their needed steps, most first."""
    if hw.sync.balance == "none":
        return [list(range(d_cols))]
    size = chunk if hw.sync.balance == "greedy_chunk" else max(1, d_time)
    perms = []
    for t0 in range(0, max(1, d_time), size):
        work = [sum(needs(y, x, t) for y in range(d_rows)
                    for t in range(t0, min(t0 + size, d_time))) for x in range(d_cols)]
        perms.append(sorted(range(d_cols), key=lambda x: (-work[x], x)))
    return perms
