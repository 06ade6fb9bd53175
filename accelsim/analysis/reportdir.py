"""``accelsim simulate --report-dir DIR``: one directory that keeps a run and its context.

The directory is built in a temporary sibling and renamed into place in one step
(:func:`accelsim.io.atomic.atomic_dir`), so ``DIR`` holds a whole report or none. It holds

=========================  ============================================================
``config.yaml``            the resolved hardware config, every default filled in
                           (:func:`accelsim.io.hwconfig.hwconfig_to_yaml`; loading it
                           back gives an equal config)
``provenance.json``        trace path and SHA-256 of its files, config name and hash,
                           energy table, accelsim version, command line, date (UTC), files
``layers.csv``             the per-layer table with its TOTAL row, every column, with the
``layers.parquet``         same provenance ``simulate -o`` writes
                           (:mod:`accelsim.analysis.output`); ``reprice`` and ``plot`` read
                           either
``COMPUTE_REPORT.csv``     SCALE-Sim v3's report files and column names, every value from
``BANDWIDTH_REPORT.csv``   accelsim's columns (:func:`scalesim_reports` says how)
``layer_cycles.png``       the standard plots (:func:`accelsim.analysis.plot.layer_cycles`,
``energy_breakdown.png``   :func:`~accelsim.analysis.plot.energy_breakdown`)
``report.html``            one self-contained page: summary, per-layer table, the plots
                           (embedded), the provenance
=========================  ============================================================

Library code: it raises :class:`~accelsim.errors.OutputError`, never prints.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from accelsim.errors import OutputError

#: the file that marks a directory as an accelsim report (and holds its provenance)
MARKER = "provenance.json"
LAYERS_CSV = "layers.csv"
LAYERS_PARQUET = "layers.parquet"
PLOTS = ("layer_cycles", "energy_breakdown")
#: columns of the HTML page's per-layer table (the CLI's default view)
HTML_COLUMNS = ["layer", "kind", "macs_dense", "macs_performed", "cycles", "stall_cycles",
                "util", "density_a", "density_w", "dram_bytes", "energy_pj"]

COMPUTE_COLUMNS = ["LayerID", "Total Cycles (incl. prefetch)", "Total Cycles",
                   "Stall Cycles", "Overall Util %", "Mapping Efficiency %",
                   "Compute Util %"]
BANDWIDTH_COLUMNS = ["LayerID", "Avg IFMAP SRAM BW", "Avg FILTER SRAM BW",
                     "Avg OFMAP SRAM BW", "Avg IFMAP DRAM BW", "Avg FILTER DRAM BW",
                     "Avg OFMAP DRAM BW"]
#: the extra column SCALE-Sim adds (after FILTER SRAM) when the weights are sparse
FILTER_META_COLUMN = "Avg FILTER Metadata SRAM BW"


# ----------------------------------------------------------------------- checking

def is_report_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory an earlier ``--report-dir`` wrote."""
    marker = Path(path) / MARKER
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("report") == "accelsim report directory"


def check_report_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse ``path`` before any simulation runs, unless it can become the report:
    it does not exist (its parent does and is writable), it is an empty directory, or
    it is an earlier report and ``force`` is set. Raises :class:`OutputError`."""
    from accelsim.io.paths import check_path, is_dir

    label = f"--report-dir {str(path)[:80]}"
    p = check_path(path, OutputError, what="report directory", label=label)
    parent = p.parent if str(p.parent) else Path(".")
    if os.path.lexists(p):
        if not is_dir(p) or p.is_symlink():
            raise OutputError(f"{label}: exists and is not a directory")
        if is_report_dir(p):
            if not force:
                raise OutputError(f"{label}: holds an earlier report; give --force to "
                                  f"replace it")
        elif any(p.iterdir()):
            raise OutputError(f"{label}: exists and is not an accelsim report (no "
                              f"{MARKER}); choose a new or empty directory")
    elif not is_dir(parent):
        raise OutputError(f"{label}: directory {str(parent)[:80]} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{label}: directory {str(parent)[:80]} is not writable")
    return p


# ----------------------------------------------------------------------- SCALE-Sim

def _layers(full: pd.DataFrame) -> pd.DataFrame:
    if "layer" in full.columns and len(full) and full["layer"].iloc[-1] == "TOTAL":
        return full.iloc[:-1]
    return full


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, 0 where the table lacks it (e.g. no metadata traffic)."""
    if name not in df.columns:
        return pd.Series(0.0, index=df.index)
    return pd.to_numeric(df[name], errors="coerce").fillna(0).astype(float)


def scalesim_reports(full: pd.DataFrame, hw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SCALE-Sim v3's ``COMPUTE_REPORT.csv`` and ``BANDWIDTH_REPORT.csv`` (one row per
    layer, ``LayerID`` counting from 0 in trace order; no TOTAL row, as in SCALE-Sim),
    filled from accelsim's per-layer columns. ``P = rows × cols × macs_per_pe``.

    COMPUTE_REPORT:

    - ``Total Cycles (incl. prefetch)`` = ``cycles``. accelsim's cycles already hold the
      first fold's exposed load (SCALE-Sim's prefetch) in ``stall_cycles``.
    - ``Total Cycles`` = ``cycles`` too: accelsim does not split the prefetch out of the
      stalls. It is a count of cycles; SCALE-Sim writes the index of the last cycle, one
      less (docs/interop.md: dense layers match SCALE-Sim + 1).
    - ``Stall Cycles`` = ``stall_cycles``.
    - ``Overall Util %`` = 100 × ``util`` = 100 × (``macs_performed`` + ``macs_gated``)
      / (``cycles`` × P). SCALE-Sim divides its dense MAC count; the two agree on a
      dense layer, and on a sparse one accelsim counts only the MACs it issues.
    - ``Mapping Efficiency %`` = 100 × D_rows·D_cols / (F_r·F_c·R·C), with (D_rows,
      D_cols) the GEMM dimensions the dataflow puts on the array's rows and columns
      (``m``, ``k``, ``n`` through :func:`accelsim.model.dataflow.make_plan`) and
      F_r·F_c its folds per GEMM: the mean over folds of the fraction of PEs mapped,
      SCALE-Sim's definition (every GEMM of a layer has the same shape); with packed
      groups (``packed_groups`` G' > 1 of ``groups`` G) times G / ceil(G / G'), the
      groups a packed fold holds on average.
    - ``Compute Util %`` = 100 × (``macs_performed`` + ``macs_gated``) /
      (``compute_cycles`` × P): utilisation while computing, stalls left out; SCALE-Sim
      averages the per-fold ratio, this is the ratio of the layer's sums.

    BANDWIDTH_REPORT, in bytes per cycle. SCALE-Sim counts words per cycle with a fixed
    1-byte word, so the two agree for 8-bit operands; wider operands (``precision.*_bits``,
    e.g. 32-bit partial sums) count all their bytes here.

    - ``Avg IFMAP SRAM BW`` = ``glb_a_read_bytes`` / ``cycles``
    - ``Avg FILTER SRAM BW`` = ``glb_w_read_bytes`` / ``cycles``
    - ``Avg FILTER Metadata SRAM BW`` (only where some layer reads weight metadata, as
      SCALE-Sim adds it only with sparsity support) = ``glb_w_read_meta_bytes`` / ``cycles``
    - ``Avg OFMAP SRAM BW`` = (``glb_out_write_bytes`` + ``glb_psum_write_bytes``) /
      ``cycles`` (SCALE-Sim's OFMAP SRAM writes include partial sums written back)
    - ``Avg IFMAP DRAM BW`` = (``dram_a_read_bytes`` + ``dram_a_read_meta_bytes``) /
      ``cycles``
    - ``Avg FILTER DRAM BW`` = (``dram_w_read_bytes`` + ``dram_w_read_meta_bytes``) /
      ``cycles``
    - ``Avg OFMAP DRAM BW`` = (``dram_out_write_bytes`` + ``dram_psum_write_bytes``) /
      ``cycles``

    SCALE-Sim divides DRAM traffic by each interface's own active window; accelsim has
    one DRAM channel and no per-operand window, so every column divides by the layer's
    cycles. Traffic SCALE-Sim does not model (delta state, KV cache, psum reads) stays in
    ``layers.csv``.
    """
    from accelsim.model.dataflow import make_plan

    layers = _layers(full).reset_index(drop=True)
    plan = make_plan(hw)
    pes = hw.array.rows * hw.array.cols * hw.array.macs_per_pe
    issued = _col(layers, "macs_performed") + _col(layers, "macs_gated")
    cycles = _col(layers, "cycles")
    compute = _col(layers, "compute_cycles")

    def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den > 0)).fillna(0.0)

    mapping = []
    ones = pd.Series(1, index=layers.index)
    groups = layers["groups"] if "groups" in layers else ones
    packed = layers["packed_groups"] if "packed_groups" in layers else ones
    for m, k, n, g, gp in zip(layers["m"], layers["k"], layers["n"], groups, packed,
                              strict=True):
        dims = {"m": int(m), "k": int(k), "n": int(n)}
        fr, fc = plan.folds(dims["m"], dims["k"], dims["n"])
        area = fr * fc * plan.rows * plan.cols
        # packed groups (docs/timing.md): each pack of the layer's ceil(g / gp) maps its
        # groups' row x col blocks on one group's fold grid
        g, gp = int(g), max(int(gp), 1)
        share = g / -(-g // gp) if gp > 1 else 1.0
        mapping.append(100.0 * share * dims[plan.row_dim] * dims[plan.col_dim] / area
                       if area else 0.0)
    ids = pd.Series(range(len(layers)), dtype="int64")
    comp = pd.DataFrame({
        "LayerID": ids,
        "Total Cycles (incl. prefetch)": cycles.astype("int64"),
        "Total Cycles": cycles.astype("int64"),
        "Stall Cycles": _col(layers, "stall_cycles").astype("int64"),
        "Overall Util %": 100.0 * ratio(issued, cycles * pes),
        "Mapping Efficiency %": pd.Series(mapping, dtype=float),
        "Compute Util %": 100.0 * ratio(issued, compute * pes),
    })
    bw: dict[str, pd.Series] = {
        "LayerID": ids,
        "Avg IFMAP SRAM BW": ratio(_col(layers, "glb_a_read_bytes"), cycles),
        "Avg FILTER SRAM BW": ratio(_col(layers, "glb_w_read_bytes"), cycles),
    }
    meta = _col(layers, "glb_w_read_meta_bytes")
    if float(meta.sum()) > 0:
        bw[FILTER_META_COLUMN] = ratio(meta, cycles)
    bw["Avg OFMAP SRAM BW"] = ratio(_col(layers, "glb_out_write_bytes")
                                    + _col(layers, "glb_psum_write_bytes"), cycles)
    bw["Avg IFMAP DRAM BW"] = ratio(_col(layers, "dram_a_read_bytes")
                                    + _col(layers, "dram_a_read_meta_bytes"), cycles)
    bw["Avg FILTER DRAM BW"] = ratio(_col(layers, "dram_w_read_bytes")
                                     + _col(layers, "dram_w_read_meta_bytes"), cycles)
    bw["Avg OFMAP DRAM BW"] = ratio(_col(layers, "dram_out_write_bytes")
                                    + _col(layers, "dram_psum_write_bytes"), cycles)
    return comp, pd.DataFrame(bw)


def scalesim_csv(df: pd.DataFrame) -> str:
    """``df`` in SCALE-Sim's own CSV layout: ``, ``-separated, a trailing comma on
    every line (``pd.read_csv(f, skipinitialspace=True)`` reads it)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return repr(float(v))
        return str(v)

    lines = [", ".join(df.columns) + ","]
    for row in df.itertuples(index=False):
        lines.append(", ".join(cell(v) for v in row) + ",")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- plots

def _plot_png(kind: str, full: pd.DataFrame, dpi: int = 110) -> bytes:
    """One standard plot as PNG bytes, drawn on a pyplot-free Agg figure."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from accelsim.analysis import plot

    n = len(_layers(full))
    size = (max(5.0, 0.9 * n + 2.5), 4.2) if kind == "layer_cycles" else \
        (max(5.5, 0.9 * n + 3.0), 4.4)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    getattr(plot, kind)(full, ax=ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#1d2330;background:#fff;line-height:1.4}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;
border-bottom:2px solid #dde3ee;padding-bottom:3px}
.sub{color:#5a6478;margin:0 0 14px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#f2f5fa;border:1px solid #dde3ee;border-radius:6px;padding:8px 14px;
min-width:130px}.card b{display:block;font-size:19px;color:#1a4f9c}
.card span{font-size:12px;color:#5a6478}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 9px;border-bottom:1px solid #e4e8f0;text-align:right;white-space:nowrap}
th{background:#e9eef7;vertical-align:bottom}td.t,th.t{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #9aa8c0;background:#f7f9fc}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots img{max-width:100%;
border:1px solid #dde3ee;border-radius:4px}
pre{background:#f5f7fa;border:1px solid #dde3ee;padding:8px;font-size:12px;
white-space:pre-wrap;word-break:break-all}
ul.notes{margin:8px 0;padding-left:20px}.files code{margin-right:10px}
"""

# set on the <html> element once the page has loaded: how many images decoded
_SCRIPT = """window.addEventListener("load",function(){var i=document.images,n=0;
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0){n++;}}
document.documentElement.setAttribute("data-images-loaded",n+"/"+i.length);});"""


def _eng(value: float, kind: str) -> str:
    from accelsim.analysis.columns import pick_unit

    div, unit = pick_unit(kind, pd.Series([float(value)]).to_numpy(dtype=float))
    return f"{float(value) / div:.4g} {unit}".strip()


def _table_html(full: pd.DataFrame, columns: Sequence[str]) -> str:
    from accelsim.analysis.columns import format_column, header_of

    cols = [c for c in columns if c in full.columns]
    cells = {}
    heads = []
    for c in cols:
        vals, unit = format_column(c, full[c])
        cells[c] = vals
        text = " ".join(header_of(c)) + (f" [{unit}]" if unit else "")
        cls = ' class="t"' if c in ("layer", "kind") else ""
        heads.append(f'<th{cls} title="{html.escape(c)}">{html.escape(text)}</th>')
    rows = []
    for i in range(len(full)):
        is_total = str(full["layer"].iloc[i]) == "TOTAL" if "layer" in full else False
        tds = "".join(f'<td{" class=t" if c in ("layer", "kind") else ""}>'
                      f"{html.escape(cells[c][i])}</td>" for c in cols)
        rows.append(f'<tr{" class=total" if is_total else ""}>{tds}</tr>')
    return (f'<table id="layers"><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _summary_cards(tot: pd.Series) -> list[tuple[str, str]]:
    out = [("cycles", f"{int(tot['cycles']):,}"),
           ("stall cycles", f"{int(tot['stall_cycles']):,}"),
           ("latency", _eng(tot["latency_s"], "time")),
           ("energy", _eng(tot["energy_pj"], "energy")),
           ("MACs performed", f"{_eng(tot['macs_performed'], 'count')} of "
                              f"{_eng(tot['macs_dense'], 'count')}"),
           ("utilisation", f"{float(tot['util']):.3f}"),
           ("DRAM traffic", _eng(tot["dram_bytes"], "bytes"))]
    return out


def report_html(full: pd.DataFrame, prov: Mapping[str, Any], pngs: Mapping[str, bytes],
                notes: Sequence[str] = ()) -> str:
    """The one-page report: summary cards, ``notes`` (the CLI's summary lines), the
    per-layer table, the plots (embedded as base64 PNG) and the provenance."""
    tot = full.iloc[-1]
    hw = prov.get("hw") or {}
    cfg = hw.get("config") or {}
    arr = cfg.get("array", {})
    tr = prov.get("trace") or {}
    title = f"accelsim report: {tr.get('model', '?')} on {hw.get('name', '?')}"
    sub = (f"{arr.get('rows', '?')}×{arr.get('cols', '?')} PEs × "
           f"{arr.get('macs_per_pe', '?')} MAC, dataflow {cfg.get('dataflow', '?')}, zero "
           f"policy {cfg.get('zero_policy', '?')}, {cfg.get('clock_ghz', '?')} GHz, energy "
           f"table {hw.get('energy_table', '?')}")
    e = html.escape
    cards = "".join(f"<div class=card><b>{e(v)}</b><span>{e(k)}</span></div>"
                    for k, v in _summary_cards(tot))
    energy = [c for c in full.columns if c.startswith("energy_") and c != "energy_pj"
              and c.endswith("_pj")]
    total_e = float(tot["energy_pj"])
    breakdown = ", ".join(f"{c[len('energy_'):-3]} {100 * float(tot[c]) / total_e:.1f}%"
                          for c in energy if total_e > 0 and float(tot[c]) > 0)
    note_items = [*notes] + ([f"energy breakdown: {breakdown}"] if breakdown and not any(
        n.startswith("energy breakdown") for n in notes) else [])
    notes_html = "".join(f"<li>{e(n)}</li>" for n in note_items)
    imgs = "".join(
        f'<figure><img alt="{e(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{e(name)}.png</figcaption>'
        f"</figure>" for name, data in pngs.items())
    prov_rows = [("trace", f"{tr.get('path', tr.get('model', ''))}"
                  + (" (synthetic)" if tr.get("synthetic") else "")),
                 ("trace sha256", tr.get("sha256", "")),
                 ("hardware config", f"{hw.get('name', '')} (hash {hw.get('config_hash', '')})"),
                 ("accelsim", prov.get("accelsim_version", "")),
                 ("command", prov.get("command", "")),
                 ("date", prov.get("date", ""))]
    prov_html = "".join(f'<tr><th class="t">{e(k)}</th><td class="t">{e(str(v))}</td></tr>'
                        for k, v in prov_rows)
    files = "".join(f"<a href=\"{e(f)}\"><code>{e(f)}</code></a>"
                    for f in prov.get("files", []))
    body = json.dumps(prov, indent=1, sort_keys=True, default=str)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style><script>{_SCRIPT}</script></head>
<body>
<h1>{e(title)}</h1>
<p class="sub">{e(sub)}</p>
<h2>Summary</h2>
<div class="cards">{cards}</div>
<ul class="notes">{notes_html}</ul>
<h2>Per layer</h2>
{_table_html(full, HTML_COLUMNS)}
<p class="sub">Every column of every layer: <code>layers.csv</code>,
<code>layers.parquet</code>; SCALE-Sim-style: <code>COMPUTE_REPORT.csv</code>,
<code>BANDWIDTH_REPORT.csv</code>.</p>
<h2>Plots</h2>
<div class="plots">{imgs}</div>
<h2>Provenance</h2>
<table id="provenance">{prov_html}</table>
<p class="files">Files: {files}</p>
<details><summary>provenance.json</summary><pre>{e(body)}</pre></details>
</body></html>
"""


# ----------------------------------------------------------------------- writing

def write_report_dir(path: str | os.PathLike, full: pd.DataFrame, hw: Any,
                     prov: Mapping[str, Any], notes: Sequence[str] = (),
                     force: bool = False) -> Path:
    """Write the report directory ``path`` (see the module docstring) atomically.

    ``full`` is the per-layer table with its TOTAL row
    (:func:`accelsim.analysis.report.with_totals`), ``hw`` the resolved config, ``prov``
    the record of :func:`accelsim.analysis.output.provenance`; ``notes`` are lines shown
    under the summary. ``path`` is checked again (:func:`check_report_dir`)."""
    from accelsim.analysis.output import to_bytes
    from accelsim.io.atomic import atomic_dir
    from accelsim.io.hwconfig import hwconfig_to_yaml

    target = check_report_dir(path, force=force)
    if not len(full) or str(full["layer"].iloc[-1]) != "TOTAL":
        raise OutputError("report: the table needs its TOTAL row (with_totals)")
    record = dict(prov)
    record.setdefault("date", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    record["report"] = "accelsim report directory"
    comp, bw = scalesim_reports(full, hw)
    pngs = {name: _plot_png(name, full) for name in PLOTS}
    files = ["report.html", "config.yaml", MARKER, LAYERS_CSV, LAYERS_PARQUET,
             "COMPUTE_REPORT.csv", "BANDWIDTH_REPORT.csv", *(f"{n}.png" for n in PLOTS)]
    record["files"] = files
    layer_prov = {k: v for k, v in record.items() if k not in ("files", "report")}
    try:
        with atomic_dir(target) as tmp:
            (tmp / "config.yaml").write_text(hwconfig_to_yaml(hw), encoding="utf-8")
            (tmp / LAYERS_CSV).write_bytes(to_bytes(full, "csv", layer_prov))
            (tmp / LAYERS_PARQUET).write_bytes(to_bytes(full, "parquet", layer_prov))
            (tmp / "COMPUTE_REPORT.csv").write_text(scalesim_csv(comp), encoding="utf-8")
            (tmp / "BANDWIDTH_REPORT.csv").write_text(scalesim_csv(bw), encoding="utf-8")
            for name, data in pngs.items():
                (tmp / f"{name}.png").write_bytes(data)
            (tmp / "report.html").write_text(report_html(full, record, pngs, notes),
                                             encoding="utf-8")
            # the marker last: a directory holding it is a whole report
            (tmp / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True,
                                                 default=str) + "\n", encoding="utf-8")
    except OSError as e:
        raise OutputError(f"--report-dir {str(path)[:80]}: cannot write "
                          f"({e.strerror or type(e).__name__})") from None
    return target


__all__ = ["BANDWIDTH_COLUMNS", "COMPUTE_COLUMNS", "check_report_dir", "is_report_dir",
           "report_html", "scalesim_csv", "scalesim_reports", "write_report_dir"]
