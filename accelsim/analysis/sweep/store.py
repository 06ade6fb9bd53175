"""The result store: one Parquet file per point, written atomically by the driver, and
:func:`load_results` to read a store back (see the package docstring for why)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from accelsim.errors import AccelsimError

#: metadata columns at the front of every stored row
META_COLUMNS = ["point_id", "status", "error", "trace", "scope", "label"]


# ====================================================================== the store

def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _clean_stale(points_dir: Path) -> int:
    """Remove temp files left by a killed sweep (whose writer process is gone)."""
    n = 0
    for f in points_dir.glob(".*.tmp"):
        try:
            pid = int(f.name.rsplit(".", 2)[-2])
        except ValueError:
            continue
        if pid == os.getpid() or not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                n += 1
    return n


def stored_points(results_dir: str | os.PathLike) -> dict[str, str]:
    """``{point_id: status}`` of the points already in a result store."""
    import pyarrow.parquet as pq

    points_dir = Path(results_dir) / "points"
    out = {}
    for f in points_dir.glob("*.parquet"):
        status = pq.read_table(f, columns=["status"]).column(0)
        out[f.stem] = str(status[0]) if len(status) else "failed"
    return out


def _read_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as e:  # noqa: BLE001
        raise AccelsimError(f"{path}: unreadable result file ({e})") from None


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
        if path.suffix == ".csv":
            df = pd.read_csv(path)
        else:
            df = _read_table(path).to_pandas()
        df.attrs["swept_keys"] = []
        return df
    points_dir = path / "points"
    if not points_dir.is_dir():
        raise AccelsimError(f"{path}: not a result store (no points/ directory)")
    files = sorted(points_dir.glob("*.parquet"))
    if not files:
        df = pd.DataFrame(columns=META_COLUMNS)
        df.attrs["swept_keys"] = []
        return df
    tables = [_read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="permissive")
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    for col in df.columns:
        if isinstance(df[col].dtype, pd.Int64Dtype) and not df[col].isna().any():
            df[col] = df[col].astype(np.int64)
    swept: list[str] = []
    for s in df["swept"].dropna().unique():
        for k in str(s).split(","):
            if k and k not in swept:
                swept.append(k)
    if "energy_pj" in df and "latency_s" in df:
        df["edp_pj_s"] = df["energy_pj"] * df["latency_s"]
    df.attrs["swept_keys"] = swept
    return df
