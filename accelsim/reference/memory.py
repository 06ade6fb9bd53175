"""Reference memory model: tiles cut out and sized element by element; the stall
timeline stepped fold by fold (docs/memory-model.md)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from accelsim.errors import SimulationError
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


def _w_bytes(w_t: np.ndarray, hw: HwConfig, nm: _NM | None) -> tuple[int, int]:
    """(data bytes, metadata bytes) of a W tile ``w_t[K, N]`` (fibers are its columns).
    With N:M weights ``w_t`` is a block of the compressed W' and every slot is stored as
    its value plus a ceil(log2 m)-bit index, whatever ``formats.w`` says."""
    if nm is None:
        return _tile_bytes(w_t.T, hw.formats.w, hw.precision.w_bits)
    slots = w_t.shape[0] * w_t.shape[1]
    return (math.ceil(slots * hw.precision.w_bits / 8),
            math.ceil(slots * _index_bits(nm.m) / 8))


# --------------------------------------------------------------------------- mapping
#
# A mapping is a loop order over (m, n, k) at the DRAM -> GLB level and a GLB tile
# (Tm, Tn, Tk). Here the GLB is walked tile by tile: it holds one tile of A, one of W
# and one of the output at a time; a tile comes from DRAM when it differs from the one
# held, and an output tile left before all of its K tiles are done goes to DRAM as
# partial sums (and comes back when its next K tile starts).


def _flow_dims(flow: str, rows: int, cols: int) -> tuple[dict[str, int], str]:
    """(fold extent per dim, temporal dim): os rows M, cols N, time K; ws rows K, cols
    N, time M; is rows K, cols M, time N. The temporal dim has extent 1."""
    if flow == "os":
        return {"m": rows, "n": cols, "k": 1}, "k"
    if flow == "ws":
        return {"m": 1, "n": cols, "k": rows}, "m"
    return {"m": cols, "n": 1, "k": rows}, "n"


def _window(src: np.ndarray) -> set[int]:
    """The input elements a convolution's im2col block reads: ``src`` holds, per im2col
    position, 1 + the element's index in ``unique_a`` flattened (0: padding)."""
    return {v - 1 for v in src.ravel().tolist() if v > 0}


def _window_bytes(unique_a: np.ndarray, elements: set[int], fmt: Any,
                  bits: int) -> tuple[int, int]:
    """(data, meta) bytes of a set of input elements, each once, in storage order."""
    picked = sorted(elements)
    flat = unique_a.ravel().tolist()
    last = unique_a.shape[1]
    vals = [flat[i] for i in picked]
    fibers = len({i // last for i in picked})
    row = np.array(vals, dtype=unique_a.dtype).reshape(1, len(vals))
    d, m = tile_sizes(row, fmt.kind, bits, fmt.run_bits, fmt.index_bits, fmt.ptr_bits)
    if fmt.kind == "csr":  # one pointer per fiber of the window, plus one
        m += (fibers - 1) * fmt.ptr_bits
    return math.ceil(d / 8), math.ceil(m / 8)


def _a_glb_tile(a: np.ndarray, unique_a: np.ndarray, a_src: np.ndarray | None,
                m0: int, m1: int, k0: int, k1: int, fmt: Any, bits: int) -> tuple[int, int]:
    if a_src is None:
        return _tile_bytes(a[m0:m1, k0:k1], fmt, bits)
    return _window_bytes(unique_a, _window(a_src[m0:m1, k0:k1]), fmt, bits)


def _w_glb_tile(w: np.ndarray, hw: HwConfig, nm: _NM | None, n0: int, n1: int, k0: int,
                k1: int) -> tuple[int, int]:
    """W tile w[k0:k1, n0:n1]; with N:M weights the K range is all of K'."""
    if nm is not None:
        return _w_bytes(w[:, n0:n1], hw, nm)
    return _w_bytes(w[k0:k1, n0:n1], hw, nm)


def _ranges(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(total, lo + size)) for lo in range(0, total, size)]


def _layer_needs(gemms: list[Any], hw: HwConfig, tile: tuple[int, int, int],
                 a_bits: int) -> dict[str, int]:
    """Bytes each partition must hold for ``tile``, over every GEMM and tile of the
    layer: the largest A and W tile (x2 with double buffering when the operand has more
    than one tile in the GEMM), the live partial sums
    (the output tile when Tk < K; else ws: Tm x C, is: C x Tn; os: none)."""
    mult = 2 if hw.memory.glb.double_buffer else 1
    tm, tn, tk = tile
    big_a = big_w = 0
    for g in gemms:
        m_dim, k_dim = g.a.shape
        n_dim = g.w.shape[1]
        wk = _compressed_w(g.w, g.nm.kept) if g.nm is not None else g.w
        for m0, m1 in _ranges(m_dim, tm):
            for k0, k1 in _ranges(k_dim, tk):
                d, mb = _a_glb_tile(g.a, g.unique_a, g.a_src, m0, m1, k0, k1, hw.formats.a,
                                    a_bits)
                big_a = max(big_a, d + mb)
        for n0, n1 in _ranges(n_dim, tn):
            for k0, k1 in _ranges(k_dim, tk):
                d, mb = _w_glb_tile(wk, hw, g.nm, n0, n1, k0, k1)
                big_w = max(big_w, d + mb)
    g0 = gemms[0]
    m_dim, k_dim, n_dim = g0.a.shape[0], g0.a.shape[1], g0.w.shape[1]
    ob = hw.precision.out_bits
    cols = hw.array.cols * (hw.array.pe_simd.width if hw.dataflow in ("os", "ws") else 1)
    if tk < k_dim:
        live = math.ceil(min(tm, m_dim) * min(tn, n_dim) * ob / 8)
    elif hw.dataflow == "ws":
        live = math.ceil(min(tm, m_dim) * min(tn, n_dim, cols) * ob / 8)
    elif hw.dataflow == "is":
        live = math.ceil(min(tm, m_dim, cols) * min(tn, n_dim) * ob / 8)
    else:
        live = 0
    count_m, count_n = math.ceil(m_dim / tm), math.ceil(n_dim / tn)
    count_k = math.ceil(k_dim / tk)
    # a second buffer only for an operand with a next tile to fetch
    mult_a = mult if count_m * count_k > 1 else 1
    mult_w = mult if count_n * count_k > 1 else 1
    return {"a": big_a * mult_a, "w": big_w * mult_w, "out": live}


def choose_mapping(gemms: list[Any], hw: HwConfig, a_bits: int, state_glb: int,
                   name: str) -> tuple[str, tuple[int, int, int]]:
    """The layer's mapping: ``mapping.loop_order`` (auto: os mnk, ws nmk, is mnk) and
    ``mapping.glb_tile`` pinned, or auto: from the whole GEMM (M, N, K) halve, while an
    operand does not fit, a dim indexing it (array dims innermost first,
    then the temporal dim; the first whose halving lowers the need, else the first)."""
    flow = hw.dataflow
    rows = hw.array.rows
    cols = hw.array.cols * (hw.array.pe_simd.width if flow in ("os", "ws") else 1)
    unit, temporal = _flow_dims(flow, rows, cols)
    g0 = gemms[0]
    ext = {"m": g0.a.shape[0], "n": g0.w.shape[1], "k": g0.a.shape[1]}
    nm = g0.nm is not None
    glb = hw.memory.glb
    caps = {"a": glb.a_kib * 1024, "w": glb.w_kib * 1024, "out": glb.out_kib * 1024 - state_glb}
    cfg = hw.mapping
    order = {"os": "mnk", "ws": "nmk", "is": "mnk"}[flow] if cfg.loop_order == "auto" \
        else cfg.loop_order
    op_dims = {"a": "mk", "w": "nk", "out": "mn"}

    def first_bad(tile):
        need = _layer_needs(gemms, hw, tile, a_bits)
        if glb.shared:  # one pool: the largest need gives way first (a, w, out on ties)
            if need["a"] + need["w"] + need["out"] <= caps["a"] + caps["w"] + caps["out"]:
                return None
            big = max(need.values())
            op = next(o for o in ("a", "w", "out") if need[o] == big)
            return op, need[op]
        for op in ("a", "w", "out"):
            if need[op] > caps[op]:
                return op, need[op]
        return None

    def refuse(tile, op, need):
        key = {"a": "a_kib", "w": "w_kib", "out": "out_kib"}[op]
        return SimulationError(f"layer {name!r}: mapping {order} {list(tile)}: {op} needs "
                               f"{need} bytes, memory.glb.{key} holds {caps[op]:g}")

    if cfg.glb_tile != "auto":
        tile = []
        for d, v in zip("mnk", cfg.glb_tile, strict=True):
            v = ext[d] if v == "full" else min(v, ext[d])
            if v < ext[d] and v % unit[d]:
                raise SimulationError(f"layer {name!r}: T{d} = {v} not a multiple of "
                                      f"{unit[d]}")
            if v < ext[d] and nm and d == "k":
                raise SimulationError(f"layer {name!r}: Tk < K with N:M weights")
            tile.append(v)
        tile = tuple(tile)
        bad = first_bad(tile)
        if bad:
            raise refuse(tile, *bad)
        return order, tile
    tile = (ext["m"], ext["n"], ext["k"])  # the whole GEMM, then halving
    while True:
        bad = first_bad(tile)
        if bad is None:
            return order, tile
        op, need = bad
        cands = [d for d in order[::-1] if d in op_dims[op] and d != temporal]
        if temporal in op_dims[op]:
            cands.append(temporal)
        cands = [d for d in cands if tile["mnk".index(d)] > unit[d] and not (nm and d == "k")]
        if not cands:
            raise refuse(tile, op, need)
        trials = []
        for d in cands:
            i = "mnk".index(d)
            blocks = math.ceil(tile[i] / unit[d])
            new = list(tile)
            new[i] = ((blocks + 1) // 2) * unit[d]
            trials.append(tuple(new))
        pick = trials[0]
        for trial in trials:
            if _layer_needs(gemms, hw, trial, a_bits)[op] < need:
                pick = trial
                break
        tile = pick


def _memory_gemm(a: np.ndarray, w: np.ndarray, unique_a: np.ndarray, w_mode: str,
                 fold_cycles: dict[tuple[int, int], int], hw: HwConfig,
                 tot: dict[str, int], nm: _NM | None = None,
                 a_bits: int | None = None, state_glb: int = 0,
                 mapping: tuple[str, tuple[int, int, int]] | None = None,
                 a_src: np.ndarray | None = None) -> list[dict[str, int]]:
    """Traffic of one GEMM, added to ``tot``; returns its sub-folds in the mapping's
    order, each with its compute cycles and the bytes it reads and writes per level.

    ``unique_a`` is the 2-D view of the data A really holds (fibers = rows); ``a_src``
    (convolutions) maps every im2col position to 1 + its element's index in
    ``unique_a`` flattened, 0 for padding. ``w_mode`` is ``"layer"`` (W stays in the
    GLB from an earlier frame: nothing fetched) or ``"gemm"``.
    ``nm``: N:M weights; W tiles are blocks of the compressed W' (rows k').
    ``a_bits``: bits of an A element (default ``precision.a_bits``; a_bits + 1 for delta).
    ``mapping``: (loop order, (Tm, Tn, Tk)) from :func:`choose_mapping`.
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
    psum_elem_bits = prec.out_bits
    assert mapping is not None, "choose the layer's mapping first (choose_mapping)"
    order, (tm, tn, tk) = mapping

    # the folds in array order: (outer, inner, compute key, tiles, (dim -> block))
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
    out_dram = [0] * len(seq)  # each fold's final output bytes (to DRAM)

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

    # partial sums between a fold and the next of its K sweep stay in the GLB; final
    # outputs go to the GLB and to DRAM
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
            first, last = inner == 0, inner == n_inner - 1
            if not first:
                tot["glb_psum_read_bytes"] += psum_bytes
                folds[f]["glb_rd"] += psum_bytes
            if not last:
                tot["glb_psum_write_bytes"] += psum_bytes
                folds[f]["glb_wr"] += psum_bytes
            out_bytes = math.ceil(psum_elems * prec.a_bits / 8) if last else 0
        if out_bytes:
            tot["glb_out_write_bytes"] += out_bytes
            tot["dram_out_write_bytes"] += out_bytes
            folds[f]["glb_wr"] += out_bytes
            folds[f]["out"] = out_bytes  # dense; outputs/charge may swap the format
            out_dram[f] = out_bytes

    # the GLB tiles in loop order; each fold restricted to a tile and its time chunk
    unit, temporal = _flow_dims(flow, rows, cols)
    size = {"m": tm, "n": tn, "k": tk}
    extent = {"m": m_dim, "n": n_dim, "k": k_dim}
    span = extent[temporal]
    fold_dims = {"os": ("m", "n"), "ws": ("n", "k"), "is": ("m", "k")}[flow]
    count = {d: math.ceil(extent[d] / size[d]) for d in "mnk"}
    held = {"a": None, "w": None, "out": None}
    held_window: set[int] = set()  # convolutions: the input elements the GLB holds
    k_done: dict[tuple[int, int], int] = {}
    sub: list[dict[str, int]] = []
    iters = list(itertools.product(*(range(count[d]) for d in order)))
    for s, combo in enumerate(iters):
        idx = dict(zip(order, combo, strict=True))
        im, i_n, ik = idx["m"], idx["n"], idx["k"]
        m0, m1 = im * tm, min(m_dim, (im + 1) * tm)
        n0, n1 = i_n * tn, min(n_dim, (i_n + 1) * tn)
        k0, k1 = ik * tk, min(k_dim, (ik + 1) * tk)
        t0, t1 = {"m": (m0, m1), "n": (n0, n1), "k": (k0, k1)}[temporal]
        mine = []
        for f, (outer, inner, _, _, _) in enumerate(seq):
            inside = True
            for d, b in zip(fold_dims, (outer, inner), strict=True):
                if nm is not None and d == "k":
                    continue  # Tk is the whole K
                lo = b * unit[d]
                if not size[d] * idx[d] <= lo < size[d] * (idx[d] + 1):
                    inside = False
            if inside:
                mine.append(f)
        tile_first = len(sub)
        for f in mine:
            fold = folds[f]
            part = {}
            for key, value in (("compute", fold["compute"]), ("glb_rd", fold["glb_rd"]),
                               ("glb_wr", fold["glb_wr"]), ("dram_wr", out_dram[f]),
                               ("out", out_dram[f])):
                part[key] = value * t1 // span - value * t0 // span
            part["dram_rd"] = 0
            part["new_tile"] = int(f == mine[0])  # the first sub-fold of a GLB tile
            sub.append(part)
        # DRAM -> GLB: a tile that is not the one held is fetched
        if held["a"] != (im, ik):
            held["a"] = (im, ik)
            if a_src is None:
                ad, am = _a_glb_tile(a, unique_a, a_src, m0, m1, k0, k1, fa, a_bits)
            else:  # what the held window already has stays; the rest is fetched
                window = _window(a_src[m0:m1, k0:k1])
                ad, am = _window_bytes(unique_a, window - held_window, fa, a_bits)
                held_window = window
            tot["dram_a_read_bytes"] += ad
            tot["dram_a_read_meta_bytes"] += am
            tot["glb_a_write_bytes"] += ad
            tot["glb_a_write_meta_bytes"] += am
            sub[tile_first]["dram_rd"] += ad + am
        if held["w"] != (i_n, ik):
            held["w"] = (i_n, ik)
            if w_mode != "layer":
                wd, wm = _w_glb_tile(w, hw, nm, n0, n1, k0, k1)
                tot["dram_w_read_bytes"] += wd
                tot["dram_w_read_meta_bytes"] += wm
                tot["glb_w_write_bytes"] += wd
                tot["glb_w_write_meta_bytes"] += wm
                sub[tile_first]["dram_rd"] += wd + wm
        out_bytes = math.ceil((m1 - m0) * (n1 - n0) * psum_elem_bits / 8)
        if held["out"] != (im, i_n):
            held["out"] = (im, i_n)
            if k_done.get((im, i_n), 0) > 0:  # its partial sums come back from DRAM
                tot["dram_psum_read_bytes"] += out_bytes
                sub[tile_first]["dram_rd"] += out_bytes
        k_done[(im, i_n)] = k_done.get((im, i_n), 0) + 1
        nxt = iters[s + 1] if s + 1 < len(iters) else None
        leaving = nxt is None or (dict(zip(order, nxt, strict=True))["m"],
                                  dict(zip(order, nxt, strict=True))["n"]) != (im, i_n)
        if leaving and k_done[(im, i_n)] < count["k"]:  # unfinished: partial sums out
            tot["dram_psum_write_bytes"] += out_bytes
            sub[-1]["dram_wr"] += out_bytes
    return sub


def _transfer_cycles(nbytes: int, bw: float) -> int:
    if math.isinf(bw):
        return 0
    return math.ceil(nbytes / bw)


def _timeline(folds: list[dict[str, int]], hw: HwConfig) -> int:
    """Step the demand-driven stall timeline (docs/memory-model.md, "Stalls") over the
    layer's sub-folds; return its total cycles.

    Every compute and transfer is a job with the jobs it waits for; each resource (the
    array, the DRAM channel, the GLB port) serves its jobs one at a time in program
    order. The stepping repeatedly starts the head job of any resource whose waits have
    all finished, until every job has a finish time."""
    dram_bw = hw.memory.dram.bandwidth_bytes_per_cycle
    glb_bw = hw.memory.glb.bandwidth_bytes_per_cycle
    depth = 2 if hw.memory.glb.double_buffer else 1
    tile_of, first, last = [], [], []
    for f, fold in enumerate(folds):
        if fold["new_tile"]:
            first.append(f)
            last.append(f)
        assert first, "the first sub-fold starts a GLB tile"
        tile_of.append(len(first) - 1)
        last[-1] = f
    n_tiles = len(first)

    jobs: dict[tuple[str, int], tuple[int, list[tuple[str, int]]]] = {}
    queues: dict[str, list[tuple[str, int]]] = {"array": [], "dram": [], "glb": []}

    def job(resource, name, cycles, waits):
        jobs[name] = (cycles, waits)
        queues[resource].append(name)

    def fetch(t, waits):  # tile t's DRAM fetch lands in a free tile buffer
        job("dram", ("fetch", t), _transfer_cycles(folds[first[t]]["dram_rd"], dram_bw),
            waits)

    def glb_read(g, waits):  # sub-fold g's GLB -> array reads into a free register half
        job("glb", ("read", g), _transfer_cycles(folds[g]["glb_rd"], glb_bw), waits)

    for t in range(min(depth, n_tiles)):
        fetch(t, [])
    for g in range(min(depth, len(folds))):
        glb_read(g, [])
    for f, fold in enumerate(folds):
        job("array", ("compute", f), fold["compute"], [("read", f), ("fetch", tile_of[f])])
        job("dram", ("dram_write", f), _transfer_cycles(fold["dram_wr"], dram_bw),
            [("compute", f)])
        t = tile_of[f]
        if f == last[t] and t + depth < n_tiles:
            fetch(t + depth, [("compute", f)])
        job("glb", ("glb_write", f), _transfer_cycles(fold["glb_wr"], glb_bw),
            [("compute", f)])
        if f + depth < len(folds):
            glb_read(f + depth, [("compute", f)])

    done: dict[tuple[str, int], int] = {}
    free = dict.fromkeys(queues, 0)
    while any(queues.values()):
        progressed = False
        for resource, queue in queues.items():
            while queue and all(w in done for w in jobs[queue[0]][1]):
                name = queue.pop(0)
                cycles, waits = jobs[name]
                ready = max((done[w] for w in waits), default=0)
                if resource != "array" and cycles == 0:
                    done[name] = ready  # nothing to move: it occupies no resource
                else:
                    done[name] = max(ready, free[resource]) + cycles
                    free[resource] = done[name]
                progressed = True
        assert progressed, "the timeline's waits form a cycle"
    return max(done.values(), default=0)


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
