"""Work reuse across the points of a sweep (``docs/sweeps.md``, "Reuse").

A sweep worker simulates one trace on many configs. Much of that work does not depend
on the config, or depends only on a small part of it:

* the lowered operand masks of a layer (im2col of the activation mask, the weight mask,
  the padding mask, delta operands, N:M structure) and their nonzero counts depend on
  the layer's tensors and a few operand-level keys (delta threshold, ``skip_padding``,
  ``structured``);
* the compute model's result (fold timing under the sync mode, MAC counts, skip costs)
  depends on those masks and on the *compute* part of the config, not on the memory
  hierarchy, the clock or the energy table.

:class:`WorkCache` keeps both across :func:`accelsim.simulate` calls, within a byte
budget (least recently used entries go first). Keys never rely on object identity
alone: a layer's tensors are identified by the memory-mapped file they come from (path,
size, modification time, inode) and the exact bytes they view, so a trace rewritten in
place is a miss, and a tensor that is not a read-only file mapping (a thresholded or
in-memory layer) is never cached. Cached arrays are made read-only, so a caller that
tried to modify one would fail loudly instead of corrupting later points.

Results with and without a cache are identical (``tests/test_reuse.py``).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np

#: default budget of a sweep worker's cache
DEFAULT_CACHE_BYTES = 256 * 2**20

#: top-level config sections the compute model (fold timing, MAC counts, skip costs)
#: never reads: points differing only in these share its result
NON_COMPUTE_KEYS = ("name", "description", "clock_ghz", "memory", "energy", "kv_cache")


class WorkCache:
    """A byte-bounded LRU of config-independent work, for one process.

    ``max_bytes`` bounds the numpy arrays held (counted by ``nbytes``); an entry larger
    than the whole budget is not kept. ``hits``, ``misses`` and ``evictions`` count
    lookups since creation."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache_bytes: expected >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._compute_keys: OrderedDict[int, tuple[Any, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, value: Any) -> Any:
        """Store ``value`` (its arrays made read-only) and return it."""
        size = freeze(value)
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        if size > self.max_bytes:
            return value
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.bytes -= old
            self.evictions += 1
        return value

    def compute_key(self, hw: Any) -> str:
        """JSON of ``hw`` without :data:`NON_COMPUTE_KEYS` (memoised per config object)."""
        hit = self._compute_keys.get(id(hw))
        if hit is not None and hit[0] is hw:
            return hit[1]
        raw = hw.to_dict()
        for k in NON_COMPUTE_KEYS:
            raw.pop(k, None)
        key = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
        self._compute_keys[id(hw)] = (hw, key)
        if len(self._compute_keys) > 64:
            self._compute_keys.popitem(last=False)
        return key

    def clear(self) -> None:
        self._items.clear()
        self._compute_keys.clear()
        self.bytes = 0


def freeze(value: Any, _seen: set[int] | None = None) -> int:
    """Make every numpy array inside ``value`` read-only; returns their total bytes."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(freeze(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(freeze(v, seen) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(freeze(getattr(value, f.name), seen) for f in fields(value))
    return 0


def tensor_identity(arr: Any) -> tuple | None:
    """What identifies a tensor's content: the file it is memory-mapped from (path, size,
    modification time, inode), where in that mapping it starts, its shape, strides and
    dtype. None for anything that is not a read-only file mapping."""
    if not isinstance(arr, np.memmap) or getattr(arr, "filename", None) is None:
        return None
    mm = getattr(arr, "_mmap", None)
    if mm is None or arr.flags.writeable:
        return None
    try:
        st = os.stat(arr.filename)
        base = np.frombuffer(mm, np.uint8).__array_interface__["data"][0]
    except (OSError, TypeError, ValueError):
        return None
    pos = arr.__array_interface__["data"][0] - base
    return (arr.filename, st.st_size, st.st_mtime_ns, st.st_ino, int(arr.offset), pos,
            arr.shape, arr.strides, arr.dtype.str)


def layer_identity(layer: Any) -> tuple | None:
    """A layer's geometry and its tensors' identities; None when a tensor has none."""
    from accelsim.io.trace import ROLES

    ids = []
    for role in ROLES[layer.kind]:
        ident = tensor_identity(layer.tensors[role])
        if ident is None:
            return None
        ids.append(ident)
    return (layer.kind, layer.frames, tuple(layer.stride), tuple(layer.padding),
            tuple(layer.dilation), layer.groups, tuple(ids))
