"""Slow, obviously-correct reference model: steps every PE cycle by cycle.

This module is the test oracle for :mod:`accelsim.engine`. It is written from the
model's semantics (``DESIGN.md`` section 2, ``docs/memory-model.md``), not from the
engine, and favours plain loops over speed: use it on small layers only.

The compute model, per GEMM ``Y[M, N] = A[M, K] @ W[K, N]`` on an ``R x C`` array with
``p`` MACs per PE:

* the dataflow maps (rows dim, cols dim, time dim) to os: (M, N, K), ws: (K, N, M),
  is: (K, M, N);
* fold (i, j) puts rows-dim index ``i*R + r`` and cols-dim index ``j*C + c`` on PE
  (r, c); PEs whose indices fall outside the dims are idle;
* each active PE walks its operand pairs along the time dim. A *skipped* pair costs
  nothing; every other pair takes one of the PE's ``p`` slots in a cycle and is
  *gated* (``gate`` policy, a zero operand) or *performed*;
* a fold takes ``fill`` cycles plus the cycles until its slowest PE is done, with
  ``fill = R + C - 2`` (os) or ``2R + C - 2`` (ws, is).

The memory model (``docs/memory-model.md``): the folds are visited in the memory loop
order of the dataflow (os: M tiles outer, N tiles inner; ws: N tiles outer, K tiles
inner; is: M tiles outer, K tiles inner). Each fold's A and W tiles are cut out as
explicit sub-arrays and their compressed sizes are computed by walking them element by
element; DRAM passes are spread over folds with integer shares, and the stall timeline
is stepped fold by fold over all folds of all GEMMs of a layer.

Temporal delta and N:M structured weights (``docs/delta-and-nm.md``): the delta operand
is computed element by element, frame by frame, and lowered like the input; GEMMs of
frames >= 1 with an all-zero operand are skipped whole under ``skip_a``/``skip_both``.
The N:M kept slots are picked group by group, column by column; pairs on other slots
are skipped by the structure (os: they take no time in the PE's walk; ws: they are on
no PE, rows being the compressed index ``k'``). State traffic is added per frame.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import HwConfig

__all__ = [
    "ALL_FIELDS", "DELTA_NM_FIELDS", "FIELDS", "MEMORY_FIELDS", "STATE_FIELDS",
    "simulate_gemm", "simulate_layer", "tile_sizes",
]

#: the compute fields: MAC counts, folds and compute cycles (what the reference
#: reported before the memory model; kept under this name for existing callers)
FIELDS = (
    "macs_dense",
    "macs_performed",
    "macs_gated",
    "macs_skipped",
    "folds",
    "compute_cycles",
)

#: traffic and timing fields (bytes; ``_meta_`` = metadata, the rest data)
MEMORY_FIELDS = (
    "dram_a_read_bytes",
    "dram_a_read_meta_bytes",
    "dram_w_read_bytes",
    "dram_w_read_meta_bytes",
    "dram_psum_read_bytes",
    "dram_psum_write_bytes",
    "dram_out_write_bytes",
    "glb_a_write_bytes",
    "glb_a_write_meta_bytes",
    "glb_w_write_bytes",
    "glb_w_write_meta_bytes",
    "glb_a_read_bytes",
    "glb_a_read_meta_bytes",
    "glb_w_read_bytes",
    "glb_w_read_meta_bytes",
    "glb_psum_read_bytes",
    "glb_psum_write_bytes",
    "glb_out_write_bytes",
    "rf_a_read_bytes",
    "rf_w_read_bytes",
    "rf_a_write_bytes",
    "rf_w_write_bytes",
    "rf_out_read_bytes",
    "rf_out_write_bytes",
    "compute_cycles",
    "stall_cycles",
    "cycles",
)

#: temporal delta state traffic (bytes), placement (0/1) and cycles
STATE_FIELDS = (
    "state_ref_read_bytes",
    "state_ref_write_bytes",
    "state_acc_read_bytes",
    "state_acc_write_bytes",
    "state_in_dram",
    "state_cycles",
)

#: the delta and N:M fields (0 where the feature does not apply)
DELTA_NM_FIELDS = STATE_FIELDS + ("nm_mux_ops",)

#: the integer fields every result carries
ALL_FIELDS = (FIELDS + tuple(k for k in MEMORY_FIELDS if k not in FIELDS)
              + DELTA_NM_FIELDS)

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



def _compute_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig,
                  kept: list[list[int]] | None = None,
                  ) -> tuple[dict[str, int], dict[tuple[int, int], int]]:
    """Step ``a[M, K] @ w[K, N]`` cycle by cycle: the MAC counts and the compute cycles
    of every fold, keyed by (rows-dim tile, cols-dim tile).

    ``kept`` (N:M weights) lists, per column n, the kept slots k in increasing order;
    a pair on any other k is skipped by the structure. On os the PE's walk over k meets
    those pairs as skips (free); on ws the rows dim is the compressed index k', so they
    are on no PE at all and are counted as skipped here."""
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    rows, cols, p = hw.array.rows, hw.array.cols, hw.array.macs_per_pe
    flow, policy = hw.dataflow, hw.zero_policy
    d_rows, d_cols, d_time = _dims(flow, m_dim, k_dim, n_dim)
    a_list = a.tolist()
    w_list = w.tolist()

    counts = dict.fromkeys(FIELDS, 0)
    counts["macs_dense"] = m_dim * k_dim * n_dim
    kept_sets = None
    if kept is not None:
        if flow not in ("os", "ws"):
            raise ValueError(f"N:M weights need dataflow os or ws, got {flow!r}")
        kept_sets = [set(col) for col in kept]
        k_kept = len(kept[0])
        if flow == "ws":
            d_rows = k_kept  # rows are the compressed index k'
            not_kept = 0
            for n in range(n_dim):
                for k in range(k_dim):
                    if k not in kept_sets[n]:
                        not_kept += 1
            counts["macs_skipped"] += m_dim * not_kept  # pairs on no PE
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
                        if kept_sets is not None and k not in kept_sets[n]:
                            q.append(SKIP)  # not a kept slot: skipped by the structure
                        else:
                            q.append(_classify(a_list[m][k], w_list[k][n], policy))
                    queues.append(q)
            counts["folds"] += 1
            fold_cycles[(i, j)] = fill + _step_fold(queues, p, counts)
            counts["compute_cycles"] += fold_cycles[(i, j)]
    assert (
        counts["macs_performed"] + counts["macs_gated"] + counts["macs_skipped"]
        == counts["macs_dense"]
    )
    return counts, fold_cycles


# --------------------------------------------------------------------------- N:M


@dataclass(frozen=True)
class _NM:
    """N:M kept slots of one GEMM's W: ``kept[n]`` = the kept k of column n, sorted."""

    n: int
    m: int
    kept: list[list[int]]


def _nm_kept(w: np.ndarray, n_keep: int, m_group: int) -> list[list[int]]:
    """Kept slots of every column of ``w[K, N]`` under N:M: per group of ``m_group``
    consecutive k, its nonzero positions, then its lowest-index zero positions, up to
    ``min(n_keep, group size)``, sorted by k. Raises :class:`SimulationError` if a group
    holds more than ``n_keep`` nonzeros."""
    k_dim, n_dim = w.shape
    w_list = w.tolist()
    kept = []
    for n in range(n_dim):
        col: list[int] = []
        for g in range(math.ceil(k_dim / m_group)):
            ks = list(range(g * m_group, min(k_dim, (g + 1) * m_group)))
            nonzeros = [k for k in ks if w_list[k][n] != 0]
            zeros = [k for k in ks if w_list[k][n] == 0]
            if len(nonzeros) > n_keep:
                raise SimulationError(
                    f"weights are not {n_keep}:{m_group} along K: output column {n}, "
                    f"K group {g} has {len(nonzeros)} nonzeros")
            take = min(n_keep, len(ks))
            col += sorted((nonzeros + zeros)[:take])
        kept.append(col)
    return kept


def _compressed_w(w: np.ndarray, kept: list[list[int]]) -> np.ndarray:
    """W'[k', n] = w[k, n] for the k'-th kept slot k of column n."""
    n_dim = w.shape[1]
    k_kept = len(kept[0])
    out = np.zeros((k_kept, n_dim), dtype=w.dtype)
    for n in range(n_dim):
        for kc in range(k_kept):
            out[kc, n] = w[kept[n][kc], n]
    return out


def _index_bits(m_group: int) -> int:
    """ceil(log2(m)) for m >= 2, by counting."""
    bits = 0
    while 2**bits < m_group:
        bits += 1
    return bits


# --------------------------------------------------------------------------- formats


def tile_sizes(tile: Any, kind: str, bits: int, run_bits: int = 4, index_bits: int = 8,
               ptr_bits: int = 16) -> tuple[int, int]:
    """(data bits, metadata bits) of one tile in format ``kind``.

    ``tile`` is 2-D; it is flattened row-major and its rows are the fibers. Any value
    that is not 0 (including True in a mask) is a nonzero. Sizes are found by walking the
    elements one at a time, straight from the definitions.
    """
    tile = np.asarray(tile)
    if tile.ndim != 2:
        raise ValueError(f"expected a 2-D tile, got shape {tile.shape}")
    fibers = tile.shape[0]
    flat = [x != 0 for x in tile.ravel(order="C").tolist()]
    numel = len(flat)
    nnz = 0
    for nonzero in flat:
        if nonzero:
            nnz += 1
    if kind == "dense":
        return numel * bits, 0
    if kind == "bitmask":
        return nnz * bits, numel
    if kind == "csr":
        return nnz * bits, nnz * index_bits + (fibers + 1) * ptr_bits
    if kind == "coo":
        return nnz * bits, nnz * 2 * index_bits
    if kind == "rle":
        # drop the zeros after the last nonzero: they cost nothing
        last = -1
        for idx, nonzero in enumerate(flat):
            if nonzero:
                last = idx
        entries = 0
        run = 0  # zeros held in the current entry's run field
        max_run = 2**run_bits - 1
        for nonzero in flat[:last + 1]:
            if nonzero:
                entries += 1  # the nonzero, with its run of preceding zeros
                run = 0
            elif run == max_run:
                entries += 1  # this zero is stored explicitly and ends a full run
                run = 0
            else:
                run += 1
        return entries * bits, entries * run_bits
    raise ValueError(f"unknown format {kind!r}")


def _tile_bytes(tile: np.ndarray, fmt: Any, bits: int) -> tuple[int, int]:
    """(data bytes, metadata bytes) of one transfer of ``tile``, fibers = rows."""
    data_bits, meta_bits = tile_sizes(tile, fmt.kind, bits, fmt.run_bits, fmt.index_bits,
                                      fmt.ptr_bits)
    return math.ceil(data_bits / 8), math.ceil(meta_bits / 8)


# --------------------------------------------------------------------------- memory


def _new_fold(compute: int) -> dict[str, int]:
    return {"compute": compute, "glb_rd": 0, "dram_rd": 0, "glb_wr": 0, "dram_wr": 0}


def _spread(folds: list[dict[str, int]], pass_folds: list[int], nbytes: int) -> None:
    """Spread ``nbytes`` of one DRAM pass over the folds ``pass_folds`` in integer
    shares: the f-th of F gets floor(B(f+1)/F) - floor(Bf/F)."""
    n = len(pass_folds)
    for f, idx in enumerate(pass_folds):
        folds[idx]["dram_rd"] += nbytes * (f + 1) // n - nbytes * f // n


def _w_bytes(w_t: np.ndarray, hw: HwConfig, nm: _NM | None) -> tuple[int, int]:
    """(data bytes, metadata bytes) of a W tile ``w_t[K, N]`` (fibers are its columns).
    With N:M weights ``w_t`` is a block of the compressed W' and every slot is stored as
    its value plus a ceil(log2 m)-bit index, whatever ``formats.w`` says."""
    if nm is None:
        return _tile_bytes(w_t.T, hw.formats.w, hw.precision.w_bits)
    slots = w_t.shape[0] * w_t.shape[1]
    return (math.ceil(slots * hw.precision.w_bits / 8),
            math.ceil(slots * _index_bits(nm.m) / 8))


def _memory_gemm(a: np.ndarray, w: np.ndarray, unique_a: np.ndarray, w_mode: str,
                 fold_cycles: dict[tuple[int, int], int], hw: HwConfig,
                 tot: dict[str, int], nm: _NM | None = None) -> list[dict[str, int]]:
    """Traffic of one GEMM, added to ``tot``; returns its folds in memory loop order,
    each with its compute cycles and the bytes it reads and writes per level.

    ``unique_a`` is the 2-D view of the data A really holds (fibers = rows);
    ``w_mode`` is ``"layer"`` (W is resident for the whole layer and already read),
    ``"first"`` (W is resident for the whole layer; this GEMM reads it) or ``"gemm"``.
    ``nm``: N:M weights; W tiles are blocks of the compressed W' (rows k').
    """
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    if nm is not None:
        w = _compressed_w(w, nm.kept)  # from here on W is W'[K', N]
    k_rows = w.shape[0]  # K (K' with N:M): the W rows tiles are cut from
    rows, cols = hw.array.rows, hw.array.cols
    flow = hw.dataflow
    prec = hw.precision
    fa = hw.formats.a
    glb = hw.memory.glb
    psum_elem_bits = prec.out_bits

    # the fold sequence in memory loop order: (outer, inner, compute key, tiles, psum)
    seq = []
    if flow == "os":
        for i in range(math.ceil(m_dim / rows)):
            for j in range(math.ceil(n_dim / cols)):
                a_t = a[i * rows:(i + 1) * rows, :]
                w_t = w[:, j * cols:(j + 1) * cols]
                seq.append((i, j, (i, j), a_t, w_t))
    elif flow == "ws":
        for j in range(math.ceil(n_dim / cols)):
            for kt in range(math.ceil(k_rows / rows)):
                if nm is None:
                    a_t = a[:, kt * rows:(kt + 1) * rows]
                else:
                    # the K groups g0..g1 the fold's compressed rows k' belong to
                    r0, r1 = kt * rows, min(k_rows, (kt + 1) * rows)
                    g0, g1 = r0 // nm.n, (r1 - 1) // nm.n
                    a_t = a[:, g0 * nm.m:min(k_dim, (g1 + 1) * nm.m)]
                w_t = w[kt * rows:(kt + 1) * rows, j * cols:(j + 1) * cols]
                seq.append((j, kt, (kt, j), a_t, w_t))
    elif flow == "is":
        assert nm is None, "N:M weights need os or ws"
        for i in range(math.ceil(m_dim / cols)):
            for kt in range(math.ceil(k_dim / rows)):
                a_t = a[i * cols:(i + 1) * cols, kt * rows:(kt + 1) * rows]
                w_t = w[kt * rows:(kt + 1) * rows, :]
                seq.append((i, kt, (kt, i), a_t, w_t))
    else:
        raise ValueError(f"unknown dataflow {flow!r}")
    assert len(seq) == len(fold_cycles)
    n_inner = {"os": math.ceil(n_dim / cols), "ws": math.ceil(k_rows / rows),
               "is": math.ceil(k_dim / rows)}[flow]

    folds = [_new_fold(fold_cycles[key]) for (_, _, key, _, _) in seq]

    # GLB -> array: every fold reads its A and W tiles (W tiles fiber by column)
    for f, (_, _, _, a_t, w_t) in enumerate(seq):
        ad, am = _tile_bytes(a_t, fa, prec.a_bits)
        wd, wm = _w_bytes(w_t, hw, nm)
        tot["glb_a_read_bytes"] += ad
        tot["glb_a_read_meta_bytes"] += am
        tot["glb_w_read_bytes"] += wd
        tot["glb_w_read_meta_bytes"] += wm
        folds[f]["glb_rd"] += ad + am + wd + wm

    # partial sums (ws, is) and final outputs
    for f, (outer, inner, _, _, _) in enumerate(seq):
        if flow == "os":
            out_elems = min(rows, m_dim - outer * rows) * min(cols, n_dim - inner * cols)
            out_bytes = math.ceil(out_elems * prec.a_bits / 8)
        else:
            if flow == "ws":
                psum_elems = m_dim * min(cols, n_dim - outer * cols)
            else:
                psum_elems = min(cols, m_dim - outer * cols) * n_dim
            psum_bytes = math.ceil(psum_elems * psum_elem_bits / 8)
            spill = psum_bytes > glb.out_kib * 1024
            first, last = inner == 0, inner == n_inner - 1
            if not first:
                tot["glb_psum_read_bytes"] += psum_bytes
                folds[f]["glb_rd"] += psum_bytes
                if spill:
                    tot["dram_psum_read_bytes"] += psum_bytes
                    folds[f]["dram_rd"] += psum_bytes
            if not last:
                tot["glb_psum_write_bytes"] += psum_bytes
                folds[f]["glb_wr"] += psum_bytes
                if spill:
                    tot["dram_psum_write_bytes"] += psum_bytes
                    folds[f]["dram_wr"] += psum_bytes
            out_bytes = math.ceil(psum_elems * prec.a_bits / 8) if last else 0
        if out_bytes:
            tot["glb_out_write_bytes"] += out_bytes
            tot["dram_out_write_bytes"] += out_bytes
            folds[f]["glb_wr"] += out_bytes
            folds[f]["dram_wr"] += out_bytes

    # DRAM -> GLB: passes over the unique operands
    every = list(range(len(seq)))
    by_outer: dict[int, list[int]] = {}
    for f, (outer, _, _, _, _) in enumerate(seq):
        by_outer.setdefault(outer, []).append(f)
    outer_passes = [by_outer[o] for o in sorted(by_outer)]

    ad, am = _tile_bytes(unique_a, fa, prec.a_bits)
    a_resident = ad + am <= glb.a_kib * 1024
    a_passes = outer_passes if (flow == "ws" and not a_resident) else [every]
    for pf in a_passes:
        for nbytes, key in ((ad, "a_read_bytes"), (am, "a_read_meta_bytes")):
            tot["dram_" + key] += nbytes
            tot["glb_" + key.replace("read", "write")] += nbytes
            _spread(folds, pf, nbytes)

    if w_mode != "layer":
        wd, wm = _w_bytes(w, hw, nm)
        w_resident = w_mode == "first" or wd + wm <= glb.w_kib * 1024
        w_passes = outer_passes if (flow in ("os", "is") and not w_resident) else [every]
        for pf in w_passes:
            for nbytes, key in ((wd, "w_read_bytes"), (wm, "w_read_meta_bytes")):
                tot["dram_" + key] += nbytes
                tot["glb_" + key.replace("read", "write")] += nbytes
                _spread(folds, pf, nbytes)
    return folds


def _transfer_cycles(nbytes: int, bw: float) -> int:
    if math.isinf(bw):
        return 0
    return math.ceil(nbytes / bw)


def _timeline(folds: list[dict[str, int]], hw: HwConfig) -> int:
    """Step the stall model over the layer's folds; return its total cycles."""
    dram_bw = hw.memory.dram.bandwidth_bytes_per_cycle
    glb_bw = hw.memory.glb.bandwidth_bytes_per_cycle
    load = []
    prev_dram_wr = prev_glb_wr = 0
    for fold in folds:
        load.append(max(_transfer_cycles(fold["dram_rd"] + prev_dram_wr, dram_bw),
                        _transfer_cycles(fold["glb_rd"] + prev_glb_wr, glb_bw)))
        prev_dram_wr, prev_glb_wr = fold["dram_wr"], fold["glb_wr"]
    load.append(max(_transfer_cycles(prev_dram_wr, dram_bw),
                    _transfer_cycles(prev_glb_wr, glb_bw)))
    cycles = 0
    if hw.memory.glb.double_buffer:
        cycles += load[0]
        for f, fold in enumerate(folds):
            cycles += max(fold["compute"], load[f + 1])
    else:
        for f, fold in enumerate(folds):
            cycles += load[f] + fold["compute"]
        cycles += load[len(folds)]
    return cycles


@dataclass
class _Gemm:
    """One GEMM of a layer: operands, the data A really holds, W mode (see
    :func:`_memory_gemm`), N:M kept slots, and whether it runs (False: skipped whole)."""

    a: np.ndarray
    w: np.ndarray
    unique_a: np.ndarray
    w_mode: str
    nm: _NM | None = None
    active: bool = True


def _run(gemms: list[_Gemm], hw: HwConfig) -> dict[str, int]:
    """Simulate GEMMs one after another as one layer. A GEMM that is not active is
    skipped whole: its dense MACs count as skipped, nothing else."""
    total = dict.fromkeys(ALL_FIELDS, 0)
    total["delta_gemms_skipped"] = 0
    all_folds: list[dict[str, int]] = []
    for g in gemms:
        if not g.active:
            dense = g.a.shape[0] * g.a.shape[1] * g.w.shape[1]
            total["macs_dense"] += dense
            total["macs_skipped"] += dense
            total["delta_gemms_skipped"] += 1
            continue
        counts, fold_cycles = _compute_gemm(g.a, g.w, hw, g.nm.kept if g.nm else None)
        _add(total, counts)
        all_folds += _memory_gemm(g.a, g.w, g.unique_a, g.w_mode, fold_cycles, hw, total,
                                  g.nm)
    assert total["compute_cycles"] == sum(f["compute"] for f in all_folds)
    prec = hw.precision
    slots = total["macs_performed"] + total["macs_gated"]
    total["rf_a_read_bytes"] = slots * math.ceil(prec.a_bits / 8)
    total["rf_w_read_bytes"] = slots * math.ceil(prec.w_bits / 8)
    total["rf_out_read_bytes"] = total["macs_performed"] * math.ceil(prec.out_bits / 8)
    total["rf_out_write_bytes"] = total["rf_out_read_bytes"]
    total["rf_a_write_bytes"] = total["glb_a_read_bytes"]
    total["rf_w_write_bytes"] = total["glb_w_read_bytes"]
    if any(g.nm is not None for g in gemms):
        # every slot-taking kept pair drives the activation-select mux once
        total["nm_mux_ops"] = slots
    total["cycles"] = _timeline(all_folds, hw)
    total["stall_cycles"] = total["cycles"] - total["compute_cycles"]
    return total


def simulate_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig) -> dict[str, int]:
    """Simulate ``a[M, K] @ w[K, N]`` cycle by cycle on ``hw`` (a linear layer with input
    ``a`` and weight ``w.T``, no frames: N:M applies if configured, delta does not);
    see the module doc."""
    a = np.asarray(a)
    w = np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"expected a[M, K] and w[K, N], got {a.shape} and {w.shape}")
    nm = None
    if hw.structured.n:
        nm = _NM(hw.structured.n, hw.structured.m,
                 _nm_kept(w, hw.structured.n, hw.structured.m))
    total = _run([_Gemm(a, w, a, "gemm", nm)], hw)
    del total["delta_gemms_skipped"]
    return total


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
    """The (A, W, unique A) GEMMs of one frame of ``layer`` (``a`` without the frames
    axis). Unique A is the data A really holds as a 2-D array with fibers as rows: the
    GEMM's A for linear and matmul; for convolutions the group's slice of the input
    ``x[n, c_g, *spatial]`` in storage order, one fiber per run along the last axis."""
    if layer.kind == "linear":
        a2 = a.reshape(-1, a.shape[-1])
        return [(a2, w.T, a2)]
    if layer.kind in ("conv1d", "conv2d"):
        gemms = _im2col(a, w, layer.stride, layer.padding, layer.dilation, layer.groups)
        c_g = a.shape[1] // layer.groups
        out = []
        for g, (ga, gw) in enumerate(gemms):
            x_g = a[:, g * c_g:(g + 1) * c_g]
            out.append((ga, gw, x_g.reshape(-1, x_g.shape[-1])))
        return out
    if layer.kind == "matmul":
        lead = a.shape[:-2]
        return [(a[idx], w[idx], a[idx])
                for idx in itertools.product(*(range(s) for s in lead))]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def _delta_operands(x: np.ndarray, threshold: float) -> tuple[list[np.ndarray], list[int]]:
    """The thresholded delta operand of every frame of ``x[F, ...]``, element by element,
    and the number of changed elements per frame (frame 0: all of them)."""
    wide = np.int64 if x.dtype.kind in "iub" else np.float64
    frames = [x[f].astype(wide) for f in range(x.shape[0])]
    shape = frames[0].shape
    ref = frames[0].ravel().tolist()  # x_ref = x_0
    operands = [frames[0]]
    changed = [len(ref)]
    for xt in frames[1:]:
        values = xt.ravel().tolist()
        op = []
        n_changed = 0
        for i, v in enumerate(values):
            d = v - ref[i]
            if abs(d) > threshold:  # a change: the operand is d, the reference follows x
                op.append(d)
                ref[i] = v
                n_changed += 1
            else:
                op.append(0)
        operands.append(np.array(op, dtype=wide).reshape(shape))
        changed.append(n_changed)
    return operands, changed


def _all_zero(t: np.ndarray) -> bool:
    for v in t.ravel().tolist():
        if v != 0:
            return False
    return True


def _state(hw: HwConfig, numel: int, per_frame_gemms: int, m_dim: int, n_dim: int,
           changed: list[int], active_per_frame: list[int]) -> dict[str, int]:
    """State traffic of delta processing, where the state lives, and its cycles."""
    prec = hw.precision
    acc_elems = m_dim * n_dim  # accumulators of one GEMM
    out = dict.fromkeys(STATE_FIELDS, 0)
    frame_traffic = []
    for f, n_changed in enumerate(changed):
        if f == 0:
            ref_rd = 0
            ref_wr = math.ceil(numel * prec.a_bits / 8)
            acc_rd = 0
            acc_wr = math.ceil(per_frame_gemms * acc_elems * prec.out_bits / 8)
        else:
            ref_rd = math.ceil(numel * prec.a_bits / 8)
            ref_wr = math.ceil(n_changed * prec.a_bits / 8)
            acc_rd = acc_wr = math.ceil(active_per_frame[f] * acc_elems * prec.out_bits / 8)
        out["state_ref_read_bytes"] += ref_rd
        out["state_ref_write_bytes"] += ref_wr
        out["state_acc_read_bytes"] += acc_rd
        out["state_acc_write_bytes"] += acc_wr
        frame_traffic.append(ref_rd + ref_wr + acc_rd + acc_wr)
    size = (math.ceil(numel * prec.a_bits / 8)
            + math.ceil(per_frame_gemms * acc_elems * prec.out_bits / 8))
    d = hw.delta
    in_dram = d.state == "dram" or (d.state == "auto" and size > d.state_kib * 1024)
    out["state_in_dram"] = 1 if in_dram else 0
    bw = (hw.memory.dram.bandwidth_bytes_per_cycle if in_dram
          else hw.memory.glb.bandwidth_bytes_per_cycle)
    out["state_cycles"] = sum(_transfer_cycles(b, bw) for b in frame_traffic)
    return out


def simulate_layer(layer: Any, hw: HwConfig, *, with_skipped: bool = False) -> dict[str, int]:
    """Simulate every GEMM of ``layer`` (frame-major, then group / batch index) as one
    fold sequence: summed counts and traffic, one stall timeline, plus the delta state
    traffic and cycles. ``with_skipped`` adds ``delta_gemms_skipped``."""
    a = np.asarray(layer.a)
    w = np.asarray(layer.w)
    w_is_act = layer.kind == "matmul"
    delta = bool(hw.delta.enabled and layer.frames and not w_is_act)
    use_nm = bool(hw.structured.n and not w_is_act)
    if layer.frames:
        xs = [a[f] for f in range(a.shape[0])]
    else:
        xs = [a]
    changed: list[int] = []
    if delta:
        xs, changed = _delta_operands(a, hw.delta.threshold)
    frames = [(x, w[f] if (w_is_act and layer.frames) else w) for f, x in enumerate(xs)]
    per_frame = [_gemms_of_frame(layer, fa, fw) for fa, fw in frames]
    nms: list[_NM | None] = [None] * len(per_frame[0])
    if use_nm:
        n_keep, m_group = hw.structured.n, hw.structured.m
        nms = [_NM(n_keep, m_group, _nm_kept(gw, n_keep, m_group))
               for _, gw, _ in per_frame[0]]
    # weights that fit for all groups together are read once per layer
    layer_resident = False
    if not w_is_act:
        need = 0
        for (_, gw, _), nm in zip(per_frame[0], nms, strict=True):
            data, meta = _w_bytes(_compressed_w(gw, nm.kept) if nm else gw, hw, nm)
            need += data + meta
        layer_resident = need <= hw.memory.glb.w_kib * 1024
    skip_policy = hw.zero_policy in ("skip_a", "skip_both")
    gemms = []
    active_per_frame = []
    for f, frame_gemms in enumerate(per_frame):
        n_active = 0
        for p, (ga, gw, ua) in enumerate(frame_gemms):
            mode = "gemm"
            if layer_resident:
                mode = "first" if f == 0 else "layer"
            active = not (delta and f >= 1 and skip_policy and _all_zero(ga))
            n_active += active
            gemms.append(_Gemm(ga, gw, ua, mode, nms[p] if use_nm else None, active))
        active_per_frame.append(n_active)
    total = _run(gemms, hw)
    if delta:
        ga0, gw0, _ = per_frame[0][0]
        state = _state(hw, xs[0].size, len(per_frame[0]), ga0.shape[0], gw0.shape[1],
                       changed, active_per_frame)
        total.update(state)
        total["cycles"] += state["state_cycles"]
        total["stall_cycles"] = total["cycles"] - total["compute_cycles"]
    if not with_skipped:
        del total["delta_gemms_skipped"]
    return total
