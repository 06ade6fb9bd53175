"""Trace format v1: a directory with ``manifest.yaml`` and one ``.npy`` per tensor.

See ``docs/trace-format.md`` for the specification. Loading never executes code:
the manifest is read with ``yaml.safe_load`` and tensors with
``np.load(..., allow_pickle=False, mmap_mode="r")``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from accelsim.errors import TraceError, safe_text
from accelsim.io.hwconfig import show_value
from accelsim.io.paths import check_path, is_dir, is_file, safe_resolve, show_path
from accelsim.io.yamlio import read_yaml

FORMAT_NAME = "accelsim-trace"
FORMAT_VERSION = 1
KINDS = ("linear", "conv1d", "conv2d", "conv3d", "matmul")
DTYPES = ("int8", "uint8", "int16", "int32", "float16", "float32", "float64")
QUANT_SCHEMES = ("none", "symmetric", "per_channel")
#: tensor roles per layer kind: (left operand A, right operand W)
ROLES = {
    "linear": ("input", "weight"),
    "conv1d": ("input", "weight"),
    "conv2d": ("input", "weight"),
    "conv3d": ("input", "weight"),
    "matmul": ("a", "b"),
}
_SPATIAL = {"conv1d": 1, "conv2d": 2, "conv3d": 3}
#: largest stride, padding or dilation read from a manifest
MAX_CONV_PARAM = 2**31
#: most dimensions of a stored tensor
MAX_NDIM = 16
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Quant:
    """How a stored tensor relates to real values: ``real = q * scale``.

    ``scheme`` is ``none`` (values stored as they are), ``symmetric`` (one scale per
    tensor) or ``per_channel`` (one scale per index of ``axis``).
    """

    scheme: str = "none"
    bits: int | None = None
    scale: float | tuple[float, ...] | None = None
    axis: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scheme": self.scheme}
        if self.bits is not None:
            d["bits"] = int(self.bits)
        if self.scale is not None:
            d["scale"] = (
                [float(s) for s in self.scale]
                if isinstance(self.scale, tuple)
                else float(self.scale)
            )
        if self.axis is not None:
            d["axis"] = int(self.axis)
        return d


@dataclass(frozen=True, eq=False)
class Layer:
    """One traced layer: its kind, parameters and operand tensors.

    ``tensors`` maps role to array; roles are ``input``/``weight`` for linear and conv
    layers and ``a``/``b`` for activation x activation ``matmul``. With
    ``frames=True`` every activation tensor carries a leading frames axis
    (time steps or video frames); for ``matmul`` both operands do.
    """

    name: str
    kind: str
    tensors: Mapping[str, np.ndarray]
    frames: bool = False
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    quant: Mapping[str, Quant] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def a(self) -> np.ndarray:
        """Left GEMM operand (activations)."""
        return self.tensors[ROLES[self.kind][0]]

    @property
    def w(self) -> np.ndarray:
        """Right GEMM operand (weights; the second activation for ``matmul``)."""
        return self.tensors[ROLES[self.kind][1]]

    @property
    def num_frames(self) -> int:
        return int(self.a.shape[0]) if self.frames else 1

    def quant_of(self, role: str) -> Quant:
        return self.quant.get(role, Quant())


@dataclass(frozen=True, eq=False)
class Trace:
    """An ordered list of layers plus provenance."""

    model: str
    layers: tuple[Layer, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        seen: set[str] = set()
        for layer in self.layers:
            if layer.name in seen:
                raise TraceError(f"{self._where()}: duplicate layer name {show_value(layer.name)}")
            seen.add(layer.name)

    def _where(self) -> str:
        return str(self.path) if self.path else f"trace {show_value(self.model)}"

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(key)
        return self.layers[key]

    @classmethod
    def from_arrays(
        cls,
        model: str,
        layers: Iterable[Layer],
        provenance: Mapping[str, Any] | None = None,
    ) -> Trace:
        """Build an in-memory trace from layers made with :func:`linear`, :func:`conv2d`,
        :func:`conv1d` or :func:`matmul`; every layer is validated."""
        layers = tuple(layers)
        for layer in layers:
            validate_layer(layer, where=f"trace {show_value(model)}")
        return cls(model=model, layers=layers, provenance=dict(provenance or {}))


# --------------------------------------------------------------------------- builders


def _tuple(v: int | Iterable[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    t = tuple(int(x) for x in v)
    if len(t) != n:
        raise TraceError(f"{what}: expected {n} values, got {len(t)}")
    return t


def linear(name: str, x: np.ndarray, weight: np.ndarray, *, frames: bool = False,
           quant: Mapping[str, Quant] | None = None, meta: Mapping | None = None) -> Layer:
    """A fully connected layer: ``x[..., in] @ weight[out, in].T``."""
    return Layer(name, "linear", {"input": x, "weight": weight}, frames=frames,
                 quant=dict(quant or {}), meta=dict(meta or {}))


def _conv(kind: str, name: str, x, weight, stride, padding, dilation, groups, frames,
          quant, meta) -> Layer:
    n = _SPATIAL[kind]
    return Layer(name, kind, {"input": x, "weight": weight}, frames=frames,
                 stride=_tuple(stride, n, f"{name}: stride"),
                 padding=_tuple(padding, n, f"{name}: padding"),
                 dilation=_tuple(dilation, n, f"{name}: dilation"),
                 groups=int(groups), quant=dict(quant or {}), meta=dict(meta or {}))


def conv2d(name: str, x: np.ndarray, weight: np.ndarray, *, stride=1, padding=0,
           dilation=1, groups: int = 1, frames: bool = False,
           quant: Mapping[str, Quant] | None = None, meta: Mapping | None = None) -> Layer:
    """A 2-D convolution: ``x[N, C, H, W]``, ``weight[C_out, C_in/groups, kh, kw]``."""
    return _conv("conv2d", name, x, weight, stride, padding, dilation, groups, frames,
                 quant, meta)


def conv1d(name: str, x: np.ndarray, weight: np.ndarray, *, stride=1, padding=0,
           dilation=1, groups: int = 1, frames: bool = False,
           quant: Mapping[str, Quant] | None = None, meta: Mapping | None = None) -> Layer:
    """A 1-D convolution: ``x[N, C, L]``, ``weight[C_out, C_in/groups, k]``."""
    return _conv("conv1d", name, x, weight, stride, padding, dilation, groups, frames,
                 quant, meta)


def conv3d(name: str, x: np.ndarray, weight: np.ndarray, *, stride=1, padding=0,
           dilation=1, groups: int = 1, frames: bool = False,
           quant: Mapping[str, Quant] | None = None, meta: Mapping | None = None) -> Layer:
    """A 3-D convolution: ``x[N, C, D, H, W]``, ``weight[C_out, C_in/groups, kd, kh, kw]``."""
    return _conv("conv3d", name, x, weight, stride, padding, dilation, groups, frames,
                 quant, meta)


def matmul(name: str, a: np.ndarray, b: np.ndarray, *, frames: bool = False,
           quant: Mapping[str, Quant] | None = None, meta: Mapping | None = None) -> Layer:
    """An activation x activation product ``a[..., M, K] @ b[..., K, N]``."""
    return Layer(name, "matmul", {"a": a, "b": b}, frames=frames,
                 quant=dict(quant or {}), meta=dict(meta or {}))


# --------------------------------------------------------------------------- validation


def conv_out_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def validate_layer(layer: Layer, where: str) -> None:
    """Raise :class:`TraceError` unless ``layer``'s kind, dtypes, shapes and parameters
    are consistent. Checks values for NaN/Inf."""
    loc = f"{where}: layer {show_value(layer.name)}"
    if layer.kind not in KINDS:
        raise TraceError(f"{loc}: kind: expected one of {', '.join(KINDS)}, got "
                         f"{show_value(layer.kind)}")
    roles = ROLES[layer.kind]
    if set(layer.tensors) != set(roles):
        raise TraceError(f"{loc}: tensors: expected {list(roles)}, got {sorted(layer.tensors)}")
    for role in roles:
        t = layer.tensors[role]
        if not isinstance(t, np.ndarray):
            raise TraceError(f"{loc}: tensor {role!r}: expected a numpy array, got "
                             f"{type(t).__name__}")
        if t.dtype.name not in DTYPES:
            raise TraceError(f"{loc}: tensor {role!r}: dtype expected one of "
                             f"{', '.join(DTYPES)}, got {t.dtype.name}")
        if t.size == 0:
            raise TraceError(f"{loc}: tensor {role!r}: is empty (shape {t.shape})")
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise TraceError(f"{loc}: tensor {role!r}: contains NaN or Inf")
    for role, q in layer.quant.items():
        if role not in roles:
            raise TraceError(f"{loc}: quant: unknown tensor {role!r}, expected {list(roles)}")
        _validate_quant(q, layer.tensors[role], f"{loc}: tensor {role!r}: quant")
    f = 1 if layer.frames else 0
    a, w = layer.a, layer.w
    if layer.kind == "linear":
        if a.ndim < 1 + f:
            raise TraceError(f"{loc}: input: expected >= {1 + f} dims, got shape {a.shape}")
        if w.ndim != 2:
            raise TraceError(f"{loc}: weight: expected 2 dims [out, in], got shape {w.shape}")
        if a.shape[-1] != w.shape[1]:
            raise TraceError(f"{loc}: input last dim {a.shape[-1]} != weight in_features "
                             f"{w.shape[1]}")
    elif layer.kind in _SPATIAL:
        n = _SPATIAL[layer.kind]
        if a.ndim != 2 + n + f:
            exp = ("[T, " if f else "[") + "N, C, " + ", ".join("DHW"[3 - n:]) + "]"
            raise TraceError(f"{loc}: input: expected {2 + n + f} dims {exp}, got shape "
                             f"{a.shape}")
        if w.ndim != 2 + n:
            raise TraceError(f"{loc}: weight: expected {2 + n} dims, got shape {w.shape}")
        for key in ("stride", "padding", "dilation"):
            vals = getattr(layer, key)
            lo = 0 if key == "padding" else 1
            if len(vals) != n or any(v < lo for v in vals):
                raise TraceError(f"{loc}: {key}: expected {n} integers >= {lo}, got "
                                 f"{list(vals)}")
        g = layer.groups
        cin, cout = a.shape[f + 1], w.shape[0]
        if g < 1 or cin % g or cout % g:
            raise TraceError(f"{loc}: groups: expected a divisor of C_in={cin} and "
                             f"C_out={cout}, got {g}")
        if w.shape[1] != cin // g:
            raise TraceError(f"{loc}: weight dim 1 is {w.shape[1]}, expected C_in/groups = "
                             f"{cin // g}")
        for i in range(n):
            o = conv_out_size(a.shape[f + 2 + i], w.shape[2 + i], layer.stride[i],
                              layer.padding[i], layer.dilation[i])
            if o < 1:
                raise TraceError(f"{loc}: output size along spatial dim {i} would be {o}")
    else:  # matmul
        if a.ndim < 2 + f or w.ndim != a.ndim:
            raise TraceError(f"{loc}: expected a[..., M, K] and b[..., K, N] with equal "
                             f"ndim >= {2 + f}, got {a.shape} and {w.shape}")
        if a.shape[:-2] != w.shape[:-2] or a.shape[-1] != w.shape[-2]:
            raise TraceError(f"{loc}: shapes {a.shape} and {w.shape} do not multiply")
    if layer.frames and layer.kind == "matmul" and a.shape[0] != w.shape[0]:
        raise TraceError(f"{loc}: a and b have {a.shape[0]} and {w.shape[0]} frames")
    _validate_chain_meta(layer.meta, loc)


def _validate_chain_meta(meta: Mapping[str, Any], loc: str) -> None:
    """``meta.input_from`` (the layer whose output is this layer's A operand) is a
    layer name; ``meta.input_ops`` (the operators between) a list of operator names,
    given only with ``input_from`` (docs/trace-format.md)."""
    src = meta.get("input_from")
    if src is not None and (not isinstance(src, str) or not src):
        raise TraceError(f"{loc}: meta.input_from: expected a layer name (a non-empty "
                         f"string), got {show_value(src)}")
    ops = meta.get("input_ops")
    if ops is None:
        return
    if src is None:
        raise TraceError(f"{loc}: meta.input_ops: given without meta.input_from (the "
                         f"layer the operators follow)")
    if not isinstance(ops, (list, tuple)) or not all(isinstance(o, str) and o for o in ops):
        raise TraceError(f"{loc}: meta.input_ops: expected a list of operator names "
                         f"(strings), got {show_value(ops)}")


def _validate_quant(q: Quant, t: np.ndarray, loc: str) -> None:
    if q.scheme not in QUANT_SCHEMES:
        raise TraceError(f"{loc}: scheme: expected one of {', '.join(QUANT_SCHEMES)}, "
                         f"got {show_value(q.scheme)}")
    if q.scheme == "none":
        return
    if t.dtype.kind not in "iu":
        raise TraceError(f"{loc}: scheme {show_value(q.scheme)} needs an integer tensor, got "
                         f"{t.dtype.name}")
    if q.scheme == "symmetric":
        if not isinstance(q.scale, (int, float)) or not q.scale > 0:
            raise TraceError(f"{loc}: scale: expected a number > 0, got {show_value(q.scale)}")
    else:
        if q.axis is None or not -t.ndim <= q.axis < t.ndim:
            raise TraceError(f"{loc}: axis: expected an axis of a {t.ndim}-d tensor, got "
                             f"{show_value(q.axis)}")
        n = t.shape[q.axis]
        if not isinstance(q.scale, tuple) or len(q.scale) != n or not all(
            s > 0 for s in q.scale
        ):
            raise TraceError(f"{loc}: scale: expected {n} numbers > 0 (one per index of "
                             f"axis {q.axis})")


# --------------------------------------------------------------------------- writer


def _layer_entry(layer: Layer, idx: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    stem = f"{idx:04d}_{_NAME_RE.sub('_', layer.name)}"
    files: dict[str, np.ndarray] = {}
    tensors: dict[str, Any] = {}
    for role in ROLES[layer.kind]:
        t = np.asarray(layer.tensors[role])
        fname = f"{stem}.{role}.npy"
        files[fname] = t
        q = layer.quant_of(role)
        qd = q.to_dict()
        if q.scheme == "per_channel" and isinstance(q.scale, tuple):
            # one scale per channel: a .npy beside the tensor keeps big manifests small
            sname = f"{stem}.{role}.scale.npy"
            files[sname] = np.asarray(q.scale, dtype=np.float64)
            del qd["scale"]
            qd["scale_file"] = sname
        tensors[role] = {
            "file": fname,
            "dtype": t.dtype.name,
            "shape": [int(s) for s in t.shape],
            "quant": qd,
        }
    entry: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "frames": layer.frames}
    if layer.kind in _SPATIAL:
        entry.update(stride=list(layer.stride), padding=list(layer.padding),
                     dilation=list(layer.dilation), groups=layer.groups)
    entry["tensors"] = tensors
    if layer.meta:
        entry["meta"] = _plain(layer.meta)
    return entry, files


def _plain(x: Any) -> Any:
    """Convert numpy scalars/tuples so that yaml.safe_dump accepts them."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_trace(path: str | os.PathLike, layers: Trace | Iterable[Layer], *,
                model: str | None = None,
                provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a trace directory atomically (:func:`accelsim.io.atomic.atomic_dir`: a crash
    leaves the old trace or the new one at ``path``, never neither).

    ``layers`` is a :class:`Trace` or an iterable of :class:`Layer`, consumed one layer at
    a time (a generator of layers is written in the memory of one layer). An existing
    trace directory at ``path`` is replaced.
    """
    path = Path(path)
    if isinstance(layers, Trace):
        trace = layers
        model = model or trace.model
        provenance = {**trace.provenance, **(provenance or {})}
        layer_iter: Iterable[Layer] = trace.layers
    else:
        layer_iter = layers  # consumed one layer at a time: a generator streams
    model = model or path.name
    _check_text(path, "model name", model)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": model,
        "provenance": _plain(dict(provenance or {})),
        "layers": [],
    }
    from accelsim.io.atomic import atomic_dir

    seen: set[str] = set()
    with atomic_dir(path) as tmp:
        for i, layer in enumerate(layer_iter):
            validate_layer(layer, where=str(path))
            if layer.name in seen:
                raise TraceError(f"trace {show_value(model)}: duplicate layer name "
                                 f"{show_value(layer.name)}")
            seen.add(layer.name)
            _check_text(path, "layer name", layer.name)
            entry, files = _layer_entry(layer, i)
            manifest["layers"].append(entry)
            for fname, arr in files.items():
                np.save(tmp / fname, np.ascontiguousarray(arr), allow_pickle=False)
            del layer, files
        with open(tmp / "manifest.yaml", "w") as fh:
            yaml.safe_dump(manifest, fh, sort_keys=False, default_flow_style=None, width=100)
    return path


def _check_text(path: Path, what: str, text: str) -> None:
    try:  # a manifest is UTF-8 YAML: a lone surrogate would make it unreadable
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TraceError(f"{path}: {what} {show_value(safe_text(text))} is not valid text "
                         f"(lone surrogate); the trace could not be read back") from None


# --------------------------------------------------------------------------- loader


def _req(d: Mapping, key: str, typ: type | tuple[type, ...], loc: str) -> Any:
    if key not in d:
        raise TraceError(f"{loc}: missing key {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise TraceError(f"{loc}.{key}: expected {names}, got {show_value(v)}")
    return v


def _int_list(d: Mapping, key: str, n: int, loc: str, default: int) -> tuple[int, ...]:
    v = d.get(key, [default] * n)
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v] * n
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                          for x in v):
        raise TraceError(f"{loc}.{key}: expected a list of {n} integers, got {show_value(v)}")
    if len(v) != n or any(not 0 <= x <= MAX_CONV_PARAM for x in v):
        raise TraceError(f"{loc}.{key}: expected {n} integers from 0 to {MAX_CONV_PARAM}, "
                         f"got {show_value(v)}")
    return tuple(v)


def _scale_file(root: Path, fname: Any, loc: str) -> list[float]:
    """Per-channel scales from a 1-d float ``.npy`` file inside the trace directory."""
    if not isinstance(fname, str):
        raise TraceError(f"{loc}: expected a file name, got {show_value(fname)}")
    check_path(fname, TraceError, what="file", label=loc)
    fpath = safe_resolve(root / fname, TraceError, loc)
    if safe_resolve(root, TraceError, loc) not in fpath.parents:
        raise TraceError(f"{loc}: {show_path(fname)} points outside the trace directory")
    if not is_file(fpath):
        raise TraceError(f"{loc}: {show_path(fname)} not found in {root}")
    arr = np.asarray(_load_npy(fpath, str(root / fname)))
    if arr.ndim != 1 or arr.dtype.kind != "f" or not np.isfinite(arr).all():
        raise TraceError(f"{root / fname}: expected a 1-d array of finite floats (one scale "
                         f"per channel), got {arr.dtype.name} shape {list(arr.shape)}")
    return [float(s) for s in arr]


def _load_quant(d: Any, loc: str, root: Path) -> Quant:
    if d is None:
        return Quant()
    if not isinstance(d, dict):
        raise TraceError(f"{loc}: expected a mapping, got {show_value(d)}")
    unknown = set(d) - {"scheme", "bits", "scale", "scale_file", "axis"}
    if unknown:
        raise TraceError(f"{loc}: unknown key {show_value(sorted(map(str, unknown))[0])}")
    scheme = d.get("scheme", "none")
    if not isinstance(scheme, str) or scheme not in QUANT_SCHEMES:
        raise TraceError(f"{loc}.scheme: expected one of {', '.join(QUANT_SCHEMES)}, got "
                         f"{show_value(scheme)}")
    bits = d.get("bits")
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int)
                             or not 1 <= bits <= 64):
        raise TraceError(f"{loc}.bits: expected an integer from 1 to 64, got "
                         f"{show_value(bits)}")
    axis = d.get("axis")
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)
                             or abs(axis) > 64):
        raise TraceError(f"{loc}.axis: expected an integer axis, got {show_value(axis)}")

    def finite_pos(x: Any) -> bool:
        return (not isinstance(x, bool) and isinstance(x, (int, float))
                and 0 < x < math.inf)

    if "scale" in d and "scale_file" in d:
        raise TraceError(f"{loc}: give scale or scale_file, not both")
    scale = (_scale_file(root, d["scale_file"], f"{loc}.scale_file") if "scale_file" in d
             else d.get("scale"))
    if isinstance(scale, list):
        if not all(finite_pos(s) for s in scale):
            raise TraceError(f"{loc}.scale: expected finite numbers > 0")
        scale = tuple(float(s) for s in scale)
    elif scale is not None:
        if not finite_pos(scale):
            raise TraceError(f"{loc}.scale: expected a finite number > 0 or a list of them, "
                             f"got {show_value(scale)}")
        scale = float(scale)
    return Quant(scheme=scheme, bits=bits, scale=scale, axis=axis)


def release_pages(layer: Layer) -> None:
    """Let the OS drop this process's pages of a memory-mapped layer's tensors (they
    are read back from the file if used again), so that a trace simulated layer by
    layer keeps one layer's pages resident at a time. Does nothing for tensors in
    memory."""
    import mmap

    advise = getattr(mmap, "MADV_DONTNEED", None)
    for t in layer.tensors.values():
        mm = getattr(t, "_mmap", None)
        if advise is not None and isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
            try:
                mm.madvise(advise)
            except (OSError, ValueError):  # closed, or refused: only a missed saving
                pass


def _load_npy(fpath: Path, shown: str) -> np.ndarray:
    """Memory-map one tensor file; every way it can be bad is one TraceError line."""
    try:
        size = fpath.stat().st_size
    except OSError as ex:
        raise TraceError(f"{shown}: unreadable .npy file ({ex.strerror})") from None
    if size == 0:
        raise TraceError(f"{shown}: empty file, not a .npy array")
    try:
        arr = np.load(fpath, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, TypeError, OverflowError) as ex:
        why = " ".join(str(ex).split())[:120]
        raise TraceError(f"{shown}: not a plain .npy array, or truncated ({why})") from None
    except OSError as ex:
        raise TraceError(f"{shown}: unreadable .npy file ({ex.strerror or type(ex).__name__}"
                         f")") from None
    if not isinstance(arr, np.ndarray):
        raise TraceError(f"{shown}: expected one .npy array, got {type(arr).__name__}")
    if arr.ndim == 0:
        raise TraceError(f"{shown}: is a 0-d array (a scalar); expected a tensor")
    if arr.ndim > MAX_NDIM:
        raise TraceError(f"{shown}: {arr.ndim} dimensions; at most {MAX_NDIM} supported")
    return arr


def load_trace(path: str | os.PathLike) -> Trace:
    """Load and validate a trace directory. Tensors are memory-mapped read-only."""
    root = check_path(path, TraceError, what="trace directory")
    mpath = root / "manifest.yaml"
    if not is_dir(root):
        raise TraceError(f"{root}: not a trace directory (expected a directory holding "
                         f"manifest.yaml)")
    if not is_file(mpath):
        raise TraceError(f"{root}: missing manifest.yaml")
    root_real = safe_resolve(root, TraceError, str(root))
    m = read_yaml(mpath, TraceError, where=str(mpath), allow_empty=True)
    loc = str(mpath)
    if not isinstance(m, dict):
        raise TraceError(f"{loc}: expected a mapping at top level")
    if m.get("format") != FORMAT_NAME:
        raise TraceError(f"{loc}: format: expected {FORMAT_NAME!r}, got "
                         f"{show_value(m.get('format'))}")
    if m.get("version") != FORMAT_VERSION:
        raise TraceError(f"{loc}: version: expected {FORMAT_VERSION} (the only version this "
                         f"accelsim reads), got {show_value(m.get('version'))}")
    unknown = set(m) - {"format", "version", "model", "provenance", "layers"}
    if unknown:
        raise TraceError(f"{loc}: unknown key {show_value(sorted(map(str, unknown))[0])}")
    model = m.get("model", root.name)
    if not isinstance(model, str):
        raise TraceError(f"{loc}: model: expected a string, got {show_value(model)}")
    prov = m.get("provenance") or {}
    if not isinstance(prov, dict):
        raise TraceError(f"{loc}.provenance: expected a mapping")
    entries = _req(m, "layers", list, loc)
    if not entries:
        raise TraceError(f"{loc}.layers: expected at least one layer")
    layers = []
    for i, e in enumerate(entries):
        eloc = f"{loc}: layers[{i}]"
        if not isinstance(e, dict):
            raise TraceError(f"{eloc}: expected a mapping")
        name = _req(e, "name", str, eloc)
        eloc = f"{loc}: layer {show_value(name)}"
        kind = _req(e, "kind", str, eloc)
        if kind not in KINDS:
            raise TraceError(f"{eloc}.kind: expected one of {', '.join(KINDS)}, got "
                             f"{show_value(kind)}")
        allowed = {"name", "kind", "frames", "tensors", "meta"}
        n = _SPATIAL.get(kind, 0)
        if n:
            allowed |= {"stride", "padding", "dilation", "groups"}
        unknown = set(e) - allowed
        if unknown:
            raise TraceError(f"{eloc}: unknown key {show_value(sorted(map(str, unknown))[0])} "
                             f"for kind {kind}")
        frames = e.get("frames", False)
        if not isinstance(frames, bool):
            raise TraceError(f"{eloc}.frames: expected true/false, got {show_value(frames)}")
        tdict = _req(e, "tensors", dict, eloc)
        tensors: dict[str, np.ndarray] = {}
        quant: dict[str, Quant] = {}
        for role in ROLES[kind]:
            tloc = f"{eloc}.tensors.{role}"
            if role not in tdict:
                raise TraceError(f"{eloc}.tensors: missing tensor {role!r}")
            td = tdict[role]
            if not isinstance(td, dict):
                raise TraceError(f"{tloc}: expected a mapping")
            fname = _req(td, "file", str, tloc)
            check_path(fname, TraceError, what="file", label=f"{tloc}.file")
            fpath = safe_resolve(root / fname, TraceError, f"{tloc}.file")
            if root_real not in fpath.parents:
                raise TraceError(f"{tloc}.file: {show_path(fname)} points outside the trace "
                                 f"directory")
            if not is_file(fpath):
                raise TraceError(f"{tloc}.file: {show_path(fname)} not found in {root}")
            arr = _load_npy(fpath, str(root / fname))
            dt = td.get("dtype")
            if not isinstance(dt, str) or dt not in DTYPES:
                raise TraceError(f"{tloc}.dtype: expected one of {', '.join(DTYPES)}, "
                                 f"got {show_value(dt)}")
            if arr.dtype.name != dt:
                raise TraceError(f"{root / fname}: dtype is {arr.dtype.name}, manifest says "
                                 f"{dt}")
            shape = td.get("shape")
            if shape is not None and not isinstance(shape, list):
                raise TraceError(f"{tloc}.shape: expected a list of integers, got "
                                 f"{show_value(shape)}")
            if shape is not None and list(arr.shape) != list(shape):
                raise TraceError(f"{root / fname}: shape is {list(arr.shape)}, manifest says "
                                 f"{show_value(shape)}")
            tensors[role] = arr
            quant[role] = _load_quant(td.get("quant"), f"{tloc}.quant", root)
        extra = set(tdict) - set(ROLES[kind])
        if extra:
            raise TraceError(f"{eloc}.tensors: unknown tensor "
                             f"{show_value(sorted(map(str, extra))[0])}")
        params: dict[str, Any] = {}
        if n:
            params = dict(stride=_int_list(e, "stride", n, eloc, 1),
                          padding=_int_list(e, "padding", n, eloc, 0),
                          dilation=_int_list(e, "dilation", n, eloc, 1),
                          groups=e.get("groups", 1))
            g = params["groups"]
            if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= 2**31:
                raise TraceError(f"{eloc}.groups: expected an integer >= 1, got "
                                 f"{show_value(g)}")
        meta = e.get("meta") or {}
        if not isinstance(meta, dict):
            raise TraceError(f"{eloc}.meta: expected a mapping")
        layer = Layer(name=name, kind=kind, tensors=tensors, frames=frames, quant=quant,
                      meta=meta, **params)
        validate_layer(layer, where=str(root))
        src = meta.get("input_from")
        if src is not None and src not in {ly.name for ly in layers}:
            raise TraceError(f"{eloc}.meta.input_from: {show_value(src)} is not a layer "
                             f"before this one")
        layers.append(layer)
    return Trace(model=model, layers=tuple(layers), provenance=prov, path=root)


def tensor_bytes(layer: Layer) -> int:
    """Bytes of the layer's stored tensors."""
    return int(sum(math.prod(t.shape) * t.dtype.itemsize for t in layer.tensors.values()))
