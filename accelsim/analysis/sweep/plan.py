"""Sweep expansion: grid (or seeded random / Latin-hypercube sample) x constraints x
traces into :class:`Point` objects, each with a location-independent point id."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.analysis.sweep.spec import SweepSpec, eval_constraint
from accelsim.errors import ConfigError
from accelsim.io.hwconfig import HwConfig, build, set_dotted

# ====================================================================== expansion

#: most grid points a sample may examine against the constraints before giving up
MAX_DRAWS = 100_000


class _Overlay(dict):
    """The base config with swept dotted keys laid over it, for constraint lookups."""

    def __init__(self, base: dict[str, Any], values: dict[str, Any]) -> None:
        super().__init__(base)
        self.swept = values

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
    from accelsim.io.trace import load_trace

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
    draws = 0
    sampled = spec.sample is not None
    for idx in _candidate_indices(spec):
        draws += 1
        if sampled and draws > MAX_DRAWS:
            raise ConfigError(
                f"{spec.where}: constraints: only {len(chosen)} of {limit} sampled points "
                f"satisfy the constraints after {MAX_DRAWS} draws; relax the constraints "
                f"or lower sample.n")
        values = {k: spec.grid[k][i] for k, i in zip(keys, idx, strict=True)}
        if spec.constraints:
            view = _Overlay(base_raw, values)  # no copy per draw: cheap rejections
            if not all(eval_constraint(c, view, spec.where) for c in spec.constraints):
                dropped += 1
                continue
        raw = copy.deepcopy(base_raw)
        for k, v in values.items():
            set_dotted(raw, k, v, where=spec.where)
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
