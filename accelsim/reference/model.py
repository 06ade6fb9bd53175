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

Layers on the GEMV engine (``engine.kind: gemv``, or ``auto`` with one row per GEMM)
are stepped by :mod:`accelsim.reference.gemv` instead of the fold model.

Temporal delta and N:M structured weights (``docs/delta-and-nm.md``): the delta operand
is computed element by element, frame by frame, and lowered like the input; GEMMs of
frames >= 1 with an all-zero operand are skipped whole under ``skip_a``/``skip_both``.
The N:M kept slots are picked group by group, column by column; pairs on other slots
are skipped by the structure (os: they take no time in the PE's walk; ws: they are on
no PE, rows being the compressed index ``k'``). State traffic is added per frame.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import HwConfig
from accelsim.reference.compute import _compute_gemm
from accelsim.reference.fields import (
    ALL_FIELDS,
    DELTA_NM_FIELDS,
    FIELDS,
    MEMORY_FIELDS,
    STATE_FIELDS,
)
from accelsim.reference.gemv import run_gemv, uses_gemv
from accelsim.reference.memory import (
    _charge_outputs,
    _layer_needs,
    _memory_gemm,
    _tile_bytes,
    _timeline,
    _transfer_cycles,
    _w_bytes,
    choose_mapping,
    tile_sizes,
)
from accelsim.reference.nm import _NM, _compressed_w, _nm_kept

__all__ = [
    "ALL_FIELDS", "DELTA_NM_FIELDS", "FIELDS", "MEMORY_FIELDS", "STATE_FIELDS",
    "simulate_gemm", "simulate_layer", "tile_sizes",
]


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
    #: pad[m][k]: A's im2col position is padding (given when the design skips padding)
    pad: list[list[bool]] | None = None
    #: convolutions: 1 + the index in ``unique_a`` (flattened) each im2col position reads
    a_src: np.ndarray | None = None


def _pack_width(layer: Any, hw: HwConfig, k: int, n: int, groups: int) -> int:
    """Groups run side by side as one block-diagonal GEMM (``array.pack_groups``,
    docs/timing.md): as many as fit along the dims the array holds the group's GEMM on
    (os: N on the columns; ws: K on the rows and N on the columns; is: K on the rows),
    at most ``groups``; 1 (no packing) below 2, for matmuls, SIMD PEs and N:M."""
    if (layer.kind == "matmul" or groups < 2 or hw.array.pack_groups != "auto"
            or hw.array.pe_simd.width != 1 or hw.structured.n):
        return 1
    rows, cols = hw.array.rows, hw.array.cols
    fits = {"os": [cols // n if n < cols else 1],
            "ws": [rows // k if k <= rows else 1, cols // n if n <= cols else 1],
            "is": [rows // k if k < rows else 1]}[hw.dataflow]
    width = min(min(fits), groups)
    return width if width >= 2 else 1


def _packed_gemm(members: list[_Gemm]) -> tuple[np.ndarray, np.ndarray, Any]:
    """A' (the groups' A side by side along K), the block-diagonal W' (group i's W at
    rows i K.., cols i N..; every other weight a structural zero) and the padding of
    A' of groups packed into one GEMM."""
    k_dim, n_dim = members[0].w.shape
    a_p = np.concatenate([g.a for g in members], axis=1)
    w_p = np.zeros((k_dim * len(members), n_dim * len(members)), members[0].w.dtype)
    for i, g in enumerate(members):
        w_p[i * k_dim:(i + 1) * k_dim, i * n_dim:(i + 1) * n_dim] = g.w
    pad_p = None
    if members[0].pad is not None:
        pad_p = [sum((g.pad[m] for g in members), []) for m in range(a_p.shape[0])]
    return a_p, w_p, pad_p


def _pack_timing(gemms: list[_Gemm], hw: HwConfig, per_frame: int, width: int
                 ) -> dict[int, tuple[dict[tuple[int, int], int], int]]:
    """Per pack of ``width`` consecutive groups of a frame (the last may hold fewer):
    the fold cycles and folds of its packed GEMM, keyed by the index of its first active
    group. Packs without an active group run nothing."""
    out = {}
    for f0 in range(0, len(gemms), per_frame):
        for g0 in range(0, per_frame, width):
            members = gemms[f0 + g0:f0 + min(per_frame, g0 + width)]
            on = [i for i, g in enumerate(members) if g.active]
            if not on:
                continue
            a_p, w_p, pad_p = _packed_gemm(members)
            counts, cycles = _compute_gemm(a_p, w_p, hw, None, pad_p)
            out[f0 + g0 + on[0]] = (cycles, counts["folds"])
    return out


def _run(gemms: list[_Gemm], hw: HwConfig, a_bits: int | None = None,
         per_gemm: list[int] | None = None, state_glb: int = 0,
         out_write: tuple[list[int], list[int]] | None = None,
         per_frame: int = 1, name: str = "gemm", pack: int = 1,
         pinned: tuple[str, tuple[int, int, int]] | None = None,
         cache: dict | None = None) -> dict[str, int]:
    """Simulate GEMMs one after another as one layer. A GEMM that is not active is
    skipped whole: its dense MACs count as skipped, nothing else. ``a_bits``: bits of an
    A element (a_bits + 1 under delta); ``per_gemm`` collects each GEMM's compute
    cycles; ``state_glb``: out-partition bytes taken by delta state; ``out_write``: per
    frame, the (data, metadata) bytes of the output in its consumer's format (None:
    dense), frames being runs of ``per_frame`` GEMMs. ``pack``: groups of a frame
    packed into one GEMM for timing (1: none): their MACs stay each group's, their
    folds and cycles are the packed GEMM's, on its first active group. ``pinned``: the
    mapping to use (the search's candidates); ``cache``: compute results per GEMM, kept
    between the search's runs."""
    a_bits = hw.precision.a_bits if a_bits is None else a_bits
    cache = {} if cache is None else cache
    total = dict.fromkeys(ALL_FIELDS, 0)
    total["delta_gemms_skipped"] = 0
    all_folds: list[dict[str, int]] = []
    frame_of: list[int] = []
    mapping = pinned if pinned is not None else _search(
        gemms, hw, a_bits, state_glb, per_frame, name, cache, pack)
    # W left in the GLB by frame 0 serves later frames when the W tile is all of W and
    # the weights of every group fit together (never swapped: no second buffer)
    order, (_, tn, tk) = mapping
    g0 = gemms[0]
    whole = tn >= g0.w.shape[1] and tk >= g0.a.shape[1]
    need = 0
    for g in gemms:
        if g.w_mode != "frame":
            wk = _compressed_w(g.w, g.nm.kept) if g.nm is not None else g.w
            data, meta = _w_bytes(wk, hw, g.nm)
            need += data + meta
    glb = hw.memory.glb
    if glb.shared:  # the whole W beside the A and partial-sum tiles in the one pool
        held = _layer_needs(gemms, hw, mapping[1], a_bits)
        pool = glb.a_kib * 1024 + glb.w_kib * 1024 + glb.out_kib * 1024 - state_glb
        keep_w = whole and need + held["a"] + held["out"] <= pool
    else:
        keep_w = whole and need <= glb.w_kib * 1024
    if pack > 1 and "packed" not in cache:
        cache["packed"] = _pack_timing(gemms, hw, per_frame, pack)
    packed = cache.get("packed", {})
    for idx, g in enumerate(gemms):
        if not g.active:
            dense = g.a.shape[0] * g.a.shape[1] * g.w.shape[1]
            padding = 0
            for row in g.pad or []:
                for is_pad in row:
                    padding += g.w.shape[1] if is_pad else 0
            total["macs_dense"] += dense
            total["macs_padding"] += padding
            total["macs_skipped"] += dense - padding
            total["delta_gemms_skipped"] += 1
            if per_gemm is not None:
                per_gemm.append(0)
            continue
        if idx not in cache:
            cache[idx] = _compute_gemm(g.a, g.w, hw, g.nm.kept if g.nm else None, g.pad)
        counts, fold_cycles = cache[idx]
        counts = dict(counts)  # the cached result stays as computed
        if pack > 1:  # timing from the packed GEMM, on the pack's first active group
            cycles, folds = packed.get(idx, ({key: 0 for key in fold_cycles}, 0))
            assert cycles.keys() == fold_cycles.keys()
            fold_cycles = cycles
            counts["folds"] = folds
            counts["compute_cycles"] = sum(cycles.values())
        _add(total, counts)
        if per_gemm is not None:
            per_gemm.append(sum(fold_cycles.values()))
        mode = "layer" if (g.w_mode == "frame" and keep_w) else "gemm"
        new = _memory_gemm(g.a, g.w, g.unique_a, mode, fold_cycles, hw, total,
                           g.nm, a_bits, state_glb, mapping, g.a_src)
        all_folds += new
        frame_of += [idx // per_frame] * len(new)
    if out_write is not None:
        _charge_outputs(all_folds, frame_of, out_write, total)
    assert total["compute_cycles"] == sum(f["compute"] for f in all_folds)
    prec = hw.precision
    slots = total["macs_performed"] + total["macs_gated"]
    # a gated pair gates its MAC and the register-file reads feeding it
    total["rf_a_read_bytes"] = total["macs_performed"] * math.ceil(a_bits / 8)
    total["rf_w_read_bytes"] = total["macs_performed"] * math.ceil(prec.w_bits / 8)
    total["rf_out_read_bytes"] = total["macs_performed"] * math.ceil(prec.out_bits / 8)
    total["rf_out_write_bytes"] = total["rf_out_read_bytes"]
    total["rf_a_write_bytes"] = total["glb_a_read_bytes"]
    total["rf_w_write_bytes"] = total["glb_w_read_bytes"]
    # decoupled PEs: each slot-taking pair's streamed operands enter the PE's buffer,
    # each performed pair's leave it; drifting ws/is rows keep partial sums locally
    if hw.sync.mode == "decoupled" and hw.array.pe_buffer_bytes > 0:
        bits = {"os": prec.a_bits + prec.w_bits, "ws": prec.a_bits,
                "is": prec.w_bits}[hw.dataflow]
        total["pe_buf_write_bytes"] = slots * math.ceil(bits / 8)
        total["pe_buf_read_bytes"] = total["macs_performed"] * math.ceil(bits / 8)
    if hw.dataflow != "os" and (hw.sync.scope == "row" or hw.sync.mode == "decoupled"):
        total["acc_buf_read_bytes"] = total["macs_performed"] * math.ceil(prec.out_bits / 8)
        total["acc_buf_write_bytes"] = total["acc_buf_read_bytes"]
    if any(g.nm is not None for g in gemms):
        # every slot-taking kept pair drives the activation-select mux once
        total["nm_mux_ops"] = slots
    total["cycles"] = _timeline(all_folds, hw)
    total["map_order"], (total["map_tm"], total["map_tn"], total["map_tk"]) = \
        order, mapping[1]
    total["stall_cycles"] = total["cycles"] - total["compute_cycles"]
    return total


_ORDERS = ("mnk", "mkn", "nmk", "nkm", "kmn", "knm")
_DRAM_IN = ("dram_a_read_bytes", "dram_a_read_meta_bytes", "dram_w_read_bytes",
            "dram_w_read_meta_bytes", "dram_psum_read_bytes", "dram_psum_write_bytes")


def _search(gemms: list[_Gemm], hw: HwConfig, a_bits: int, state_glb: int, per_frame: int,
            name: str, cache: dict, pack: int = 1) -> tuple[str, tuple[int, int, int]]:
    """``mapping.search``: the fixed mapping, or of the candidates (every loop order x
    every tile size from the fold extent doubling up to the dim, plus the dim; a pinned
    order or tile kept; ``random:N`` draws N of them, seed 0) and the fixed mapping, the
    legal one of least objective, each priced by simulating the layer with it."""
    kind, _, num = hw.mapping.search.partition(":")
    cfg = hw.mapping
    if kind == "fixed":
        return choose_mapping(gemms, hw, a_bits, state_glb, name)
    try:
        fixed = choose_mapping(gemms, hw, a_bits, state_glb, name)
    except SimulationError:
        if cfg.glb_tile != "auto":
            raise
        fixed = None
    flow = hw.dataflow
    rows = hw.array.rows
    cols = hw.array.cols * (hw.array.pe_simd.width if flow in ("os", "ws") else 1)
    unit = {"os": {"m": rows, "n": cols, "k": 1}, "ws": {"m": 1, "n": cols, "k": rows},
            "is": {"m": cols, "n": 1, "k": rows}}[flow]
    g0 = gemms[0]
    ext = {"m": g0.a.shape[0], "n": g0.w.shape[1], "k": g0.a.shape[1]}
    sizes = []
    for i, d in enumerate("mnk"):
        if cfg.glb_tile != "auto":
            v = cfg.glb_tile[i]
            sizes.append([ext[d] if v == "full" else min(v, ext[d])])
            continue
        vals = []
        v = unit[d]
        while v < ext[d] and not (g0.nm is not None and d == "k"):
            vals.append(v)
            v *= 2
        sizes.append(vals + [ext[d]])
    orders = _ORDERS if cfg.loop_order == "auto" else (cfg.loop_order,)
    cands = [(o, (tm, tn, tk)) for o in orders for tm in sizes[0] for tn in sizes[1]
             for tk in sizes[2]]
    if kind == "random" and int(num) < len(cands):
        pick = np.random.default_rng(0).choice(len(cands), size=int(num), replace=False)
        cands = [cands[i] for i in sorted(int(i) for i in pick)]
    if fixed is not None:
        cands.append(fixed)
    from accelsim.model.energy import load_energy_table, prices

    p = prices(hw, load_energy_table(hw.energy))
    default = {"os": "mnk", "ws": "nmk", "is": "mnk"}[flow]
    best = None
    for order, tile in cands:
        trial = hw.with_overrides({"mapping.loop_order": order,
                                   "mapping.glb_tile": list(tile),
                                   "mapping.search": "fixed"})
        try:
            choose_mapping(gemms, trial, a_bits, state_glb, name)
        except SimulationError:
            continue  # illegal
        t = _run(gemms, trial, a_bits, None, state_glb, None, per_frame, name, pack,
                 pinned=(order, tile), cache=cache)
        dram = sum(t[key] for key in _DRAM_IN)
        energy = dram * p["dram"] \
            + (t["dram_a_read_bytes"] + t["dram_a_read_meta_bytes"]) * p["glb_a_write"] \
            + (t["dram_w_read_bytes"] + t["dram_w_read_meta_bytes"]) * p["glb_w_write"]
        xfer = math.ceil(dram / hw.memory.dram.bandwidth_bytes_per_cycle)
        cyc = t["compute_cycles"]
        cycles = max(cyc, xfer) if hw.memory.glb.double_buffer else cyc + xfer
        value = {"energy": energy, "cycles": float(cycles),
                 "edp": energy * cycles}[cfg.objective]
        key = (value, order != default, -(tile[0] * tile[1] * tile[2]),
               (-tile[0], -tile[1], -tile[2]), _ORDERS.index(order))
        if best is None or key < best[0]:
            best = (key, (order, tile))
    if best is None:
        choose_mapping(gemms, hw, a_bits, state_glb, name)  # the fixed mapping's error
    return best[1]


MAP_KEYS = ("map_order", "map_tm", "map_tn", "map_tk")


def _mapping_keys(total: dict[str, Any], keep: bool) -> None:
    """The GLB mapping's keys (map_order is text) stay only when asked for."""
    if not keep:
        for key in MAP_KEYS:
            total.pop(key, None)


def simulate_gemm(a: np.ndarray, w: np.ndarray, hw: HwConfig, *,
                  with_mapping: bool = False) -> dict[str, int]:
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
    hw = _resolve_formats(types.SimpleNamespace(name="gemm"), hw, [(a, w, a)], [nm])
    total = _run([_Gemm(a, w, a, "gemm", nm)], hw)
    del total["delta_gemms_skipped"]
    _mapping_keys(total, with_mapping)
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


def _padding_of_frame(layer: Any, a: np.ndarray, w: np.ndarray) -> list[Any]:
    """Per GEMM of one frame, ``pad[m][k]``: True where the im2col view of A holds zero
    padding rather than an input element (None for layers without padding)."""
    if layer.kind not in ("conv1d", "conv2d", "conv3d") or not any(layer.padding):
        return [None] * (layer.groups if layer.kind.startswith("conv") else 1)
    ones = np.ones(a.shape, dtype=np.int8)
    gemms = _im2col(ones, w, layer.stride, layer.padding, layer.dilation, layer.groups)
    return [[[v == 0 for v in row] for row in ga.tolist()] for ga, _ in gemms]


def _gemms_of_frame(layer: Any, a: np.ndarray, w: np.ndarray):
    """The (A, W, unique A) GEMMs of one frame of ``layer`` (``a`` without the frames
    axis). Unique A is the data A really holds as a 2-D array with fibers as rows: the
    GEMM's A for linear and matmul; for convolutions the group's slice of the input
    ``x[n, c_g, *spatial]`` in storage order, one fiber per run along the last axis."""
    if layer.kind == "linear":
        a2 = a.reshape(-1, a.shape[-1])
        return [(a2, w.T, a2)]
    if layer.kind in ("conv1d", "conv2d", "conv3d"):
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


def _conv_sources(layer: Any, x: np.ndarray, w: np.ndarray) -> list[np.ndarray] | None:
    """Per group of a convolution, the im2col view of element indices: 1 + the index of
    the input element each position reads in the group's slice ``x[n, c_g, *spatial]``
    flattened, 0 for padding (None for other layer kinds)."""
    if layer.kind not in ("conv1d", "conv2d", "conv3d"):
        return None
    c_g = x.shape[1] // layer.groups
    per_group = x[:, :c_g].size
    local = np.arange(1, per_group + 1, dtype=np.int64).reshape(x[:, :c_g].shape)
    idx = np.concatenate([local] * layer.groups, axis=1)
    return [ga for ga, _ in _im2col(idx, w, layer.stride, layer.padding, layer.dilation,
                                    layer.groups)]


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
           changed: list[int], reached: list[int], compute: list[int]) -> dict[str, int]:
    """State traffic of delta processing, where the state lives, and its cycles.
    ``reached[f]``: output rows of frame f whose row of A holds a change (summed over the
    frame's GEMMs); ``compute[f]``: the frame's compute cycles."""
    prec = hw.precision
    acc_elems = m_dim * n_dim  # accumulators of one GEMM
    out = dict.fromkeys(STATE_FIELDS, 0)
    size = (math.ceil(numel * prec.a_bits / 8)
            + math.ceil(per_frame_gemms * acc_elems * prec.out_bits / 8))
    d = hw.delta
    in_dram = d.state == "dram" or (d.state == "auto" and size > d.state_kib * 1024)
    out["state_in_dram"] = 1 if in_dram else 0
    dram_bw = hw.memory.dram.bandwidth_bytes_per_cycle
    glb_bw = hw.memory.glb.bandwidth_bytes_per_cycle
    for f, n_changed in enumerate(changed):
        if f == 0:
            ref_rd = enc_rd = 0
            ref_wr = math.ceil(numel * prec.a_bits / 8)
            acc_rd = 0
            acc_wr = math.ceil(per_frame_gemms * acc_elems * prec.out_bits / 8)
        else:
            ref_rd = math.ceil(numel * prec.a_bits / 8)
            enc_rd = ref_rd  # the encoder reads the frame's dense input from DRAM
            ref_wr = math.ceil(n_changed * prec.a_bits / 8)
            acc_rd = acc_wr = math.ceil(reached[f] * n_dim * prec.out_bits / 8)
        out["state_ref_read_bytes"] += ref_rd
        out["state_ref_write_bytes"] += ref_wr
        out["state_acc_read_bytes"] += acc_rd
        out["state_acc_write_bytes"] += acc_wr
        out["state_enc_read_bytes"] += enc_rd
        moved = ref_rd + ref_wr + acc_rd + acc_wr
        if in_dram:
            cyc = _transfer_cycles(enc_rd + moved, dram_bw)
        else:
            cyc = max(_transfer_cycles(enc_rd, dram_bw), _transfer_cycles(moved, glb_bw))
        out["state_cycles"] += cyc
        hidden = compute[f] if hw.memory.glb.double_buffer else 0
        out["state_stall_cycles"] += max(0, cyc - hidden)
    return out


def _bits_for(values: int) -> int:
    """ceil(log2(values)), at least 1: the bits that tell ``values`` values apart."""
    bits = 1
    while 2**bits < values:
        bits += 1
    return bits


def _format_tiles(hw: HwConfig, gemms, nms) -> dict[str, list[tuple[int, int]]]:
    """(fibers, fiber length) of every tile each operand's format addresses: the unique
    operand and every fold's GLB tile, cut out as in :func:`_memory_gemm`."""
    rows = hw.array.rows
    cols = hw.array.cols * (hw.array.pe_simd.width if hw.dataflow in ("os", "ws") else 1)
    out: dict[str, list[tuple[int, int]]] = {"a": [], "w": []}
    for (a, w, ua), nm in zip(gemms, nms, strict=True):
        m_dim, k_dim = a.shape
        n_dim = w.shape[1]
        out["a"].append(ua.shape)
        if nm is None:
            out["w"].append((n_dim, k_dim))
        wk = _compressed_w(w, nm.kept) if nm is not None else w
        k_rows = wk.shape[0]
        if hw.dataflow == "os":
            for i in range(math.ceil(m_dim / rows)):
                out["a"].append(a[i * rows:(i + 1) * rows, :].shape)
            for j in range(math.ceil(n_dim / cols)):
                if nm is None:
                    out["w"].append(w[:, j * cols:(j + 1) * cols].T.shape)
        elif hw.dataflow == "ws":
            for kt in range(math.ceil(k_rows / rows)):
                if nm is None:
                    out["a"].append(a[:, kt * rows:(kt + 1) * rows].shape)
                else:
                    r0, r1 = kt * rows, min(k_rows, (kt + 1) * rows)
                    g0, g1 = r0 // nm.n, (r1 - 1) // nm.n
                    out["a"].append(a[:, g0 * nm.m:min(k_dim, (g1 + 1) * nm.m)].shape)
                for j in range(math.ceil(n_dim / cols)):
                    if nm is None:
                        out["w"].append(w[kt * rows:(kt + 1) * rows,
                                          j * cols:(j + 1) * cols].T.shape)
        else:
            for kt in range(math.ceil(k_dim / rows)):
                for i in range(math.ceil(m_dim / cols)):
                    out["a"].append(a[i * cols:(i + 1) * cols, kt * rows:(kt + 1) * rows].shape)
                out["w"].append(w[kt * rows:(kt + 1) * rows, :].T.shape)
    if any(nm is not None for nm in nms):
        del out["w"]
    return out


def _resolve_formats(layer: Any, hw: HwConfig, gemms, nms) -> HwConfig:
    """``auto`` widths replaced by what the layer's tiles need; csr/coo widths too narrow
    for a tile raise SimulationError (docs/memory-model.md, "Index widths")."""
    fmts = {"a": hw.formats.a, "w": hw.formats.w}
    for op, tiles in _format_tiles(hw, gemms, nms).items():
        fmt = fmts[op]
        need_idx = need_ptr = 1
        for fibers, length in tiles:
            if fmt.kind == "coo":
                need_idx = max(need_idx, _bits_for(fibers), _bits_for(length))
            else:
                need_idx = max(need_idx, _bits_for(length))
                need_ptr = max(need_ptr, _bits_for(fibers * length + 1))
        new = {}
        for key, need in (("index_bits", need_idx), ("ptr_bits", need_ptr)):
            have = getattr(fmt, key)
            if have == "auto":
                new[key] = need
            elif (fmt.kind == "csr" or (fmt.kind == "coo" and key == "index_bits")) \
                    and have < need:
                raise SimulationError(f"layer {layer.name!r}: formats.{op}.{key}: {have} bits "
                                      f"are too few, {fmt.kind} needs {need}")
        fmts[op] = dataclasses.replace(fmt, **new)
    return dataclasses.replace(hw, formats=dataclasses.replace(hw.formats, **fmts))


def _consumer_bytes(consumer: Any, hw: HwConfig) -> tuple[list[int], list[int]]:
    """Per frame, the (data, metadata) bytes of ``consumer``'s unique A operand in its A
    format, its widths resolved for the consumer: group by group, element by element."""
    a = np.asarray(consumer.a)
    w = np.asarray(consumer.w)
    w_is_act = consumer.kind == "matmul"
    xs = [a[f] for f in range(a.shape[0])] if consumer.frames else [a]
    frames = [(x, w[f] if (w_is_act and consumer.frames) else w) for f, x in enumerate(xs)]
    per_frame = [_gemms_of_frame(consumer, fa, fw) for fa, fw in frames]
    nms: list[_NM | None] = [None] * len(per_frame[0])
    if hw.structured.n and not w_is_act:
        nms = [_NM(hw.structured.n, hw.structured.m,
                   _nm_kept(gw, hw.structured.n, hw.structured.m))
               for _, gw, _ in per_frame[0]]
    chw = _resolve_formats(consumer, hw, per_frame[0], nms)
    data, meta = [], []
    for gemms_f in per_frame:
        d = m = 0
        for _, _, ua in gemms_f:
            dd, mm = _tile_bytes(ua, chw.formats.a, hw.precision.a_bits)
            d, m = d + dd, m + mm
        data.append(d)
        meta.append(m)
    return data, meta


def _out_write(layer: Any, consumer: Any, hw: HwConfig, per_frame) -> tuple | None:
    """(data, meta) per frame when ``consumer``'s input is exactly this layer's output
    (docs/memory-model.md, "Output writes"), else None (dense)."""
    if consumer is None or consumer.meta.get("input_from") != layer.name:
        return None
    if hw.delta.enabled and consumer.frames and consumer.kind != "matmul":
        return None  # the delta encoder reads the dense tensor
    if bool(consumer.frames) != bool(layer.frames):
        return None
    if consumer.frames and np.shape(consumer.a)[0] != np.shape(layer.a)[0]:
        return None
    outputs = sum(ga.shape[0] * gw.shape[1] for gemms_f in per_frame for ga, gw, _ in gemms_f)
    if np.asarray(consumer.a).size != outputs:
        return None
    return _consumer_bytes(consumer, hw)


def simulate_layer(layer: Any, hw: HwConfig, *, with_skipped: bool = False,
                   consumer: Any = None, with_mapping: bool = False) -> dict[str, int]:
    """Simulate every GEMM of ``layer`` (frame-major, then group / batch index) as one
    fold sequence: summed counts and traffic, one stall timeline, plus the delta state
    traffic and cycles. ``with_skipped`` adds ``delta_gemms_skipped``. ``consumer``: the
    layer reading this layer's output (its outputs are then written in its A format
    where the chain is exact)."""
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
        xs, changed = _delta_operands(a, hw.delta.threshold_for(layer.name))
    frames = [(x, w[f] if (w_is_act and layer.frames) else w) for f, x in enumerate(xs)]
    per_frame = [_gemms_of_frame(layer, fa, fw) for fa, fw in frames]
    nms: list[_NM | None] = [None] * len(per_frame[0])
    if use_nm:
        n_keep, m_group = hw.structured.n, hw.structured.m
        nms = [_NM(n_keep, m_group, _nm_kept(gw, n_keep, m_group))
               for _, gw, _ in per_frame[0]]
    out_write = _out_write(layer, consumer, hw, per_frame)
    hw = _resolve_formats(layer, hw, per_frame[0], nms if use_nm else [None] * len(nms))
    a_bits = hw.precision.a_bits + (1 if delta else 0)
    state_glb = 0
    if delta and hw.delta.state == "glb":  # the state takes room in the out partition
        ga0, gw0, _ = per_frame[0][0]
        state_glb = (math.ceil(xs[0].size * hw.precision.a_bits / 8)
                     + math.ceil(len(per_frame[0]) * ga0.shape[0] * gw0.shape[1]
                                 * hw.precision.out_bits / 8))
        tile = hw.array.rows * hw.array.cols * math.ceil(hw.precision.out_bits / 8)
        if hw.memory.glb.out_kib * 1024 - state_glb < tile:
            raise SimulationError(f"layer {layer.name!r}: delta state does not fit out_kib")
    skip_policy = hw.zero_policy in ("skip_a", "skip_both")
    srcs = _conv_sources(layer, frames[0][0], w)
    pads = (_padding_of_frame(layer, frames[0][0], frames[0][1]) if hw.skip_padding
            else [None] * len(per_frame[0]))
    gemms = []
    for f, frame_gemms in enumerate(per_frame):
        for p, (ga, gw, ua) in enumerate(frame_gemms):
            mode = "frame" if (f >= 1 and not w_is_act) else "gemm"
            active = not (delta and f >= 1 and skip_policy and _all_zero(ga))
            gemms.append(_Gemm(ga, gw, ua, mode, nms[p] if use_nm else None, active,
                               pads[p] if p < len(pads) else None,
                               srcs[p] if srcs is not None else None))
    per_gemm: list[int] = []
    if uses_gemv(hw, per_frame[0][0][0].shape[0]):
        total = run_gemv(gemms, hw, len(per_frame[0]), not w_is_act, a_bits, per_gemm)
        if out_write is not None:  # y rows leave as the consumer's format, per frame
            n_g = len(per_frame[0])
            ran = [any(g.active for g in gemms[f * n_g:(f + 1) * n_g])
                   for f in range(len(per_frame))]
            for level in ("glb", "dram"):
                total[f"{level}_out_write_bytes"] = sum(
                    d for d, on in zip(out_write[0], ran, strict=True) if on)
                total[f"{level}_out_write_meta_bytes"] = sum(
                    m for m, on in zip(out_write[1], ran, strict=True) if on)
    else:
        ga0, gw0, _ = per_frame[0][0]
        pack = _pack_width(layer, hw, ga0.shape[1], gw0.shape[1], len(per_frame[0]))
        total = _run(gemms, hw, a_bits, per_gemm, state_glb, out_write, len(per_frame[0]),
                     layer.name, pack)
    if delta:
        ga0, gw0, _ = per_frame[0][0]
        n_g = len(per_frame[0])
        compute = [sum(per_gemm[f * n_g:(f + 1) * n_g]) for f in range(len(per_frame))]
        reached = []  # output rows whose row of A (receptive field) holds a change
        for frame_gemms in per_frame:
            rows_on = 0
            for ga, _, _ in frame_gemms:
                for row in ga.tolist():
                    rows_on += any(v != 0 for v in row)
            reached.append(rows_on)
        state = _state(hw, xs[0].size, n_g, ga0.shape[0], gw0.shape[1], changed, reached,
                       compute)
        total.update(state)
        total["cycles"] += state["state_stall_cycles"]
        total["macs_wide_performed"] = total["macs_performed"]  # a_bits + 1 operands
        total["macs_wide_gated"] = total["macs_gated"]
        total["stall_cycles"] = total["cycles"] - total["compute_cycles"]
    if not with_skipped:
        del total["delta_gemms_skipped"]
    _mapping_keys(total, with_mapping)
    return total
