"""Thresholded activation sparsity: ``|x| <= t`` counts as zero (``docs/thresholds.md``).

LLM activations are rarely exactly zero; the sparsity that CATS, ProSparse or Deja Vu
exploit is *thresholded*. A threshold is resolved per layer, in the stored units of the
layer's activations (quantisation steps for integer traces), either given as a value or
calibrated from the trace's own values to a target sparsity. Thresholding is a transform
of the layer's activation tensors (the values at or under the threshold become zeros),
applied before anything else, so that every zero policy, format, delta and memory count
sees the thresholded operand. Its price is functional: :func:`threshold_error` compares
the thresholded GEMM's outputs with the exact ones.

Pure numpy; no loops over elements.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from accelsim.errors import ConfigError
from accelsim.io.hwconfig import HwConfig, ThresholdConfig
from accelsim.io.trace import ROLES, Layer, Trace
from accelsim.model.workload import lower_a, lower_w

#: report columns added when any threshold applies
COLUMNS = ("threshold_a", "threshold_b", "thr_sparsity_a", "thr_err_rel", "thr_err_rms",
           "thr_err_max")


@dataclass(frozen=True)
class LayerThreshold:
    """The resolved threshold of one layer: ``a`` for its left operand and, for
    ``matmul`` layers thresholded on both operands, ``b`` (None: untouched)."""

    a: float
    b: float | None = None


def _abs(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        return np.abs(x.astype(np.int64))  # int8 -128 has no int8 magnitude
    return np.abs(x)


def calibrate(x: np.ndarray, target: float) -> float:
    """The threshold ``t`` (a value of ``|x|``) that makes the fraction of ``|x| <= t``
    closest to ``target`` (``0 <= target < 1``), preferring the smaller ``t`` on a tie.

    ``target = 0`` gives 0 (only exact zeros count). For integer tensors ``t`` is an
    integer, so the sparsity reached moves in steps of one quantisation level."""
    if not 0 <= target < 1:
        raise ConfigError(f"threshold target: expected 0 <= target < 1, got {target}")
    mag = _abs(x).reshape(-1)
    if target == 0 or mag.size == 0:
        return 0.0
    vals, counts = np.unique(mag, return_counts=True)
    frac = np.cumsum(counts) / mag.size  # fraction of |x| <= vals[i]
    i = int(np.searchsorted(frac, target))  # first value reaching the target
    i = min(i, vals.size - 1)
    best = i
    if i > 0 and abs(frac[i - 1] - target) <= abs(frac[i] - target):
        best = i - 1
    t = float(vals[best])
    # keep exact zeros as zeros: a threshold below 0 is never needed
    return max(t, 0.0)


def sparsity_at(x: np.ndarray, t: float) -> float:
    """Fraction of elements with ``|x| <= t``."""
    mag = _abs(x)
    return float(np.count_nonzero(mag <= t)) / mag.size if mag.size else 0.0


def apply_threshold(x: np.ndarray, t: float) -> np.ndarray:
    """``x`` with every element ``|x| <= t`` set to zero (same dtype)."""
    x = np.asarray(x)
    return np.where(_abs(x) <= t, np.zeros((), x.dtype), x).astype(x.dtype, copy=False)


def _matches(name: str, kind: str, cfg: ThresholdConfig) -> bool:
    kinds = {k.strip() for k in cfg.kinds.split(",") if k.strip()}
    if kind not in kinds:
        return False
    pats = [p.strip() for p in cfg.layers.split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(name, p) for p in pats)


def _spec_value(spec: Any, where: str) -> tuple[str, float]:
    """('value'|'target', number) from a per-layer spec: a number (absolute) or a
    mapping with exactly one of ``value`` / ``target``."""
    if isinstance(spec, bool):
        raise ConfigError(f"{where}: expected a number or {{value: V}} / {{target: S}}, "
                          f"got {spec!r}")
    if isinstance(spec, (int, float)):
        key, v = "value", float(spec)
    elif isinstance(spec, Mapping) and len(spec) == 1 and set(spec) <= {"value", "target"}:
        key, v = next(iter(spec.items()))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{key}: expected a number, got {v!r}")
        v = float(v)
    else:
        raise ConfigError(f"{where}: expected a number or {{value: V}} / {{target: S}}, "
                          f"got {spec!r}")
    if key == "value" and not v >= 0:
        raise ConfigError(f"{where}: value: expected a number >= 0, got {v}")
    if key == "target" and not 0 <= v < 1:
        raise ConfigError(f"{where}: target: expected 0 <= target < 1, got {v}")
    return key, v


def _resolve_one(layer: Layer, key: str, v: float, both: bool) -> LayerThreshold:
    def one(x: np.ndarray) -> float:
        return v if key == "value" else calibrate(x, v)

    b = one(np.asarray(layer.w)) if both and layer.kind == "matmul" else None
    return LayerThreshold(a=one(np.asarray(layer.a)), b=b)


def resolve_thresholds(trace: Trace, hw: HwConfig | ThresholdConfig | None = None,
                       thresholds: Mapping[str, Any] | None = None
                       ) -> dict[str, LayerThreshold]:
    """Per-layer thresholds in stored units, for the layers they apply to.

    ``thresholds`` (the API keyword) maps a layer name or glob pattern (or several,
    comma-separated) to a number (an
    absolute threshold) or ``{"target": S}`` (calibrated to sparsity ``S``); the first
    pattern that matches a layer wins, and layers it matches take precedence over the
    config. The config's ``threshold`` section (``value`` or ``target``, restricted to
    ``layers`` and ``kinds``) covers the rest. Layers with neither are absent."""
    cfg = hw.threshold if isinstance(hw, HwConfig) else hw
    out: dict[str, LayerThreshold] = {}
    specs = []
    for pat, spec in (thresholds or {}).items():
        if not isinstance(pat, str) or not pat:
            raise ConfigError(f"thresholds: expected layer names or patterns as keys, got "
                              f"{pat!r}")
        specs.append((pat, *_spec_value(spec, f"thresholds[{pat!r}]")))
    unmatched = {pat for pat, _, _ in specs}
    both = cfg.operands == "both" if cfg is not None else False
    def match(name: str, pat: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p.strip()) for p in pat.split(",") if p.strip())

    for layer in trace.layers:
        hit = next(((k, v) for pat, k, v in specs if match(layer.name, pat)), None)
        for pat, _, _ in specs:
            if match(layer.name, pat):
                unmatched.discard(pat)
        if hit is not None:
            out[layer.name] = _resolve_one(layer, hit[0], hit[1], both)
        elif cfg is not None and (cfg.value > 0 or cfg.target > 0) and _matches(
                layer.name, layer.kind, cfg):
            key, v = ("target", cfg.target) if cfg.target > 0 else ("value", cfg.value)
            out[layer.name] = _resolve_one(layer, key, v, both)
    if unmatched:
        raise ConfigError(f"thresholds: pattern {sorted(unmatched)[0]!r} matches no layer "
                          f"of trace {trace.model!r}")
    return out


def threshold_layer(layer: Layer, th: LayerThreshold) -> Layer:
    """``layer`` with its thresholded operands zeroed (a new layer; meta records it)."""
    ra, rb = ROLES[layer.kind]
    tensors = dict(layer.tensors)
    tensors[ra] = apply_threshold(layer.tensors[ra], th.a)
    if th.b is not None:
        tensors[rb] = apply_threshold(layer.tensors[rb], th.b)
    meta = {**layer.meta, "threshold": {"a": th.a, **({"b": th.b} if th.b is not None
                                                      else {})}}
    return replace(layer, tensors=tensors, meta=meta)


def threshold_trace(trace: Trace, resolved: Mapping[str, LayerThreshold]) -> Trace:
    """The trace with :func:`threshold_layer` applied to every layer in ``resolved``;
    provenance records the transform."""
    layers = tuple(threshold_layer(la, resolved[la.name]) if la.name in resolved else la
                   for la in trace.layers)
    prov = dict(trace.provenance)
    prov["transforms"] = [*prov.get("transforms", []),
                          {"threshold": {k: v.a for k, v in resolved.items()}}]
    return Trace(model=trace.model, layers=layers, provenance=prov, path=trace.path)


def _scale(layer: Layer, role: str) -> float | None:
    q = layer.quant_of(role)
    return float(q.scale) if q.scheme == "symmetric" else (1.0 if q.scheme == "none"
                                                           else None)


def _out_scale(layer: Layer, shape: tuple[int, ...]) -> np.ndarray | float:
    """Real-unit scale of an output element [F, P, M, N]."""
    ra, rb = ROLES[layer.kind]
    sa = _scale(layer, ra) or 1.0
    qw = layer.quant_of(rb)
    if qw.scheme == "per_channel" and layer.kind != "matmul" and qw.axis in (
            0, -np.asarray(layer.w).ndim):
        sw = np.asarray(qw.scale, np.float64)  # per output channel
        p, n = shape[1], shape[-1]
        return sa * sw.reshape(1, p, 1, n)
    return sa * (_scale(layer, rb) or 1.0)


def gemm_outputs(layer: Layer) -> np.ndarray:
    """The layer's GEMM outputs ``lower(A) @ lower(W)``, [F, P, M, N], exact (int64 for
    integer traces, float64 otherwise), in stored units."""
    a, w = np.asarray(layer.a), np.asarray(layer.w)
    wide = np.int64 if a.dtype.kind in "iu" and w.dtype.kind in "iu" else np.float64
    return np.matmul(lower_a(layer, a.astype(wide)), lower_w(layer, w.astype(wide)))


def threshold_error(layer: Layer, th: LayerThreshold) -> dict[str, float]:
    """Output error of the thresholded GEMM against the exact one, in real units where
    the trace records scales: ``thr_err_max``, ``thr_err_rms`` and ``thr_err_rel`` (RMS
    error over the RMS of the exact outputs); ``thr_sparsity_a`` is the fraction of the
    A operand at or under its threshold."""
    exact = gemm_outputs(layer)
    approx = gemm_outputs(threshold_layer(layer, th))
    s = _out_scale(layer, exact.shape)
    diff = (approx - exact).astype(np.float64) * s
    ref = exact.astype(np.float64) * s
    rms = float(np.sqrt(np.mean(diff ** 2)))
    ref_rms = float(np.sqrt(np.mean(ref ** 2)))
    return {"threshold_a": th.a, "threshold_b": th.b if th.b is not None else float("nan"),
            "thr_sparsity_a": sparsity_at(layer.a, th.a),
            "thr_err_rel": rms / ref_rms if ref_rms else 0.0, "thr_err_rms": rms,
            "thr_err_max": float(np.abs(diff).max())}


def real_thresholds(trace: Trace, resolved: Mapping[str, LayerThreshold]) -> dict[str, float]:
    """Thresholds in real units, for applying the same thresholds in the original model
    (:func:`accelsim.tracing.thresholds.apply_thresholds`): a real activation ``x`` counts
    as zero where ``|x| < t_real``.

    For an integer trace with scale ``s``, ``|round(x/s)| <= t`` holds where
    ``|x| < (t + 1/2)·s``, so ``t_real = (t + 1/2)·s``; for a float trace ``t_real`` is
    the threshold itself. A threshold of 0 (exact zeros only) gives 0: the model runs
    unchanged."""
    out = {}
    for name, th in resolved.items():
        layer = trace[name]
        role = ROLES[layer.kind][0]
        s = _scale(layer, role)
        if s is None:
            raise ConfigError(f"layer {name!r}: per-channel activation scales are not "
                              f"supported for thresholds in real units")
        integer = np.asarray(layer.tensors[role]).dtype.kind in "iu"
        if th.a <= 0:
            out[name] = 0.0
        else:
            out[name] = (th.a + 0.5) * s if integer else np.nextafter(th.a, np.inf) * s
    return out


__all__ = ["COLUMNS", "LayerThreshold", "apply_threshold", "calibrate", "gemm_outputs",
           "real_thresholds", "resolve_thresholds", "sparsity_at", "threshold_error",
           "threshold_layer", "threshold_trace"]
