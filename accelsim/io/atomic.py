"""Atomic writes for the whole project: one helper for files, one for directories.

A crash at any moment (``kill -9`` included) leaves the old content or the new one at
the target path, never neither and never a half-written file. Work happens in a
temporary sibling named ``.NAME.accelsim-tmp.PID.RANDOM``; the next write to the same
target removes such siblings whose process is gone (:func:`clean_stale`).

Files: written to the temporary sibling, flushed, then ``os.replace``-d onto the target.
Directories: built in the temporary sibling, then swapped with the target in one
``renameat2(RENAME_EXCHANGE)`` on Linux; where that is unavailable the old directory is
first renamed to ``.NAME.accelsim-old.PID.RANDOM`` and restored by the next run if the
process died before the new one took its place.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

TMP_TAG = "accelsim-tmp"
OLD_TAG = "accelsim-old"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}.{os.getpid()}.{secrets.token_hex(4)}")


def _owner(entry: Path, path: Path, tag: str) -> int | None:
    """PID in ``entry``'s name if it is a ``tag`` sibling of ``path``, else None."""
    prefix = f".{path.name}.{tag}."
    if not entry.name.startswith(prefix):
        return None
    pid, _, rest = entry.name[len(prefix):].partition(".")
    return int(pid) if pid.isdigit() and rest else None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale(path: str | os.PathLike) -> int:
    """Remove temporary siblings of ``path`` left by dead processes; if ``path`` is
    missing and a dead process left the old directory aside, put it back. Returns the
    number of entries removed or restored."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return 0
    n = 0
    olds = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        pid = _owner(entry, path, TMP_TAG)
        if pid is not None and not _pid_alive(pid):
            _remove(entry)
            n += 1
        pid = _owner(entry, path, OLD_TAG)
        if pid is not None and not _pid_alive(pid):
            olds.append(entry)
    for entry in olds:
        if not os.path.lexists(path):
            os.rename(entry, path)  # the writer died between its two renames
        else:
            _remove(entry)
        n += 1
    return n


def clean_stale_in(directory: str | os.PathLike) -> int:
    """:func:`clean_stale` for every target in ``directory`` (e.g. a store's points/)."""
    d = Path(directory)
    n = 0
    try:
        entries = list(d.iterdir())
    except OSError:
        return 0
    targets = set()
    for entry in entries:
        name = entry.name
        for tag in (TMP_TAG, OLD_TAG):
            marker = f".{tag}."
            if name.startswith(".") and marker in name:
                targets.add(name[1:name.rindex(marker)])
    for t in targets:
        n += clean_stale(d / t)
    return n


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it (``open(tmp, mode)``, or a
    library writer given the path); on normal exit it replaces ``path`` atomically, on
    an exception it is removed and ``path`` is untouched."""
    del mode  # the caller opens the file; kept for readability at call sites
    path = Path(path)
    clean_stale(path)
    tmp = _sibling(path, TMP_TAG)
    try:
        yield tmp
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: ctypes.CDLL | None | bool = False


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where unsupported."""
    global _libc
    if _libc is False:
        _libc = None
        name = ctypes.util.find_library("c")
        if name:
            with contextlib.suppress(OSError):
                lib = ctypes.CDLL(name, use_errno=True)
                if hasattr(lib, "renameat2"):
                    _libc = lib
    if _libc is None:
        return False
    rc = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                         _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; fill it; on normal exit it
    takes ``path``'s place (replacing an existing directory) with no moment at which
    neither exists; on an exception it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = _sibling(path, TMP_TAG)
    tmp.mkdir()
    try:
        yield tmp
        if os.path.lexists(path):
            if _exchange(tmp, path):
                _remove(tmp)  # tmp now holds the old directory
                return
            old = _sibling(path, OLD_TAG)
            os.rename(path, old)
            os.rename(tmp, path)
            _remove(old)
        else:
            os.rename(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
