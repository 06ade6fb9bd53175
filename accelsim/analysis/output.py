"""Result files that keep their context: provenance, writers and the reader.

Every table ``accelsim simulate -o``, ``inspect -o`` and ``--report-dir`` write carries
its provenance: the trace (path, model name and a SHA-256 of its files), the hardware
config (name, hash and the whole resolved config), the energy table, the accelsim
version and the command line. Where it goes, by format:

- CSV: ``# `` comment lines before the header, the last one ``# provenance: {json}``
  (read with :func:`read_table`, or ``pd.read_csv(path, comment="#")``);
- JSON: an object ``{"provenance": {...}, "units": {...}, "rows": [...]}``;
- Parquet: the ``accelsim.provenance`` key of the file's schema metadata;
- table: the text the terminal shows, after ``# `` comment lines.

:func:`read_table` reads any of them back into a DataFrame whose ``attrs`` hold the
provenance again, so :func:`accelsim.reprice` and ``accelsim plot`` accept the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from accelsim.errors import AccelsimError, OutputError

#: formats of ``--format``, and the file name suffixes that imply them
FORMATS = ("table", "csv", "json", "parquet")
SUFFIXES = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
            ".txt": "table", ".table": "table"}
_META_KEY = b"accelsim.provenance"


# ----------------------------------------------------------------------- provenance

def hash_path(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a directory's files (relative names and contents, in
    sorted order; hidden files and temp files left out)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        files = [p]
        root = p.parent
    else:
        root = p
        files = sorted(f for f in p.rglob("*") if f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
    for f in files:
        h.update(str(f.relative_to(root)).encode("utf-8", "backslashreplace"))
        h.update(b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def command_line(argv: Sequence[str] | None) -> str:
    """``accelsim ARGS...`` as a shell would need it typed."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    return "accelsim " + " ".join(shlex.quote(str(a)) for a in args)


def provenance(*, what: str, trace_path: str | os.PathLike | None, trace_model: str,
               hw: Any = None, argv: Sequence[str] | None = None,
               synthetic: bool = False, extra: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """The provenance record of a result (see the module docstring)."""
    from accelsim import __version__

    out: dict[str, Any] = {"accelsim_version": __version__, "what": what,
                           "command": command_line(argv)}
    tr: dict[str, Any] = {"model": trace_model}
    if trace_path is not None:
        tr["path"] = str(trace_path)
        tr["abspath"] = str(Path(trace_path).resolve())
        tr["sha256"] = hash_path(trace_path)
    if synthetic:
        tr["synthetic"] = True
    out["trace"] = tr
    if hw is not None:
        out["hw"] = {"name": hw.name, "config_hash": hw.config_hash(),
                     "energy_table": hw.energy, "clock_ghz": hw.clock_ghz,
                     "pes": hw.array.rows * hw.array.cols * hw.array.macs_per_pe,
                     "config": hw.to_dict()}
    if extra:
        out.update(extra)
    return out


def comment_lines(prov: Mapping[str, Any]) -> list[str]:
    """Human-readable ``# `` lines, the last one the whole record as JSON."""
    lines = [f"# accelsim {prov.get('accelsim_version', '?')} {prov.get('what', '')}".rstrip(),
             f"# command: {prov.get('command', '')}"]
    tr = prov.get("trace", {})
    if tr:
        desc = f"# trace: {tr.get('model', '')}"
        if "path" in tr:
            desc += f" at {tr['path']} (sha256 {tr.get('sha256', '')[:16]})"
        if tr.get("synthetic"):
            desc += ", synthetic"
        lines.append(desc)
    hw = prov.get("hw")
    if hw:
        lines.append(f"# hw: {hw['name']} (config hash {hw['config_hash']}), energy table "
                     f"{hw.get('energy_table', '')}")
    body = json.dumps(prov, sort_keys=True, separators=(",", ":"), default=str)
    lines.append(f"# provenance: {body}")
    return [" ".join(x.splitlines()) for x in lines]


def attrs_of(prov: Mapping[str, Any]) -> dict[str, Any]:
    """DataFrame ``attrs`` equivalent to what :func:`accelsim.simulate` sets."""
    out: dict[str, Any] = {"provenance": dict(prov)}
    tr = prov.get("trace") or {}
    if "model" in tr:
        out["trace"] = tr["model"]
    hw = prov.get("hw")
    if hw:
        out.update(hw=hw["name"], hw_hash=hw["config_hash"], clock_ghz=hw.get("clock_ghz"),
                   hwconfig=hw.get("config"), pes=hw.get("pes"))
    return out


# ----------------------------------------------------------------------- writing

def resolve_format(path: str | None, fmt: str | None) -> str:
    """The format to write ``path`` in: ``fmt`` when given (then a known suffix of
    ``path`` must agree), else the suffix's. Raises :class:`OutputError`."""
    if fmt is not None and fmt not in FORMATS:
        raise OutputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if path is None:
        if fmt == "parquet":
            raise OutputError("--format parquet: a binary format, give -o FILE.parquet")
        return fmt or "table"
    suffix = Path(path).suffix.lower()
    implied = SUFFIXES.get(suffix)
    if fmt is None:
        if implied is None:
            raise OutputError(f"-o {path}: cannot tell the format from the name; expected "
                              f"a name ending in {', '.join(SUFFIXES)}, or --format")
        return implied
    if implied is not None and implied != fmt:
        raise OutputError(f"-o {path}: the name says {implied} but --format is {fmt}")
    return fmt


def check_writable(path: str) -> None:
    """Refuse a file name that cannot be written, before any work is done."""
    from accelsim.io.paths import check_path, is_dir

    p = check_path(path, OutputError, what="output file", label=f"-o {path[:80]}")
    parent = p.parent if str(p.parent) else Path(".")
    if is_dir(p):
        raise OutputError(f"-o {path[:80]}: is a directory")
    if not is_dir(parent):
        raise OutputError(f"-o {path[:80]}: directory {str(parent)[:80]} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"-o {path[:80]}: directory {str(parent)[:80]} is not writable")


def units_of(df: pd.DataFrame) -> dict[str, str]:
    """Stored unit of each column of ``df`` (from the column catalogue)."""
    from accelsim.analysis.columns import KINDS, kind_of

    return {c: KINDS.get(kind_of(c), ("",))[0] for c in df.columns}


def to_bytes(df: pd.DataFrame, fmt: str, prov: Mapping[str, Any] | None,
             table_text: str | None = None) -> bytes:
    """``df`` serialised in ``fmt`` with ``prov`` embedded."""
    head = "".join(line + "\n" for line in comment_lines(prov)) if prov else ""
    if fmt == "csv":
        return (head + df.to_csv(index=False)).encode("utf-8", "backslashreplace")
    if fmt == "json":
        rows = json.loads(df.to_json(orient="records"))
        doc = {"provenance": dict(prov or {}), "units": units_of(df), "rows": rows}
        return (json.dumps(doc, indent=1, default=str, ensure_ascii=False) + "\n").encode(
            "utf-8", "backslashreplace")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps(dict(prov or {}), default=str).encode()
        table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    if fmt == "table":
        from accelsim.analysis.columns import render

        return (head + (table_text if table_text is not None else render(df)) + "\n"
                ).encode("utf-8", "backslashreplace")
    raise OutputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")


def write_result(df: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None,
                 prov: Mapping[str, Any] | None = None, table_text: str | None = None
                 ) -> Path:
    """Write ``df`` to ``path`` atomically in ``fmt`` (default: by suffix)."""
    from accelsim.io.atomic import atomic_file

    path = Path(path)
    fmt = resolve_format(str(path), fmt)
    data = to_bytes(df, fmt, prov, table_text)
    with atomic_file(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


# ----------------------------------------------------------------------- reading

def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a result file written by accelsim (CSV, JSON or Parquet, with or without
    provenance) into a DataFrame; ``attrs`` carry the provenance again (trace, hw,
    hwconfig, ...), so :func:`accelsim.reprice` works on it."""
    path = Path(path)
    suffix = path.suffix.lower()
    prov: dict[str, Any] = {}
    try:
        if suffix == ".csv":
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines(keepends=True)
            i = 0
            while i < len(lines) and lines[i].startswith("#"):
                if lines[i].startswith("# provenance: "):
                    prov = json.loads(lines[i][len("# provenance: "):])
                i += 1
            df = pd.read_csv(io.StringIO("".join(lines[i:])))
        elif suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(doc, dict):
                prov = doc.get("provenance") or {}
                rows = doc.get("rows", [])
            else:
                rows = doc
            df = pd.DataFrame(rows)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(_META_KEY)
            if raw:
                prov = json.loads(raw)
            df = table.to_pandas()
        else:
            raise OutputError(f"{path}: expected a .csv, .json or .parquet result file")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise OutputError(f"{path}: not a readable result file ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:120]})") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's many error types
        if isinstance(e, AccelsimError):
            raise
        raise OutputError(f"{path}: not a readable result file ({type(e).__name__})"
                          ) from None
    df.attrs.update(attrs_of(prov) if prov else {})
    return df


__all__ = ["FORMATS", "OutputError", "attrs_of", "check_writable", "comment_lines",
           "hash_path", "provenance", "read_table", "resolve_format", "to_bytes",
           "write_result"]
