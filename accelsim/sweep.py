"""Design-space sweeps: a grid of dotted config keys x traces, run in parallel into a
resumable result store, and the analysis helpers that read it back.

**Spec** (YAML, strict; see ``docs/sweeps.md``): a ``base`` hardware config, a ``grid``
of dotted keys with value lists, optional ``fixed`` overrides, ``constraints`` written in
a small safe expression language (parsed with :mod:`ast` against a whitelist and
evaluated by our own walker: config loading never executes code), an optional
``sample`` (seeded ``random`` or Latin-hypercube ``lhs``) and one or more ``traces``.
Every key and every value is checked before anything runs.

A **point** is one resolved config x one trace; its id is a hash of the resolved
config's :meth:`HwConfig.config_hash` and the trace's identity (model name plus a hash
of its manifest and tensor files), so it does not depend on the spec's name, its key
order or where the trace lives.

**Store.** ``RESULTS_DIR/points/<point_id>.parquet``, one file per finished point,
holding its per-layer rows and one ``scope == "total"`` row (a failed point holds one
row with ``status == "failed"`` and the error message), plus ``RESULTS_DIR/spec.yaml``,
a copy of the last spec run. Why this shape:

* *Resumable and exactly-once by construction*: a point is done iff its file exists;
  files are named by point id, so a point can never be stored twice.
* *Atomic*: each file is written to a dot-prefixed temp file in the same directory and
  moved into place with :func:`os.replace` (atomic on POSIX and Windows), so a crash or
  ``kill -9`` loses at most the points in flight and never leaves a half-written result.
  Stale temp files are removed on the next run.
* *One writer*: workers return DataFrames and only the driver writes, so a Dask cluster
  needs no shared results directory (traces must be readable at the same path on
  workers, which load them memory-mapped).
* *Parquet, not CSV*: int64 counts stay int64, strings stay strings, missing stays
  missing, and reading a few thousand small files with pyarrow takes seconds. CSV would
  lose dtypes and need a schema on the side.

:func:`load_results` concatenates the files into one DataFrame.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import operator
import os
import signal
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .errors import AccelsimError, ConfigError
from .hwconfig import HwConfig, _check_scalar, build, load_hwconfig, read_yaml, set_dotted

SPEC_KEYS = ("name", "description", "base", "traces", "grid", "fixed", "constraints",
             "sample")
SAMPLE_METHODS = ("random", "lhs")
#: largest grid that may run without a ``sample`` section
MAX_UNSAMPLED = 100_000
#: metadata columns at the front of every stored row
META_COLUMNS = ["point_id", "status", "error", "trace", "scope", "label"]


# =========================================================================== spec

@dataclass(frozen=True)
class Sample:
    method: str
    n: int
    seed: int = 0


@dataclass(frozen=True)
class Constraint:
    text: str
    tree: ast.Expression
    index: int


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec (see :func:`load_spec`)."""

    name: str
    where: str
    base: HwConfig
    traces: tuple[Path, ...]
    grid: dict[str, tuple[Any, ...]]
    fixed: dict[str, Any] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    sample: Sample | None = None
    description: str = ""
    text: str = ""

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())


def _field_of(key: str, where: str, label: str) -> tuple[Any, Mapping[str, Any]]:
    """Type and metadata of the leaf config field named by dotted ``key``."""
    cls: Any = HwConfig
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{where}: {label}: expected a dotted key like array.rows")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            sect = ".".join(parts[:i]) or "top level"
            raise ConfigError(f"{where}: {label}: unknown config key {part!r} in {sect} "
                              f"(expected one of {', '.join(fields)})")
        ftype = typing.get_type_hints(cls)[part]
        if typing.get_origin(ftype) is not None and type(None) in typing.get_args(ftype):
            ftype = next(t for t in typing.get_args(ftype) if t is not type(None))
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(ftype):
            if last:
                subkeys = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(ftype))
                raise ConfigError(f"{where}: {label}: is a section; sweep its keys "
                                  f"({subkeys})")
            cls = ftype
        else:
            if not last:
                raise ConfigError(f"{where}: {label}: {'.'.join(parts[:i + 1])} is not a "
                                  f"section")
            return ftype, fields[part].metadata
    raise AssertionError("unreachable")


def _check_value(key: str, value: Any, where: str, label: str) -> Any:
    ftype, meta = _field_of(key, where, label)
    return _check_scalar(value, ftype, meta, where, label)


# ------------------------------------------------------------- constraint language

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_LITERAL_NAMES = {"true": True, "false": False}
_GRAMMAR = ("dotted config keys, numbers, 'strings', true/false, + - * / // %, "
            "comparisons (== != < <= > >= in), and, or, not, parentheses")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def parse_constraint(text: str, where: str, index: int) -> Constraint:
    """Parse one constraint; only the whitelisted grammar is accepted."""
    label = f"constraints[{index}]"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: {label}: expected an expression string, got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ConfigError(f"{where}: {label}: {text!r}: not a valid expression "
                          f"(allowed: {_GRAMMAR})") from None

    def check(node: ast.AST) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"{where}: {label}: {text!r}: {what} not allowed "
                               f"(allowed: {_GRAMMAR})")
        if isinstance(node, ast.Expression):
            check(node.body)
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name is None:
                raise bad("attribute access")
            if name in _LITERAL_NAMES:
                return
            _field_of(name, where, f"{label}: {name}")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)):
                raise bad(f"constant {node.value!r}")
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                check(v)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
                raise bad(type(node.op).__name__)
            check(node.operand)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise bad(f"operator {type(node.op).__name__}")
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise bad(f"comparison {type(op).__name__}")
            check(node.left)
            for c in node.comparators:
                check(c)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                check(e)
        else:
            raise bad(type(node).__name__)

    check(tree)
    return Constraint(text=text.strip(), tree=tree, index=index)


def _get_dotted(raw: Mapping[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


def eval_constraint(c: Constraint, raw: Mapping[str, Any], where: str) -> bool:
    """Evaluate ``c`` on a resolved raw config mapping (no code is executed)."""
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            assert name is not None
            if name in _LITERAL_NAMES:
                return _LITERAL_NAMES[name]
            return _get_dotted(raw, name)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BoolOp):
            vals = (ev(v) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return (not v) if isinstance(node.op, ast.Not) else \
                (-v if isinstance(node.op, ast.USub) else +v)
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(ev(e) for e in node.elts)
        raise AssertionError(f"unchecked node {node!r}")

    try:
        return bool(ev(c.tree))
    except (TypeError, ZeroDivisionError, KeyError) as e:
        raise ConfigError(f"{where}: constraints[{c.index}]: {c.text!r}: cannot evaluate "
                          f"({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------- spec loading

def _resolve_path(text: Any, base_dir: Path, where: str, label: str) -> Path:
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{where}: {label}: expected a path string, got {text!r}")
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def load_spec(spec: str | os.PathLike | Mapping[str, Any],
              base_dir: str | os.PathLike | None = None) -> SweepSpec:
    """Load and validate a sweep spec from a YAML file or a mapping.

    Relative ``base`` and ``traces`` paths are resolved against the spec file's
    directory (for a mapping: ``base_dir``, default the working directory). A ``base``
    that is not a file may name a shipped config (``sparse_os_16x16``). Every error is
    one :class:`ConfigError` line naming the spec file and the key.
    """
    if isinstance(spec, Mapping):
        raw, where = dict(spec), "sweep spec"
        bdir = Path(base_dir) if base_dir is not None else Path.cwd()
        text = None
    else:
        path = Path(spec)
        where = path.name
        if not path.is_file():
            raise ConfigError(f"{path}: sweep spec not found")
        text = path.read_text()
        raw = read_yaml(path)
        bdir = Path(base_dir) if base_dir is not None else path.resolve().parent
        if isinstance(raw, dict):
            raw.setdefault("name", path.stem)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level: expected a mapping")
    for key in raw:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{where}: {key}: unknown key (expected one of "
                              f"{', '.join(SPEC_KEYS)})")
    for key in ("base", "traces", "grid"):
        if key not in raw:
            raise ConfigError(f"{where}: {key}: missing required key")
    name = raw.get("name", "sweep")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: name: expected a string, got {name!r}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError(f"{where}: description: expected a string, got {desc!r}")

    # fixed overrides: checked one by one, then together with the base
    fixed_raw = raw.get("fixed") or {}
    if not isinstance(fixed_raw, dict):
        raise ConfigError(f"{where}: fixed: expected a mapping of dotted keys to values")
    fixed = {str(k): _check_value(str(k), v, where, f"fixed.{k}")
             for k, v in fixed_raw.items()}

    base_val = raw["base"]
    if isinstance(base_val, dict):
        base_src: Any = dict(base_val)
        base_src.setdefault("name", name)
    else:
        cand = _resolve_path(base_val, bdir, where, "base")
        base_src = cand if cand.is_file() else base_val
    try:
        base = load_hwconfig(base_src, fixed)
    except ConfigError as e:
        raise ConfigError(f"{where}: base: {e}") from None

    grid_raw = raw["grid"]
    if not isinstance(grid_raw, dict) or not grid_raw:
        raise ConfigError(f"{where}: grid: expected a non-empty mapping of dotted keys to "
                          f"value lists")
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in grid_raw.items():
        key = str(key)
        label = f"grid.{key}"
        _field_of(key, where, label)
        if key in fixed:
            raise ConfigError(f"{where}: {label}: also in fixed; a key is either swept or "
                              f"fixed")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {label}: expected a non-empty list of values, got "
                              f"{values!r}")
        checked = tuple(_check_value(key, v, where, label) for v in values)
        if len(set(checked)) != len(checked):
            raise ConfigError(f"{where}: {label}: repeated value in {values!r}")
        grid[key] = checked

    traces_raw = raw["traces"]
    if isinstance(traces_raw, str):
        traces_raw = [traces_raw]
    if not isinstance(traces_raw, list) or not traces_raw:
        raise ConfigError(f"{where}: traces: expected a non-empty list of trace directories")
    traces = []
    for i, t in enumerate(traces_raw):
        p = _resolve_path(t, bdir, where, f"traces[{i}]")
        if not (p / "manifest.yaml").is_file():
            raise ConfigError(f"{where}: traces[{i}]: {t}: not a trace directory (no "
                              f"manifest.yaml at {p})")
        traces.append(p.resolve())
    if len(set(traces)) != len(traces):
        raise ConfigError(f"{where}: traces: the same trace is listed twice")

    cons_raw = raw.get("constraints") or []
    if isinstance(cons_raw, str):
        cons_raw = [cons_raw]
    if not isinstance(cons_raw, list):
        raise ConfigError(f"{where}: constraints: expected a list of expressions")
    constraints = tuple(parse_constraint(c, where, i) for i, c in enumerate(cons_raw))

    sample = None
    if raw.get("sample") is not None:
        s = raw["sample"]
        if not isinstance(s, dict):
            raise ConfigError(f"{where}: sample: expected a mapping with method, n, seed")
        for k in s:
            if k not in ("method", "n", "seed"):
                raise ConfigError(f"{where}: sample.{k}: unknown key (expected one of "
                                  f"method, n, seed)")
        method = s.get("method", "random")
        if method not in SAMPLE_METHODS:
            raise ConfigError(f"{where}: sample.method: expected one of "
                              f"{', '.join(SAMPLE_METHODS)}, got {method!r}")
        n = s.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}: sample.n: expected an integer >= 1, got {n!r}")
        seed = s.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}: sample.seed: expected an integer >= 0, got {seed!r}")
        sample = Sample(method, n, seed)

    if text is None:
        text = yaml.safe_dump({**raw, "traces": [str(t) for t in traces]}, sort_keys=False)
    out = SweepSpec(name=name, where=where, base=base, traces=tuple(traces), grid=grid,
                    fixed=fixed, constraints=constraints, sample=sample, description=desc,
                    text=text)
    if sample is None and out.grid_size > MAX_UNSAMPLED:
        raise ConfigError(f"{where}: grid: {out.grid_size} points is more than "
                          f"{MAX_UNSAMPLED}; add a sample: section (method: random or lhs)")
    # evaluate every constraint once on the base so type errors surface here
    base_raw = base.to_dict()
    for c in constraints:
        eval_constraint(c, base_raw, where)
    return out


# ====================================================================== expansion

@dataclass(frozen=True)
class Point:
    """One resolved config x one trace."""

    point_id: str
    values: dict[str, Any]
    label: str
    trace: Path
    trace_model: str
    trace_id: str
    config_hash: str
    raw: dict[str, Any]
    error: str | None = None  # the config does not resolve


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    points: tuple[Point, ...]
    configs: int          # configs kept (after constraints and sampling)
    dropped: int          # grid points examined and dropped by constraints


def trace_identity(path: Path) -> tuple[str, str]:
    """(model name, content hash) of a trace directory: the manifest and every tensor."""
    from .trace import load_trace

    model = load_trace(path).model
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "manifest.yaml" or f.suffix == ".npy":
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return model, h.hexdigest()[:16]


def _labels(keys: Sequence[str]) -> dict[str, str]:
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) != len(short):
        return {k: k for k in keys}
    return short


def _decode(index: int, sizes: Sequence[int]) -> tuple[int, ...]:
    out = []
    for s in reversed(sizes):
        index, r = divmod(index, s)
        out.append(r)
    return tuple(reversed(out))


def _candidate_indices(spec: SweepSpec) -> Iterator[tuple[int, ...]]:
    """Grid index tuples in the order they are considered (before constraints)."""
    sizes = [len(v) for v in spec.grid.values()]
    total = spec.grid_size
    s = spec.sample
    if s is None:
        yield from itertools.product(*(range(n) for n in sizes))
    elif s.method == "random":
        rng = np.random.default_rng(s.seed)
        if total <= 10_000_000:
            for i in rng.permutation(total):
                yield _decode(int(i), sizes)
        else:  # huge grid: rejection sampling without replacement
            seen: set[int] = set()
            while len(seen) < total:
                i = int(rng.integers(total))
                if i not in seen:
                    seen.add(i)
                    yield _decode(i, sizes)
    else:  # Latin hypercube: each key's values evenly covered by the n samples
        rng = np.random.default_rng(s.seed)
        cols = []
        for size in sizes:
            u = (rng.permutation(s.n) + rng.random(s.n)) / s.n
            cols.append(np.minimum((u * size).astype(np.int64), size - 1))
        seen_t: set[tuple[int, ...]] = set()
        for row in zip(*cols, strict=True):
            t = tuple(int(x) for x in row)
            if t not in seen_t:
                seen_t.add(t)
                yield t


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Expand ``spec`` into points: grid (or sample) x constraints x traces."""
    keys = list(spec.grid)
    short = _labels(keys)
    base_raw = spec.base.to_dict()
    limit = spec.sample.n if spec.sample is not None else None
    idents = [trace_identity(t) for t in spec.traces]
    chosen: list[tuple[tuple[int, ...], dict[str, Any], dict[str, Any]]] = []
    dropped = 0
    for idx in _candidate_indices(spec):
        values = {k: spec.grid[k][i] for k, i in zip(keys, idx, strict=True)}
        raw = copy.deepcopy(base_raw)
        for k, v in values.items():
            set_dotted(raw, k, v, where=spec.where)
        if not all(eval_constraint(c, raw, spec.where) for c in spec.constraints):
            dropped += 1
            continue
        chosen.append((idx, values, raw))
        if limit is not None and spec.sample is not None and spec.sample.method == "random" \
                and len(chosen) >= limit:
            break
    chosen.sort(key=lambda t: t[0])
    points = []
    for _idx, values, raw in chosen:
        label = " ".join(f"{short[k]}={v:g}" if isinstance(v, float) else f"{short[k]}={v}"
                         for k, v in values.items())
        error = None
        try:
            hw = build(HwConfig, raw, where=f"{spec.where} point {label}")
            chash = hw.config_hash()
            raw = hw.to_dict()
        except ConfigError as e:
            error = str(e)
            blob = json.dumps(raw, sort_keys=True, separators=(",", ":"))
            chash = "x" + hashlib.sha256(blob.encode()).hexdigest()[:15]
        for path, (model, tid) in zip(spec.traces, idents, strict=True):
            pid = hashlib.sha256(f"{chash}\n{model}:{tid}".encode()).hexdigest()[:16]
            points.append(Point(point_id=pid, values=values, label=label, trace=path,
                                trace_model=model, trace_id=tid, config_hash=chash,
                                raw=raw, error=error))
    return SweepPlan(spec=spec, points=tuple(points), configs=len(chosen), dropped=dropped)


# ====================================================================== the worker

_TRACES: dict[str, Any] = {}


def _meta(point: Point, status: str, error: str) -> dict[str, Any]:
    return {"point_id": point.point_id, "status": status, "error": error,
            "trace": point.trace_model, "label": point.label}


def run_point(point: Point) -> tuple[str, pd.DataFrame]:
    """Simulate one point; never raises for a bad point (the error is the result).

    Top-level so that spawned processes and Dask workers can import it. The trace is
    loaded (memory-mapped) in the worker and cached per process.
    """
    from .area import area_of
    from .report import simulate, with_totals
    from .trace import load_trace

    t0 = time.perf_counter()
    try:
        if point.error is not None:
            raise ConfigError(point.error)
        hw = build(HwConfig, point.raw, where=f"point {point.label}")
        key = str(point.trace)
        trace = _TRACES.get(key)
        if trace is None:
            trace = _TRACES[key] = load_trace(key)
        df = with_totals(simulate(trace, hw))
        df["scope"] = ["layer"] * (len(df) - 1) + ["total"]
        area = area_of(hw)
        status, error = "ok", ""
    except Exception as e:  # noqa: BLE001 - failure isolation: record and go on
        msg = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, AccelsimError):
            msg = f"{type(e).__name__}: {msg}"
        df = pd.DataFrame({"layer": ["TOTAL"], "kind": ["total"], "scope": ["total"]})
        hw, area, status, error = None, {}, "failed", msg
    sim_s = time.perf_counter() - t0
    df.attrs = {}
    front: dict[str, Any] = _meta(point, status, error)
    front.update(point.values)
    front.update(trace_path=str(point.trace), trace_id=point.trace_id,
                 config_hash=point.config_hash, hw_name=point.raw.get("name", ""),
                 swept=",".join(point.values), sim_s=sim_s, **area)
    cols = {k: [v] * len(df) for k, v in front.items() if k != "scope"}
    head = pd.DataFrame(cols, index=df.index)
    out = pd.concat([head, df], axis=1)
    out["hwconfig"] = json.dumps(point.raw, sort_keys=True)
    order = META_COLUMNS + [c for c in out.columns if c not in META_COLUMNS]
    return point.point_id, out[order]


def _quiet_worker() -> None:  # pragma: no cover - runs in the worker processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


# ======================================================================= running

@dataclass
class SweepEvent:
    """Progress report passed to the ``progress`` callback of :func:`sweep`.

    ``kind`` is ``"start"`` (``total`` points to run, ``skipped`` already stored) or
    ``"point"`` (one point finished: ``status`` ok / failed, ``error``, ``label``)."""

    kind: str
    total: int = 0
    skipped: int = 0
    point_id: str = ""
    label: str = ""
    trace: str = ""
    status: str = ""
    error: str = ""


@dataclass
class SweepSummary:
    results_dir: Path
    grid_size: int
    configs: int
    dropped: int
    points: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    lost: int = 0          # worker died or was lost: not stored, rerun retries them
    wall_s: float = 0.0
    sim_s: float = 0.0     # sum of per-point simulate times, in the workers
    backend: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.ok + self.failed

    @property
    def per_point_s(self) -> float:
        """Wall time per point run (the throughput the backend achieved)."""
        return self.wall_s / self.ran if self.ran else 0.0


class _Inline:
    """Runs points in this process (``workers=1``): no pool, easy to debug."""

    name = "inline"
    window = 1

    def submit(self, point: Point) -> cf.Future:
        fut: cf.Future = cf.Future()
        fut.set_result(run_point(point))
        return fut

    def wait_any(self, futs: list[Any]) -> list[Any]:
        return futs

    def close(self, cancel: bool = False) -> None:
        pass


class _Pool:
    name = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.window = 4 * workers
        self._new()

    def _new(self) -> None:
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_quiet_worker)

    def submit(self, point: Point) -> cf.Future:
        try:
            return self.pool.submit(run_point, point)
        except cf.process.BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._new()
            return self.pool.submit(run_point, point)

    def wait_any(self, futs: list[Any]) -> list[Any]:
        done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Dask:
    def __init__(self, scheduler: str | None, local: int | None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise AccelsimError("Dask is not installed: pip install 'accelsim[dask]'") \
                from None
        self.cluster = None
        if scheduler:
            self.name = f"dask {scheduler}"
            try:
                self.client = Client(scheduler, timeout="20s")
            except OSError as e:
                raise AccelsimError(f"--scheduler {scheduler}: cannot connect ({e})") \
                    from None
        else:
            self.name = f"dask LocalCluster({local})"
            self.cluster = LocalCluster(n_workers=local, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        threads = sum(self.client.nthreads().values()) or 1
        self.window = max(4 * threads, 8)

    def submit(self, point: Point) -> Any:
        return self.client.submit(run_point, point, key=f"accelsim-point-{point.point_id}",
                                  pure=False)

    def wait_any(self, futs: list[Any]) -> list[Any]:
        from distributed import wait

        return list(wait(futs, return_when="FIRST_COMPLETED").done)

    def close(self, cancel: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def sweep(spec: SweepSpec | str | os.PathLike | Mapping[str, Any],
          results_dir: str | os.PathLike, *, workers: int | None = None,
          scheduler: str | None = None, dask_local: int | None = None,
          retry_failed: bool = False,
          progress: Callable[[SweepEvent], None] | None = None) -> SweepSummary:
    """Run a sweep into ``results_dir``; points already stored there are skipped.

    Backends: local processes (``workers``, default ``os.cpu_count()``; ``workers=1``
    runs in this process), an existing Dask cluster (``scheduler="tcp://host:8786"``)
    or a Dask ``LocalCluster`` of ``dask_local`` worker processes. A point that raises
    is stored with ``status="failed"`` and its error, and the sweep goes on;
    ``retry_failed=True`` runs stored failures again. ``progress`` receives
    :class:`SweepEvent` objects (the library itself never prints).
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if scheduler and dask_local:
        raise AccelsimError("choose either a Dask scheduler address or a LocalCluster size")
    if workers is not None and workers < 1:
        raise AccelsimError(f"workers: expected an integer >= 1, got {workers}")
    if dask_local is not None and dask_local < 1:
        raise AccelsimError(f"dask_local: expected an integer >= 1, got {dask_local}")
    plan = plan_sweep(spec)
    out = Path(results_dir)
    points_dir = out / "points"
    try:
        points_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AccelsimError(f"{out}: cannot create results directory ({e})") from None
    _clean_stale(points_dir)
    _atomic_text(spec.text, out / "spec.yaml")

    stored = stored_points(out)
    todo, seen = [], set()
    for p in plan.points:
        if p.point_id in seen:  # two grid values resolving to one config
            continue
        seen.add(p.point_id)
        st = stored.get(p.point_id)
        if st is None or (retry_failed and st != "ok"):
            todo.append(p)
    summary = SweepSummary(results_dir=out, grid_size=spec.grid_size, configs=plan.configs,
                           dropped=plan.dropped, points=len(seen),
                           skipped=len(seen) - len(todo))
    emit = progress or (lambda ev: None)
    emit(SweepEvent("start", total=len(todo), skipped=summary.skipped))

    def record(point: Point, frame: pd.DataFrame | None, exc: BaseException | None) -> None:
        if exc is not None:
            summary.lost += 1
            msg = f"worker lost ({type(exc).__name__}: {exc}); not stored, rerun to retry"
            summary.errors.append((f"{point.label} [{point.trace_model}]", msg))
            emit(SweepEvent("point", point_id=point.point_id, label=point.label,
                            trace=point.trace_model, status="lost", error=msg))
            return
        assert frame is not None
        _atomic_parquet(frame, points_dir / f"{point.point_id}.parquet")
        status = str(frame["status"].iloc[0])
        error = str(frame["error"].iloc[0])
        summary.sim_s += float(frame["sim_s"].iloc[0])
        if status == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            summary.errors.append((f"{point.label} [{point.trace_model}]", error))
        emit(SweepEvent("point", point_id=point.point_id, label=point.label,
                        trace=point.trace_model, status=status, error=error))

    # configs that do not resolve fail here, without a worker
    runnable = []
    for p in todo:
        if p.error is not None:
            record(p, run_point(p)[1], None)
        else:
            runnable.append(p)
    if runnable:
        if scheduler or dask_local:
            backend: Any = _Dask(scheduler, dask_local)
        elif (workers or os.cpu_count() or 1) == 1:
            backend = _Inline()
        else:
            backend = _Pool(min(workers or os.cpu_count() or 1, len(runnable)))
        summary.backend = backend.name
        pending: dict[Any, Point] = {}
        queue = iter(runnable)
        cancel = True
        try:
            while True:
                while len(pending) < backend.window:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending[backend.submit(nxt)] = nxt
                if not pending:
                    break
                for fut in backend.wait_any(list(pending)):
                    point = pending.pop(fut)
                    try:
                        _pid, frame = fut.result()
                    except Exception as e:  # noqa: BLE001 - the worker, not the point
                        record(point, None, e)
                    else:
                        record(point, frame, None)
            cancel = False
        finally:
            backend.close(cancel=cancel)
    summary.wall_s = time.perf_counter() - t0
    return summary


# ====================================================================== analysis

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
