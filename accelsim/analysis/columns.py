"""Every result column, its unit and its meaning, and the terminal view of a table.

:data:`CATALOGUE` is the one place that says what a column is; ``docs/columns.md`` is
generated from it (``python -m accelsim.analysis.columns > docs/columns.md``) and a test
checks that the file matches and that every column ``simulate``, ``inspect``, the
per-frame view and a sweep produce has an entry.

:func:`render` draws a table for people: one unit per column, picked from the column's
magnitude (k/M/G for counts, KiB/MiB/GiB for bytes, pJ..mJ for energy, ns..s for time)
and named under the column's name, so every number in a column reads on one scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from accelsim.model.kvcache import KV_KEYS
from accelsim.model.memory import HOP_KEYS, PE_BUF_KEYS, STATE_KEYS, TRAFFIC_KEYS
from accelsim.model.skipcost import SKIP_KEYS
from accelsim.model.threshold import COLUMNS as THR_COLUMNS

#: how a column is shown: kind -> (stored unit, meaning of the unit)
KINDS = {
    "text": ("", "text"),
    "dim": ("", "an integer size, shown as it is"),
    "count": ("", "a count; shown in k (1e3), M (1e6), G (1e9) or T (1e12)"),
    "cycles": ("cycles", "clock cycles; shown in k/M/G cycles"),
    "bytes": ("bytes", "bytes; shown in KiB/MiB/GiB (powers of 1024)"),
    "bits": ("bits", "bits; shown in k/M/G bits"),
    "energy": ("pJ", "picojoules; shown in pJ, nJ, µJ or mJ"),
    "time": ("s", "seconds; shown in ns, µs, ms or s"),
    "fraction": ("", "a fraction in [0, 1], three decimals"),
    "flag": ("", "0 or 1"),
    "value": ("stored units", "a value in the tensor's stored (integer or float) units"),
    "error": ("", "an error, three significant digits"),
    "area": ("mm²", "square millimetres"),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    meaning: str
    group: str


_ENTRIES: list[tuple[str, str, str, str]] = [
    # (name, kind, group, meaning)
    ("layer", "text", "layer", "layer name from the trace (TOTAL: the sum over layers)"),
    ("kind", "text", "layer", "layer kind: conv1d, conv2d, conv3d, linear or matmul "
     "(total on the TOTAL row)"),
    ("m", "dim", "layer", "GEMM rows of one GEMM of one frame (output pixels or tokens)"),
    ("k", "dim", "layer", "GEMM reduction length (input channels x kernel size)"),
    ("n", "dim", "layer", "GEMM columns (output channels)"),
    ("groups", "dim", "layer", "GEMMs per frame (conv groups, or the batch of a matmul)"),
    ("packed_groups", "dim", "layer", "conv groups run side by side in one block-diagonal "
     "GEMM (array.pack_groups, docs/timing.md); 1: one group after another"),
    ("frames", "dim", "layer", "frames (time steps) of the layer"),
    ("gemms", "dim", "layer", "GEMMs of the layer in all (frames x groups)"),
    ("folds", "count", "layer", "array tiles (folds) the mapping runs, over all GEMMs "
     "(packed groups run as one GEMM: packed_groups); on the GEMV engine, the GEMVs it "
     "runs"),
    ("macs_dense", "count", "macs", "MACs of the dense layer: frames x groups x m x k x n"),
    ("macs_performed", "count", "macs", "MACs the array computed (both operands issued)"),
    ("macs_gated", "count", "macs", "MACs issued with a zero operand and clock-gated: "
     "they take a slot but cost the gated energy"),
    ("macs_skipped", "count", "macs", "MACs with a zero operand never issued (skipped)"),
    ("macs_padding", "count", "macs", "MACs on convolution padding, never issued "
     "(skip_padding)"),
    ("compute_cycles", "cycles", "cycles", "cycles of the array computing, memory "
     "assumed ideal"),
    ("stall_cycles", "cycles", "cycles", "cycles waiting for memory (and delta state) on "
     "top of compute"),
    ("cycles", "cycles", "cycles", "total cycles: compute_cycles + stall_cycles"),
    ("util", "fraction", "cycles", "(macs_performed + macs_gated) / (cycles x MAC units)"),
    ("latency_s", "time", "cycles", "cycles / clock frequency"),
    ("density_a", "fraction", "density", "fraction of nonzero stored activations "
     "(operand A)"),
    ("density_w", "fraction", "density", "fraction of nonzero stored weights (operand W; "
     "the B operand of a matmul)"),
    ("nnz_a", "count", "density", "nonzero stored activations"),
    ("size_a", "count", "density", "stored activation elements"),
    ("nnz_w", "count", "density", "nonzero stored weights"),
    ("size_w", "count", "density", "stored weight elements"),
    ("dram_bytes", "bytes", "traffic", "all DRAM traffic: the sum of the dram_* columns"),
    ("out_format", "text", "traffic", "format the layer's output is written in: the "
     "consumer's A format (dense, bitmask, rle, csr, coo) where out_consumer reads it, "
     "else dense (docs/memory-model.md, Output writes)"),
    ("out_consumer", "text", "traffic", "the layer whose input is exactly this layer's "
     "output (meta.input_from through output-stage operators), empty when none is known "
     "and the output is written dense"),
    ("glb_bytes", "bytes", "traffic", "all global-buffer traffic: the sum of the glb_* "
     "columns"),
    ("state_bytes", "bytes", "delta", "delta state traffic: reference and accumulator "
     "reads and writes, and the encoder's dense input reads"),
    ("state_in_dram", "flag", "delta", "1 when the delta state does not fit on chip and "
     "lives in DRAM"),
    ("state_cycles", "cycles", "delta", "cycles moving delta state (and the encoder's "
     "dense input read), per frame at the bandwidth of where it lives"),
    ("state_stall_cycles", "cycles", "delta", "state_cycles not hidden under the frame's "
     "compute (all of them without double buffering; in stall_cycles)"),
    ("macs_wide_performed", "count", "delta", "performed MACs whose A operand is a_bits + 1 "
     "wide (delta layers; priced at (a_bits + 1) / a_bits of a MAC)"),
    ("macs_wide_gated", "count", "delta", "gated MACs whose A operand is a_bits + 1 wide"),
    ("a_operand_bits", "dim", "layer", "bits of the A operand as stored, moved and "
     "multiplied: a_bits, or a_bits + 1 for delta layers"),
    ("map_order", "text", "layer", "GLB mapping: the DRAM -> GLB loop order over (m, n, k), "
     "outer to inner (docs/memory-model.md; empty on the GEMV engine)"),
    ("map_tm", "dim", "layer", "GLB mapping: tile size along M (0 on the GEMV engine)"),
    ("map_tn", "dim", "layer", "GLB mapping: tile size along N (0 on the GEMV engine)"),
    ("map_tk", "dim", "layer", "GLB mapping: tile size along K (0 on the GEMV engine)"),
    ("kv_in_dram", "flag", "kv", "1 when the KV cache does not fit its buffer and lives "
     "in DRAM"),
    ("skip_scan_ops", "count", "skip", "operand pairs a scanning PE looked at and "
     "dropped (priced as skipped MACs)"),
    ("skip_decode_ops", "count", "skip", "elements an enumerating PE decoded (run length "
     "or index to a position)"),
    ("rf_a_meta_read_bits", "bits", "skip", "metadata bits of A read from the register "
     "files by the skip logic"),
    ("rf_w_meta_read_bits", "bits", "skip", "metadata bits of W read from the register "
     "files by the skip logic"),
    ("nm_mux_ops", "count", "nm", "N:M multiplexer selections (one per MAC performed on "
     "N:M weights)"),
    ("delta_gemms_skipped", "count", "delta", "GEMMs of frames after the first skipped "
     "whole because their input did not change"),
    ("delta_density_a", "fraction", "delta", "fraction of nonzero elements of x_t - "
     "x_(t-1) over frames t >= 1"),
    ("delta_err_max", "error", "delta", "--functional: largest absolute error of the "
     "delta-path outputs against direct computation"),
    ("delta_err_rms", "error", "delta", "--functional: RMS error of the delta-path "
     "outputs"),
    ("delta_err_rel", "error", "delta", "--functional: RMS error over the RMS of the "
     "direct outputs"),
    ("delta_exact", "flag", "delta", "--functional: 1 when the delta-path outputs equal "
     "direct computation exactly"),
    ("threshold_a", "value", "threshold", "threshold applied to A: |x| <= it counts as "
     "zero"),
    ("threshold_b", "value", "threshold", "threshold applied to the B operand of a "
     "matmul"),
    ("thr_sparsity_a", "fraction", "threshold", "fraction of A at or under the threshold "
     "(zeros included)"),
    ("thr_err_rel", "error", "threshold", "RMS output error from thresholding over the "
     "RMS of the exact outputs"),
    ("thr_err_rms", "error", "threshold", "RMS output error from thresholding"),
    ("thr_err_max", "error", "threshold", "largest absolute output error from "
     "thresholding"),
    ("energy_pj", "energy", "energy", "total energy: the sum of the energy_<component>_pj "
     "columns"),
    ("energy_mac_pj", "energy", "energy", "MACs performed and gated"),
    ("energy_skip_pj", "energy", "energy", "skip logic: scanned pairs and decode steps"),
    ("energy_mux_pj", "energy", "energy", "N:M multiplexers"),
    ("energy_rf_pj", "energy", "energy", "register-file reads and writes (metadata "
     "included)"),
    ("energy_hop_pj", "energy", "energy", "PE-to-PE transfers"),
    ("energy_glb_pj", "energy", "energy", "global-buffer reads and writes"),
    ("energy_dram_pj", "energy", "energy", "DRAM reads and writes (KV cache included)"),
    ("energy_state_pj", "energy", "energy", "delta state traffic"),
    ("energy_leakage_pj", "energy", "energy", "leakage over all cycles"),
    # inspect
    ("density_a_q1", "fraction", "inspect", "inspect: fraction of A with |q| > 1 "
     "(quantised tensors)"),
    ("density_w_q1", "fraction", "inspect", "inspect: fraction of W with |q| > 1 "
     "(quantised tensors)"),
    ("unchanged_frac_a", "fraction", "inspect", "inspect: 1 - delta_density_a"),
    ("bytes", "bytes", "inspect", "inspect: bytes stored for the layer's tensors"),
    ("kv_cache", "text", "inspect", "inspect: K/V tensor, block, step, cached + appended "
     "rows and heads x head_dim of an attention layer that reads the KV cache"),
    # per frame
    ("frame", "dim", "per-frame", "--per-frame: frame index"),
    ("gemms_skipped", "count", "per-frame", "--per-frame: GEMMs of the frame skipped "
     "whole (delta)"),
    # sweeps
    ("point_id", "text", "sweep", "sweep: id of the point (hash of its config and trace)"),
    ("status", "text", "sweep", "sweep: ok or failed"),
    ("error", "text", "sweep", "sweep: the error of a failed point"),
    ("trace", "text", "sweep", "sweep: trace model name"),
    ("scope", "text", "sweep", "sweep: layer or total row"),
    ("label", "text", "sweep", "sweep: the point's swept values, key=value"),
    ("trace_path", "text", "sweep", "sweep: path of the trace"),
    ("trace_id", "text", "sweep", "sweep: content id of the trace"),
    ("config_hash", "text", "sweep", "sweep: hash of the resolved hardware config"),
    ("hw_name", "text", "sweep", "sweep: name of the hardware config"),
    ("swept", "text", "sweep", "sweep: the swept keys, comma-separated"),
    ("sim_s", "time", "sweep", "sweep: wall time simulating the point"),
    ("hwconfig", "text", "sweep", "sweep: the point's resolved config as JSON"),
    ("edp_pj_s", "error", "sweep", "sweep: energy-delay product, energy_pj x latency_s "
     "(pJ·s)"),
    ("area_mm2", "area", "sweep", "sweep: area of the PE array and buffers"),
    ("area_pe_mm2", "area", "sweep", "sweep: area of the PE array"),
    ("area_glb_mm2", "area", "sweep", "sweep: area of the global buffers"),
    ("area_state_mm2", "area", "sweep", "sweep: area of the delta state buffer "
     "(delta.state auto)"),
]

_LEVEL = {"dram": "DRAM", "glb": "global buffer", "rf": "PE register files"}
_OPERAND = {"a": "activations (A)", "w": "weights (W)", "psum": "partial sums",
            "out": "outputs", "kv": "KV cache"}


def _traffic_meaning(name: str) -> str:
    parts = name[: -len("_bytes")].split("_")
    if parts[1] == "buf":  # <pe|acc>_buf_<read|write>_bytes
        what = ("decoupled PE operand buffers" if parts[0] == "pe" else
                "PE accumulator buffers (ws/is rows that drift apart)")
        return f"{what}: {parts[2]}s"
    if parts[0] == "pe":  # pe_hop_<op>_bytes
        return f"PE-to-PE transfers of {_OPERAND[parts[2]]} (one per hop)"
    if parts[0] == "state":  # state_<ref|acc|enc>_<read|write>_bytes
        what = {"ref": "reference (last input)", "acc": "accumulator (last output)",
                "enc": "encoder's dense input (from DRAM, frames >= 1)"}[parts[1]]
        return f"delta state: {what} {parts[2]}s"
    level, op, direction = parts[0], parts[1], parts[2]
    meta = len(parts) > 3 and parts[3] == "meta"
    what = "metadata (format indices, masks or run lengths)" if meta else "data"
    return f"{_LEVEL[level]} {direction}s of {_OPERAND[op]}: {what}"


def _build() -> dict[str, Column]:
    out: dict[str, Column] = {}
    for name, kind, group, meaning in _ENTRIES:
        out[name] = Column(name, kind, meaning, group)
    for name in (*TRAFFIC_KEYS, *HOP_KEYS, *PE_BUF_KEYS, *STATE_KEYS, *KV_KEYS):
        if name.endswith("_bytes") and name not in out:
            group = ("delta" if name.startswith("state_") else
                     "kv" if "_kv_" in name else "traffic")
            out[name] = Column(name, "bytes", _traffic_meaning(name), group)
    for name in (*SKIP_KEYS, *STATE_KEYS, *KV_KEYS, *THR_COLUMNS):
        if name not in out:  # pragma: no cover - a new model column without an entry
            raise RuntimeError(f"columns: no catalogue entry for {name!r}")
    return out


#: every column: name -> :class:`Column`
CATALOGUE: dict[str, Column] = _build()


def kind_of(name: str) -> str:
    """Display kind of column ``name`` (by its suffix when it is not catalogued)."""
    col = CATALOGUE.get(name)
    if col is not None:
        return col.kind
    if name.endswith("_pj"):
        return "energy"
    if name.endswith("_bytes"):
        return "bytes"
    if name.endswith("_s"):
        return "time"
    if name.endswith("_cycles"):
        return "cycles"
    return "other"


# ----------------------------------------------------------------------- rendering

_COUNT_UNITS = [(1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")]
_BYTE_UNITS = [(1.0, "B"), (2.0**10, "KiB"), (2.0**20, "MiB"), (2.0**30, "GiB"),
               (2.0**40, "TiB")]
_ENERGY_UNITS = [(1.0, "pJ"), (1e3, "nJ"), (1e6, "µJ"), (1e9, "mJ"), (1e12, "J")]
_TIME_UNITS = [(1e-9, "ns"), (1e-6, "µs"), (1e-3, "ms"), (1.0, "s")]
#: kind -> its units, smallest first (also used for the CLI's prose lines)
UNITS = {"count": _COUNT_UNITS, "cycles": _COUNT_UNITS, "bits": _COUNT_UNITS,
         "bytes": _BYTE_UNITS, "energy": _ENERGY_UNITS, "time": _TIME_UNITS}
#: the unit suffix dropped from a header (the unit line says it)
_SUFFIXES = ("_pj", "_bytes", "_s", "_mm2")


def pick_unit(kind: str, values: np.ndarray) -> tuple[float, str]:
    """(divisor, unit) for a column of ``kind``: the smallest unit in which the largest
    magnitude is under 10 000 (so 61 606 400 MACs read 61.61 M, 254 761 cycles 254.8 k)."""
    units = UNITS[kind]
    v = np.abs(values[np.isfinite(values)])
    top = float(v.max()) if v.size else 0.0
    for div, unit in units:
        if top / div < 1e4:
            return div, unit
    return units[-1]


def _decimals(top: float) -> int:
    """Decimals that give the largest value four significant digits (at most 3)."""
    if top <= 0 or not math.isfinite(top):
        return 0
    return int(min(3, max(0, 3 - math.floor(math.log10(top)))))


def format_column(name: str, series: pd.Series) -> tuple[list[str], str]:
    """(cells, unit) of one column as :func:`render` shows it."""
    kind = kind_of(name)
    if kind in ("text", "other") and not pd.api.types.is_numeric_dtype(series):
        return ["" if _isna(v) else str(v) for v in series], ""
    vals = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if kind in UNITS:
        div, unit = pick_unit(kind, vals)
        scaled = vals / div
        top = float(np.abs(scaled[np.isfinite(scaled)]).max()) if finite.size else 0.0
        integral = div == 1.0 and bool(np.all(finite == np.round(finite)))
        dec = 0 if integral else _decimals(top)
        return [_num(x, dec) for x in scaled], unit
    if kind in ("fraction",):
        return [_num(x, 3) for x in vals], ""
    if kind in ("dim", "flag"):
        return [_num(x, 0) for x in vals], ""
    if kind == "area":
        return [_num(x, 3) for x in vals], "mm²"
    # value, error and anything numeric without a unit
    return ["" if not math.isfinite(x) else f"{x:.4g}" if kind == "value" else f"{x:.3g}"
            for x in vals], ""


def _isna(v: object) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _num(x: float, dec: int) -> str:
    if not math.isfinite(x):
        return "" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{dec}f}"


def header_of(name: str) -> list[str]:
    """The header words of column ``name``: its name without a unit suffix, split at
    underscores (``macs_performed`` -> ``macs``, ``performed``; ``energy_pj`` -> ``energy``)."""
    base = name
    for suf in _SUFFIXES:
        if base.endswith(suf) and len(base) > len(suf):
            base = base[: -len(suf)]
            break
    return [w for w in base.split("_") if w] or [name]


def _shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    keep = width - 1
    head = (keep * 2) // 5
    return text[:head] + "…" + text[len(text) - (keep - head):]


def render(df: pd.DataFrame, columns: Sequence[str] | None = None, width: int = 100,
           left: Sequence[str] = ("layer", "kind", "kv_cache", "label", "error")) -> str:
    """``df[columns]`` as text no wider than ``width``: headers are the column names
    (unit suffix dropped) split at underscores over a few lines, the unit of each column
    on the line under them in brackets. Long layer names are shortened in the middle;
    a table that is still too wide is cut into blocks of columns, each repeating the
    first column."""
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    if not cols:
        return ""
    cells: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for c in cols:
        body, unit = format_column(c, df[c])
        cells[c] = body
        heads[c] = header_of(c) + [f"[{unit}]" if unit else ""]
    widths = {c: max(len(x) for x in cells[c] + heads[c]) for c in cols}
    first = cols[0]

    def span(gap: int) -> int:
        return sum(widths.values()) + gap * (len(cols) - 1)

    gap = 2 if span(2) <= width else 1
    total = span(gap)
    if total > width and first == "layer":
        room = width - (total - widths[first])
        new = max(12, min(widths[first], room), max(len(h) for h in heads[first]))
        if new < widths[first]:
            cells[first] = [_shorten(x, new) for x in cells[first]]
            widths[first] = new
    blocks: list[list[str]] = []
    cur: list[str] = []
    used = 0
    for c in cols:
        w = widths[c] + (gap if cur else 0)
        if cur and used + w > width:
            blocks.append(cur)
            cur, used = ([first], widths[first]) if c != first else ([], 0)
            w = widths[c] + (gap if cur else 0)
        cur.append(c)
        used += w
    blocks.append(cur)
    sep = " " * gap
    out: list[str] = []
    for b in blocks:
        depth = max(len(heads[c]) for c in b)
        lines = []
        for i in range(depth):
            parts = []
            for c in b:
                h = heads[c]
                pad = [""] * (depth - len(h)) + h  # bottom-aligned: the unit line is last
                parts.append(_align(pad[i], widths[c], c in left))
            lines.append(sep.join(parts).rstrip())
        for r in range(len(df)):
            lines.append(sep.join(_align(cells[c][r], widths[c], c in left)
                                  for c in b).rstrip())
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _align(text: str, width: int, left: bool) -> str:
    return text.ljust(width) if left else text.rjust(width)


def unit_of(name: str, series: pd.Series) -> str:
    """The unit :func:`render` shows column ``name`` in."""
    return format_column(name, series)[1]


# ----------------------------------------------------------------------- the docs page

_GROUPS = [
    ("layer", "Layer and GEMM shape"), ("macs", "MACs"), ("cycles", "Cycles and time"),
    ("density", "Densities and element counts"), ("traffic", "Memory traffic"),
    ("skip", "Skip logic"), ("nm", "N:M structured sparsity"),
    ("delta", "Delta processing"), ("kv", "KV cache"), ("threshold", "Thresholds"),
    ("energy", "Energy"), ("inspect", "accelsim inspect"), ("per-frame", "--per-frame"),
    ("sweep", "Sweep results (accelsim.load_results)"),
]


def markdown() -> str:
    """The text of ``docs/columns.md``."""
    lines = [
        "# Result columns",
        "",
        "<!-- generated by `python -m accelsim.analysis.columns > docs/columns.md` from",
        "accelsim/analysis/columns.py; tests/test_output.py checks that they agree -->",
        "",
        "Every column of `accelsim.simulate`, `accelsim simulate`, `accelsim inspect`, the",
        "`--per-frame` view and a sweep's results. Files (`-o`, `--report-dir`) and",
        "DataFrames hold the stored unit; the terminal table shows each column in one",
        "unit picked from its magnitude and printed under the column name in brackets",
        "(`[M]` = millions, `[KiB]`, `[µJ]`, ...). Headers are the column names without",
        "their unit suffix (`_pj`, `_bytes`, `_s`), split at underscores.",
        "",
        "| kind | stored unit | shown as |",
        "| --- | --- | --- |",
    ]
    for kind, (unit, text) in KINDS.items():
        lines.append(f"| {kind} | {unit or '-'} | {text} |")
    for group, title in _GROUPS:
        rows = [c for c in CATALOGUE.values() if c.group == group]
        if not rows:
            continue
        lines += ["", f"## {title}", "", "| column | unit | meaning |", "| --- | --- | --- |"]
        for c in rows:
            unit = KINDS[c.kind][0] or c.kind
            lines.append(f"| `{c.name}` | {unit} | {c.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(markdown())
