"""Sweep specs: the strict YAML loader and the safe constraint-expression language.

Every key and every value of a spec is checked before anything runs; constraints are
parsed with :mod:`ast` against a whitelist and evaluated by our own walker, so loading
a spec never executes code.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from accelsim.errors import ConfigError
from accelsim.io.hwconfig import HwConfig, check_keys, check_value, load_hwconfig, show_value
from accelsim.io.paths import is_file, safe_resolve, show_path
from accelsim.io.yamlio import read_yaml

SPEC_KEYS = ("name", "description", "base", "traces", "grid", "fixed", "constraints",
             "sample")
SAMPLE_METHODS = ("random", "lhs")
#: largest grid that may run without a ``sample`` section; also the most samples
MAX_UNSAMPLED = 100_000
#: longest constraint expression, characters
MAX_EXPR_CHARS = 1000
#: most syntax nodes in one constraint
MAX_EXPR_NODES = 200
#: longest string a constraint may hold or build, characters
MAX_EXPR_STR = 1000
#: widest integer a constraint may hold or build, bits (no exponent towers)
MAX_EXPR_BITS = 128


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
            raise ConfigError(f"{where}: {label}: unknown config key {show_value(part)} in {sect} "
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
    return check_value(value, ftype, meta, where, label)


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
        raise ConfigError(f"{where}: {label}: expected an expression string, got "
                          f"{show_value(text)}")
    if len(text) > MAX_EXPR_CHARS:
        raise ConfigError(f"{where}: {label}: expression longer than {MAX_EXPR_CHARS} "
                          f"characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ConfigError(f"{where}: {label}: {show_value(text)}: not a valid expression "
                          f"(allowed: {_GRAMMAR})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_EXPR_NODES:
        raise ConfigError(f"{where}: {label}: expression has more than {MAX_EXPR_NODES} "
                          f"terms")
    text = text.strip()

    def check(node: ast.AST) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"{where}: {label}: {show_value(text)}: {what} not allowed "
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
            v = node.value
            if not isinstance(v, (int, float, str, bool)):
                raise bad(f"constant of type {type(v).__name__}")
            if isinstance(v, str) and len(v) > MAX_EXPR_STR:
                raise bad(f"a string longer than {MAX_EXPR_STR} characters")
            if isinstance(v, int) and v.bit_length() > MAX_EXPR_BITS:
                raise bad(f"an integer wider than {MAX_EXPR_BITS} bits")
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
    over = getattr(raw, "swept", None)
    if isinstance(over, dict) and key in over:  # plan's overlay of swept keys
        return over[key]
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
            return _bounded_binop(node.op, ev(node.left), ev(node.right))
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
    except (TypeError, ZeroDivisionError, KeyError, OverflowError, ValueError,
            _Bound) as e:
        raise ConfigError(f"{where}: constraints[{c.index}]: {show_value(c.text)}: cannot "
                          f"evaluate ({type(e).__name__.lstrip('_')}: "
                          f"{show_value(str(e), 100)[1:-1]})") from None


class _Bound(Exception):
    """A constraint tried to build a value beyond the language's bounds."""


def _bounded_binop(op: ast.operator, a: Any, b: Any) -> Any:
    """Apply a whitelisted operator, refusing huge strings and integers before they are
    built and string formatting (``%`` on a string)."""
    if isinstance(a, str) or isinstance(b, str):
        if isinstance(op, ast.Mod):
            raise TypeError("% is not defined for strings in constraints")
        if isinstance(op, ast.Mult):
            s, n = (a, b) if isinstance(a, str) else (b, a)
            if isinstance(n, int) and len(s) * max(n, 0) > MAX_EXPR_STR:
                raise _Bound(f"string longer than {MAX_EXPR_STR} characters")
        if isinstance(op, ast.Add) and isinstance(a, str) and isinstance(b, str) \
                and len(a) + len(b) > MAX_EXPR_STR:
            raise _Bound(f"string longer than {MAX_EXPR_STR} characters")
    if isinstance(op, ast.Mult) and isinstance(a, int) and isinstance(b, int) \
            and a.bit_length() + b.bit_length() > MAX_EXPR_BITS + 1:
        raise _Bound(f"integer wider than {MAX_EXPR_BITS} bits")
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        raise TypeError("arithmetic on lists is not allowed in constraints")
    out = _BINOPS[type(op)](a, b)
    if isinstance(out, int) and not isinstance(out, bool) \
            and out.bit_length() > MAX_EXPR_BITS:
        raise _Bound(f"integer wider than {MAX_EXPR_BITS} bits")
    return out


# ------------------------------------------------------------------- spec loading

def _resolve_path(text: Any, base_dir: Path, where: str, label: str) -> Path:
    from accelsim.io.paths import check_path

    p = check_path(text, ConfigError, what="path", label=f"{where}: {label}")
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
        from accelsim.io.paths import check_path

        path = check_path(spec, ConfigError, what="sweep spec")
        where = path.name
        if not is_file(path):
            raise ConfigError(f"{show_path(path)}: sweep spec not found")
        raw = read_yaml(path)
        text = path.read_text(encoding="utf-8", errors="replace")
        bdir = Path(base_dir) if base_dir is not None else path.resolve().parent
        if isinstance(raw, dict):
            raw.setdefault("name", path.stem)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level: expected a mapping")
    check_keys(raw, SPEC_KEYS, where)
    for key in ("base", "traces", "grid"):
        if key not in raw:
            raise ConfigError(f"{where}: {key}: missing required key")
    name = raw.get("name", "sweep")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: name: expected a string, got {show_value(name)}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError(f"{where}: description: expected a string, got {show_value(desc)}")

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
        base_src = cand if is_file(cand) else base_val
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
                              f"{show_value(values)}")
        checked = tuple(_check_value(key, v, where, label) for v in values)
        if any(isinstance(v, dict) for v in checked):  # per-layer mappings (delta.threshold)
            raise ConfigError(f"{where}: {label}: expected numbers to sweep; put a per-layer "
                              f"mapping under fixed: or in the base config")
        if len(set(checked)) != len(checked):
            raise ConfigError(f"{where}: {label}: repeated value in {show_value(values)}")
        grid[key] = checked

    traces_raw = raw["traces"]
    if isinstance(traces_raw, str):
        traces_raw = [traces_raw]
    if not isinstance(traces_raw, list) or not traces_raw:
        raise ConfigError(f"{where}: traces: expected a non-empty list of trace directories")
    traces = []
    for i, t in enumerate(traces_raw):
        p = _resolve_path(t, bdir, where, f"traces[{i}]")
        if not is_file(p / "manifest.yaml"):
            raise ConfigError(f"{where}: traces[{i}]: {show_path(t)}: not a trace directory "
                              f"(no manifest.yaml at {show_path(p)})")
        traces.append(safe_resolve(p, ConfigError, f"{where}: traces[{i}]"))
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
        check_keys(s, ("method", "n", "seed"), where, "sample.")
        method = s.get("method", "random")
        if method not in SAMPLE_METHODS:
            raise ConfigError(f"{where}: sample.method: expected one of "
                              f"{', '.join(SAMPLE_METHODS)}, got {show_value(method)}")
        n = s.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_UNSAMPLED:
            raise ConfigError(f"{where}: sample.n: expected an integer >= 1 and <= "
                              f"{MAX_UNSAMPLED}, got {show_value(n)}")
        seed = s.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ConfigError(f"{where}: sample.seed: expected an integer >= 0 and < 2**63, "
                              f"got {show_value(seed)}")
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
