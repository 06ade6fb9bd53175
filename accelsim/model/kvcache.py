"""The KV cache of autoregressive decoding as a memory region (``docs/kv-cache.md``).

An attention ``matmul`` layer whose ``b`` operand is read from the KV cache says so in
its meta::

    meta:
      kv_cache: {tensor: k, block: 0, step: 2, kv_heads: 2, head_dim: 16, length: 35,
                 appended: 1}

``tensor`` is ``k`` (``b`` is Kᵀ, ``[..., head_dim, length]``) or ``v`` (``b`` is V,
``[..., length, head_dim]``); ``block`` the transformer block; ``step`` the generation
step (0 = prefill); ``kv_heads`` the K/V heads actually stored (fewer than the query
heads under grouped-query attention, whose query heads share them); ``length`` the
cache rows read at this step, ``appended`` the rows this step added (the prompt length
at prefill, 1 per decode step).

Per such layer, with ``e = ceil(bits/8)`` bytes per element and ``row = kv_heads ·
head_dim · e``:

* reads: the whole cache of this block and tensor, ``length · row`` bytes;
* writes: the appended rows, ``appended · row`` bytes;
* the cache of a step (every block, K and V) is resident in the GLB while it fits in
  ``kv_cache.glb_kib``, otherwise it lives in DRAM.

A resident cache costs no DRAM traffic: the appended rows are written into the GLB, and
the array reads the cache tiles from the GLB as for any operand. A cache in DRAM is read
from DRAM whole at every step (and staged through the GLB), and its appended rows are
written to DRAM. Either way the ``b`` operand's ordinary DRAM fetch (and its GLB fill) is
replaced by the cache's traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from accelsim.errors import TraceError
from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer, Trace

#: count columns of the KV cache region
KV_KEYS = ("dram_kv_read_bytes", "dram_kv_write_bytes", "glb_kv_write_bytes", "kv_in_dram")
#: columns of the ``b`` operand that the cache's traffic replaces
_REPLACED = ("dram_w_read_bytes", "dram_w_read_meta_bytes", "glb_w_write_bytes",
             "glb_w_write_meta_bytes")
_FIELDS = ("tensor", "block", "step", "kv_heads", "head_dim", "length", "appended")


@dataclass(frozen=True)
class KvUse:
    """One layer's use of the KV cache (from its ``meta.kv_cache``)."""

    tensor: str
    block: int
    step: int
    kv_heads: int
    head_dim: int
    length: int
    appended: int

    def elements(self, rows: int) -> int:
        return rows * self.kv_heads * self.head_dim


def kv_cache_meta(tensor: str, block: int, step: int, kv_heads: int, head_dim: int,
                  length: int, appended: int) -> dict[str, Any]:
    """The ``meta["kv_cache"]`` entry of an attention layer (see the module doc)."""
    return {"tensor": tensor, "block": int(block), "step": int(step),
            "kv_heads": int(kv_heads), "head_dim": int(head_dim), "length": int(length),
            "appended": int(appended)}


def kv_use(layer: Layer) -> KvUse | None:
    """The layer's KV cache use, validated against its shapes; None if it has none."""
    m = layer.meta.get("kv_cache") if isinstance(layer.meta, Mapping) else None
    if m is None:
        return None
    loc = f"layer {layer.name!r}: meta.kv_cache"
    if layer.kind != "matmul":
        raise TraceError(f"{loc}: only matmul layers read the KV cache, this one is "
                         f"{layer.kind}")
    if not isinstance(m, Mapping):
        raise TraceError(f"{loc}: expected a mapping with keys {', '.join(_FIELDS)}")
    missing = [f for f in _FIELDS if f not in m]
    if missing:
        raise TraceError(f"{loc}: missing key {missing[0]!r}")
    extra = sorted(set(m) - set(_FIELDS))
    if extra:
        raise TraceError(f"{loc}: unknown key {extra[0]!r}")
    if m["tensor"] not in ("k", "v"):
        raise TraceError(f"{loc}.tensor: expected k or v, got {m['tensor']!r}")
    for f in _FIELDS[1:]:
        v = m[f]
        lo = 0 if f in ("block", "step") else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise TraceError(f"{loc}.{f}: expected an integer >= {lo}, got {v!r}")
    use = KvUse(**{f: m[f] for f in _FIELDS})
    if use.appended > use.length:
        raise TraceError(f"{loc}.appended: expected at most length = {use.length}, got "
                         f"{use.appended}")
    b = layer.w
    dims = (b.shape[-2], b.shape[-1])
    want = (use.head_dim, use.length) if use.tensor == "k" else (use.length, use.head_dim)
    if dims != want:
        raise TraceError(f"{loc}: b's last two dims are {list(dims)}, expected "
                         f"{list(want)} for tensor {use.tensor} (head_dim {use.head_dim}, "
                         f"length {use.length})")
    heads = 1
    for s in b.shape[(1 if layer.frames else 0):-2]:
        heads *= int(s)
    if heads % use.kv_heads:
        raise TraceError(f"{loc}.kv_heads: expected a divisor of the layer's {heads} "
                         f"heads, got {use.kv_heads}")
    return use


def _bytes(elements: int, bits: int) -> int:
    return -(-elements * bits // 8)


def element_bits(hw: HwConfig) -> int:
    return hw.kv_cache.bits or hw.precision.a_bits


def footprints(trace: Trace, hw: HwConfig) -> dict[int, int]:
    """Bytes of the whole cache (every block, K and V) at each step."""
    bits = element_bits(hw)
    out: dict[int, int] = {}
    for layer in trace.layers:
        use = kv_use(layer)
        if use is not None:
            out[use.step] = out.get(use.step, 0) + _bytes(use.elements(use.length), bits)
    return out


def kv_counts(use: KvUse, hw: HwConfig, footprint: int) -> dict[str, int]:
    """The KV cache columns of one layer, given the cache's size at its step."""
    bits = element_bits(hw)
    read = _bytes(use.elements(use.length), bits)
    write = _bytes(use.elements(use.appended), bits)
    kv = hw.kv_cache
    in_dram = kv.placement == "dram" or (kv.placement == "auto"
                                         and footprint > kv.glb_kib * 1024)
    if in_dram:
        return {"dram_kv_read_bytes": read, "dram_kv_write_bytes": write,
                "glb_kv_write_bytes": read, "kv_in_dram": 1}
    return {"dram_kv_read_bytes": 0, "dram_kv_write_bytes": 0, "glb_kv_write_bytes": write,
            "kv_in_dram": 0}


def apply_kv(counts: dict[str, int], use: KvUse | None, hw: HwConfig,
             footprint: int) -> dict[str, int]:
    """Traffic counts of a layer with the KV cache's region in place of its ``b``
    operand's ordinary fetch (unchanged, plus zero KV columns, without a cache use)."""
    out = dict(counts)
    if use is None:
        out.update(dict.fromkeys(KV_KEYS, 0))
        return out
    for k in _REPLACED:
        out[k] = 0
    out.update(kv_counts(use, hw, footprint))
    return out


def describe(use: KvUse) -> str:
    """A short label for ``accelsim inspect``: ``K b0 s2 34+1 x2x16``."""
    return (f"{use.tensor.upper()} b{use.block} s{use.step} {use.length - use.appended}"
            f"+{use.appended} x{use.kv_heads}x{use.head_dim}")


__all__ = ["KV_KEYS", "KvUse", "apply_kv", "describe", "footprints", "kv_cache_meta",
           "kv_counts", "kv_use"]
