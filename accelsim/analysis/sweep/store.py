"""The result store: one Parquet file per point, written atomically by the driver,
compacted into few batch files (:func:`compact`), and :func:`load_results` to read a
store back (see the package docstring and ``docs/sweeps.md`` for why).

Files in ``points/``:

* ``<point_id>.parquet``: one point, as the driver commits it;
* ``batch-<generation>-<token>.parquet``: many points (rows of each point contiguous),
  their ids listed in the file's Parquet metadata (``accelsim.point_ids``), written by
  :func:`compact`, which then deletes the files it took in.

Which copy of a point counts (so that readers see each point exactly once, also when
a crash left a batch and the files it was made from side by side): a point file wins
over every batch, and a batch of a higher generation over one of a lower generation. A
point file is always at least as new as any batch holding the same point (batches are
made from point files, and a rerun writes a point file), so the winner is the newest.
"""

from __future__ import annotations

import contextlib
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
    _atomic_bytes(point_bytes(df), path)


def point_bytes(df: pd.DataFrame) -> bytes:
    """A point's rows as the bytes of its Parquet file (what ``df.to_parquet(path,
    index=False)`` writes, without pandas' I/O layer); workers encode, the driver
    only writes."""


    return point_encode(df)[1]


def point_encode(df: pd.DataFrame) -> tuple[Any, bytes]:
    """(Arrow table, Parquet bytes) of a point's rows: the driver writes the bytes and
    may keep the table for the next compaction instead of reading the file back."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return table, buf.getvalue()


def _atomic_bytes(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically (temp sibling, fsync, ``os.replace``).
    Unlike :func:`accelsim.io.atomic.atomic_file` it does not list the directory for a
    dead writer's temp files on every call: the sweep cleans ``points/`` once at start."""
    from accelsim.io.atomic import TMP_TAG, _sibling

    tmp = _sibling(path, TMP_TAG)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _atomic_text(text: str, path: Path) -> None:
    write_text(path, text)


def _clean_stale(points_dir: Path) -> int:
    """Remove temp files left by a killed sweep (whose writer process is gone)."""
    return clean_stale_in(points_dir)


def _check_point_file(f: Path) -> tuple[Any, str]:
    """(table, "") for a valid point file, else (None, why)."""
    import pyarrow.parquet as pq

    try:  # one small file: threads cost more than they save
        with pq.ParquetFile(f) as pf:
            table = pf.read(use_threads=False)
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


#: Parquet metadata key of a batch file: JSON list of its point ids
BATCH_IDS_KEY = b"accelsim.point_ids"
BATCH_PREFIX = "batch-"
#: :func:`compact` writes a batch once this many point files are waiting
COMPACT_MIN = 256
#: and merges all batches into one when there are this many
MAX_BATCHES = 8
#: rows per Parquet row group of a batch (row groups are what filters skip)
ROW_GROUP_ROWS = 4096
#: attempts of a reader whose listing went stale under a concurrent compaction
READ_RETRIES = 20


def _is_batch(f: Path) -> bool:
    return f.name.startswith(BATCH_PREFIX)


def _generation(f: Path) -> int:
    try:
        return int(f.name[len(BATCH_PREFIX):].split("-", 1)[0])
    except ValueError:
        return -1


def _batch_ids(f: Path) -> tuple[list[str] | None, str]:
    """(point ids, "") from a batch file's metadata, else (None, why)."""
    import json

    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(f).metadata or {}
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any pyarrow failure means a bad file
        return None, f"unreadable ({type(e).__name__})"
    raw = meta.get(BATCH_IDS_KEY)
    if raw is None:
        return None, "not a batch file (no point ids in its metadata)"
    try:
        ids = json.loads(raw)
    except ValueError:
        return None, "unreadable point ids in its metadata"
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return None, "unreadable point ids in its metadata"
    return ids, ""


def _check_batch_file(f: Path) -> tuple[Any, str]:
    """(table of point_id and status, "") for a valid batch file, else (None, why)."""
    import pyarrow.parquet as pq

    ids, why = _batch_ids(f)
    if ids is None:
        return None, why
    try:
        table = pq.read_table(f, columns=["point_id", "status"])
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        return None, f"not a point file ({type(e).__name__}: no point_id/status columns?)"
    if set(table.column("point_id").to_pylist()) != set(ids):
        return None, "point ids in its metadata do not match its point_id column"
    return table, ""


class _Listing:
    """One snapshot of ``points/``: the point files, the batches, and which file holds
    the copy of each point that counts."""

    def __init__(self, points_dir: Path, move_bad: bool, check: bool) -> None:
        self.singles: dict[str, Path] = {}
        self.batches: list[tuple[int, Path, list[str]]] = []
        self.bad: list[tuple[Path, str]] = []
        files = sorted(points_dir.glob("*.parquet"))
        for f in files:
            if _is_batch(f):
                ids, why = _batch_ids(f)
                if ids is not None and check:
                    _, why = _check_batch_file(f)
                    ids = ids if not why else None
                if ids is None or _generation(f) < 0:
                    self._bad(f, why or "batch file name without a generation", move_bad)
                else:
                    self.batches.append((_generation(f), f, ids))
            else:
                if check:
                    table, why = _check_point_file(f)
                    if table is None:
                        self._bad(f, why, move_bad)
                        continue
                self.singles[f.stem] = f
        self.batches.sort(key=lambda b: (b[0], b[1].name))
        # winner of each point: a point file, else the batch of the highest generation
        self.owner: dict[str, Path] = {}
        for _, f, ids in self.batches:
            for i in ids:
                self.owner[i] = f
        self.owner.update(self.singles)

    def _bad(self, f: Path, why: str, move_bad: bool) -> None:
        if move_bad:
            quarantine(f, why)
        else:
            self.bad.append((f, why))

    def won(self, f: Path, ids: list[str]) -> list[str]:
        """The ids of batch ``f`` whose copy in ``f`` counts."""
        return [i for i in ids if self.owner.get(i) == f]


def _retrying(fn: Any) -> Any:
    """Run ``fn()``; a file that vanished under a concurrent compaction (the listing went
    stale) restarts it from a fresh listing."""
    import time

    for attempt in range(READ_RETRIES):
        try:
            return fn()
        except FileNotFoundError:
            if attempt == READ_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def stored_points(results_dir: str | os.PathLike, move_bad: bool = True) -> dict[str, str]:
    """``{point_id: status}`` of the points already in a result store. A corrupt,
    foreign or half-written point or batch file is moved to ``points/bad/``
    (``move_bad``) with a warning and left out, so its points run again."""
    points_dir = Path(results_dir) / "points"
    if not points_dir.is_dir():
        return {}

    def read() -> dict[str, str]:
        ls = _Listing(points_dir, move_bad, check=False)
        out: dict[str, str] = {}
        for _, f, ids in ls.batches:
            if not ls.won(f, ids):
                continue
            table, why = _check_batch_file(f)
            if table is None:
                if move_bad:
                    quarantine(f, why)
                continue
            pid = table.column("point_id").to_pylist()
            st = table.column("status").to_pylist()
            for i, s in zip(pid, st, strict=True):
                if ls.owner.get(i) == f and i not in out:
                    out[i] = str(s) if s is not None else "failed"
        for stem, f in ls.singles.items():
            table, why = _check_point_file(f)
            if table is None:
                if move_bad:
                    quarantine(f, why)
                if stem in out and ls.owner.get(stem) == f:
                    del out[stem]  # the batch copy does not count either: rerun it
                continue
            out[stem] = str(table.column("status")[0])
        return out

    return _retrying(read)


def _filter_expr(filters: Any, names: set[str]) -> Any:
    """A pyarrow expression for ``filters`` ({column: value or list of values}); False
    when the file lacks a filtered column (its rows would hold nulls, which match no
    value)."""
    import pyarrow.compute as pc

    expr = None
    for col, want in filters.items():
        if col not in names:
            return False
        if isinstance(want, (list, tuple, set, frozenset)):
            term = pc.field(col).isin(list(want))
        else:
            term = pc.field(col) == want
        expr = term if expr is None else expr & term
    return expr


def _read_selected(f: Path, ids: list[str] | None, filters: Any,
                   columns: list[str] | None) -> Any:
    """Rows of ``f`` whose point_id is in ``ids`` (None: all) and that pass ``filters``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = set(pq.read_schema(f).names)
    expr = _filter_expr(filters, names) if filters else None
    if expr is False:
        return None
    if ids is not None:
        term = pc.field("point_id").isin(ids)
        expr = term if expr is None else expr & term
    cols = None if columns is None else [c for c in columns if c in names]
    try:
        return pq.read_table(f, filters=expr, columns=cols)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        raise AccelsimError(f"{f}: unreadable result file ({type(e).__name__}: {e})") \
            from None


def load_results(results: str | os.PathLike, *, filters: dict[str, Any] | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
    """Read a result store (a sweep's ``RESULTS_DIR``) into one DataFrame.

    One row per (point, trace, layer) with ``scope == "layer"`` and one per
    (point, trace) with ``scope == "total"``; failed points have only the total row,
    ``status == "failed"`` and ``error``. Swept keys are columns named by their dotted
    key (``df["array.rows"]``); ``df.attrs["swept_keys"]`` lists them. Count columns
    are int64 (nullable ``Int64`` when failed rows leave them empty). Rows come sorted
    by ``point_id``, each point's rows in layer order. A ``.parquet`` or ``.csv`` file
    (e.g. ``accelsim simulate -o out.csv``) is read as it is.

    ``filters`` keeps only rows whose columns hold the given values, e.g.
    ``{"zero_policy": "skip_both", "array.rows": [16, 32], "scope": "total"}``; the
    filter is pushed down to the Parquet reader, which skips the row groups and files
    whose statistics rule them out instead of reading everything. ``columns`` reads
    only those columns (``point_id`` and ``swept`` are always read).
    """
    path = Path(results)
    if path.is_file():
        df = _load_file(path)
        if filters:
            for col, want in filters.items():
                many = isinstance(want, (list, tuple, set, frozenset))
                keep = df[col].isin(list(want)) if many else df[col] == want
                df = df[keep.fillna(False).astype(bool)] if col in df else df.iloc[:0]
            df = df.reset_index(drop=True)
            df.attrs["swept_keys"] = []
        return df
    points_dir = path / "points"
    if not points_dir.is_dir():
        raise AccelsimError(f"{path}: not a result store (no points/ directory)")
    if columns is not None:
        columns = list(dict.fromkeys(["point_id", "swept", *columns]))

    def read() -> list[Any]:
        ls = _Listing(points_dir, move_bad=False, check=False)
        tables = []
        for _, f, ids in ls.batches:
            won = ls.won(f, ids)
            if not won:
                continue
            t = _read_selected(f, None if len(won) == len(ids) else won, filters, columns)
            if t is not None and t.num_rows:
                tables.append(t)
        for f in ls.singles.values():
            t, why = _check_point_file(f)
            if t is None:
                if not f.exists():
                    raise FileNotFoundError(f)
                warnings.warn(f"{f}: {why}; skipped (the next sweep moves it to points/bad/)",
                              StoreWarning, stacklevel=4)
                continue
            if filters or columns is not None:
                t = _select(t, filters, columns)
            if t is not None and t.num_rows:
                tables.append(t)
        for f, why in ls.bad:
            warnings.warn(f"{f}: {why}; skipped (the next sweep moves it to points/bad/)",
                          StoreWarning, stacklevel=4)
        return tables

    tables = _retrying(read)
    if not tables:
        df = pd.DataFrame(columns=META_COLUMNS)
        df.attrs["swept_keys"] = []
        return df
    return _to_frame(_by_point(_concat(tables, [])))


def _by_point(table: Any) -> Any:
    """Rows sorted by point id, each point's rows kept in their order."""
    import pyarrow as pa

    table = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    table = table.sort_by([("point_id", "ascending"), ("__row", "ascending")])
    return table.drop_columns(["__row"])


def _select(table: Any, filters: Any, columns: list[str] | None) -> Any:
    """``filters`` and ``columns`` applied to an in-memory table (a point file)."""
    if filters:
        expr = _filter_expr(filters, set(table.column_names))
        if expr is False:
            return None
        table = table.filter(expr)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def _to_frame(table: Any) -> pd.DataFrame:
    import pyarrow as pa

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


def compact(results_dir: str | os.PathLike, *, min_points: int = COMPACT_MIN,
            max_batches: int = MAX_BATCHES,
            known: dict[str, tuple[Path, int, Any]] | None = None) -> int:
    """Compact a result store: once ``min_points`` point files wait (or ``max_batches``
    batches exist), write them, with every batch when merging, into one new batch file
    of the next generation, atomically, then delete the files it took in and batches
    whose every point is held by a newer file. Returns the number of points written.

    Safe against a crash at any moment: the new batch is complete before anything is
    deleted, and until the inputs are gone the rule of the module docstring picks one
    copy of each point (the same content either way). Only one writer (the sweep's
    driver) may compact a store at a time; readers may run concurrently.

    ``known``: ``{point_id: (path, size, table)}`` of point files this process wrote
    (the sweep's driver), whose tables are used instead of reading the files back when
    the file at ``path`` still has that size."""
    import json
    import secrets

    import pyarrow.parquet as pq

    points_dir = Path(results_dir) / "points"
    if not points_dir.is_dir():
        return 0
    ls = _Listing(points_dir, move_bad=True, check=False)
    merge = len(ls.batches) >= max(max_batches, 1)
    if len(ls.singles) < max(min_points, 1) and not merge:
        return 0
    # a point file older than a batch holding its point is what a crash between that
    # batch's write and its deletions left behind: the batch holds the same rows
    # (a rerun writes its point file after every batch), so it can simply go
    batch_mtime = {}
    for _, f, bids in ls.batches:
        with contextlib.suppress(FileNotFoundError):
            m = f.stat().st_mtime_ns
            for i in bids:
                batch_mtime[i] = max(batch_mtime.get(i, m), m)
    for stem, f in list(ls.singles.items()):
        with contextlib.suppress(FileNotFoundError):
            if stem in batch_mtime and f.stat().st_mtime_ns < batch_mtime[stem]:
                f.unlink()
                del ls.singles[stem]
                ls.owner[stem] = next(b for _, b, bids in reversed(ls.batches)
                                      if stem in bids)
    tables, taken, ids = [], [], []
    for stem, f in sorted(ls.singles.items()):
        mine = (known or {}).get(stem)
        if mine is not None and mine[0] == f and _size(f) == mine[1]:
            t, why = mine[2], ""
        else:
            t, why = _check_point_file(f)
        if t is None:
            quarantine(f, why)
            continue
        tables.append(t)
        taken.append(f)
        ids.append(stem)
    batches = ls.batches if merge else []
    for _, f, bids in batches:
        won = ls.won(f, bids)
        if won:
            t, why = _check_batch_file(f)
            if t is None:
                quarantine(f, why)
                continue
            tables.append(pq.read_table(f, filters=None if len(won) == len(bids) else
                                        _id_filter(won)))
            ids.extend(won)
        taken.append(f)
    written = 0
    if tables:
        table = _concat(tables, [])
        table = _sorted_for_filters(table)
        gen = max((g for g, _, _ in ls.batches), default=0) + 1
        meta = dict(table.schema.metadata or {})
        meta[BATCH_IDS_KEY] = json.dumps(sorted(set(ids))).encode()
        table = table.replace_schema_metadata(meta)
        dest = points_dir / f"{BATCH_PREFIX}{gen:06d}-{secrets.token_hex(4)}.parquet"
        with atomic_file(dest) as tmp:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
        written = len(set(ids))
    # the batch is in place: the inputs and batches held wholly by newer files can go
    done = set(ids)
    kept = {f for _, f, _ in ls.batches if f not in taken}
    for _, f, bids in ls.batches:
        if f in kept and all(i in done or (ls.owner.get(i) in kept and ls.owner.get(i) != f)
                             for i in bids):
            taken.append(f)
    for f in taken:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    return written


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except FileNotFoundError:
        return -1


def _id_filter(ids: list[str]) -> Any:
    import pyarrow.compute as pc

    return pc.field("point_id").isin(ids)


def _sorted_for_filters(table: Any) -> Any:
    """Rows sorted by the swept keys (then point id, layers in order), so that each row
    group of a batch covers a narrow range of them and filters skip the others."""
    import pyarrow as pa

    keys: list[str] = []
    if "swept" in table.column_names:
        for s in table.column("swept").unique().to_pylist():
            for k in str(s or "").split(","):
                if k and k in table.column_names and k not in keys:
                    keys.append(k)
    table = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    order = [(k, "ascending") for k in keys] + [("point_id", "ascending"),
                                                 ("__row", "ascending")]
    try:
        table = table.sort_by(order)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        table = table.sort_by([("point_id", "ascending"), ("__row", "ascending")])
    return table.drop_columns(["__row"])


def _read_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as e:  # noqa: BLE001
        raise AccelsimError(f"{path}: unreadable result file ({type(e).__name__})") from None


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
