"""The result store: one Parquet file per point, written atomically by the driver, and
:func:`load_results` to read a store back (see the package docstring for why)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from accelsim.errors import AccelsimError
from accelsim.io.atomic import atomic_file, clean_stale_in, write_text

#: metadata columns at the front of every stored row
META_COLUMNS = ["point_id", "status", "error", "trace", "scope", "label"]


# ====================================================================== the store

class StoreWarning(UserWarning):
    """A result store held a file that is not a point file of this store."""


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def _atomic_text(text: str, path: Path) -> None:
    write_text(path, text)


def _clean_stale(points_dir: Path) -> int:
    """Remove temp files left by a killed sweep (whose writer process is gone)."""
    return clean_stale_in(points_dir)


def _check_point_file(f: Path) -> tuple[Any, str]:
    """(table, "") for a valid point file, else (None, why)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(f)
    except Exception as e:  # noqa: BLE001 - any pyarrow failure means a bad file
        return None, f"unreadable ({type(e).__name__})"
    missing = [c for c in ("point_id", "status", "swept") if c not in table.column_names]
    if missing:
        return None, f"not a point file (no {missing[0]!r} column)"
    if table.num_rows == 0:
        return None, "empty point file"
    try:
        ids = set(table.column("point_id").to_pylist())
    except Exception:  # noqa: BLE001
        return None, "unreadable point_id column"
    if ids != {f.stem}:
        return None, "point_id does not match the file name"
    return table, ""


def quarantine(f: Path, why: str) -> Path:
    """Move a bad point file to ``points/bad/`` with a one-line :class:`StoreWarning`."""
    bad = f.parent / "bad"
    bad.mkdir(exist_ok=True)
    dest = bad / f.name
    i = 1
    while dest.exists():
        dest = bad / f"{f.stem}.{i}{f.suffix}"
        i += 1
    os.replace(f, dest)
    warnings.warn(f"{f}: {why}; moved to {dest}, its point will be rerun", StoreWarning,
                  stacklevel=3)
    return dest


def stored_points(results_dir: str | os.PathLike, move_bad: bool = True) -> dict[str, str]:
    """``{point_id: status}`` of the points already in a result store. A corrupt,
    foreign or half-written point file is moved to ``points/bad/`` (``move_bad``) with
    a warning and left out, so its point runs again."""
    points_dir = Path(results_dir) / "points"
    out = {}
    for f in sorted(points_dir.glob("*.parquet")):
        table, why = _check_point_file(f)
        if table is None:
            if move_bad:
                quarantine(f, why)
            continue
        status = table.column("status")
        out[f.stem] = str(status[0]) if len(status) else "failed"
    return out


def _read_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as e:  # noqa: BLE001
        raise AccelsimError(f"{path}: unreadable result file ({type(e).__name__})") from None


def load_results(results: str | os.PathLike) -> pd.DataFrame:
    """Read a result store (a sweep's ``RESULTS_DIR``) into one DataFrame.

    One row per (point, trace, layer) with ``scope == "layer"`` and one per
    (point, trace) with ``scope == "total"``; failed points have only the total row,
    ``status == "failed"`` and ``error``. Swept keys are columns named by their dotted
    key (``df["array.rows"]``); ``df.attrs["swept_keys"]`` lists them. Count columns
    are int64 (nullable ``Int64`` when failed rows leave them empty). A ``.parquet`` or
    ``.csv`` file (e.g. ``accelsim simulate -o out.csv``) is read as it is.
    """
    import pyarrow as pa

    path = Path(results)
    if path.is_file():
        return _load_file(path)
    points_dir = path / "points"
    if not points_dir.is_dir():
        raise AccelsimError(f"{path}: not a result store (no points/ directory)")
    files = sorted(points_dir.glob("*.parquet"))
    if not files:
        df = pd.DataFrame(columns=META_COLUMNS)
        df.attrs["swept_keys"] = []
        return df
    tables = []
    for f in files:
        t, why = _check_point_file(f)
        if t is None:
            warnings.warn(f"{f}: {why}; skipped (the next sweep moves it to points/bad/)",
                          StoreWarning, stacklevel=2)
        else:
            tables.append(t)
    table = _concat(tables, files)
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    for col in df.columns:
        if isinstance(df[col].dtype, pd.Int64Dtype) and not df[col].isna().any():
            df[col] = df[col].astype(np.int64)
    swept: list[str] = []
    for s in df["swept"].dropna().unique() if "swept" in df else ():
        for k in str(s).split(","):
            if k and k not in swept:
                swept.append(k)
    if "energy_pj" in df and "latency_s" in df:
        df["edp_pj_s"] = df["energy_pj"] * df["latency_s"]
    df.attrs["swept_keys"] = swept
    return df


def _load_file(path: Path) -> pd.DataFrame:
    """A single result file: a sweep table, or a ``simulate`` table (``-o``, or a
    ``--report-dir``'s layers file) with its provenance. A simulate table is one
    (point, trace): its TOTAL row becomes the ``scope == "total"`` row and its layers
    ``scope == "layer"``, so that plots take it for one config, not one per row."""
    from accelsim.analysis.output import read_table

    if path.suffix.lower() in (".parquet", ".pq"):
        _read_table(path)  # one-line error for a file pyarrow cannot read
    df = read_table(path)
    if "scope" not in df.columns and "layer" in df.columns and "kind" in df.columns:
        is_total = (df["layer"] == "TOTAL") & (df["kind"] == "total")
        if not is_total.any() and "cycles" in df.columns:  # layers only: add the total
            from accelsim.analysis.report import totals

            attrs = dict(df.attrs)
            df = pd.concat([df, totals(df).to_frame().T], ignore_index=True)
            df.attrs = attrs
            is_total = df["layer"] == "TOTAL"
        df["scope"] = np.where(is_total, "total", "layer")
        df["status"] = "ok"
        prov = df.attrs.get("provenance", {})
        df["trace"] = str(df.attrs.get("trace") or prov.get("trace", {}).get("model", ""))
        df["label"] = str(df.attrs.get("hw") or path.stem)
        df["point_id"] = str(df.attrs.get("hw_hash") or path.stem)
        for col in df.columns:
            if col not in ("layer", "kind", "scope", "status", "trace", "label", "point_id"):
                conv = pd.to_numeric(df[col], errors="coerce")
                if conv.notna().sum() == df[col].notna().sum():
                    df[col] = conv
    if "energy_pj" in df and "latency_s" in df and "edp_pj_s" not in df:
        df["edp_pj_s"] = df["energy_pj"].astype(float) * df["latency_s"].astype(float)
    df.attrs["swept_keys"] = []
    return df


def _concat(tables: list[Any], files: list[Path]) -> Any:
    """Concatenate point tables; one whose columns cannot be reconciled with the others
    is left out with a warning instead of failing the whole store."""
    import pyarrow as pa

    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in META_COLUMNS})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    acc = tables[0]
    for t in tables[1:]:
        try:
            acc = pa.concat_tables([acc, t], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pid = t.column("point_id")[0]
            warnings.warn(f"point {pid}: columns incompatible with the rest of the store; "
                          f"skipped", StoreWarning, stacklevel=3)
    return acc
