"""Memory budget: what a layer will allocate, estimated from its shapes before any array
is built, so that a few-KB trace (a conv with huge padding, a tiny tensor with a huge
GEMM) is refused with one line instead of exhausting the machine.

The estimate is an upper bound of the engine's and the memory model's peak working set
for the layer (tests/test_robust.py::test_estimate_bounds_the_measured_peak holds it to
measured peaks): the padded input and
its im2col copy, the operand masks, the per-axis nonzero counts, the fold timing's
working set (chunked mask products within a fixed budget where the sync mode allows
them, else the per-PE walk's operand copies), and the per-fold int64 arrays of the
traffic model.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from accelsim.errors import AccelsimError, SimulationError
from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer

#: share of physical memory a simulation may use by default
DEFAULT_SHARE = 0.5
#: int64 arrays the fold-level traffic model keeps at once, per fold (upper bound)
FOLD_ARRAYS = 48
#: bytes per element of a lowered operand (bool copy, uint8 view, int64 scans)
LOWERED_BYTES = 12
#: per-layer overhead that does not grow with the layer (small index arrays, dicts)
FIXED_BYTES = 2**20
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """:data:`DEFAULT_SHARE` of physical memory (4 GiB where it is unknown)."""
    phys = physical_memory()
    return int(phys * DEFAULT_SHARE) if phys else 4 * 2**30


def parse_size(text: str | int | float | None, what: str = "--max-memory") -> int:
    """Bytes from ``4G``, ``512MiB``, ``1e9`` or an int; None means the default."""
    if text is None:
        return default_budget()
    if isinstance(text, bool):
        raise AccelsimError(f"{what}: expected a size like 4G or 512M, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]{1,2})?)\s*([A-Za-z]{0,3})\s*",
                         str(text)[:40])
        if not m or m.group(2).lower() not in _UNITS:
            raise AccelsimError(f"{what}: expected a size like 4G, 512M or 1000000 (bytes), "
                                f"got {str(text)[:40]!r}")
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or not 2**20 <= value <= 2**50:
        raise AccelsimError(f"{what}: expected a size from 1M to 1P, got {str(text)[:40]}")
    return int(value)


def _fmt(n: int) -> str:
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                       ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Estimate:
    """Estimated peak bytes of one layer, by part."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def largest(self) -> str:
        return max(self.parts, key=self.parts.__getitem__)


def estimate_layer(layer: Layer, hw: HwConfig) -> Estimate:
    """Upper bound of the bytes :func:`accelsim.model.engine.simulate_layer` allocates
    for ``layer`` on ``hw``, from shapes alone (Python ints: no overflow)."""
    from accelsim.model.workload import gemm_shape

    s = gemm_shape(layer)
    f = 1 if layer.frames else 0
    a, w = layer.a, layer.w
    a_size = math.prod(a.shape)
    w_size = math.prod(w.shape)
    bsz = s.batch
    bw = bsz if layer.kind == "matmul" else s.per_frame
    m, k, n = s.m, s.k, s.n
    parts: dict[str, int] = {}
    # operand masks and the unique-input mask of the traffic model (bool, 1 byte)
    parts["masks"] = 3 * a_size + 3 * w_size
    if hw.delta.enabled and layer.frames:
        parts["delta"] = a_size * (8 + 2)  # float delta operand + changed flags
    if layer.kind.startswith("conv"):
        spatial = a.shape[f + 2:]
        padded = math.prod(a.shape[:f + 2]) * math.prod(
            x + 2 * p for x, p in zip(spatial, layer.padding, strict=True))
        parts["padded_input"] = 2 * padded
    # lowered A (im2col for convs, a copy for the rest) and the tile scans over it
    # (the bool copy, its uint8 view and the int64 run/tile scans of the traffic model)
    parts["lowered_a"] = LOWERED_BYTES * bsz * m * k
    parts["lowered_w"] = LOWERED_BYTES * bw * k * n
    parts["fixed"] = FIXED_BYTES
    # per-axis nonzero counts (int64)
    parts["nonzero_counts"] = 8 * (2 * bsz * (m + k) + 2 * bw * (k + n))
    # fold timing (accelsim.model.sync): where the steps come from mask products they run
    # in chunks within accelsim.model.backend.chunk_budget of the lowered masks; the
    # per-PE walk takes contiguous uint8 copies of both masks (and of the SIMD lane
    # union), and int64 balance keys per column and barrier chunk
    from accelsim.model import syncprod
    from accelsim.model.backend import chunk_budget

    if hw.engine.kind == "systolic" and syncprod.applies(hw, 1 if hw.structured.n else None):
        # what the products would hold unchunked: the effective masks and their float
        # copies, and the [barrier chunks, M, N] counts with their reductions
        nch = 1 if hw.sync.mode == "lockstep" else -(-k // max(1, min(
            hw.sync.barrier_steps if hw.sync.mode == "barrier" else hw.pe_buffer_steps(),
            k) or 1)) + 1
        whole = 5 * (bsz * m * k + bw * k * n) + 16 * bsz * m * n * nch
        parts["mask_products"] = min(chunk_budget(bsz * m * k + bw * k * n), whole)
        if hw.dataflow != "os":  # ws / is: effective and padded copies of one GEMM's
            t = m if hw.dataflow == "ws" else n  # masks, and int64 sums per chunk
            parts["mask_products"] += 2 * (m * k + k * n) + 8 * (k + hw.array.rows) * (
                t + 2)
    else:
        walk = 2 * (bsz * m * k + bw * k * n)
        if hw.sync.balance != "none":
            walk += 8 * bsz * (m + k + n) * max(1, k if hw.sync.balance == "greedy_chunk"
                                                else 1)
        parts["fold_walk"] = walk
    # per-fold arrays: fold grid x FOLD_ARRAYS int64 (the dataflow's tiling)
    from accelsim.model.dataflow import make_plan

    plan = make_plan(hw)
    dims = {"m": m, "k": k, "n": n}
    grid = -(-dims[plan.row_dim] // plan.rows) * -(-dims[plan.col_dim] // plan.cols)
    parts["fold_arrays"] = 8 * FOLD_ARRAYS * bsz * grid
    if hw.engine.kind != "systolic":
        # the GEMV engine (accelsim/model/gemv.py): an int64 copy of the processed-input
        # mask, the fetch-unit masks (bool) and their int64 counts, per GEMV and input
        parts["gemv"] = (8 + 2 + 8) * bsz * m * k + 8 * 8 * bsz * m
    return Estimate(parts)


def check_layer(layer: Layer, hw: HwConfig, max_memory: int | str | None = None) -> int:
    """Raise :class:`SimulationError` naming the layer and the size when its estimate
    exceeds the budget (``max_memory`` bytes or a size string; None: the default)."""
    budget = max_memory if isinstance(max_memory, int) and not isinstance(max_memory, bool) \
        else parse_size(max_memory, "max_memory")
    est = estimate_layer(layer, hw)
    total = est.total
    if total > budget:
        name = layer.name if len(layer.name) <= 60 else layer.name[:57] + "..."
        name = name.encode("ascii", "backslashreplace").decode("ascii")
        raise SimulationError(
            f"layer {name!r}: needs about {_fmt(total)} of memory (mostly "
            f"{est.largest().replace('_', ' ')}), more than the budget of {_fmt(budget)}; "
            f"raise --max-memory (max_memory=) or shrink the layer")
    return total
