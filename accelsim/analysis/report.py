"""Turn engine results into pandas DataFrames: one row per layer, plus totals."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from accelsim.errors import safe_text
from accelsim.io.hwconfig import HwConfig, load_hwconfig
from accelsim.io.trace import Trace, load_trace, release_pages
from accelsim.model.energy import energy_of, load_energy_table, prices
from accelsim.model.engine import LayerStats, check_delta_thresholds, simulate_layer
from accelsim.model.kvcache import KV_KEYS
from accelsim.model.memory import (
    HOP_KEYS,
    PE_BUF_KEYS,
    STATE_BYTE_KEYS,
    STATE_KEYS,
    TRAFFIC_KEYS,
)
from accelsim.model.outwrite import consumers, described
from accelsim.model.skipcost import SKIP_KEYS

#: integer count columns (summed in totals)
COUNT_COLUMNS = [
    "macs_dense", "macs_performed", "macs_gated", "macs_skipped", "macs_padding",
    "folds", "compute_cycles", "stall_cycles", "cycles", *TRAFFIC_KEYS, *STATE_KEYS,
    *SKIP_KEYS, *HOP_KEYS, *PE_BUF_KEYS,
    "nm_mux_ops", "delta_gemms_skipped", "macs_wide_performed", "macs_wide_gated", *KV_KEYS,
]
#: extra column groups the CLI can show with --columns
ENERGY_COLUMNS = ["energy_mac_pj", "energy_skip_pj", "energy_mux_pj", "energy_rf_pj",
                  "energy_hop_pj", "energy_glb_pj", "energy_dram_pj", "energy_state_pj",
                  "energy_leakage_pj", "energy_pj"]


def layer_row(stats: LayerStats, hw: HwConfig, price: dict[str, float]) -> dict[str, Any]:
    s = stats.shape
    g = stats.gemm
    pes = hw.array.rows * hw.array.cols * hw.array.macs_per_pe
    cycles = stats.cycles
    row: dict[str, Any] = {
        "layer": safe_text(s.name), "kind": s.kind, "m": s.m, "k": s.k, "n": s.n,
        "groups": s.groups, "packed_groups": g.packed_groups, "frames": s.frames,
        "gemms": s.batch, "folds": g.folds,
        "macs_dense": g.macs_dense, "macs_performed": g.macs_performed,
        "macs_gated": g.macs_gated, "macs_skipped": g.macs_skipped,
        "macs_padding": g.macs_padding,
        "compute_cycles": g.compute_cycles, "stall_cycles": stats.stall_cycles,
        "cycles": cycles,
        "util": (g.macs_performed + g.macs_gated) / (cycles * pes) if cycles else 0.0,
        "density_a": stats.nnz_a / stats.size_a,
        "density_w": stats.nnz_w / stats.size_w,
        "nnz_a": stats.nnz_a, "size_a": stats.size_a,
        "nnz_w": stats.nnz_w, "size_w": stats.size_w,
        "latency_s": cycles / (hw.clock_ghz * 1e9),
    }
    row.update(stats.mem.counts)
    row.update(described(stats.out_write))
    row.update(stats.gemm.skip_counts or {})
    row["nm_mux_ops"] = stats.nm_mux_ops
    row.update(stats.wide_macs())
    row["delta_gemms_skipped"] = int((~stats.gemm.active).sum())
    row["delta_density_a"] = (stats.delta_nnz / stats.delta_size if stats.delta_size
                              else float("nan"))
    row["state_bytes"] = sum(stats.mem.counts[k] for k in STATE_BYTE_KEYS)
    row["a_operand_bits"] = stats.a_operand_bits or hw.precision.a_bits
    mp = getattr(stats.mem, "mapping", None) or ("", 0, 0, 0)
    row.update(map_order=mp[0], map_tm=mp[1], map_tn=mp[2], map_tk=mp[3])
    row["dram_bytes"] = sum(v for k, v in stats.mem.counts.items() if k.startswith("dram_"))
    row["glb_bytes"] = sum(v for k, v in stats.mem.counts.items() if k.startswith("glb_"))
    row.update(energy_of(row, price))
    return row


_INT_COLUMNS = ["m", "k", "n", "groups", "packed_groups", "frames", "gemms", "nnz_a",
                "size_a", "nnz_w", "size_w", "dram_bytes", "glb_bytes", "state_bytes",
                "a_operand_bits", "map_tm", "map_tn", "map_tk"]


def _resolve(trace, hw, overrides) -> tuple[Trace, HwConfig]:
    if not isinstance(trace, Trace):
        trace = load_trace(trace)
    if not isinstance(hw, HwConfig):
        hw = load_hwconfig(hw, overrides)
    elif overrides:
        hw = hw.with_overrides(overrides)
    return trace, hw


def precision_notes(trace: Trace, hw: HwConfig) -> list[str]:
    """One line per operand width (``precision.a_bits`` / ``w_bits``) narrower than the
    quantisation bits of some layer's stored values, naming the first such layer."""
    from accelsim.io.trace import ROLES

    notes = []
    for i, key in ((0, "a_bits"), (1, "w_bits")):
        width = getattr(hw.precision, key)
        hit = [(layer.name, ROLES[layer.kind][i], layer.quant_of(ROLES[layer.kind][i]).bits)
               for layer in trace.layers
               if (layer.quant_of(ROLES[layer.kind][i]).bits or 0) > width]
        if hit:
            name, role, bits = hit[0]
            more = f" (and {len(hit) - 1} more layers)" if len(hit) > 1 else ""
            notes.append(f"precision.{key}={width} is narrower than the {bits}-bit {role!r} "
                         f"values of layer {name}{more}: their bytes and MAC energy are "
                         f"counted at {width} bits")
    return notes


def simulate(trace: Trace | str | os.PathLike, hw: HwConfig | str | os.PathLike,
             overrides: Mapping[str, Any] | None = None, *,
             functional: bool = False, per_frame: bool = False,
             thresholds: Mapping[str, Any] | None = None,
             max_memory: int | str | None = None,
             progress: Callable[[int, int, str], None] | None = None,
             cache: Any = None) -> pd.DataFrame:
    """Simulate every layer of ``trace`` on ``hw``; one DataFrame row per layer.

    ``trace`` and ``hw`` may be objects or paths; ``overrides`` are dotted config keys
    (``{"array.rows": 32}``). Counts are int64; see :func:`totals` for the sums.
    ``functional=True`` also computes every delta layer's outputs along the delta path
    and reports their error against direct computation (``delta_err_*`` columns).
    ``per_frame=True`` returns one row per (layer, frame) instead: the A operand's
    density, MACs performed and compute cycles of each frame.

    Thresholded activation sparsity (``docs/thresholds.md``) comes from the config's
    ``threshold`` section and from ``thresholds``: a mapping of layer names or glob
    patterns to an absolute threshold in stored units or ``{"target": S}``, a sparsity
    to calibrate to. Values at or under a layer's threshold count as zeros everywhere,
    and the ``threshold_*`` and ``thr_err_*`` columns give each layer's threshold and
    its output error against the exact GEMM.
    ``max_memory`` (bytes, or a size like ``"4G"``; default half the physical memory)
    bounds what one layer may allocate: a layer estimated to need more is refused with
    a :class:`~accelsim.errors.SimulationError` before anything is allocated.
    ``progress(done, total, layer_name)`` is called after each layer (the CLI's
    progress bar).
    ``cache`` (a :class:`accelsim.model.reuse.WorkCache`) keeps config-independent work
    (lowered masks, and the compute model's result keyed by the compute part of the
    config) for later calls on the same trace; the results are the same without it.
    """
    import warnings

    from accelsim.errors import PrecisionWarning
    from accelsim.model.kvcache import apply_kv, footprints, kv_use
    from accelsim.model.threshold import COLUMNS as THR_COLUMNS
    from accelsim.model.threshold import resolve_thresholds, threshold_error, threshold_layer

    trace, hw = _resolve(trace, hw, overrides)
    check_delta_thresholds(trace, hw)
    for note in precision_notes(trace, hw):
        warnings.warn(f"{trace.model}: {note}", PrecisionWarning, stacklevel=2)
    price = prices(hw, load_energy_table(hw.energy))
    resolved = resolve_thresholds(trace, hw, thresholds)
    kv_sizes = footprints(trace, hw)
    readers = consumers(trace)  # outputs the next layer reads (docs/memory-model.md)
    rows = []
    frames = []
    for done, layer in enumerate(trace.layers, start=1):
        th = resolved.get(layer.name)
        exact = layer
        if th is not None:
            layer = threshold_layer(layer, th)
        stats = simulate_layer(layer, hw, max_memory=max_memory,
                               consumer=readers.get(layer.name), cache=cache)
        use = kv_use(layer)
        stats.mem.counts = apply_kv(stats.mem.counts, use, hw,
                                    kv_sizes.get(use.step, 0) if use else 0)
        row = layer_row(stats, hw, price)
        if resolved:
            row.update(threshold_error(exact, th) if th is not None
                       else dict.fromkeys(THR_COLUMNS, float("nan")))
        if functional:
            from accelsim.model.engine import delta_applies
            from accelsim.model.sparsity import delta_error

            nan = float("nan")
            th_d = hw.delta.threshold_for(layer.name)
            row.update(delta_error(layer, th_d) if delta_applies(layer, hw)
                       else {"delta_err_max": nan, "delta_err_rms": nan,
                             "delta_err_rel": nan, "delta_exact": nan})
        rows.append(row)
        release_pages(exact)  # a memory-mapped trace keeps one layer resident
        if progress is not None:
            progress(done, len(trace.layers), layer.name)
        if per_frame:
            per = stats.size_a // stats.shape.frames
            for t in range(stats.shape.frames):
                frames.append({
                    "layer": safe_text(layer.name), "frame": t,
                    "density_a": int(stats.frame_nnz_a[t]) / per,
                    "macs_dense": stats.shape.macs_dense // stats.shape.frames,
                    "macs_performed": int(stats.gemm.frame_performed[t]),
                    "compute_cycles": int(stats.gemm.frame_cycles[t]),
                    "gemms_skipped": int((~stats.gemm.active[t]).sum()),
                })
    if per_frame:
        out = pd.DataFrame(frames)
        for col in ("frame", "macs_dense", "macs_performed", "compute_cycles",
                    "gemms_skipped"):
            out[col] = out[col].astype(np.int64)
        out.attrs.update(hw=hw.name, trace=safe_text(trace.model))
        return out
    df = _frame(rows, COUNT_COLUMNS + _INT_COLUMNS)
    df.attrs.update(hw=hw.name, hw_hash=hw.config_hash(), trace=safe_text(trace.model),
                    clock_ghz=hw.clock_ghz, hwconfig=hw.to_dict(),
                    pes=hw.array.rows * hw.array.cols * hw.array.macs_per_pe)
    return df


def _frame(rows: list[dict[str, Any]], ints: list[str]) -> pd.DataFrame:
    """``pd.DataFrame(rows)`` with the ``ints`` columns int64, built column by column."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    if not rows or any(len(r) != len(keys) for r in rows):  # rows with different keys
        df = pd.DataFrame(rows)
        for col in ints:
            df[col] = df[col].astype(np.int64)
        return df
    want = set(ints)
    missing = [c for c in ints if c not in keys]
    if missing:
        raise KeyError(missing[0])
    data = {k: (np.array([r[k] for r in rows], np.int64) if k in want else [r[k] for r in rows])
            for k in keys}
    return pd.DataFrame(data)


_NOT_SUMMED = ("m", "k", "n", "groups", "packed_groups", "frames", "a_operand_bits",
               "map_tm", "map_tn", "map_tk")


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """A shallow view of ``df`` without ``attrs``: pandas deep-copies ``attrs`` into every
    column it hands out, and a table's attrs hold the whole config."""
    if not df.attrs:
        return df
    plain = df.copy(deep=False)
    plain.attrs = {}
    return plain


def _totals_dict(cols: list[tuple[str, Any]], pes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"layer": "TOTAL", "kind": "total"}
    for col, s in cols:
        if col in out:
            continue
        dt = s.dtype
        plain = isinstance(dt, np.dtype) and dt.kind in "iufb"
        if pd.api.types.is_integer_dtype(dt) and col not in _NOT_SUMMED:
            out[col] = int(s.to_numpy().sum() if plain else s.sum())
        elif col.endswith(("_bytes", "_pj", "_s")) or col.startswith("energy"):
            # np.nansum is what Series.sum does for floats (NaN skipped, same order)
            out[col] = float(np.nansum(s.to_numpy()) if plain else s.sum())
    cyc = out.get("cycles", 0)
    if pes and cyc:
        out["util"] = (out["macs_performed"] + out["macs_gated"]) / (cyc * pes)
    if out.get("size_a"):
        out["density_a"] = out["nnz_a"] / out["size_a"]
    if out.get("size_w"):
        out["density_w"] = out["nnz_w"] / out["size_w"]
    return out


def totals(df: pd.DataFrame) -> pd.Series:
    """Sum of the count columns over layers, with utilisation, densities and latency
    recomputed from the sums (not averaged)."""
    return pd.Series(_totals_dict(list(_plain(df).items()), df.attrs.get("pes")))


def with_totals(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a final ``TOTAL`` row: integer columns become nullable ``Int64``
    (empty where the total is not a sum), float columns stay float. One pass over the
    columns for the sums and the new table (no concat, no per-column re-cast)."""
    attrs = dict(df.attrs)
    cols = list(_plain(df).items())
    tot = _totals_dict(cols, attrs.get("pes"))
    if not all(isinstance(s.dtype, np.dtype) or pd.api.types.is_string_dtype(s.dtype)
               for _, s in cols):
        plain = _plain(df)
        out = pd.concat([plain, pd.Series(tot).to_frame().T], ignore_index=True)
        for col in plain.columns:
            if pd.api.types.is_integer_dtype(plain[col]):
                out[col] = out[col].astype("Int64")
            elif pd.api.types.is_float_dtype(plain[col]):
                out[col] = out[col].astype(float)
        out.attrs = attrs
        return out
    # text (and other) columns: as pandas' concat types them (object where the TOTAL
    # row has a value, the column's own dtype where it is missing)
    other = [c for c, s in cols if not (pd.api.types.is_integer_dtype(s.dtype)
                                        or pd.api.types.is_float_dtype(s.dtype)
                                        or s.dtype == object
                                        or isinstance(s.dtype, pd.StringDtype))]
    texts = pd.concat([_plain(df)[other],
                       pd.Series({c: tot[c] for c in other if c in tot},
                                 dtype=object).to_frame().T], ignore_index=True) \
        if other else None
    data: dict[str, Any] = {}
    for col, s in cols:
        has = col in tot
        n = len(s)
        if pd.api.types.is_integer_dtype(s.dtype):
            vals = np.empty(n + 1, np.int64)
            vals[:-1] = s.to_numpy(np.int64)
            vals[-1] = int(tot[col]) if has else 0
            mask = np.zeros(n + 1, bool)
            mask[-1] = not has
            data[col] = pd.arrays.IntegerArray(vals, mask)
        elif pd.api.types.is_float_dtype(s.dtype):
            vals = np.empty(n + 1, np.float64)
            vals[:-1] = s.to_numpy(np.float64)
            vals[-1] = float(tot[col]) if has else np.nan
            data[col] = vals
        elif texts is None or col not in texts:  # object or text
            vals = np.empty(n + 1, object)
            vals[:-1] = s.to_numpy(object)
            vals[-1] = tot[col] if has else np.nan
            # a value in the TOTAL row makes the column object; none keeps its dtype
            data[col] = pd.Series(vals, dtype=object if has else s.dtype)
        else:
            data[col] = texts[col]
    out = pd.DataFrame(data, columns=[c for c, _ in cols])
    out.attrs = attrs
    return out
