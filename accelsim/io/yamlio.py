"""Reading YAML files safely, with one-line errors (used by every loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from accelsim.errors import AccelsimError, ConfigError


def read_yaml(path: Path, error: type[AccelsimError] = ConfigError, where: str | None = None,
              allow_empty: bool = False) -> Any:
    """``yaml.safe_load`` of a file (never executes code). Bad YAML, an unreadable file and,
    unless ``allow_empty``, an empty file become one-line ``error`` messages naming the file
    (``where``, default its name) and the line when YAML gives one."""
    where = where or path.name
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise error(f"{where}:{line} invalid YAML") from None
    except OSError as e:
        raise error(f"{where}: cannot read ({e.strerror})") from None
    if raw is None and not allow_empty:
        raise error(f"{where}: file is empty")
    return raw
