"""SCALE-Sim input files: a ``.cfg`` as a hardware config, a topology CSV as a trace.

SCALE-Sim (v2 and v3) describes an accelerator with an INI-style ``.cfg`` file and a
workload with a topology CSV of layer shapes. See ``docs/interop.md`` for what each key
becomes. A topology holds shapes, not values, so its trace is **synthetic**: random int8
values at the densities the caller gives (dense by default), and its provenance says so.

Facts of the formats (from SCALE-Sim's own readers and shipped examples):

* ``.cfg``: read with Python's ``configparser`` by SCALE-Sim too, so keys are
  case-insensitive and both ``Key: value`` and ``Key = value`` work.
* conv topology: header ``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter
  Width, Channels, Num Filter, Strides,`` then one row per layer, rows ending in a comma.
  The ifmap sizes are already padded (batch 1, no padding). SCALE-Sim's output size is
  ``ceil((ifmap - filter + stride) / stride)``. A layer whose name contains ``DP`` is
  depthwise: SCALE-Sim runs it as one single-channel layer per channel, each with ``Num
  Filter`` filters. An optional last column gives the weights' N:M sparsity (``2:4``).
* GEMM topology: header ``Layer name, M, N, K,``: ifmap ``M x K`` times filter ``K x N``,
  with the same optional N:M column.
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.errors import ConfigError, TraceError
from accelsim.io import trace as tr
from accelsim.io.hwconfig import DATAFLOWS, HwConfig, build, set_dotted
from accelsim.io.synthetic import random_tensor
from accelsim.io.trace import Trace

#: SCALE-Sim hard-codes one-byte words (every operand, every interface)
WORD_BYTES = 1

# section -> key (lower case, as configparser gives it) -> value type
_INT, _BOOL, _STR = "int", "bool", "str"
_KEYS: dict[str, dict[str, str]] = {
    "general": {"run_name": _STR},
    "architecture_presets": {
        "arrayheight": _INT, "arraywidth": _INT, "ifmapsramszkb": _INT,
        "filtersramszkb": _INT, "ofmapsramszkb": _INT, "dataflow": _STR, "bandwidth": _STR,
        "ifmapoffset": _INT, "filteroffset": _INT, "ofmapoffset": _INT, "memorybanks": _INT,
        "readrequestbuffer": _INT, "writerequestbuffer": _INT,
    },
    "run_presets": {"interfacebandwidth": _STR, "useramulatortrace": _BOOL},
    "layout": {
        "ifmapcustomlayout": _BOOL, "ifmapsrambankbandwidth": _INT, "ifmapsrambanknum": _INT,
        "ifmapsrambankport": _INT, "filtercustomlayout": _BOOL,
        "filtersrambankbandwidth": _INT, "filtersrambanknum": _INT,
        "filtersrambankport": _INT,
    },
    "sparsity": {"sparsitysupport": _BOOL, "sparserep": _STR, "optimizedmapping": _BOOL,
                 "blocksize": _INT, "randomnumbergeneratorseed": _INT},
    "network_presets": {"topologycsvloc": _STR},
}
#: keys accelsim uses; every other known key is read, checked and recorded as ignored
_USED = {"run_name", "arrayheight", "arraywidth", "ifmapsramszkb", "filtersramszkb",
         "ofmapsramszkb", "dataflow", "bandwidth", "interfacebandwidth", "sparsitysupport"}
_REQUIRED = ("arrayheight", "arraywidth", "ifmapsramszkb", "filtersramszkb",
             "ofmapsramszkb", "dataflow")
_SPELLING = {k.lower(): k for k in (
    "ArrayHeight", "ArrayWidth", "IfmapSramSzkB", "FilterSramSzkB", "OfmapSramSzkB",
    "Dataflow", "Bandwidth", "IfmapOffset", "FilterOffset", "OfmapOffset", "MemoryBanks",
    "ReadRequestBuffer", "WriteRequestBuffer", "InterfaceBandwidth", "UseRamulatorTrace",
    "IfmapCustomLayout", "IfmapSRAMBankBandwidth", "IfmapSRAMBankNum", "IfmapSRAMBankPort",
    "FilterCustomLayout", "FilterSRAMBankBandwidth", "FilterSRAMBankNum",
    "FilterSRAMBankPort", "SparsitySupport", "SparseRep", "OptimizedMapping", "BlockSize",
    "RandomNumberGeneratorSeed", "TopologyCsvLoc", "run_name")}


@dataclass(frozen=True)
class ScaleSimConfig:
    """The SCALE-Sim settings accelsim uses, as read from a ``.cfg``."""

    path: Path
    run_name: str
    rows: int  # ArrayHeight
    cols: int  # ArrayWidth
    ifmap_kb: int
    filter_kb: int
    ofmap_kb: int
    dataflow: str
    interface_bandwidth: str  # CALC (stall-free) or USER
    bandwidths: tuple[int, ...]  # words per cycle, USER mode
    sparsity_support: bool = False
    ignored: tuple[str, ...] = ()  # "section.Key" of keys read but not modelled

    def hw_dict(self) -> dict[str, Any]:
        """The accelsim config (as a raw mapping) this SCALE-Sim config describes."""
        if self.interface_bandwidth == "USER":
            # one value: every interface (ifmap, filter, ofmap) gets it; accelsim has one
            # shared DRAM channel, so it gets the interfaces' sum
            bws = self.bandwidths * 3 if len(self.bandwidths) == 1 else self.bandwidths
            dram_bw: float = float(sum(bws) * WORD_BYTES)
        else:
            dram_bw = math.inf
        return {
            "name": self.run_name,
            "description": f"from SCALE-Sim config {self.path.name} "
                           f"(InterfaceBandwidth {self.interface_bandwidth})",
            # SCALE-Sim runs a depthwise layer one channel's GEMM after another
            "array": {"rows": self.rows, "cols": self.cols, "macs_per_pe": 1,
                      "pack_groups": "off"},
            "dataflow": self.dataflow,
            "zero_policy": "none",
            "timing": "scalesim",  # fill and drain per fold, as SCALE-Sim counts
            "precision": {"a_bits": 8 * WORD_BYTES, "w_bits": 8 * WORD_BYTES,
                          "out_bits": 8 * WORD_BYTES},
            "memory": {
                "dram": {"bandwidth_bytes_per_cycle": dram_bw},
                "glb": {"a_kib": float(self.ifmap_kb), "w_kib": float(self.filter_kb),
                        "out_kib": float(self.ofmap_kb),
                        "bandwidth_bytes_per_cycle": math.inf, "double_buffer": True},
            },
        }


def _bad(where: str, section: str, key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{where}: [{section}] {_SPELLING.get(key, key)}: expected {expected}, "
                       f"got {got!r}")


def read_scalesim_cfg(path: str | os.PathLike) -> ScaleSimConfig:
    """Parse a SCALE-Sim ``.cfg`` strictly: unknown sections and keys, duplicate keys,
    missing required keys and bad values are one-line :class:`ConfigError` naming the file
    and the key."""
    p = Path(path)
    where = str(p)
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       delimiters=(":", "="), inline_comment_prefixes=None)
    try:
        with open(p) as fh:
            parser.read_file(fh, source=where)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read ({e.strerror})") from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(f"{where}: line {e.lineno}: expected a [section] header before "
                          f"{e.line.strip()!r}") from None
    except (configparser.DuplicateOptionError, configparser.DuplicateSectionError) as e:
        what = (f"[{e.section}] {e.option}" if isinstance(e, configparser.DuplicateOptionError)
                else f"[{e.section}]")
        raise ConfigError(f"{where}: line {e.lineno}: {what} given twice") from None
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]
        raise ConfigError(f"{where}: line {lineno}: expected 'Key: value' or 'Key = value', "
                          f"got {line.strip()!r}") from None
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for section in parser.sections():
        keys = _KEYS.get(section.lower())
        if keys is None:
            raise ConfigError(f"{where}: [{section}]: unknown section (expected one of "
                              f"{', '.join(_KEYS)})")
        for key, raw in parser.items(section):
            kind = keys.get(key)
            if kind is None:
                names = ", ".join(_SPELLING.get(k, k) for k in keys)
                raise ConfigError(f"{where}: [{section}] {key}: unknown key (expected one of "
                                  f"{names})")
            text = raw.strip()
            if kind == _INT:
                try:
                    value: Any = int(text)
                except ValueError:
                    raise _bad(where, section, key, "an integer", text) from None
            elif kind == _BOOL:
                if text.lower() not in ("true", "false"):
                    raise _bad(where, section, key, "True or False", text)
                value = text.lower() == "true"
            else:
                value = text
            values[key] = (section, value)
            if key not in _USED:
                ignored.append(f"{section}.{_SPELLING.get(key, key)}")

    def get(key: str, default: Any = None) -> Any:
        return values[key][1] if key in values else default

    for key in _REQUIRED:
        if key not in values:
            raise ConfigError(f"{where}: [architecture_presets] {_SPELLING[key]}: missing "
                              f"required key")
    for key in ("arrayheight", "arraywidth", "ifmapsramszkb", "filtersramszkb",
                "ofmapsramszkb"):
        if get(key) < 1:
            raise _bad(where, values[key][0], key, "an integer >= 1", get(key))
    dataflow = get("dataflow").lower()
    if dataflow not in DATAFLOWS:
        raise _bad(where, values["dataflow"][0], "dataflow", "one of os, ws, is",
                   get("dataflow"))
    mode = get("interfacebandwidth", "CALC")
    if mode not in ("CALC", "USER"):
        raise _bad(where, "run_presets", "interfacebandwidth", "CALC or USER", mode)
    bandwidths: tuple[int, ...] = ()
    if "bandwidth" in values:
        cells = [c.strip() for c in get("bandwidth").split(",")]
        if not all(c.isdigit() and int(c) > 0 for c in cells) or len(cells) not in (1, 3):
            raise _bad(where, values["bandwidth"][0], "bandwidth",
                       "words per cycle: one integer >= 1, or three (ifmap, filter, ofmap)",
                       get("bandwidth"))
        bandwidths = tuple(int(c) for c in cells)
    if mode == "USER" and not bandwidths:
        raise ConfigError(f"{where}: [architecture_presets] Bandwidth: missing (required by "
                          f"InterfaceBandwidth: USER)")
    return ScaleSimConfig(
        path=p, run_name=get("run_name", p.stem), rows=get("arrayheight"),
        cols=get("arraywidth"), ifmap_kb=get("ifmapsramszkb"),
        filter_kb=get("filtersramszkb"), ofmap_kb=get("ofmapsramszkb"), dataflow=dataflow,
        interface_bandwidth=mode, bandwidths=bandwidths,
        sparsity_support=bool(get("sparsitysupport", False)), ignored=tuple(ignored))


def load_scalesim_hwconfig(path: str | os.PathLike,
                           overrides: Mapping[str, Any] | None = None, *,
                           nm: tuple[int, int] | None = None) -> HwConfig:
    """A SCALE-Sim ``.cfg`` as an accelsim :class:`HwConfig` (``docs/interop.md`` has the
    mapping). ``overrides`` are dotted accelsim keys, applied on top. With ``[sparsity]
    SparsitySupport: true``, ``nm`` (the topology's N:M ratio) turns on the array's N:M
    support (``structured.n`` / ``structured.m``)."""
    cfg = read_scalesim_cfg(path)
    raw = cfg.hw_dict()
    if cfg.sparsity_support and nm is not None:
        raw["structured"] = {"n": int(nm[0]), "m": int(nm[1])}
    where = cfg.path.name
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value, where=f"{where} (override {key})")
    return build(HwConfig, raw, where)


# --------------------------------------------------------------------------- topologies

_CONV_HEADER = ("layer name", "ifmap height", "ifmap width", "filter height", "filter width",
                "channels", "num filter", "strides")
_GEMM_HEADER = ("m", "n", "k")


@dataclass(frozen=True)
class TopologyLayer:
    """One row of a topology file, in SCALE-Sim's terms."""

    name: str
    form: str  # "conv" or "gemm"
    dims: Mapping[str, int]  # conv: ifmap_h, ifmap_w, filt_h, filt_w, channels,
    #                          num_filters, stride; gemm: m, n, k
    nm: tuple[int, int] | None = None  # N:M of the weights, None if dense (or 1:1)
    line: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def depthwise(self) -> bool:
        return self.form == "conv" and "DP" in self.name


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.split(",")]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


def read_topology(path: str | os.PathLike, form: str | None = None) -> list[TopologyLayer]:
    """Parse a SCALE-Sim topology CSV (conv or GEMM form; ``form=None`` tells them apart by
    the header). Bad rows are one-line :class:`TraceError` naming the file, line, layer and
    column."""
    p = Path(path)
    where = str(p)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise TraceError(f"{where}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{where}: not a text file") from None
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise TraceError(f"{where}: empty topology file")
    hline, header = numbered[0]
    head = [c.lower() for c in _cells(header)]
    if form is None:
        if tuple(head[:8]) == _CONV_HEADER:
            form = "conv"
        elif len(head) >= 4 and tuple(head[1:4]) == _GEMM_HEADER:
            form = "gemm"
        else:
            raise TraceError(f"{where}: line {hline}: header: expected SCALE-Sim's conv "
                             f"header 'Layer name, IFMAP Height, IFMAP Width, Filter Height, "
                             f"Filter Width, Channels, Num Filter, Strides' or GEMM header "
                             f"'Layer name, M, N, K', got {header.strip()!r}")
    if form not in ("conv", "gemm"):
        raise TraceError(f"{where}: form: expected conv or gemm, got {form!r}")
    columns = (["IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
                "Num Filter", "Strides"] if form == "conv" else ["M", "N", "K"])
    keys = (["ifmap_h", "ifmap_w", "filt_h", "filt_w", "channels", "num_filters", "stride"]
            if form == "conv" else ["m", "n", "k"])
    out: list[TopologyLayer] = []
    for lineno, line in numbered[1:]:
        cells = _cells(line)
        name = cells[0] if cells else ""
        loc = f"{where}: line {lineno}: layer {name!r}"
        if not name:
            raise TraceError(f"{where}: line {lineno}: layer name: expected a name in the "
                             f"first column")
        if len(cells) not in (len(keys) + 1, len(keys) + 2):
            raise TraceError(f"{loc}: expected {len(keys) + 1} columns (name, "
                             f"{', '.join(columns)}) and an optional N:M sparsity column, got "
                             f"{len(cells)}")
        dims: dict[str, int] = {}
        for key, col, text in zip(keys, columns, cells[1:len(keys) + 1], strict=True):
            if not text.isdigit() or int(text) < 1:
                raise TraceError(f"{loc}: {col}: expected an integer >= 1, got {text!r}")
            dims[key] = int(text)
        nm = None
        if len(cells) == len(keys) + 2:
            text = cells[-1]
            parts = text.split(":")
            if (len(parts) != 2 or not all(x.strip().isdigit() for x in parts)
                    or not 1 <= int(parts[0]) <= int(parts[1])):
                raise TraceError(f"{loc}: sparsity: expected N:M with 1 <= N <= M (e.g. 2:4), "
                                 f"got {text!r}")
            n, m = int(parts[0]), int(parts[1])
            nm = None if n == m else (n, m)
        if form == "conv":
            for axis in ("h", "w"):
                if dims[f"filt_{axis}"] > dims[f"ifmap_{axis}"]:
                    big = "Height" if axis == "h" else "Width"
                    raise TraceError(f"{loc}: Filter {big} {dims[f'filt_{axis}']} is larger "
                                     f"than IFMAP {big} {dims[f'ifmap_{axis}']}")
        out.append(TopologyLayer(name=name, form=form, dims=dims, nm=nm, line=lineno))
    if not out:
        raise TraceError(f"{where}: no layers after the header")
    return out


def scalesim_gemm(layer: TopologyLayer) -> tuple[int, int, int]:
    """``(M, K, N)`` of one GEMM as SCALE-Sim runs it (per channel for depthwise layers)."""
    d = layer.dims
    if layer.form == "gemm":
        return d["m"], d["k"], d["n"]
    s = d["stride"]
    oh = -(-(d["ifmap_h"] - d["filt_h"] + s) // s)
    ow = -(-(d["ifmap_w"] - d["filt_w"] + s) // s)
    ch = 1 if layer.depthwise else d["channels"]
    return oh * ow, d["filt_h"] * d["filt_w"] * ch, d["num_filters"]


def _nm_weights(shape: Sequence[int], nm: tuple[int, int] | None, density: float,
                rng: np.random.Generator) -> np.ndarray:
    """Int8 weights ``[out, ...]``; with ``nm``, at most N nonzeros in every M consecutive
    elements along K (the flattened trailing dims, accelsim's lowering order)."""
    w = random_tensor(shape, density, rng)
    if nm is None:
        return w
    n, m = nm
    out = shape[0]
    flat = w.reshape(out, -1)
    k = flat.shape[1]
    groups = -(-k // m)
    rank = np.argsort(rng.random((out, groups, m)), axis=-1).argsort(axis=-1)
    keep = (rank < n).reshape(out, groups * m)[:, :k]
    return np.where(keep, flat, 0).astype(w.dtype).reshape(shape)


def _to_layer(layer: TopologyLayer, name: str, rng: np.random.Generator, density_a: float,
              density_w: float) -> tr.Layer:
    d = layer.dims
    meta: dict[str, Any] = {"scalesim": {"line": layer.line, "form": layer.form}}
    if layer.nm:
        meta["scalesim"]["sparsity"] = f"{layer.nm[0]}:{layer.nm[1]}"
    if layer.form == "gemm":
        x = random_tensor((d["m"], d["k"]), density_a, rng)
        w = _nm_weights((d["n"], d["k"]), layer.nm, density_w, rng)
        return tr.linear(name, x, w, meta=meta)
    s = d["stride"]
    # SCALE-Sim's output size is ceil((H - kh + s) / s); accelsim's floor((H - kh) / s) + 1
    # gives the same with the ifmap extended to (out - 1) * s + kh rows (and columns)
    sizes = []
    for axis in ("h", "w"):
        size, k = d[f"ifmap_{axis}"], d[f"filt_{axis}"]
        o = -(-(size - k + s) // s)
        sizes.append(max(size, (o - 1) * s + k))
    if sizes != [d["ifmap_h"], d["ifmap_w"]]:
        meta["scalesim"]["ifmap_extended"] = {"from": [d["ifmap_h"], d["ifmap_w"]],
                                              "to": sizes}
    c, f = d["channels"], d["num_filters"]
    x = random_tensor((1, c, *sizes), density_a, rng)
    if layer.depthwise:
        w = _nm_weights((c * f, 1, d["filt_h"], d["filt_w"]), layer.nm, density_w, rng)
        return tr.conv2d(name, x, w, stride=s, groups=c, meta=meta)
    w = _nm_weights((f, c, d["filt_h"], d["filt_w"]), layer.nm, density_w, rng)
    return tr.conv2d(name, x, w, stride=s, meta=meta)


def load_topology(path: str | os.PathLike, *, density_a: float = 1.0, density_w: float = 1.0,
                  seed: int = 0, form: str | None = None) -> Trace:
    """A SCALE-Sim topology CSV as a **synthetic** trace: every layer's shapes as SCALE-Sim
    runs them, int8 values drawn at ``density_a`` (activations) and ``density_w``
    (weights; within the N:M pattern where the topology gives one), seeded.

    Conv layers become ``conv2d`` on the padded ifmap (padding 0, batch 1), depthwise
    (``DP`` in the name) ones ``conv2d`` with one group per channel, GEMM rows ``linear``
    layers ``[M, K] @ [K, N]``. Where SCALE-Sim's rounded-up output size exceeds the
    convolution's, the ifmap is extended so that both agree (``meta.scalesim``)."""
    for what, d in (("density_a", density_a), ("density_w", density_w)):
        if not (isinstance(d, (int, float)) and 0.0 <= d <= 1.0):
            raise TraceError(f"{path}: {what}: expected a number in [0, 1], got {d!r}")
    rows = read_topology(path, form)
    rng = np.random.default_rng(seed)
    layers = []
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.name] = seen.get(row.name, 0) + 1
        name = row.name if seen[row.name] == 1 else f"{row.name}_{seen[row.name]}"
        layers.append(_to_layer(row, name, rng, float(density_a), float(density_w)))
    p = Path(path)
    prov = {"synthetic": True, "generator": "accelsim.io.scalesim.load_topology",
            "source": f"SCALE-Sim {rows[0].form} topology", "topology": str(p),
            "density_a": float(density_a), "density_w": float(density_w), "seed": int(seed)}
    return Trace.from_arrays(p.stem, layers, prov)


def topology_nm(path: str | os.PathLike) -> tuple[int, int] | None:
    """The one N:M ratio of a topology's sparse layers (None if every layer is dense);
    :class:`ConfigError` if they differ, since accelsim's N:M support is one per array."""
    ratios = sorted({row.nm for row in read_topology(path) if row.nm})
    if len(ratios) > 1:
        raise ConfigError(f"{path}: layers give N:M ratios "
                          f"{', '.join(f'{n}:{m}' for n, m in ratios)}; accelsim's array "
                          f"supports one (set structured.n and structured.m)")
    return ratios[0] if ratios else None


def load_scalesim(cfg: str | os.PathLike, topology: str | os.PathLike, *,
                  density_a: float = 1.0, density_w: float = 1.0, seed: int = 0,
                  overrides: Mapping[str, Any] | None = None) -> tuple[Trace, HwConfig]:
    """Both SCALE-Sim inputs at once: the synthetic trace of ``topology`` and the
    hardware of ``cfg`` (with N:M support from the topology when the config enables
    SCALE-Sim's sparsity)."""
    trace = load_topology(topology, density_a=density_a, density_w=density_w, seed=seed)
    nm = topology_nm(topology) if read_scalesim_cfg(cfg).sparsity_support else None
    return trace, load_scalesim_hwconfig(cfg, overrides, nm=nm)
