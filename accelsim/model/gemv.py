"""The GEMV engine: batch-1 matrix-vector work (RNN steps, LLM decode) on ``lanes`` MACs.

Implements the section "GEMV engine and fetch skipping" of ``docs/memory-model.md``
exactly, in bulk; :mod:`accelsim.reference.gemv` steps the same specification GEMV by
GEMV. Each row ``m`` of a GEMM's A is one GEMV ``x[K] · W[K, N]``: the engine walks the
processed inputs ``k`` one after another, broadcasting ``x[k]`` to the lanes while W's
row ``k`` streams in, ``ceil(slots_k / lanes)`` cycles per input. W is stored row by row
(fibers are W's rows) in ``formats.w``; with ``fetch_skip.w_on_zero_a: rows`` only the
fetch units (``unit_rows`` rows) holding a nonzero input are read from DRAM, plus one bit
per unit of the GEMV's fetch mask.

The results fill the same structures as the systolic path (:class:`GemmResult`,
:class:`MemoryResult`): a GEMV is one fold, ``fold_cycles`` is [F, P, M, 1].
"""

from __future__ import annotations

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer
from accelsim.model.memory import (
    HOP_KEYS,
    PE_BUF_KEYS,
    TRAFFIC_KEYS,
    MemoryResult,
    _ceil_div,
    _delta_state,
    _unique_a_mask,
    a_operand_bits,
    state_glb_bytes,
    tile_bytes,
)
from accelsim.model.outwrite import charge
from accelsim.model.skipcost import gemm_skip_costs
from accelsim.model.workload import GemmShape

#: policies whose lanes drop the inputs x[k] == 0 (a processed k needs x[k] != 0)
SKIPS_A = ("skip_a", "skip_both")
#: policies whose lanes drop zero weights of a row (slots of row k = nnz(W[k, :]))
SKIPS_W = ("skip_w", "skip_both")


def engine_for(hw: HwConfig, shape: GemmShape) -> str:
    """``"gemv"`` or ``"systolic"``: the engine a layer of ``shape`` runs on
    (``engine.kind: auto`` puts layers whose GEMMs have one row, M = 1, on the GEMV
    lanes)."""
    kind = hw.engine.kind
    if kind == "auto":
        return "gemv" if shape.m == 1 else "systolic"
    return kind


def _first_in_scope(flags: np.ndarray, scope: str) -> np.ndarray:
    """``flags`` [F, P, M, U] (GEMV needs unit u) -> the units each GEMV fetches from
    DRAM when a fetched unit stays resident within ``scope``: ``"gemv"`` (nothing stays),
    ``"gemm"`` (over the M rows of one GEMM) or ``"layer"`` (over every frame and row,
    per group)."""
    if scope == "gemv":
        return flags
    nf, npf, m, u = flags.shape
    if scope == "gemm":
        seq = flags.reshape(nf * npf, m, u)
    else:
        seq = np.swapaxes(flags, 0, 1).reshape(npf, nf * m, u)
    seen = np.logical_or.accumulate(seq, axis=1)
    before = np.zeros_like(seen)
    before[:, 1:] = seen[:, :-1]
    new = seq & ~before
    if scope == "gemm":
        return new.reshape(flags.shape)
    return np.swapaxes(new.reshape(npf, nf, m, u), 0, 1)


def simulate_gemv(layer: Layer, az: np.ndarray, wz: np.ndarray, hw: HwConfig, *,
                  rz: np.ndarray | None, active: np.ndarray,
                  a_mask: np.ndarray | None = None,
                  changed: np.ndarray | None = None, out_write=None):
    """MAC counts, cycles and traffic of one layer on the GEMV engine. ``az`` [F, P, M, K]
    and ``wz`` [Fw, P, K, N] are nonzero masks (A's is the delta operand's under delta
    processing), ``rz`` [1, P, M, K] A's real (non-padding) positions when padding is
    skipped, ``active`` [F, P] False for GEMMs skipped whole, ``out_write`` the output's
    format (:mod:`accelsim.model.outwrite`; None: dense). Returns
    (:class:`~accelsim.model.engine.GemmResult`, :class:`MemoryResult`)."""
    from accelsim.model.engine import GemmResult, MaskSums, _mac_counts, _pair_classes

    nf, npf, m, k = az.shape
    fwn, n = wz.shape[0], wz.shape[-1]
    lanes, pipe = hw.gemv_lanes, hw.engine.pipeline
    policy = hw.zero_policy
    prec = hw.precision
    fa, fw = hw.formats.a, hw.formats.w
    a_bits = a_operand_bits(layer, hw)  # delta operands are a_bits + 1 wide
    state_glb_bytes(layer, hw, npf, m, n, changed)  # refuses a state: glb that cannot fit

    # --- MAC counts: pair by pair, exactly as on the systolic array
    sums = MaskSums(az, wz)
    cr = None if rz is None else rz.sum(axis=-2, dtype=np.int64)
    classes = _pair_classes(az, wz, None, sums, cr)
    counts = _mac_counts(az, wz, policy, None, sums, hw.gate_on, classes=classes)

    # --- processed inputs and compute cycles per GEMV
    if policy in SKIPS_A:
        proc = az  # zero at padding positions too
    elif rz is not None:
        proc = np.broadcast_to(rz, az.shape)
    else:
        proc = np.ones(az.shape, bool)
    run = np.broadcast_to(active[:, :, None], (nf, npf, m))  # GEMVs that run
    row_slots = sums.rw if policy in SKIPS_W else np.full((fwn, npf, k), n, np.int64)
    row_cycles = -(-row_slots // lanes)  # [Fw, P, K]
    pi = proc.astype(np.int64)
    slots = np.matmul(pi, row_slots[..., None])[..., 0]  # [F, P, M]
    walk = np.matmul(pi, row_cycles[..., None])[..., 0]
    busy = run & (slots > 0)
    compute = np.where(busy, walk + pipe, 0)

    # --- W: stored row by row; whole W, fetch units and rows, compressed
    wz3 = wz.reshape(-1, k, n)
    wd_all, wm_all = (x.reshape(fwn, npf) for x in tile_bytes(wz3, k, n, fw, prec.w_bits))
    rd, rm = (x.reshape(fwn, npf, k) for x in tile_bytes(wz3, 1, n, fw, prec.w_bits))
    w_cap = hw.memory.glb.w_kib * 1024
    # all groups' W fit together: fetched rows stay for the whole layer (every frame);
    # else a GEMM whose W fits alone keeps it over its rows; else every GEMV fetches
    layer_res = layer.kind != "matmul" and int((wd_all + wm_all).sum()) <= w_cap
    res_gemm = np.broadcast_to((wd_all + wm_all) <= w_cap, (nf, npf))
    skip_fetch = hw.fetch_skip.w_on_zero_a == "rows"
    if skip_fetch:
        u = hw.fetch_skip.unit_rows
        ku = -(-k // u)
        ud, um = (x.reshape(fwn, npf, ku) for x in tile_bytes(wz3, u, n, fw, prec.w_bits))
        pad = np.zeros((nf, npf, m, ku * u), bool)
        pad[..., :k] = proc
        need = pad.reshape(nf, npf, m, ku, u).any(axis=-1) & run[..., None]
        new = _gemv_fetch(need, layer_res, res_gemm)
        ni = new.astype(np.int64)
        dw_d = (ni * ud[:, :, None, :]).sum(axis=-1)
        dw_m = (ni * um[:, :, None, :]).sum(axis=-1) + np.where(new.any(axis=-1),
                                                                -(-ku // 8), 0)
    else:
        new = _gemv_fetch(np.array(run)[..., None], layer_res, res_gemm)[..., 0]
        dw_d = np.where(new, np.broadcast_to(wd_all, (nf, npf))[..., None], 0)
        dw_m = np.where(new, np.broadcast_to(wm_all, (nf, npf))[..., None], 0)
    dw_d = np.where(run, dw_d, 0)
    dw_m = np.where(run, dw_m, 0)
    # GLB -> lanes: every processed input's W row of every GEMV that runs
    gw_d = np.where(run, np.matmul(pi, rd[..., None])[..., 0], 0).sum()
    gw_m = np.where(run, np.matmul(pi, rm[..., None])[..., 0], 0).sum()

    # --- A: the unique operand from DRAM once per active GEMM; each GEMV's row from GLB
    ua = _unique_a_mask(layer, az, a_mask)
    uad, uam = tile_bytes(ua, ua.shape[1], ua.shape[2], fa, a_bits)
    az3 = az.reshape(-1, m, k)
    gad, gam = (x.reshape(nf, npf, m) for x in tile_bytes(az3, 1, k, fa, a_bits))
    act = active.reshape(-1)
    out_row = -(-n * prec.a_bits // 8)
    ab, wb, ob = -(-a_bits // 8), -(-prec.w_bits // 8), -(-prec.out_bits // 8)
    performed = int(counts["performed"].sum())
    gated = int(counts["gated"].sum())
    runs = int(run.sum())
    out_d, out_m = charge(np.where(run, out_row, 0), out_write)  # consumer's format
    c = {
        "dram_a_read_bytes": int(uad.reshape(-1)[act].sum()),
        "dram_a_read_meta_bytes": int(uam.reshape(-1)[act].sum()),
        "dram_w_read_bytes": int(dw_d.sum()), "dram_w_read_meta_bytes": int(dw_m.sum()),
        "dram_psum_read_bytes": 0, "dram_psum_write_bytes": 0,
        "dram_out_write_bytes": int(out_d.sum()), "dram_out_write_meta_bytes": int(out_m.sum()),
        "glb_a_read_bytes": int(np.where(run, gad, 0).sum()),
        "glb_a_read_meta_bytes": int(np.where(run, gam, 0).sum()),
        "glb_w_read_bytes": int(gw_d), "glb_w_read_meta_bytes": int(gw_m),
        "glb_psum_read_bytes": 0, "glb_psum_write_bytes": 0,
        "glb_out_write_bytes": int(out_d.sum()), "glb_out_write_meta_bytes": int(out_m.sum()),
        "rf_a_read_bytes": performed * ab, "rf_w_read_bytes": performed * wb,
        "rf_out_read_bytes": performed * ob, "rf_out_write_bytes": performed * ob,
    }
    c["glb_a_write_bytes"] = c["dram_a_read_bytes"]
    c["glb_a_write_meta_bytes"] = c["dram_a_read_meta_bytes"]
    c["glb_w_write_bytes"] = c["dram_w_read_bytes"]
    c["glb_w_write_meta_bytes"] = c["dram_w_read_meta_bytes"]
    c["rf_a_write_bytes"] = c["glb_a_read_bytes"]
    c["rf_w_write_bytes"] = c["glb_w_read_bytes"]
    counts_mem = {key: c[key] for key in TRAFFIC_KEYS}
    counts_mem.update(dict.fromkeys(HOP_KEYS, 0))  # x is broadcast on a bus, y stays
    counts_mem.update(dict.fromkeys(PE_BUF_KEYS, 0))
    state = _delta_state(layer, hw, az, n, changed, compute[..., None])
    counts_mem.update(state)
    if max(counts_mem.values()) >= 2**62:
        raise SimulationError(f"layer {layer.name!r}: traffic overflows 64-bit counters")

    # --- cycles: each GEMV takes max(compute, its W fetch at the DRAM bandwidth)
    fetch = _ceil_div(dw_d + dw_m, hw.memory.dram.bandwidth_bytes_per_cycle)
    per_gemv = np.where(run, np.maximum(compute, fetch), 0)
    compute_total = int(compute.sum())
    cycles = int(per_gemv.sum()) + state["state_stall_cycles"]
    if cycles >= 2**62:
        raise SimulationError(f"layer {layer.name!r}: cycles overflow 64-bit counters")
    fold_cycles = compute[..., None]
    frame_cycles = compute.sum(axis=(1, 2))
    gemm = GemmResult(
        macs_dense=int(counts["dense"].sum()), macs_performed=performed, macs_gated=gated,
        macs_skipped=int(counts["skipped"].sum()), folds=runs,
        compute_cycles=compute_total, fold_slots=np.where(busy, walk, 0)[..., None],
        fold_cycles=fold_cycles, frame_performed=counts["performed"],
        frame_cycles=frame_cycles, active=active,
        macs_padding=int(counts["padding"].sum()),
        skip_counts=gemm_skip_costs(classes, active, hw, False))
    mem = MemoryResult(counts=counts_mem, compute_cycles=compute_total,
                       stall_cycles=cycles - compute_total, cycles=cycles)
    return gemm, mem


def _gemv_fetch(need: np.ndarray, layer_res: bool, res_gemm: np.ndarray) -> np.ndarray:
    """Units fetched from DRAM per GEMV [F, P, M, U]: ``need`` where W does not stay
    resident, else only the first need of each unit in its residency scope: the layer
    (``layer_res``), or the GEMM where its W fits alone (``res_gemm`` [F, P])."""
    if layer_res:
        return _first_in_scope(need, "layer")
    per_gemm = _first_in_scope(need, "gemm")
    return np.where(res_gemm[:, :, None, None], per_gemm, need)
