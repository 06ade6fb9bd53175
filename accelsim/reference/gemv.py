"""Reference GEMV engine: steps every GEMV input by input, pair by pair.

The test oracle for :mod:`accelsim.model.gemv`, written from the specification in
``docs/memory-model.md`` ("GEMV engine and fetch skipping"), with plain loops:

* each row ``m`` of a GEMM's A is one GEMV ``x = A[m, :]`` times ``W[K, N]``;
* input ``k`` is *processed* unless it is padding (skipped padding) or, under
  ``skip_a``/``skip_both``, ``x[k] == 0``; its slot-taking pairs (every ``n`` whose pair
  the policy does not skip) take ``ceil(slots / lanes)`` cycles; a GEMV with any slot
  adds ``pipeline`` cycles;
* the GLB streams the W row of every processed input to the lanes; DRAM sends the whole
  W per GEMV, or with fetch skipping the fetch units of ``unit_rows`` rows holding a
  processed input plus a one-bit-per-unit mask; W that fits the GLB stays there (for
  the layer when all groups fit, else per GEMM when that GEMM's W fits);
* a GEMV takes ``max(compute, ceil(W fetch bytes / DRAM bandwidth))`` cycles.
"""

from __future__ import annotations

import math
from typing import Any

from accelsim.io.hwconfig import HwConfig
from accelsim.reference.compute import PERF, SKIP, _classify, _SkipCost
from accelsim.reference.fields import ALL_FIELDS
from accelsim.reference.memory import _tile_bytes, _transfer_cycles


def uses_gemv(hw: HwConfig, m_rows: int) -> bool:
    """The layer runs on the GEMV engine: ``engine.kind: gemv``, or ``auto`` with one row
    per GEMM."""
    return hw.engine.kind == "gemv" or (hw.engine.kind == "auto" and m_rows == 1)


def run_gemv(gemms: list[Any], hw: HwConfig, per_frame: int, w_shared: bool,
             a_bits: int | None = None, per_gemm: list[int] | None = None) -> dict[str, int]:
    """Simulate a layer's GEMMs (``accelsim.reference.model._Gemm``, frame-major, then
    group / batch index; ``per_frame`` of them per frame) on the GEMV engine. ``w_shared``:
    the GEMMs of one group index share W across frames (linear and conv layers);
    ``a_bits``: bits of an A element (a_bits + 1 under delta); ``per_gemm`` collects
    each GEMM's compute cycles."""
    total = dict.fromkeys(ALL_FIELDS, 0)
    total["delta_gemms_skipped"] = 0
    prec, fmt_a, fmt_w = hw.precision, hw.formats.a, hw.formats.w
    a_bits = prec.a_bits if a_bits is None else a_bits
    policy, gate_on = hw.zero_policy, hw.gate_on
    lanes, pipeline = hw.gemv_lanes, hw.engine.pipeline
    bw = hw.memory.dram.bandwidth_bytes_per_cycle
    cap = hw.memory.glb.w_kib * 1024
    skip_rows = hw.fetch_skip.w_on_zero_a == "rows"
    unit = hw.fetch_skip.unit_rows
    cost = _SkipCost(hw, False)

    def whole(w) -> int:
        d, m = _tile_bytes(w, fmt_w, prec.w_bits)
        return d + m

    layer_resident = False
    if w_shared:
        layer_resident = sum(whole(g.w) for g in gemms[:per_frame]) <= cap
    seen: dict[Any, set[int]] = {}  # residency scope -> units already fetched
    for idx, g in enumerate(gemms):
        m_dim, k_dim = g.a.shape
        n_dim = g.w.shape[1]
        if not g.active:
            dense = m_dim * k_dim * n_dim
            padding = 0
            for row in g.pad or []:
                for is_pad in row:
                    padding += n_dim if is_pad else 0
            total["macs_dense"] += dense
            total["macs_padding"] += padding
            total["macs_skipped"] += dense - padding
            total["delta_gemms_skipped"] += 1
            if per_gemm is not None:
                per_gemm.append(0)
            continue
        d, m = _tile_bytes(g.unique_a, fmt_a, a_bits)
        total["dram_a_read_bytes"] += d
        total["dram_a_read_meta_bytes"] += m
        if layer_resident:
            scope: Any = ("group", idx % per_frame)
        elif whole(g.w) <= cap:
            scope = ("gemm", idx)
        else:
            scope = None
        units = -(-k_dim // unit) if skip_rows else 1
        gemm_compute = 0
        w_list = g.w.tolist()
        for r in range(m_dim):
            total["folds"] += 1
            x = g.a[r].tolist()
            slots_total = 0
            walk = 0
            processed = []
            for k in range(k_dim):
                is_pad = bool(g.pad[r][k]) if g.pad is not None else False
                slots = 0
                for nn in range(n_dim):
                    total["macs_dense"] += 1
                    if is_pad:
                        total["macs_padding"] += 1
                        continue
                    kind = _classify(x[k], w_list[k][nn], policy, gate_on)
                    cost.pair(x[k], w_list[k][nn], kind, total)
                    if kind == SKIP:
                        total["macs_skipped"] += 1
                        continue
                    slots += 1
                    if kind == PERF:
                        total["macs_performed"] += 1
                    else:
                        total["macs_gated"] += 1
                if not is_pad and (policy not in ("skip_a", "skip_both") or x[k] != 0):
                    processed.append(k)
                    wd, wm = _tile_bytes(g.w[k:k + 1, :], fmt_w, prec.w_bits)
                    total["glb_w_read_bytes"] += wd
                    total["glb_w_read_meta_bytes"] += wm
                walk += math.ceil(slots / lanes)
                slots_total += slots
            compute = walk + pipeline if slots_total > 0 else 0
            # the x row from the GLB, the y row out
            ad, am = _tile_bytes(g.a[r:r + 1, :], fmt_a, a_bits)
            total["glb_a_read_bytes"] += ad
            total["glb_a_read_meta_bytes"] += am
            out = math.ceil(n_dim * prec.a_bits / 8)
            total["glb_out_write_bytes"] += out
            total["dram_out_write_bytes"] += out
            # W from DRAM
            if skip_rows:
                wanted = sorted({k // unit for k in processed})
            else:
                wanted = [0]
            done = seen.setdefault(scope, set()) if scope is not None else set()
            fetch_d = fetch_m = 0
            fetched = 0
            for u in wanted:
                if u in done:
                    continue
                block = g.w[u * unit:(u + 1) * unit, :] if skip_rows else g.w
                bd, bm = _tile_bytes(block, fmt_w, prec.w_bits)
                fetch_d += bd
                fetch_m += bm
                fetched += 1
                done.add(u)
            if skip_rows and fetched:
                fetch_m += math.ceil(units / 8)  # the GEMV's fetch mask, one bit per unit
            total["dram_w_read_bytes"] += fetch_d
            total["dram_w_read_meta_bytes"] += fetch_m
            total["compute_cycles"] += compute
            gemm_compute += compute
            total["cycles"] += max(compute, _transfer_cycles(fetch_d + fetch_m, bw))
        if per_gemm is not None:
            per_gemm.append(gemm_compute)
    for key in ("a_read", "a_read_meta", "w_read", "w_read_meta"):
        total[f"glb_{key.replace('read', 'write')}_bytes"] = total[f"dram_{key}_bytes"]
    total["rf_a_write_bytes"] = total["glb_a_read_bytes"]
    total["rf_w_write_bytes"] = total["glb_w_read_bytes"]
    total["rf_a_read_bytes"] = total["macs_performed"] * math.ceil(a_bits / 8)
    total["rf_w_read_bytes"] = total["macs_performed"] * math.ceil(prec.w_bits / 8)
    total["rf_out_read_bytes"] = total["macs_performed"] * math.ceil(prec.out_bits / 8)
    total["rf_out_write_bytes"] = total["rf_out_read_bytes"]
    total["stall_cycles"] = total["cycles"] - total["compute_cycles"]
    return total
