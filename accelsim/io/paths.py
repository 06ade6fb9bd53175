"""Path arguments and path fields, checked once: a path is a non-empty string (or
``os.PathLike``) without NUL bytes, ``~user`` expands only for a user that exists, no
component is longer than the file system allows, and symlink loops are refused. Every
problem is one ``AccelsimError`` line (the class the caller asks for)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from accelsim.errors import AccelsimError, ConfigError

#: longest whole path accepted, characters (Linux PATH_MAX)
MAX_PATH = 4096
#: longest single path component, bytes (NAME_MAX on common file systems)
MAX_NAME = 255


def show_path(value: object, limit: int = 80) -> str:
    """A short one-line rendering of a user value for messages."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        text = value.encode("unicode_escape", "backslashreplace").decode("ascii")
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_path(value: object, error: type[AccelsimError] = ConfigError,
               what: str = "path", label: str | None = None) -> Path:
    """``value`` as a :class:`Path`, with ``~`` expanded; raises ``error`` with one line
    (``label: ...``, default the value itself) when it cannot be a usable path."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    head = f"{label}: " if label else ""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise error(f"{head}{what}: expected a UTF-8 path") from None
    if not isinstance(value, str):
        raise error(f"{head}{what}: expected a path string, got {show_path(value)}")
    shown = show_path(value)
    head = head or f"{shown}: "
    if not value:
        raise error(f"{head}{what}: expected a non-empty path")
    if "\x00" in value:
        raise error(f"{head}{what}: path contains a NUL byte")
    if len(value) > MAX_PATH:
        raise error(f"{head}{what}: path longer than {MAX_PATH} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{head}{what}: path is not valid text (lone surrogate)") from None
    if value.startswith("~"):
        expanded = os.path.expanduser(value)
        if expanded.startswith("~"):
            user = value[1:].split("/", 1)[0]
            raise error(f"{head}{what}: no such user {show_path(user)} for ~ expansion")
        value = expanded
    for part in value.split("/"):
        if len(part.encode("utf-8")) > MAX_NAME:
            raise error(f"{head}{what}: a path component is longer than {MAX_NAME} bytes")
    p = Path(value)
    _check_loop(p, error, head, what)
    return p


def _check_loop(p: Path, error: type[AccelsimError], head: str, what: str) -> None:
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(f"{head}{what}: symlink loop") from None
        if e.errno == errno.ENAMETOOLONG:
            raise error(f"{head}{what}: file name too long") from None
    except ValueError:
        raise error(f"{head}{what}: not a valid path") from None


def safe_resolve(p: Path, error: type[AccelsimError] = ConfigError,
                 label: str = "") -> Path:
    """``p.resolve()`` with loops and OS errors as one ``error`` line."""
    try:
        return p.resolve(strict=False)
    except (RuntimeError, OSError) as e:  # RuntimeError: symlink loop (Python < 3.13)
        why = "symlink loop" if isinstance(e, RuntimeError) or getattr(e, "errno", None) \
            == errno.ELOOP else (getattr(e, "strerror", None) or type(e).__name__)
        raise error(f"{label or show_path(str(p))}: cannot resolve path ({why})") from None


def is_file(p: Path) -> bool:
    """``p.is_file()`` that is False (not an exception) for loops and bad names."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False
