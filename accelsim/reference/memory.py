"""Reference memory model: tiles cut out and sized element by element; the stall
timeline stepped fold by fold (docs/memory-model.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from accelsim.io.hwconfig import HwConfig
from accelsim.reference.nm import _NM, _compressed_w, _index_bits

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
    return {"compute": compute, "glb_rd": 0, "dram_rd": 0, "glb_wr": 0, "dram_wr": 0,
            "out": 0}


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
                 tot: dict[str, int], nm: _NM | None = None,
                 a_bits: int | None = None, state_glb: int = 0) -> list[dict[str, int]]:
    """Traffic of one GEMM, added to ``tot``; returns its folds in memory loop order,
    each with its compute cycles and the bytes it reads and writes per level.

    ``unique_a`` is the 2-D view of the data A really holds (fibers = rows);
    ``w_mode`` is ``"layer"`` (W is resident for the whole layer and already read),
    ``"first"`` (W is resident for the whole layer; this GEMM reads it) or ``"gemm"``.
    ``nm``: N:M weights; W tiles are blocks of the compressed W' (rows k').
    ``a_bits``: bits of an A element (default ``precision.a_bits``; a_bits + 1 for delta).
    ``state_glb``: bytes of the out partition that delta state takes (``state: glb``).
    """
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    if nm is not None:
        w = _compressed_w(w, nm.kept)  # from here on W is W'[K', N]
    k_rows = w.shape[0]  # K (K' with N:M): the W rows tiles are cut from
    rows = hw.array.rows
    # SIMD PEs: a tile spans lanes x cols output columns on os and ws
    cols = hw.array.cols * (hw.array.pe_simd.width if hw.dataflow in ("os", "ws") else 1)
    flow = hw.dataflow
    prec = hw.precision
    a_bits = prec.a_bits if a_bits is None else a_bits
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
        ad, am = _tile_bytes(a_t, fa, a_bits)
        wd, wm = _w_bytes(w_t, hw, nm)
        tot["glb_a_read_bytes"] += ad
        tot["glb_a_read_meta_bytes"] += am
        tot["glb_w_read_bytes"] += wd
        tot["glb_w_read_meta_bytes"] += wm
        folds[f]["glb_rd"] += ad + am + wd + wm
        # PE to PE: a tile travels the PEs that share it, one hop after the first PE
        if flow == "os":  # A rows along the fold's columns, W columns down its rows
            rows_on, cols_on = a_t.shape[0], w_t.shape[1]
            a_hops, w_hops = cols_on - 1, rows_on - 1
        elif flow == "ws":  # W tile on the PEs; A along the columns, psums down rows
            rows_on, cols_on = w_t.shape[0], w_t.shape[1]
            a_hops, w_hops = cols_on - 1, rows_on - 1
        else:  # is: A tile preloaded down the columns, W along them, psums down rows
            rows_on, cols_on = a_t.shape[1], a_t.shape[0]
            a_hops, w_hops = rows_on - 1, cols_on - 1
        tot["pe_hop_a_bytes"] += (ad + am) * a_hops
        tot["pe_hop_w_bytes"] += (wd + wm) * w_hops
        if flow != "os":
            steps = m_dim if flow == "ws" else n_dim  # time steps of the fold
            for _ in range(steps):
                for _ in range(cols_on):
                    tot["pe_hop_psum_bytes"] += (rows_on - 1) * math.ceil(
                        prec.out_bits / 8)

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
            spill = psum_bytes > glb.out_kib * 1024 - state_glb
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
            folds[f]["out"] = out_bytes  # dense; outputs/charge may swap the format
    # DRAM -> GLB: passes over the unique operands
    every = list(range(len(seq)))
    by_outer: dict[int, list[int]] = {}
    for f, (outer, _, _, _, _) in enumerate(seq):
        by_outer.setdefault(outer, []).append(f)
    outer_passes = [by_outer[o] for o in sorted(by_outer)]

    ad, am = _tile_bytes(unique_a, fa, a_bits)
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


def _charge_outputs(folds: list[dict[str, int]], frame_of: list[int],
                    out_write: tuple[list[int], list[int]], tot: dict[str, int]) -> None:
    """Write each frame's outputs in the consumer's format (docs/memory-model.md, "Output
    writes"): frame t's ``out_write`` data and metadata bytes replace the dense bytes of
    its folds, split in proportion to them in fold order, the i-th fold's share being
    floor(T*c_i/D) - floor(T*c_(i-1)/D) with c the running sum of dense bytes."""
    data, meta = out_write
    for t in range(len(data)):
        mine = [f for f in range(len(folds)) if frame_of[f] == t]
        dense = sum(folds[f]["out"] for f in mine)
        if dense == 0:
            continue  # the frame writes nothing (its GEMMs were skipped)
        run = 0
        got_d = got_m = 0
        for f in mine:
            fold = folds[f]
            run += fold["out"]
            upto_d, upto_m = data[t] * run // dense, meta[t] * run // dense
            share_d, share_m = upto_d - got_d, upto_m - got_m
            got_d, got_m = upto_d, upto_m
            for level in ("glb", "dram"):
                tot[f"{level}_out_write_bytes"] += share_d - fold["out"]
                tot[f"{level}_out_write_meta_bytes"] += share_m
                fold[f"{level}_wr"] += share_d + share_m - fold["out"]
