"""Plots: a DataFrame in, a matplotlib ``Axes`` out.

Every function takes the frame that :func:`accelsim.simulate` or
:func:`accelsim.load_results` returns, draws on ``ax`` (a new figure if ``None``) and
returns the Axes. Axes carry units; values are shown in a readable unit (µs, µJ, KiB)
picked from their magnitude. Selection (which point, which trace) is the caller's job;
the only computation here is what a plot needs to draw (the Pareto front, a pivot).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from accelsim.analysis.sweep import pareto as _pareto
from accelsim.analysis.sweep import speedup as _speedup
from accelsim.analysis.sweep import totals_only

__all__ = ["density_speedup", "energy_breakdown", "heatmap", "label_of", "layer_cycles",
           "pareto"]

_ENERGY_UNITS = [(1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1.0, "pJ")]
_TIME_UNITS = [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")]
_BYTE_UNITS = [(2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")]
_NAMES = {
    "latency_s": "latency", "energy_pj": "energy", "edp_pj_s": "energy-delay product",
    "area_mm2": "area", "area_pe_mm2": "PE array area", "area_glb_mm2": "buffer area",
    "area_state_mm2": "delta state buffer area",
    "cycles": "cycles", "compute_cycles": "compute cycles", "stall_cycles": "stall cycles",
    "util": "utilisation", "density_a": "activation density", "density_w": "weight density",
    "macs_performed": "MACs performed", "dram_bytes": "DRAM traffic",
    "glb_bytes": "buffer traffic", "array.rows": "PE rows", "array.cols": "PE columns",
    "zero_policy": "zero policy", "memory.glb.a_kib": "activation buffer",
    "memory.glb.w_kib": "weight buffer", "memory.glb.out_kib": "output buffer",
}


def _pick(values: Any, units: list[tuple[float, str]]) -> tuple[float, str]:
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return units[-1]
    ref = float(np.median(v))
    for scale, name in units:
        if ref >= scale:
            return scale, name
    return units[-1]


def unit_of(col: str, values: Any = ()) -> tuple[float, str]:
    """(divisor, unit text) to show column ``col``."""
    if col.endswith("_pj_s"):
        return 1e3, "µJ·ms"  # 1 µJ·ms = 1e3 pJ·s
    if col.endswith("_pj"):
        return _pick(values, _ENERGY_UNITS)
    if col.endswith("_s"):
        return _pick(values, _TIME_UNITS)
    if col.endswith("_bytes"):
        return _pick(values, _BYTE_UNITS)
    if col.endswith("_mm2"):
        return 1.0, "mm²"
    if col.endswith("_kib"):
        return 1.0, "KiB"
    if col.endswith("cycles"):
        return 1.0, "cycles"
    if col in ("util",) or col.startswith("density"):
        return 1.0, "fraction"
    if col.startswith("macs"):
        return 1.0, "MACs"
    if col in ("array.rows", "array.cols"):
        return 1.0, "PEs"
    return 1.0, ""


def label_of(col: str, values: Any = ()) -> tuple[float, str]:
    """(divisor, axis label with unit) for column ``col``."""
    scale, unit = unit_of(col, values)
    name = _NAMES.get(col)
    if name is None:
        name = col.replace("_", " ")
        if col.startswith("energy_") and col.endswith("_pj"):
            name = f"{col[len('energy_'):-len('_pj')]} energy"
    if unit in ("cycles",) and name.endswith("cycles"):
        return scale, name
    return scale, f"{name} ({unit})" if unit else name


def _ax(ax: Any, size: tuple[float, float] = (6.4, 4.4)) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _one_point(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Per-layer rows of a single (point, trace)."""
    data = df
    if "status" in data.columns:
        data = data[data["status"] == "ok"]
    for col in ("point_id", "trace"):
        if col in data.columns and data[col].nunique() > 1:
            raise ValueError(f"{what}: the frame holds {data[col].nunique()} values of "
                             f"{col!r}; select one point and trace first")
    if "scope" in data.columns:
        data = data[data["scope"] == "layer"]
    if "layer" in data.columns:
        data = data[data["layer"] != "TOTAL"]
    if data.empty:
        raise ValueError(f"{what}: no per-layer rows to plot")
    return data


def _title(df: pd.DataFrame, default: str) -> str:
    parts = []
    if "trace" in df.columns and df["trace"].nunique() == 1:
        parts.append(str(df["trace"].iloc[0]))
    elif df.attrs.get("trace"):
        parts.append(str(df.attrs["trace"]))
    if "label" in df.columns and df["label"].nunique() == 1:
        parts.append(str(df["label"].iloc[0]))
    elif df.attrs.get("hw"):
        parts.append(str(df.attrs["hw"]))
    return f"{default}: " + ", ".join(parts) if parts else default


def _colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ------------------------------------------------------------------------- plots

def pareto(df: pd.DataFrame, x: str = "latency_s", y: str = "energy_pj",
           color: str | None = None, ax: Any = None, logx: bool = False,
           logy: bool = False, maximize: Sequence[str] = ()) -> Any:
    """Scatter of every ok (point, trace) total, coloured by ``color`` (a swept key),
    with the Pareto front of (``x``, ``y``) drawn as a staircase and the point of
    lowest ``x * y`` starred and labelled."""
    ax = _ax(ax, (8.8, 4.6))
    data = totals_only(df).dropna(subset=[x, y])
    if data.empty:
        raise ValueError("pareto: no ok total rows to plot")
    sx, lx = label_of(x, data[x])
    sy, ly = label_of(y, data[y])
    xs = data[x].astype(float) / sx
    ys = data[y].astype(float) / sy
    if color is not None and color in data.columns:
        vals = data[color]
        if pd.api.types.is_numeric_dtype(vals) and vals.nunique() > 10:
            sc = ax.scatter(xs, ys, c=vals.astype(float), s=22, cmap="viridis", alpha=0.8)
            ax.figure.colorbar(sc, ax=ax, label=label_of(color)[1])
        else:
            levels = sorted(vals.unique(), key=lambda v: (str(type(v)), v))
            for lev, col in zip(levels, _colors(len(levels)), strict=True):
                m = (vals == lev).to_numpy()
                ax.scatter(xs[m], ys[m], s=22, color=col, alpha=0.75, label=f"{lev}")
    else:
        ax.scatter(xs, ys, s=22, color="tab:blue", alpha=0.6, label="configs")
    traces = data["trace"].unique() if "trace" in data.columns else [None]
    styles = ["-", "--", ":", "-."]
    for i, tr in enumerate(traces):
        sub = data if tr is None else data[data["trace"] == tr]
        front = _pareto(sub, x, y, maximize=maximize)
        fx, fy = front[x].astype(float) / sx, front[y].astype(float) / sy
        name = f"Pareto front ({len(front)} pt{'s' if len(front) != 1 else ''})" + \
            (f", {tr}" if len(traces) > 1 else "")
        ax.step(fx, fy, where="post", color="black", lw=1.4, ls=styles[i % 4], zorder=3,
                label=name)
        ax.scatter(fx, fy, s=40, facecolors="none", edgecolors="black", lw=1.2, zorder=4)
        prod = (sub[x].astype(float) * sub[y].astype(float)).to_numpy()
        best = sub.iloc[int(np.argmin(prod))]
        what = "energy-delay" if {x, y} == {"latency_s", "energy_pj"} else \
            f"{_NAMES.get(x, x)} × {_NAMES.get(y, y)}"
        star = f"lowest {what}" + (f":\n{best['label']}" if "label" in sub.columns else "")
        ax.scatter([float(best[x]) / sx], [float(best[y]) / sy], marker="*", s=220,
                   color="gold", edgecolors="black", zorder=5, label=star)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(lx)
    ax.set_ylabel(ly)
    ax.set_title(_title(data, "Pareto front"), fontsize=10)
    ax.grid(True, alpha=0.3)
    # outside the axes, so that it never hides a point
    ax.legend(title=_NAMES.get(color, color) if color else None, fontsize=8,
              title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def layer_cycles(df: pd.DataFrame, ax: Any = None) -> Any:
    """Per-layer stacked bars of compute and stall cycles for one (point, trace), with
    each layer's utilisation written above its bar."""
    data = _one_point(df, "layer_cycles")
    ax = _ax(ax, (max(5.0, 0.9 * len(data) + 2.5), 4.2))
    pos = np.arange(len(data))
    comp = data["compute_cycles"].to_numpy(dtype=float)
    stall = data["stall_cycles"].to_numpy(dtype=float)
    ax.bar(pos, comp, color="tab:blue", label="compute")
    ax.bar(pos, stall, bottom=comp, color="tab:red", label="stall (memory)")
    if "util" in data.columns:
        for p, c, s, u in zip(pos, comp, stall, data["util"], strict=True):
            ax.annotate(f"util {float(u):.2f}", (p, c + s), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(pos, data["layer"].astype(str), rotation=30 if len(data) > 6 else 0,
                  ha="right" if len(data) > 6 else "center")
    ax.set_xlabel("layer")
    ax.set_ylabel("cycles")
    ax.set_ylim(0, float((comp + stall).max()) * 1.12 or 1.0)
    ax.set_title(_title(data, "Cycles per layer"), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return ax


_ENERGY_RE = re.compile(r"^energy_(?!pj$).+_pj$")


def energy_breakdown(df: pd.DataFrame, by: str = "layer", ax: Any = None) -> Any:
    """Stacked bars of energy per component (MAC, register files, buffer, DRAM,
    leakage, ...) for each value of ``by``: the layers of one point (default), or e.g.
    ``by="label"`` on a frame of total rows to compare configs."""
    if by == "layer":
        data = _one_point(df, "energy_breakdown")
    else:
        data = totals_only(df) if "scope" in df.columns else df
    comps = [c for c in data.columns if _ENERGY_RE.match(c)
             and float(data[c].astype(float).abs().sum()) > 0]
    if not comps:
        raise ValueError("energy_breakdown: no energy_<component>_pj columns")
    ax = _ax(ax, (max(5.5, 0.9 * len(data) + 3.0), 4.4))
    scale, unit = _pick(data["energy_pj"] if "energy_pj" in data else data[comps[0]],
                        _ENERGY_UNITS)
    pos = np.arange(len(data))
    bottom = np.zeros(len(data))
    for comp, col in zip(comps, _colors(len(comps)), strict=True):
        vals = data[comp].to_numpy(dtype=float) / scale
        ax.bar(pos, vals, bottom=bottom, color=col,
               label=comp[len("energy_"):-len("_pj")])
        bottom += vals
    labels = data[by].astype(str)
    ax.set_xticks(pos, labels, rotation=30 if len(data) > 6 else 0,
                  ha="right" if len(data) > 6 else "center")
    ax.set_xlabel(_NAMES.get(by, by))
    ax.set_ylabel(f"energy ({unit})")
    ax.set_title(_title(data, "Energy by component"), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def heatmap(df: pd.DataFrame, x: str, y: str, metric: str = "edp_pj_s", agg: str = "min",
            ax: Any = None, annotate: bool = True) -> Any:
    """A metric over two swept keys. Where other keys vary, each cell shows the
    ``agg`` (min, median, mean, max) of the metric over them, as the title says."""
    data = totals_only(df)
    for col in (x, y, metric):
        if col not in data.columns:
            raise KeyError(f"heatmap: no column {col!r}")
    table = data.pivot_table(index=y, columns=x, values=metric, aggfunc=agg)
    table = table.sort_index(ascending=False)
    scale, lab = label_of(metric, table.to_numpy().ravel())
    vals = table.to_numpy(dtype=float) / scale
    ax = _ax(ax, (1.1 * len(table.columns) + 3.0, 0.7 * len(table.index) + 2.2))
    im = ax.imshow(vals, cmap="viridis_r", aspect="auto")
    ax.figure.colorbar(im, ax=ax, label=lab)
    ax.set_xticks(range(len(table.columns)), [f"{v:g}" if isinstance(v, float) else str(v)
                                              for v in table.columns])
    ax.set_yticks(range(len(table.index)), [f"{v:g}" if isinstance(v, float) else str(v)
                                            for v in table.index])
    ax.set_xlabel(label_of(x)[1])
    ax.set_ylabel(label_of(y)[1])
    if annotate:
        finite = vals[np.isfinite(vals)]
        mid = float(np.nanmean(finite)) if finite.size else 0.0
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if v > mid else "black")
    others = [k for k in df.attrs.get("swept_keys", []) if k not in (x, y)
              and k in data.columns and data[k].nunique() > 1]
    title = _NAMES.get(metric, metric)
    if others:
        title += f" ({agg} over {', '.join(_NAMES.get(k, k) for k in others)})"
    ax.set_title(title, fontsize=10)
    return ax


def density_speedup(df: pd.DataFrame, key: str = "zero_policy", baseline: Any = "none",
                    metric: str = "cycles", density: str = "density_a",
                    match: Sequence[str] | None = None, ax: Any = None) -> Any:
    """Speedup (``baseline`` metric / metric) against operand density, one curve per
    value of ``key``, from per-layer rows (dots), with the median per 0.05 of density
    (line); the dashed line at 1 is break-even. With
    ``metric="energy_pj"`` it shows the energy saving, where metadata can lose.
    ``match`` names the columns a row shares with its baseline (see
    :func:`accelsim.sweep.speedup`)."""
    sp = _speedup(df, key=key, baseline=baseline, metric=metric, match=match)
    if sp.empty:
        raise ValueError(f"density_speedup: no rows to compare with {key}={baseline}")
    ax = _ax(ax)
    levels = sorted(sp[key].unique(), key=str)
    marks, styles = "os^Dv", ["-", "--", "-.", ":"]
    for i, (lev, col) in enumerate(zip(levels, _colors(len(levels)), strict=True)):
        sub = sp[sp[key] == lev]
        ax.scatter(sub[density], sub["speedup"], s=14, color=col, alpha=0.35,
                   marker=marks[i % 5])
        med = sub.groupby((sub[density] * 20).round() / 20)["speedup"].median()
        ax.plot(med.index, med.to_numpy(), ls=styles[i % 4], marker=marks[i % 5],
                color=col, ms=5, lw=1.6, label=f"{lev} (median)")
    ax.axhline(1.0, color="black", ls="--", lw=1, label="break-even")
    ax.set_xlabel(label_of(density)[1])
    what = "speedup" if "cycles" in metric or metric.endswith("_s") else \
        f"{_NAMES.get(metric, metric)} saving"
    ax.set_ylabel(f"{what} over {key}={baseline} (×)")
    ax.set_title(f"{what.capitalize()} vs density, per layer", fontsize=10)
    ax.legend(title=_NAMES.get(key, key), fontsize=8, title_fontsize=8)
    ax.grid(True, alpha=0.3)
    return ax
