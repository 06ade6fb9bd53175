"""Analysis of sweep results: ok totals, Pareto fronts and speedups over a baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def totals_only(df: pd.DataFrame) -> pd.DataFrame:
    """The ok per-(point, trace) total rows of a results frame (or ``df`` itself if it
    has no ``scope`` column)."""
    out = df
    if "scope" in out.columns:
        out = out[out["scope"] == "total"]
    if "status" in out.columns:
        out = out[out["status"] == "ok"]
    return out


def pareto(df: pd.DataFrame, x: str = "latency_s", y: str = "energy_pj", *,
           maximize: Sequence[str] = (), by: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of ``df`` on the Pareto front of (``x``, ``y``), sorted by ``x``.

    Both objectives are minimised unless named in ``maximize``. A row is on the front
    when no other row is at least as good in both and strictly better in one (equal
    rows are all kept). On a results frame only ok total rows are considered. ``by``
    computes one front per group (e.g. ``by="trace"``).
    """
    for col in (x, y):
        if col not in df.columns:
            raise KeyError(f"pareto: no column {col!r}")
    data = totals_only(df).dropna(subset=[x, y])
    if by is not None:
        parts = [pareto(g, x, y, maximize=maximize) for _, g in data.groupby(by, sort=True)]
        return pd.concat(parts) if parts else data.iloc[:0]
    sx = -1.0 if x in maximize else 1.0
    sy = -1.0 if y in maximize else 1.0
    xs = sx * data[x].to_numpy(dtype=float)
    ys = sy * data[y].to_numpy(dtype=float)
    order = np.lexsort((ys, xs))
    keep = []
    best_y = math.inf
    last: tuple[float, float] | None = None
    for i in order:
        if ys[i] < best_y:
            keep.append(i)
            best_y = ys[i]
            last = (xs[i], ys[i])
        elif last is not None and (xs[i], ys[i]) == last:
            keep.append(i)
    return data.iloc[keep]


def speedup(df: pd.DataFrame, key: str = "zero_policy", baseline: Any = "none",
            metric: str = "cycles", scope: str = "layer",
            match: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of ``df`` (ok, of ``scope``) that have ``key != baseline``, with
    ``baseline_<metric>`` and ``speedup = baseline / metric`` from the baseline row
    with the same ``match`` columns (default: trace, layer and the other swept keys).
    For ``metric="energy_pj"`` it is the energy saving factor."""
    if key not in df.columns:
        raise KeyError(f"speedup: no column {key!r}")
    data = df
    if "status" in data.columns:
        data = data[data["status"] == "ok"]
    if "scope" in data.columns:
        data = data[data["scope"] == scope]
    if match is None:
        swept = [k for k in df.attrs.get("swept_keys", []) if k != key and k in data.columns]
        on = [c for c in ("trace", "layer") if c in data.columns] + swept
    else:
        on = list(match)
    base = data[data[key] == baseline][on + [metric]].rename(
        columns={metric: f"baseline_{metric}"})
    rest = data[data[key] != baseline]
    out = rest.merge(base, on=on, how="inner")
    out["speedup"] = out[f"baseline_{metric}"] / out[metric].astype(float)
    out.attrs = dict(df.attrs)
    return out
