"""Reading YAML safely, with one-line errors (used by every loader).

Every YAML document accelsim reads (hardware configs, ``--set`` values, energy tables,
sweep specs, trace manifests) goes through :func:`read_yaml` or :func:`parse_yaml`:

* only ``yaml.safe_load`` semantics (``CSafeLoader`` when PyYAML has libyaml), so no
  document can construct Python objects or run code;
* the file size, the nesting depth and the number of nodes after alias expansion are
  bounded, so a small "billion laughs" document cannot hang or exhaust memory;
* every PyYAML error, decoding error (binary files) and OS error becomes one
  ``ConfigError``/``TraceError`` line naming the file (and the line, when known).
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from accelsim.errors import AccelsimError, ConfigError

#: largest YAML file read, bytes
MAX_BYTES = 8 * 1024 * 1024
#: deepest nesting of mappings/sequences
MAX_DEPTH = 64
#: most nodes in the document once aliases are expanded
MAX_NODES = 1_000_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Limit(Exception):
    pass


def _check_tree(node: Any) -> None:
    """Walk the composed node graph counting nodes as if aliases were expanded
    (a shared node is counted each time it is referenced) and bounding depth."""
    weight: dict[int, int] = {}  # id(node) -> expanded node count of its subtree

    def visit(n: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _Limit(f"nested deeper than {MAX_DEPTH} levels")
        key = id(n)
        if key in weight:
            return weight[key]
        total = 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += visit(k, depth + 1) + visit(v, depth + 1)
                if total > MAX_NODES:
                    break
        elif isinstance(n, yaml.SequenceNode):
            for v in n.value:
                total += visit(v, depth + 1)
                if total > MAX_NODES:
                    break
        if total > MAX_NODES:
            raise _Limit(f"more than {MAX_NODES} values once aliases are expanded")
        weight[key] = total
        return total

    visit(node, 0)


def parse_yaml(text: str | bytes, where: str,
               error: type[AccelsimError] = ConfigError) -> Any:
    """``safe_load`` of ``text`` with the bounds above; errors become one ``error``
    line starting with ``where``."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise error(f"{where}: larger than {MAX_BYTES // (1024 * 1024)} MiB, not a "
                        f"YAML file accelsim reads")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{where}: not a text file (invalid UTF-8 at byte {e.start})") \
                from None
    if len(text) > MAX_BYTES:
        raise error(f"{where}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if "\x00" in text:
        raise error(f"{where}: not a text file (contains NUL bytes)")
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_tree(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _Limit as e:
        raise error(f"{where}: invalid YAML: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(e, "problem", None)
        detail = f" ({_one_line(problem)})" if problem else ""
        raise error(f"{where}:{line} invalid YAML{detail}") from None
    except RecursionError:
        raise error(f"{where}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:
        # PyYAML's constructors raise these on odd scalars (e.g. int literals like 0b, 0x_)
        raise error(f"{where}: invalid YAML value ({_one_line(str(e))})") from None


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_yaml(path: str | os.PathLike, error: type[AccelsimError] = ConfigError,
              where: str | None = None, allow_empty: bool = False) -> Any:
    """``safe_load`` of a file with the bounds of :func:`parse_yaml`. Bad YAML, an
    unreadable or binary file and, unless ``allow_empty``, an empty file become one-line
    ``error`` messages naming the file (``where``, default its name)."""
    from accelsim.io.paths import check_path

    p = check_path(path, error, what="YAML file")
    where = where or p.name
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as e:
        raise error(f"{where}: cannot read ({e.strerror or type(e).__name__})") from None
    raw = parse_yaml(data, where, error)
    if raw is None and not allow_empty:
        raise error(f"{where}: file is empty")
    return raw
