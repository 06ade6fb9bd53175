"""Memory hierarchy: compressed tile sizes, traffic per level and operand, and stalls.

Implements ``docs/memory-model.md`` exactly, in bulk over folds; the reference model
implements the same specification fold by fold. Tiles are described in *fiber layout*:
A as [M, K] (fibers are rows) and W transposed, [N, K] (fibers are W's columns), so a
tile is a block of fibers x a K range, flattened row-major.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import FormatConfig, HwConfig
from accelsim.io.trace import Layer
from accelsim.model.dataflow import Plan, make_plan
from accelsim.model.kernels import (
    block_nnz_rle,
    range_nnz_rle,
    timeline_kernel,
    uniform_bounds,
)
from accelsim.model.mapping import (
    _bytes,
    _extents,
    a_fetches,
    choose_mapping,
    price_mapping,
    psum_tiles,
    share,
    tile_stats,
    visit_order,
    w_resident_layer,
)
from accelsim.model.outwrite import OutWrite, charge
from accelsim.model.sparsity import NMStructure

#: traffic columns in report order
TRAFFIC_KEYS = (
    "dram_a_read_bytes", "dram_a_read_meta_bytes", "dram_w_read_bytes",
    "dram_w_read_meta_bytes", "dram_psum_read_bytes", "dram_psum_write_bytes",
    "dram_out_write_bytes", "dram_out_write_meta_bytes",
    "glb_a_write_bytes", "glb_a_write_meta_bytes", "glb_w_write_bytes",
    "glb_w_write_meta_bytes",
    "glb_a_read_bytes", "glb_a_read_meta_bytes", "glb_w_read_bytes", "glb_w_read_meta_bytes",
    "glb_psum_read_bytes", "glb_psum_write_bytes", "glb_out_write_bytes",
    "glb_out_write_meta_bytes",
    "rf_a_read_bytes", "rf_w_read_bytes", "rf_a_write_bytes", "rf_w_write_bytes",
    "rf_out_read_bytes", "rf_out_write_bytes",
)


def format_bits(fmt: FormatConfig, bits: int, nnz, numel, fibers, entries):
    """(data bits, metadata bits) of tiles, elementwise over arrays of tile statistics.
    csr/coo widths must be resolved (:func:`resolve_formats`), not ``auto``."""
    kind = fmt.kind
    if kind in ("csr", "coo") and "auto" in (fmt.index_bits, fmt.ptr_bits):
        raise ValueError("csr/coo widths still 'auto': resolve them per layer first "
                         "(accelsim.model.memory.resolve_formats)")
    nnz = np.asarray(nnz, np.int64)
    numel = np.asarray(numel, np.int64)
    if kind == "dense":
        return numel * bits, np.zeros_like(numel)
    if kind == "bitmask":
        return nnz * bits, numel
    if kind == "rle":
        entries = np.asarray(entries, np.int64)
        return entries * bits, entries * fmt.run_bits
    if kind == "csr":
        return nnz * bits, nnz * fmt.index_bits + (np.asarray(fibers, np.int64) + 1) * fmt.ptr_bits
    if kind == "coo":
        return nnz * bits, nnz * (2 * fmt.index_bits)
    raise ValueError(f"unknown format {kind!r}")


def bits_for(values: int) -> int:
    """Bits that tell ``values`` values apart: ceil(log2(values)), at least 1."""
    return max(1, (int(values) - 1).bit_length())


def delta_on(layer: Layer, hw: HwConfig) -> bool:
    """Temporal delta applies: frames, and a weight as the right operand."""
    return bool(hw.delta.enabled and layer.frames and layer.kind != "matmul")


def a_operand_bits(layer: Layer, hw: HwConfig) -> int:
    """Bits of the A operand as stored, moved and multiplied: ``a_bits``, or
    ``a_bits + 1`` where delta applies (the difference of two ``a_bits`` values needs
    one bit more: int8 deltas span -255..255); every frame of such a layer, frame 0
    included, uses the wide format."""
    return hw.precision.a_bits + (1 if delta_on(layer, hw) else 0)


def format_tiles(layer: Layer, hw: HwConfig, m: int, k: int, n: int,
                 nm: NMStructure | None) -> dict[str, list[tuple[str, int, int]]]:
    """Per operand, the kinds of tile its format must address, as (what, fibers, fiber
    length) of the largest tile of the kind (docs/memory-model.md, "Index widths"): the
    unique operand DRAM holds and the tile a fold reads from the GLB."""
    plan = make_plan(hw)
    r, c = plan.rows, plan.cols
    x = np.shape(layer.a)[1:] if layer.frames else np.shape(layer.a)
    if layer.kind in ("conv1d", "conv2d", "conv3d"):
        ua = (x[0] * (x[1] // layer.groups) * math.prod(x[2:-1]), x[-1])
    else:
        ua = (m, k)
    kk = nm.k_kept if nm is not None else k
    if hw.dataflow == "os":
        fa, fw = (min(r, m), k), (min(c, n), k)
    elif hw.dataflow == "ws":
        fw = (min(c, n), min(r, kk))
        if nm is None:
            fa = (m, min(r, k))
        else:  # A spans the K groups of the fold's compressed rows
            rows = uniform_bounds(kk, r)
            g0, g1 = rows[:, 0] // nm.n, (rows[:, 1] - 1) // nm.n
            fa = (m, int((np.minimum(k, (g1 + 1) * nm.m) - g0 * nm.m).max()))
    else:
        fa, fw = (min(c, m), min(r, k)), (n, min(r, k))
    out = {"a": [("the unique A operand", *ua), ("a fold's A tile", *fa)],
           "w": [("the unique W operand", n, k), ("a fold's W tile", *fw)]}
    if nm is not None:  # N:M weights carry their own ceil(log2 m)-bit indices
        del out["w"]
    return out


def _needed(kind: str, fibers: int, length: int) -> tuple[int, int]:
    """(index bits, pointer bits) a tile of ``fibers`` fibers of ``length`` needs: csr
    indexes a position in its fiber and points at up to fibers x length nonzeros; coo
    stores (fiber, position) pairs, both coordinates at the index width."""
    if kind == "coo":
        return max(bits_for(fibers), bits_for(length)), 1
    return bits_for(length), bits_for(fibers * length + 1)


def resolve_formats(layer: Layer, hw: HwConfig, m: int, k: int, n: int,
                    nm: NMStructure | None = None) -> HwConfig:
    """``hw`` with every ``auto`` index/pointer width of the operand formats replaced by
    the width the layer needs (the largest over the operand's tile kinds); a csr/coo
    width set too narrow for one of them is a one-line :class:`SimulationError`."""
    fmts = {"a": hw.formats.a, "w": hw.formats.w}
    tiles = format_tiles(layer, hw, m, k, n, nm)
    for op, fmt in fmts.items():
        need = [(what, fib, ln, *_needed(fmt.kind, fib, ln))
                for what, fib, ln in tiles.get(op, [])]
        new = {}
        for key, pos in (("index_bits", 3), ("ptr_bits", 4)):
            want = max((t[pos] for t in need), default=1)
            have = getattr(fmt, key)
            if have == "auto":
                new[key] = want
                continue
            if fmt.kind not in ("csr", "coo") or (key == "ptr_bits" and fmt.kind == "coo"):
                continue
            for what, fib, ln, ib, pb in need:
                bad = ib if key == "index_bits" else pb
                if have < bad:
                    if key == "ptr_bits":
                        why = f"count the up to {fib * ln} nonzeros of {what} ({fib}x{ln})"
                    elif fmt.kind == "coo":
                        why = (f"address the {fib} fibers and {ln} positions of {what}")
                    else:
                        why = f"address the {ln} positions of a fiber of {what}"
                    raise SimulationError(
                        f"layer {layer.name!r}: {hw.name}: formats.{op}.{key}: {have} bits "
                        f"cannot {why} ({fmt.kind} needs {bad}; set {key}: {bad} or auto)")
        if new:
            fmts[op] = dataclasses.replace(fmt, **new)
    if fmts["a"] is hw.formats.a and fmts["w"] is hw.formats.w:
        return hw
    return dataclasses.replace(hw, formats=dataclasses.replace(hw.formats, **fmts))


def tile_bytes(mask: np.ndarray, bx: int, by: int, fmt: FormatConfig,
               bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Compressed (data, metadata) bytes of every bx x by tile of a [B, X, Y] fiber-layout
    mask: int64 arrays [B, ceil(X/bx), ceil(Y/by)]."""
    nb, nx, ny = mask.shape
    rows = _extents(nx, bx)[:, None]
    cols = _extents(ny, by)[None, :]
    numel = np.broadcast_to(rows * cols, (nb,) + (rows.size, cols.size))
    if fmt.kind == "dense":
        nnz = entries = numel
    else:
        nnz, entries = block_nnz_rle(mask, bx, by, fmt.run_bits if fmt.kind == "rle" else 0)
    d, m = format_bits(fmt, bits, nnz, numel, rows, entries)
    return _bytes(d), _bytes(m)


def tile_sizes(mask2d: np.ndarray, kind: str, bits: int, run_bits: int = 4,
               index_bits: int = 8, ptr_bits: int = 16) -> tuple[int, int]:
    """(data bits, metadata bits) of one tile, flattened row-major, fibers = rows."""
    m = np.asarray(mask2d) != 0
    fmt = FormatConfig(kind=kind, run_bits=run_bits, index_bits=index_bits,
                       ptr_bits=ptr_bits)
    nnz, entries = block_nnz_rle(m[None], m.shape[0], m.shape[1], run_bits)
    d, mb = format_bits(fmt, bits, nnz[0, 0, 0], m.size, m.shape[0], entries[0, 0, 0])
    return int(d), int(mb)


def _unique_a_mask(layer: Layer, az: np.ndarray, a_mask: np.ndarray | None) -> np.ndarray:
    """The A operand as DRAM holds it, in fiber layout [F*P, rows, last]: the GEMM's A, or
    for convolutions the input (``a_mask``, same shape as the layer's input) per frame and
    group, rows = every index but the last."""
    if layer.kind not in ("conv1d", "conv2d", "conv3d"):
        return az.reshape((-1,) + az.shape[-2:])
    x = (np.asarray(layer.a) != 0) if a_mask is None else a_mask
    if not layer.frames:
        x = x[None]
    nf, nb, c = x.shape[:3]
    g = layer.groups
    sp = x.shape[3:]
    x = x.reshape((nf, nb, g, c // g) + sp)
    x = np.moveaxis(x, 2, 1)  # [F, G, N, C/G, *sp]
    return np.ascontiguousarray(x).reshape(nf * g, -1, sp[-1])


#: operand bytes forwarded from PE to PE inside the array (docs/energy.md)
HOP_KEYS = ("pe_hop_a_bytes", "pe_hop_w_bytes", "pe_hop_psum_bytes")
#: PE-local buffers of the non-systolic sync modes (docs/timing.md)
PE_BUF_KEYS = ("pe_buf_read_bytes", "pe_buf_write_bytes", "acc_buf_read_bytes",
               "acc_buf_write_bytes")


def pe_buffer_counts(hw: HwConfig, performed: int, gated: int) -> dict[str, int]:
    """Bytes through the PE-local buffers: a decoupled PE writes every slot-taking pair's
    streamed operands into its buffer and reads those of every performed pair; an
    accumulator-buffered PE (ws/is rows that drift) reads and writes one partial sum per
    performed MAC."""
    out = dict.fromkeys(PE_BUF_KEYS, 0)
    if hw.pe_buffered():  # a pair's own streamed operands (a SIMD lane's share)
        step = -(-hw.stream_bits(lanes=1) // 8)
        out["pe_buf_write_bytes"] = (performed + gated) * step
        out["pe_buf_read_bytes"] = performed * step
    if hw.acc_buffered():
        ob = -(-hw.precision.out_bits // 8)
        out["acc_buf_read_bytes"] = out["acc_buf_write_bytes"] = performed * ob
    return out


def _hops(df: str, grid, on, a_b, w_b, m: int, n: int, k_rows: int, r: int, c: int,
          out_bytes: int) -> dict[str, int]:
    """Bytes moved PE to PE: each fold's A and W tiles travel the PEs of the row or column
    that shares them (one hop per PE after the first); in ws and is each partial sum
    moves down the fold's active rows every time step."""
    if df == "os":  # outer M tiles (rows), inner N tiles (cols); A along rows, W down cols
        rows, cols = _extents(m, r)[:, None], _extents(n, c)[None, :]
        a_len, w_len, psum = cols, rows, None
    elif df == "ws":  # outer N tiles (cols), inner K tiles (rows)
        cols, rows = _extents(n, c)[:, None], _extents(k_rows, r)[None, :]
        a_len, w_len, psum = cols, rows, m * cols * (rows - 1)
    else:  # is: outer M tiles (cols), inner K tiles (rows); A preloaded down columns
        cols, rows = _extents(m, c)[:, None], _extents(k_rows, r)[None, :]
        a_len, w_len, psum = rows, cols, n * cols * (rows - 1)
    out = {"pe_hop_a_bytes": int((a_b * (a_len - 1)).sum()),
           "pe_hop_w_bytes": int((w_b * (w_len - 1)).sum()), "pe_hop_psum_bytes": 0}
    if psum is not None:
        out["pe_hop_psum_bytes"] = int(np.where(on, np.broadcast_to(psum, grid), 0).sum()
                                       ) * out_bytes
    return out


#: delta state columns (docs/delta-and-nm.md)
STATE_KEYS = ("state_ref_read_bytes", "state_ref_write_bytes", "state_acc_read_bytes",
              "state_acc_write_bytes", "state_enc_read_bytes", "state_in_dram",
              "state_cycles", "state_stall_cycles")
#: the state columns that are bytes moved
STATE_BYTE_KEYS = STATE_KEYS[:5]


@dataclass
class MemoryResult:
    counts: dict[str, int]
    compute_cycles: int
    stall_cycles: int
    cycles: int
    #: the GLB mapping (loop order, Tm, Tn, Tk); None on the GEMV engine
    mapping: tuple | None = None


def _ceil_div(x: np.ndarray, bw: float) -> np.ndarray:
    if math.isinf(bw):
        return np.zeros(np.shape(x), np.int64)
    return np.ceil(np.asarray(x) / bw).astype(np.int64)


def _nm_bytes(slots, hw: HwConfig, nm: NMStructure):
    """(data, metadata) bytes of N:M weight tiles holding ``slots`` kept slots."""
    slots = np.asarray(slots, np.int64)
    return _bytes(slots * hw.precision.w_bits), _bytes(slots * nm.index_bits)


def state_size(layer: Layer, hw: HwConfig, npf: int, m: int, n: int) -> int:
    """Bytes of one frame's delta state: the reference activations (``a_bits``) and the
    accumulators of every GEMM of a frame (``out_bits``)."""
    prec = hw.precision
    numel = np.asarray(layer.a)[0].size
    return -(-numel * prec.a_bits // 8) + -(-npf * m * n * prec.out_bits // 8)


def state_glb_bytes(layer: Layer, hw: HwConfig, npf: int, m: int, n: int,
                    changed: np.ndarray | None) -> int:
    """GLB bytes the delta state takes from the ``out`` partition under ``state: glb``
    (0 otherwise); a state that leaves the partition less than one array tile of partial
    sums is a one-line :class:`SimulationError`."""
    if changed is None or hw.delta.state != "glb":
        return 0
    size = state_size(layer, hw, npf, m, n)
    glb, ar = hw.memory.glb, hw.array
    tile = ar.rows * ar.cols * -(-hw.precision.out_bits // 8)
    if glb.out_kib * 1024 - size < tile:
        raise SimulationError(
            f"layer {layer.name!r}: {hw.name}: delta.state: glb: the {size}-byte delta "
            f"state does not fit memory.glb.out_kib = {glb.out_kib:g} KiB next to one "
            f"{ar.rows}x{ar.cols} tile of partial sums ({tile} bytes); use state: auto or "
            f"dram, or a larger out_kib")
    return size


def _delta_state(layer: Layer, hw: HwConfig, az: np.ndarray, n: int,
                 changed: np.ndarray | None,
                 fold_cycles: np.ndarray | None = None) -> dict[str, int]:
    """Delta state traffic and cycles (docs/delta-and-nm.md). ``az`` [F, P, M, K] is the
    lowered delta operand's mask: an output row is *reached* in frame t >= 1 when its row
    of A (its receptive field) holds a change; only reached accumulators move.
    ``fold_cycles`` [F, P, ...] gives each frame's compute, under which double-buffered
    state traffic hides."""
    out = dict.fromkeys(STATE_KEYS, 0)
    if changed is None:
        return out
    prec = hw.precision
    nf, npf, m = az.shape[:3]
    numel = np.asarray(layer.a).size // nf
    ref_full = -(-numel * prec.a_bits // 8)
    reached = az.any(axis=-1).sum(axis=(1, 2), dtype=np.int64)  # [F] output rows
    acc_write = _bytes(reached * n * prec.out_bits)
    acc_write[0] = -(-npf * m * n * prec.out_bits // 8)  # frame 0 sets every accumulator
    acc_read = acc_write.copy()
    acc_read[0] = 0
    ref_read = np.full(nf, ref_full, np.int64)
    ref_read[0] = 0
    enc_read = ref_read.copy()  # the encoder reads the dense input from DRAM
    ref_write = _bytes(changed * prec.a_bits)
    d = hw.delta
    in_dram = d.state == "dram" or (d.state == "auto" and
                                    state_size(layer, hw, npf, m, n) > d.state_kib * 1024)
    per_frame = ref_read + ref_write + acc_read + acc_write
    dram_f = enc_read + (per_frame if in_dram else 0)
    glb_f = 0 if in_dram else per_frame
    cyc = np.maximum(_ceil_div(dram_f, hw.memory.dram.bandwidth_bytes_per_cycle),
                     _ceil_div(glb_f, hw.memory.glb.bandwidth_bytes_per_cycle))
    stall = state_exposed(cyc, fold_cycles, hw)
    out.update(state_ref_read_bytes=int(ref_read.sum()),
               state_ref_write_bytes=int(ref_write.sum()),
               state_acc_read_bytes=int(acc_read.sum()),
               state_acc_write_bytes=int(acc_write.sum()),
               state_enc_read_bytes=int(enc_read.sum()), state_in_dram=int(in_dram),
               state_cycles=int(cyc.sum()), state_stall_cycles=stall)
    return out


def state_exposed(frame_state_cycles: np.ndarray, fold_cycles: np.ndarray | None,
                  hw: HwConfig) -> int:
    """Cycles of state traffic not hidden under compute: with double buffering a frame's
    state moves while that frame computes, ``max(0, state_t - compute_t)`` per frame;
    without it all of it is exposed."""
    cyc = np.asarray(frame_state_cycles, np.int64)
    if not hw.memory.glb.double_buffer or fold_cycles is None:
        return int(cyc.sum())
    compute = fold_cycles.reshape(fold_cycles.shape[0], -1).sum(axis=1, dtype=np.int64)
    return int(np.maximum(cyc - compute, 0).sum())


def simulate_memory(layer: Layer, az: np.ndarray, wz: np.ndarray, hw: HwConfig, plan: Plan,
                    fold_cycles: np.ndarray, performed: int, gated: int, *,
                    a_mask: np.ndarray | None = None, nm: NMStructure | None = None,
                    active: np.ndarray | None = None,
                    changed: np.ndarray | None = None,
                    out_write: OutWrite | None = None) -> MemoryResult:
    """Traffic and stalls of one layer. ``az`` [F, P, M, K] and ``wz`` [Fw, P, K, N] are
    nonzero masks; ``fold_cycles`` [F, P, row folds, col folds] from the engine;
    ``a_mask`` the (delta) operand's mask in the layer input's shape; ``nm`` the N:M kept
    slots; ``active`` [F, P] False for GEMMs skipped whole; ``changed`` per-frame changed
    element counts when delta processing applies; ``out_write`` the output's format
    (:mod:`accelsim.model.outwrite`; None: dense)."""
    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    r, c = plan.rows, plan.cols
    prec = hw.precision
    fa, fw = hw.formats.a, hw.formats.w
    glb = hw.memory.glb
    out_cap = glb.out_kib * 1024
    out_cap -= state_glb_bytes(layer, hw, npf, m, n, changed)  # state: glb shares out
    a_bits = a_operand_bits(layer, hw)  # delta operands are a_bits + 1 wide
    wt = np.swapaxes(wz, -1, -2)  # [Fw, P, N, K]
    wt3 = wt.reshape((-1,) + wt.shape[-2:])
    az3 = az.reshape((-1,) + az.shape[-2:])
    fwn = wz.shape[0]
    df = plan.dataflow
    if active is None:
        active = np.ones((nf, npf), bool)
    kk = nm.k_kept if nm is not None else k

    # --- per-fold tiles in memory order [F, P, n_outer, n_inner]
    if df == "os":  # i over M (outer), j over N (inner)
        no, ni = -(-m // r), -(-n // c)
        ad, am = tile_bytes(az3, r, k, fa, a_bits)  # [B, no, 1]
        if nm is None:
            wd, wm = tile_bytes(wt3, c, k, fw, prec.w_bits)  # [Bw, ni, 1]
        else:
            wd, wm = _nm_bytes(kk * _extents(n, c)[None, :, None], hw, nm)
        a_d, a_m = ad.reshape(nf, npf, no, 1), am.reshape(nf, npf, no, 1)
        wshape = (fwn, npf, 1, ni) if nm is None else (1, 1, 1, ni)  # N:M: same per GEMM
        w_d, w_m = wd.reshape(wshape), wm.reshape(wshape)
        order_cycles = fold_cycles
    elif df == "ws":  # j over N (outer), kt over K (inner)
        no, ni = -(-n // c), -(-kk // r)
        if nm is None:
            ad, am = tile_bytes(az3, m, r, fa, a_bits)  # [B, 1, ni]
            wd, wm = tile_bytes(wt3, c, r, fw, prec.w_bits)  # [Bw, no, ni]
        else:
            rows = uniform_bounds(kk, r)  # compressed rows of each K tile
            g0, g1 = rows[:, 0] // nm.n, (rows[:, 1] - 1) // nm.n
            kr = np.stack([g0 * nm.m, np.minimum(k, (g1 + 1) * nm.m)], axis=1)
            nnz, ent = range_nnz_rle(az3, np.array([[0, m]]), kr,
                                     fa.run_bits if fa.kind == "rle" else 0)
            numel = np.broadcast_to((m * (kr[:, 1] - kr[:, 0]))[None, None, :], nnz.shape)
            if fa.kind == "dense":
                nnz = ent = np.broadcast_to(numel, nnz.shape)
            dbits, mbits = format_bits(fa, a_bits, nnz, numel, m, ent)
            ad, am = _bytes(dbits), _bytes(mbits)
            wd, wm = _nm_bytes(_extents(n, c)[:, None] * (rows[:, 1] - rows[:, 0])[None, :],
                               hw, nm)
            wd, wm = wd[None], wm[None]
        a_d, a_m = ad.reshape(nf, npf, 1, ni), am.reshape(nf, npf, 1, ni)
        w_d = wd.reshape(-1, npf if nm is None else 1, no, ni)
        w_m = wm.reshape(-1, npf if nm is None else 1, no, ni)
        order_cycles = np.swapaxes(fold_cycles, -1, -2)
    else:  # "is": i over M (outer), kt over K (inner)
        no, ni = -(-m // c), -(-k // r)
        ad, am = tile_bytes(az3, c, r, fa, a_bits)  # [B, no, ni]
        wd, wm = tile_bytes(wt3, n, r, fw, prec.w_bits)  # [Bw, 1, ni]
        a_d, a_m = ad.reshape(nf, npf, no, ni), am.reshape(nf, npf, no, ni)
        w_d, w_m = wd.reshape(fwn, npf, 1, ni), wm.reshape(fwn, npf, 1, ni)
        order_cycles = np.swapaxes(fold_cycles, -1, -2)
    grid = (nf, npf, no, ni)
    on = active[:, :, None, None]
    a_d, a_m, w_d, w_m = (np.where(on, np.broadcast_to(x, grid), 0)
                          for x in (a_d, a_m, w_d, w_m))

    # --- partial sums and outputs
    zeros = np.zeros(grid, np.int64)
    if df == "os":
        elems = _extents(m, r)[:, None] * _extents(n, c)[None, :]
        out_w = np.where(on, _bytes(elems * prec.a_bits), 0)
        ps_r = ps_w = zeros
    else:
        blk = (m * _extents(n, c)) if df == "ws" else (_extents(m, c) * n)  # [no]
        ps_bytes = _bytes(blk * prec.out_bits)[:, None]
        kt = np.arange(ni)[None, :]
        ps_r1 = np.where(kt > 0, ps_bytes, 0)
        ps_w1 = np.where(kt < ni - 1, ps_bytes, 0)
        ps_r = np.where(on, ps_r1, 0)
        ps_w = np.where(on, ps_w1, 0)
        out_w = np.where(on, np.where(kt == ni - 1, _bytes(blk * prec.a_bits)[:, None], 0), 0)
    out_w = np.ascontiguousarray(np.broadcast_to(out_w, grid), dtype=np.int64)

    # --- mapping at the GLB: DRAM traffic by the reuse rule (accelsim.model.mapping)
    stats = tile_stats(layer, az, wz, hw, rows=r, cols=c, a_bits=a_bits, a_mask=a_mask,
                       nm=nm, active=active, out_cap=out_cap)
    mp = choose_mapping(stats, hw, int(np.where(active[:, :, None, None], fold_cycles,
                                                0).sum()))
    priced = price_mapping(stats, mp)

    # --- outputs in the consumer's format (accelsim.model.outwrite), split per frame in
    # proportion to the dense bytes of the sub-folds, in the timeline's order
    visit = visit_order(stats, mp)
    out_sub = share(out_w, visit)
    out_d, out_m = charge(out_sub, out_write)

    # --- register files: a gated pair gates its operand reads (docs/energy.md)
    ab, wb, ob = -(-a_bits // 8), -(-prec.w_bits // 8), -(-prec.out_bits // 8)

    counts = {
        **{key: priced[key] for key in (
            "dram_a_read_bytes", "dram_a_read_meta_bytes", "dram_w_read_bytes",
            "dram_w_read_meta_bytes", "dram_psum_read_bytes", "dram_psum_write_bytes")},
        "dram_out_write_bytes": int(out_d.sum()), "dram_out_write_meta_bytes": int(out_m.sum()),
        "glb_a_read_bytes": int(a_d.sum()), "glb_a_read_meta_bytes": int(a_m.sum()),
        "glb_w_read_bytes": int(w_d.sum()), "glb_w_read_meta_bytes": int(w_m.sum()),
        "glb_psum_read_bytes": int(ps_r.sum()), "glb_psum_write_bytes": int(ps_w.sum()),
        "glb_out_write_bytes": int(out_d.sum()), "glb_out_write_meta_bytes": int(out_m.sum()),
        "rf_a_read_bytes": performed * ab, "rf_w_read_bytes": performed * wb,
        "rf_out_read_bytes": performed * ob, "rf_out_write_bytes": performed * ob,
    }
    counts["glb_a_write_bytes"] = counts["dram_a_read_bytes"]
    counts["glb_a_write_meta_bytes"] = counts["dram_a_read_meta_bytes"]
    counts["glb_w_write_bytes"] = counts["dram_w_read_bytes"]
    counts["glb_w_write_meta_bytes"] = counts["dram_w_read_meta_bytes"]
    counts["rf_a_write_bytes"] = counts["glb_a_read_bytes"]
    counts["rf_w_write_bytes"] = counts["glb_w_read_bytes"]
    counts = {key: counts[key] for key in TRAFFIC_KEYS}
    counts.update(_hops(df, grid, on, a_d + a_m, w_d + w_m, m, n, kk, r, c, ob))
    counts.update(pe_buffer_counts(hw, performed, gated))
    state = _delta_state(layer, hw, az, n, changed, fold_cycles)
    counts.update(state)
    if max(counts.values()) >= 2**62:
        raise SimulationError(f"layer {layer.name!r}: traffic overflows 64-bit counters")

    # --- stall timeline over the sub-folds of the layer's active GEMMs, in the
    # mapping's order; a GLB tile's DRAM fetch is on its first sub-fold (kernels)
    dram_in, dram_out = _tile_transfers(stats, mp, visit, (nf, npf))
    dram_out = dram_out + out_d + out_m
    glb_in = share(a_d + a_m + w_d + w_m + ps_r, visit)
    glb_out = share(ps_w + out_w, visit) - out_sub + out_d + out_m
    compute = share(order_cycles, visit)
    new_tile = np.zeros(compute.shape, np.int64)
    new_tile[..., visit.first] = 1
    sel = np.broadcast_to(active[:, :, None], compute.shape).reshape(-1)
    new_tile, dram_in, dram_out, glb_in, glb_out, compute = (
        x.reshape(-1)[sel] for x in (new_tile, dram_in, dram_out, glb_in, glb_out, compute))
    compute_total = int(compute.sum())
    cycles = timeline_cycles(new_tile, dram_in, compute, glb_in, glb_out, dram_out, hw)
    cycles += state["state_stall_cycles"]
    return MemoryResult(counts=counts, compute_cycles=compute_total,
                        stall_cycles=cycles - compute_total, cycles=cycles,
                        mapping=(mp.order, *mp.tile))


def timeline_cycles(new_tile: np.ndarray, fetch_bytes: np.ndarray, compute: np.ndarray,
                    glb_read_bytes: np.ndarray, glb_write_bytes: np.ndarray,
                    dram_write_bytes: np.ndarray, hw: HwConfig) -> int:
    """Total cycles of the demand-driven stall timeline (docs/memory-model.md, "Stalls")
    over sub-folds in program order, each argument a flat [S] integer array:
    ``new_tile`` 1 on the first sub-fold of each GLB tile, ``fetch_bytes`` that tile's
    DRAM fetch (on its first sub-fold, 0 elsewhere), ``compute`` cycles, then the
    sub-fold's GLB reads, GLB writes and DRAM writes in bytes."""
    dram_bw = hw.memory.dram.bandwidth_bytes_per_cycle
    glb_bw = hw.memory.glb.bandwidth_bytes_per_cycle

    def flat(x, bw=None):
        x = np.asarray(x, np.int64).reshape(-1)
        return np.ascontiguousarray(x if bw is None else _ceil_div(x, bw), dtype=np.int64)

    return int(timeline_kernel(
        flat(new_tile), flat(fetch_bytes, dram_bw), flat(compute), flat(glb_read_bytes, glb_bw),
        flat(glb_write_bytes, glb_bw), flat(dram_write_bytes, dram_bw),
        2 if hw.memory.glb.double_buffer else 1))


def _tile_transfers(stats, mp, visit, shape) -> tuple[np.ndarray, np.ndarray]:
    """DRAM bytes in and out per sub-fold [F, P, S] from the GLB tiles: a tile's A and W
    fetches (where the reuse rule fetches them) and partial-sum reads on its first
    sub-fold, its partial-sum writes on its last."""
    ti = visit.tile_idx
    on = stats.active[:, :, None]
    ad, am = a_fetches(stats, mp, ti)
    a_f = ad + am
    wd, wm = stats.w_tiles(mp.t("n"), mp.t("k"))
    w_all = np.broadcast_to(wd + wm, shape + (wd.shape[2], wd.shape[3]))
    w_f = w_all[:, :, ti[:, 1], ti[:, 2]] * visit.fetch_w
    if w_resident_layer(stats, mp):
        w_f = w_f.copy()
        w_f[1:] = 0
    ps = psum_tiles(stats, mp)[ti[:, 0], ti[:, 1]]
    nsub = visit.outer.size
    d_in = np.zeros(shape + (nsub,), np.int64)
    d_out = np.zeros(shape + (nsub,), np.int64)
    d_in[:, :, visit.first] += np.where(on, a_f + w_f + ps * visit.psum_read, 0)
    d_out[:, :, visit.last] += np.where(on, ps * visit.psum_write, 0)
    return d_in, d_out
