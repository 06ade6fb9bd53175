"""Hardware configs: frozen dataclasses and a strict YAML loader.

Every field is declared once, with its type and range, in the dataclasses below; the
loader walks them, so unknown keys, wrong types and out-of-range values are rejected
with one line naming the file and the dotted key (``x.yaml: array.rows: expected an
integer >= 1, got 0``). Dotted overrides (``{"array.rows": 32}``) are applied to the raw
mapping before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import hashlib
import importlib.resources
import json
import math
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from accelsim.errors import ConfigError, did_you_mean
from accelsim.io.yamlio import read_yaml

DATAFLOWS = ("os", "ws", "is")
DRAM_TYPES = ("LPDDR4", "DDR3", "GDDR5", "HBM2")
FORMAT_KINDS = ("dense", "bitmask", "rle", "csr", "coo")
MAC_TYPES = ("auto", "int8", "int16", "fp16", "fp32")
ZERO_POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")
GATE_ON = ("a", "w", "both")

#: the shipped configs (package data: ``accelsim/hwconfigs/*.yaml``, energy tables in
#: ``energy/``), found through importlib.resources so that any install has them
HWCONFIG_DIR = Path(str(importlib.resources.files("accelsim") / "hwconfigs"))


def shipped_configs() -> list[Path]:
    """The shipped hardware configs, sorted by name."""
    return sorted(HWCONFIG_DIR.glob("*.yaml"))


#: strings a number field reads as +infinity (besides YAML's own ``.inf``)
INF_WORDS = ("inf", "+inf", "infinity", "+infinity")
#: largest magnitude of an integer field without its own ``le`` bound (exact in float64)
INT_LIMIT = 2**53
#: largest finite value of a float field without its own ``le`` bound
FLOAT_LIMIT = 1e15
#: smallest bandwidth accepted, bytes per cycle (below it stalls stop meaning anything)
MIN_BANDWIDTH = 1e-3
#: largest buffer size accepted, KiB (1 TiB)
MAX_KIB = 2.0**30


def opt(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, choices: tuple[str, ...] | None = None,
        allow_inf: bool = False, auto: bool = False, per_layer: bool = False,
        tile: bool = False, doc: str = "") -> Any:
    """Declare a config field with its constraints (read by the loader). Numbers are
    always finite (NaN never passes) unless ``allow_inf``; integers and floats without
    ``le`` are bounded by :data:`INT_LIMIT` / :data:`FLOAT_LIMIT`. ``auto``: the string
    ``"auto"`` is accepted besides the number; ``per_layer``: a number or a mapping from
    layer name (or glob) to a number; ``tile``: ``"auto"`` or a list of three entries,
    each an integer >= 1 or ``"full"``."""
    meta = {"ge": ge, "gt": gt, "le": le, "choices": choices, "allow_inf": allow_inf,
            "auto": auto, "per_layer": per_layer, "tile": tile, "doc": doc}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PeSimdConfig:
    dim: str = opt("n", choices=("n",), doc="output dimension the lanes of a PE spread "
                                            "over (n: output channels / columns)")
    width: int = opt(1, ge=1, le=16, doc="MAC lanes per PE sharing one activation, as in "
                                         "Eyeriss v2 (2); 1 = no SIMD")


@dataclass(frozen=True)
class ArrayConfig:
    rows: int = opt(ge=1, le=4096, doc="PE rows")
    cols: int = opt(ge=1, le=4096, doc="PE columns")
    macs_per_pe: int = opt(1, ge=1, le=64, doc="MAC units per PE (slots per cycle)")
    fold_overlap: bool = opt(True, doc="the next fold's fill overlaps this fold's drain "
                                       "(fill paid once per GEMM); false: per fold, as "
                                       "SCALE-Sim counts")
    pe_buffer_bytes: int = opt(0, ge=0, le=2**30, doc="per-PE operand buffer that lets a "
                                                      "PE run ahead (sync.mode decoupled); "
                                                      "0 = none")
    pe_simd: PeSimdConfig = opt(PeSimdConfig, doc="SIMD PEs: lanes along an output "
                                                  "dimension share one activation")
    pack_groups: str = opt("auto", choices=("auto", "off"),
                           doc="grouped convolutions: auto runs groups narrower than the "
                               "array side by side as block-diagonal GEMMs "
                               "(docs/timing.md); off: one group after another")


@dataclass(frozen=True)
class PrecisionConfig:
    a_bits: int = opt(8, ge=1, le=64, doc="activation operand width")
    w_bits: int = opt(8, ge=1, le=64, doc="weight operand width")
    out_bits: int = opt(32, ge=1, le=64, doc="partial-sum / output width")
    mac_type: str = opt("auto", choices=MAC_TYPES, doc="MAC arithmetic for energy; auto: "
                                                       "int8/int16 by operand width")


@dataclass(frozen=True)
class DramConfig:
    type: str = opt("LPDDR4", choices=DRAM_TYPES, doc="DRAM technology (prices energy)")
    bandwidth_bytes_per_cycle: float = opt(math.inf, ge=MIN_BANDWIDTH, allow_inf=True,
                                           doc="bytes per cycle; .inf = unlimited")


@dataclass(frozen=True)
class GlbConfig:
    a_kib: float = opt(64.0, gt=0, le=MAX_KIB, doc="activation partition, KiB")
    w_kib: float = opt(64.0, gt=0, le=MAX_KIB, doc="weight partition, KiB")
    out_kib: float = opt(64.0, gt=0, le=MAX_KIB, doc="output / partial-sum partition, KiB")
    bandwidth_bytes_per_cycle: float = opt(math.inf, ge=MIN_BANDWIDTH, allow_inf=True,
                                           doc="GLB <-> array bytes per cycle; .inf = "
                                               "unlimited")
    double_buffer: bool = opt(True, doc="overlap the next fold's transfers with compute")
    shared: bool = opt(False, doc="one pool of a_kib + w_kib + out_kib, split per layer by "
                                  "the mapping (the A, W and partial-sum tiles together "
                                  "must fit); false: three partitions")


@dataclass(frozen=True)
class RfConfig:
    a_bytes: int = opt(16, ge=1, le=2**30, doc="per-PE activation register file, bytes")
    w_bytes: int = opt(16, ge=1, le=2**30, doc="per-PE weight register file, bytes")
    out_bytes: int = opt(16, ge=1, le=2**30, doc="per-PE partial-sum register file, bytes")


@dataclass(frozen=True)
class MemoryConfig:
    dram: DramConfig = opt(DramConfig, doc="off-chip memory")
    glb: GlbConfig = opt(GlbConfig, doc="global buffer (SRAM), one partition per operand")
    rf: RfConfig = opt(RfConfig, doc="PE register files")


@dataclass(frozen=True)
class FormatConfig:
    kind: str = opt("dense", choices=FORMAT_KINDS, doc="compressed format")
    run_bits: int = opt(4, ge=1, le=32, doc="rle: bits per zero-run field")
    index_bits: int | str = opt(8, ge=1, le=32, auto=True,
                                doc="csr/coo: bits per coordinate; auto: the bits the "
                                    "layer's longest fiber (coo: also its fiber count) "
                                    "needs")
    ptr_bits: int | str = opt(16, ge=1, le=64, auto=True,
                              doc="csr: bits per fiber pointer; auto: the bits the "
                                  "layer's largest tile needs")


@dataclass(frozen=True)
class FormatsConfig:
    a: FormatConfig = opt(FormatConfig, doc="activation operand format")
    w: FormatConfig = opt(FormatConfig, doc="weight operand format")


@dataclass(frozen=True)
class DeltaConfig:
    enabled: bool = opt(False, doc="process thresholded frame-to-frame changes")
    threshold: float | dict = opt(0.0, ge=0, per_layer=True,
                                  doc="|delta| <= threshold counts as zero, in stored-value "
                                      "units (quantisation steps for int traces); a number, "
                                      "or a mapping from layer name or glob to a number "
                                      "(layers it does not match: 0)")
    state: str = opt("auto", choices=("auto", "glb", "dram"),
                     doc="where reference activations and accumulators live")
    state_kib: float = opt(64.0, gt=0, le=MAX_KIB, doc="on-chip state buffer size, KiB")

    def threshold_for(self, layer: str) -> float:
        """The threshold of layer ``layer``: the number, or from the mapping its exact
        name, else the first glob (in the mapping's order) that matches it, else 0."""
        th = self.threshold
        if not isinstance(th, Mapping):
            return float(th)
        if layer in th:
            return float(th[layer])
        for pattern, value in th.items():
            if fnmatch.fnmatchcase(layer, pattern):
                return float(value)
        return 0.0


@dataclass(frozen=True)
class StructuredConfig:
    n: int = opt(0, ge=0, le=63, doc="N of every M weights kept along K; 0 = no N:M")
    m: int = opt(4, ge=2, le=64, doc="group size M")


SYNC_MODES = ("lockstep", "barrier", "fifo", "decoupled")
SYNC_SCOPES = ("array", "row", "col")
BALANCE = ("none", "greedy_filter", "greedy_chunk")
TIMINGS = ("accelsim", "scalesim")


@dataclass(frozen=True)
class SyncConfig:
    mode: str = opt("lockstep", choices=SYNC_MODES,
                    doc="how the PEs of a fold synchronise (docs/timing.md)")
    scope: str = opt("array", choices=SYNC_SCOPES,
                     doc="the PEs that synchronise together: the whole array, each PE row "
                         "or each PE column")
    barrier_steps: int = opt(16, ge=1, le=2**30, doc="barrier: time steps between barriers")
    fifo_depth: int = opt(4, ge=1, le=2**30, doc="fifo: elements of the shared operand "
                                                 "FIFO")
    lookahead: int = opt(0, ge=0, le=4096, doc="time steps a PE may pick its pairs from "
                                               "per cycle; 0 = array.macs_per_pe")
    balance: str = opt("none", choices=BALANCE,
                       doc="assign filters (is: input rows) to PE columns by nonzero work: "
                           "once per GEMM (greedy_filter) or per barrier chunk "
                           "(greedy_chunk)")


LAYER_KINDS = ("linear", "conv1d", "conv2d", "conv3d", "matmul")


@dataclass(frozen=True)
class ThresholdConfig:
    value: float = opt(0.0, ge=0, doc="|x| <= value counts as zero, in stored-value units "
                                      "(quantisation steps for int traces); 0 = exact "
                                      "zeros only")
    target: float = opt(0.0, ge=0, le=0.999999, doc="calibrate each layer's threshold to "
                                                    "this sparsity of its activations "
                                                    "(0 = off)")
    layers: str = opt("*", doc="comma-separated glob patterns of the layer names it "
                               "applies to")
    kinds: str = opt("linear,conv1d,conv2d,conv3d,matmul",
                     doc="comma-separated layer kinds it applies to")
    operands: str = opt("a", choices=("a", "both"), doc="a: the left operand; both: "
                                                         "matmul layers threshold b too")

    def _validate(self, where: str, prefix: str) -> None:
        if self.value > 0 and self.target > 0:
            raise ConfigError(f"{where}: {prefix}target: expected 0 when {prefix}value is "
                              f"set (give a value or a target, not both), got "
                              f"{self.target:g}")
        kinds = [k.strip() for k in self.kinds.split(",")]
        for k in kinds:
            if k not in LAYER_KINDS:
                raise ConfigError(f"{where}: {prefix}kinds: expected comma-separated "
                                  f"layer kinds from {', '.join(LAYER_KINDS)}, got {k!r}")
        if not any(p.strip() for p in self.layers.split(",")):
            raise ConfigError(f"{where}: {prefix}layers: expected glob patterns, got "
                              f"{self.layers!r}")


@dataclass(frozen=True)
class KvCacheConfig:
    glb_kib: float = opt(64.0, ge=0, doc="GLB space for the KV cache, KiB: a step's whole "
                                         "cache is resident while it fits, else in DRAM")
    placement: str = opt("auto", choices=("auto", "glb", "dram"),
                         doc="auto: by glb_kib; glb or dram: always there")
    bits: int = opt(0, ge=0, le=64, doc="bits per cached element; 0 = precision.a_bits")


ENGINE_KINDS = ("systolic", "gemv", "auto")
FETCH_SKIP = ("none", "rows")


@dataclass(frozen=True)
class EngineConfig:
    kind: str = opt("systolic", choices=ENGINE_KINDS,
                    doc="systolic: the PE array; gemv: a GEMV engine, one nonzero input "
                        "broadcast per cycle to `lanes` MACs (docs/memory-model.md); auto: "
                        "gemv for layers whose GEMMs have one row (M = 1), else systolic")
    lanes: int = opt(0, ge=0, le=2**20, doc="gemv: MAC lanes, the array's MACs: 0 = "
                                            "array.rows x cols x macs_per_pe; any other "
                                            "value must equal that")
    pipeline: int = opt(0, ge=0, le=2**20, doc="gemv: pipeline cycles added to each GEMV")


@dataclass(frozen=True)
class FetchSkipConfig:
    w_on_zero_a: str = opt("none", choices=FETCH_SKIP,
                           doc="rows: W rows whose input (or delta) is zero are neither "
                               "fetched nor streamed (GEMV engine only)")
    unit_rows: int = opt(1, ge=1, le=2**20, doc="W rows per fetch unit: a unit is fetched "
                                                "when any of its rows is needed")


LOOP_ORDERS = ("mnk", "mkn", "nmk", "nkm", "kmn", "knm")


@dataclass(frozen=True)
class MappingConfig:
    loop_order: str = opt("auto", choices=("auto",) + LOOP_ORDERS,
                          doc="DRAM -> GLB loop order over (m, n, k), outer to inner; auto: "
                              "the dataflow's (os mnk, ws nmk, is mnk)")
    glb_tile: object = opt("auto", tile=True,
                           doc="GLB tile [Tm, Tn, Tk] (integers or full), or auto: the "
                               "largest legal tile found by halving from the dataflow's "
                               "start tile (docs/memory-model.md)")
    search: str = opt("fixed", doc="fixed (loop_order / glb_tile as set, auto tiles by "
                                   "halving), exhaustive (every legal candidate of the "
                                   "candidate set) or random:N (N candidates drawn with a "
                                   "fixed seed); searches what is auto")
    objective: str = opt("energy", choices=("energy", "cycles", "edp"),
                         doc="what the search minimises: the mapping-dependent energy "
                             "(DRAM and GLB fills), an estimate of cycles, or their product")

    def search_kind(self) -> tuple[str, int]:
        """(``fixed`` | ``exhaustive`` | ``random``, N) from ``search``."""
        kind, _, num = self.search.partition(":")
        return kind, int(num) if num else 0


@dataclass(frozen=True)
class HwConfig:
    name: str = opt(doc="config name")
    array: ArrayConfig = opt(doc="PE array")
    dataflow: str = opt(choices=DATAFLOWS, doc="os | ws | is")
    zero_policy: str = opt("none", choices=ZERO_POLICIES,
                           doc="what PEs do with zero operands")
    gate_on: str = opt("a", choices=GATE_ON,
                       doc="gate: which operand's zeros gate a pair (a, as in Eyeriss; w; "
                           "both)")
    skip_padding: bool = opt(True, doc="padding pairs are never issued (known at compile "
                                       "time); false: they are zero operands")
    clock_ghz: float = opt(1.0, gt=0, le=100, doc="clock frequency")
    precision: PrecisionConfig = opt(PrecisionConfig, doc="operand bit widths")
    memory: MemoryConfig = opt(MemoryConfig, doc="memory hierarchy")
    formats: FormatsConfig = opt(FormatsConfig, doc="compressed formats per operand")
    delta: DeltaConfig = opt(DeltaConfig, doc="temporal delta processing")
    sync: SyncConfig = opt(SyncConfig, doc="PE synchronisation and load balancing")
    timing: str = opt("accelsim", choices=TIMINGS,
                      doc="scalesim: fill and drain paid per fold (SCALE-Sim v3's count, "
                          "implies array.fold_overlap false)")
    structured: StructuredConfig = opt(StructuredConfig, doc="N:M structured weights")
    threshold: ThresholdConfig = opt(ThresholdConfig, doc="thresholded activation sparsity")
    kv_cache: KvCacheConfig = opt(KvCacheConfig, doc="KV cache of decoding (attention "
                                                     "layers marked in the trace)")
    engine: EngineConfig = opt(EngineConfig, doc="compute engine: systolic PE array or "
                                                 "GEMV lanes")
    fetch_skip: FetchSkipConfig = opt(FetchSkipConfig, doc="skip fetching W rows of zero "
                                                           "inputs (GEMV engine)")
    mapping: MappingConfig = opt(MappingConfig, doc="loop order and tile at the global "
                                                    "buffer (docs/memory-model.md)")
    energy: str = opt("45nm_horowitz", doc="energy table: a shipped name "
                                           "(accelsim/hwconfigs/energy/) or a path")
    backend: str = opt("auto", choices=("auto", "numpy", "torch"),
                       doc="where the mask products run: numpy, torch (CUDA when present), "
                           "auto (torch on CUDA for large GEMMs when there is a device, else "
                           "numpy); results are identical, so it is not part of the config "
                           "hash")
    description: str = opt("", doc="free text")

    def _validate(self, where: str, prefix: str) -> None:
        st = self.structured
        if st.n:
            if st.n >= st.m:
                raise ConfigError(f"{where}: {prefix}structured.n: expected an integer < "
                                  f"structured.m = {st.m}, got {st.n}")
            if self.dataflow == "is":
                raise ConfigError(f"{where}: {prefix}structured: N:M weights need dataflow os "
                                  f"or ws, got is")
        self._validate_sync(where, prefix)
        self._validate_engine(where, prefix)
        self._validate_search(where, prefix)
        r, c = self.array.rows, self.array.cols
        glb = self.memory.glb
        for key, kib, bits, what in (("a_kib", glb.a_kib, self.precision.a_bits, "activations"),
                                     ("w_kib", glb.w_kib, self.precision.w_bits, "weights"),
                                     ("out_kib", glb.out_kib, self.precision.out_bits,
                                      "partial sums")):
            need = r * c * -(-bits // 8)
            if kib * 1024 < need:
                raise ConfigError(
                    f"{where}: {prefix}memory.glb.{key}: expected at least {need / 1024:g} "
                    f"KiB to hold one {r}x{c} tile of {bits}-bit {what}, got {kib:g}")

    def _validate_search(self, where: str, prefix: str) -> None:
        s = self.mapping.search
        kind, _, num = s.partition(":") if isinstance(s, str) else ("", "", "")
        ok = (kind in ("fixed", "exhaustive") and not _) or (
            kind == "random" and num.isdigit() and 1 <= int(num) <= 100000)
        if not ok:
            raise ConfigError(f"{where}: {prefix}mapping.search: expected fixed, exhaustive "
                              f"or random:N (N an integer from 1 to 100000), got {s!r}")

    def _validate_engine(self, where: str, prefix: str) -> None:
        eng, fs, ar = self.engine, self.fetch_skip, self.array
        if fs.w_on_zero_a == "rows":
            if eng.kind == "systolic":
                raise ConfigError(f"{where}: {prefix}fetch_skip.w_on_zero_a: rows is only "
                                  f"modelled on the GEMV engine (engine.kind gemv or auto), "
                                  f"got engine.kind systolic")
            if self.zero_policy not in ("skip_a", "skip_both"):
                raise ConfigError(f"{where}: {prefix}fetch_skip.w_on_zero_a: rows leaves the "
                                  f"W rows of zero inputs unprocessed and needs zero_policy "
                                  f"skip_a or skip_both, got {self.zero_policy}")
        if eng.kind == "systolic":
            return
        macs = ar.rows * ar.cols * ar.macs_per_pe
        if eng.lanes not in (0, macs):
            raise ConfigError(f"{where}: {prefix}engine.lanes: expected the array's MACs, "
                              f"array.rows x cols x macs_per_pe = {macs} (the GEMV lanes "
                              f"are those MACs), got {eng.lanes}")
        for bad, what in ((self.structured.n != 0, "structured.n: 0 (N:M weights)"),
                          (ar.pe_simd.width != 1, "array.pe_simd.width: 1"),
                          (self.sync.mode != "lockstep", "sync.mode: lockstep"),
                          (self.sync.balance != "none", "sync.balance: none")):
            if bad:
                raise ConfigError(f"{where}: {prefix}engine.kind: {eng.kind} is not modelled "
                                  f"with these settings; it needs {what}")

    def _validate_sync(self, where: str, prefix: str) -> None:
        sy, ar = self.sync, self.array
        if sy.lookahead and sy.lookahead < ar.macs_per_pe:
            raise ConfigError(f"{where}: {prefix}sync.lookahead: expected 0 or at least "
                              f"array.macs_per_pe = {ar.macs_per_pe}, got {sy.lookahead}")
        if sy.balance == "greedy_chunk" and sy.mode not in ("barrier", "decoupled"):
            raise ConfigError(f"{where}: {prefix}sync.balance: greedy_chunk balances per "
                              f"barrier chunk and needs sync.mode barrier or decoupled, "
                              f"got {sy.mode}")
        lanes = ar.pe_simd.width
        if lanes > 1:
            for bad, what in ((ar.macs_per_pe != 1, f"array.macs_per_pe = 1, got "
                                                    f"{ar.macs_per_pe}"),
                              (self.structured.n != 0, "no N:M weights (structured.n: 0)"),
                              (sy.balance != "none", f"sync.balance none, got {sy.balance}")):
                if bad:
                    raise ConfigError(f"{where}: {prefix}array.pe_simd.width: {lanes} lanes "
                                      f"per PE need {what}")
        if sy.mode == "decoupled":
            bits = self.stream_bits()
            if ar.pe_buffer_bytes * 8 < bits:
                raise ConfigError(
                    f"{where}: {prefix}array.pe_buffer_bytes: sync.mode decoupled needs a "
                    f"per-PE operand buffer of at least {-(-bits // 8)} bytes (one "
                    f"{bits}-bit time step of the {self.dataflow} streams), got "
                    f"{ar.pe_buffer_bytes}")

    def stream_bits(self, lanes: int | None = None) -> int:
        """Bits of one time step of the operands streamed to a PE: both operands on os,
        the activation on ws, the weight on is (one weight per SIMD lane; ``lanes=1``:
        one pair's own operands)."""
        pr = self.precision
        lanes = self.array.pe_simd.width if lanes is None else lanes
        return {"os": pr.a_bits + lanes * pr.w_bits, "ws": pr.a_bits,
                "is": lanes * pr.w_bits}[self.dataflow]

    @property
    def gemv_lanes(self) -> int:
        """MAC lanes of the GEMV engine: ``engine.lanes``, 0 meaning the array's MACs."""
        ar = self.array
        return self.engine.lanes or ar.rows * ar.cols * ar.macs_per_pe

    @property
    def lanes(self) -> int:
        """MAC lanes per PE along N (``array.pe_simd.width``)."""
        return self.array.pe_simd.width

    def logical_cols(self) -> int:
        """Columns of the array as the N dimension sees them: on os and ws every PE
        column holds ``lanes`` adjacent output columns; on is N is time."""
        return self.array.cols * (self.lanes if self.dataflow in ("os", "ws") else 1)

    def pe_buffer_steps(self) -> int:
        """Time steps a decoupled PE's operand buffer holds (0 without a buffer)."""
        return self.array.pe_buffer_bytes * 8 // self.stream_bits()

    def pe_buffered(self) -> bool:
        """Decoupled PEs stream their operands through a per-PE buffer."""
        return self.sync.mode == "decoupled" and self.array.pe_buffer_bytes > 0

    def acc_buffered(self) -> bool:
        """On ws and is, rows that drift apart (``scope: row``, or decoupled PEs) cannot
        pass partial sums down systolically: each PE reads and writes its partial sum
        in a local accumulator buffer per MAC (docs/timing.md)."""
        return self.dataflow in ("ws", "is") and (self.sync.scope == "row"
                                                 or self.sync.mode == "decoupled")

    @property
    def fold_overlap(self) -> bool:
        return self.array.fold_overlap and self.timing != "scalesim"

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        tile = out["mapping"]["glb_tile"]
        if isinstance(tile, tuple):  # YAML and JSON write lists
            out["mapping"]["glb_tile"] = list(tile)
        return out

    def config_hash(self) -> str:
        """Stable short hash of the resolved config (key order independent). ``backend``
        is left out: it says where the products run, and changes no result."""
        raw = self.to_dict()
        raw.pop("backend", None)
        blob = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, overrides: Mapping[str, Any]) -> HwConfig:
        raw = self.to_dict()
        for key, value in overrides.items():
            set_dotted(raw, key, value, where="overrides")
        return build(HwConfig, raw, where="overrides")


# --------------------------------------------------------------------------- validation

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _expect(ftype: Any, meta: Mapping[str, Any]) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    words = _TYPE_WORDS.get(ftype, str(ftype))
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<=")):
        if meta.get(key) is not None:
            bound = meta[key]
            if float(bound).is_integer():
                bound = int(bound)
            parts.append(f"{sym} {bound:g}" if isinstance(bound, float) else f"{sym} {bound}")
    text = " ".join([words, " and ".join(parts)]) if parts else words
    if meta.get("auto"):
        return text + " or auto"
    return text + " or .inf" if ftype is float and meta.get("allow_inf") else text


def show_value(value: Any, limit: int = 60) -> str:
    """A user value for an error message: one line, bounded length, never expanding a
    huge structure (``repr`` of an alias-expanded document can be gigabytes)."""
    if isinstance(value, (bool, int, float)) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else \
            f"an integer of {len(str(abs(value)))} digits" if abs(value) < 10**4000 else \
            "a huge integer"
    elif isinstance(value, str):
        text = repr(value[: limit + 1])
    elif isinstance(value, (list, tuple, dict)):
        text = f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)} items"
    else:
        text = f"a {type(value).__name__}"
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_scalar(value: Any, ftype: Any, meta: Mapping[str, Any], where: str,
                  key: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{where}: {key}: expected {_expect(ftype, meta)}, got "
                           f"{show_value(value)}")

    if ftype is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if ftype is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        if meta.get("le") is None and abs(value) > INT_LIMIT:
            raise bad()
    elif ftype is float:
        if isinstance(value, str) and value.strip().lower() in INF_WORDS:
            value = math.inf  # `--set x=inf` as YAML's .inf
        if isinstance(value, str) and value.strip().lower() in ("nan", "+nan", "-nan", ".nan"):
            raise ConfigError(f"{where}: {key}: expected {_expect(ftype, meta)}, got "
                              f"{show_value(value)} (NaN is not a number a config takes)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        try:
            value = float(value)
        except OverflowError:
            raise bad() from None
        if math.isnan(value):
            raise ConfigError(f"{where}: {key}: expected {_expect(ftype, meta)}, got NaN "
                              f"(not a number a config takes)")
        if math.isinf(value):
            if not meta.get("allow_inf") or value < 0:
                raise bad()
        elif meta.get("le") is None and abs(value) > FLOAT_LIMIT:
            raise bad()
    elif ftype is str:
        if not isinstance(value, str):
            raise bad()
        if meta.get("choices") and value not in meta["choices"]:
            raise bad()
        return value
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise bad()
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise bad()
    if meta.get("le") is not None and not value <= meta["le"]:
        raise bad()
    return value


def check_value(value: Any, ftype: Any, meta: Mapping[str, Any], where: str,
                key: str) -> Any:
    """A leaf config value checked against its field: ``auto`` fields take ``"auto"`` or
    an integer, ``per_layer`` fields a number or a mapping of layer names to numbers."""
    if meta.get("tile"):
        return _check_tile(value, where, key)
    if meta.get("auto"):
        return value if value == "auto" else _check_scalar(value, int, meta, where, key)
    if meta.get("per_layer"):
        return _per_layer(value, meta, where, key)
    return _check_scalar(value, ftype, meta, where, key)


def _check_tile(value: Any, where: str, key: str) -> Any:
    """``"auto"``, or [Tm, Tn, Tk] with each entry an integer >= 1 or ``"full"``: a tuple."""
    if value == "auto":
        return value
    expect = "auto or a list [Tm, Tn, Tk] of integers >= 1 or full"
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"{where}: {key}: expected {expect}, got {show_value(value)}")
    for dim, v in zip("mnk", value, strict=True):
        if v == "full":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= INT_LIMIT:
            raise ConfigError(f"{where}: {key}: T{dim}: expected an integer >= 1 or full, "
                              f"got {show_value(v)}")
    return tuple(value)


def _per_layer(value: Any, meta: Mapping[str, Any], where: str, key: str) -> Any:
    """A number, or a mapping from layer name or glob to a number (each checked like the
    number, the error naming ``key.<layer>``)."""
    if not isinstance(value, Mapping):
        try:
            return _check_scalar(value, float, meta, where, key)
        except ConfigError:
            raise ConfigError(f"{where}: {key}: expected {_expect(float, meta)}, or a "
                              f"mapping from layer name (or glob) to such a number, got "
                              f"{show_value(value)}") from None
    if not value:
        raise ConfigError(f"{where}: {key}: expected a number or a non-empty mapping from "
                          f"layer name to number, got an empty mapping")
    out = {}
    for name, v in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: {key}: expected layer names (strings) as keys, "
                              f"got {show_value(name)}")
        out[name] = _check_scalar(v, float, meta, where, f"{key}.{show_value(name)[1:-1]}")
    return out


def check_keys(raw: Mapping[str, Any], allowed: Iterable[str], where: str,
               prefix: str = "") -> None:
    """Reject the first key of ``raw`` not in ``allowed`` with one line naming the file,
    the dotted key and the keys expected (in ``allowed``'s order)."""
    allowed = list(allowed)
    for key in raw:
        if key not in allowed:
            shown = key if isinstance(key, str) and len(key) <= 60 else show_value(key)
            raise ConfigError(f"{where}: {prefix}{shown}: unknown key"
                              f"{did_you_mean(key, allowed)} (expected one of "
                              f"{', '.join(allowed)})")


def build(cls: type, raw: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a raw mapping, strictly."""
    label = prefix.rstrip(".") or "top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {label}: expected a mapping, got {show_value(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(raw, fields, where, prefix)
    kwargs = {}
    for name, f in fields.items():
        ftype = hints[name]
        key = prefix + name
        origin = typing.get_origin(ftype)
        optional = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
            and type(None) in typing.get_args(ftype)
        if optional:
            ftype = next(t for t in typing.get_args(ftype) if t is not type(None))
        if name not in raw or (optional and raw[name] is None):
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue
            if optional:
                kwargs[name] = None
                continue
            raise ConfigError(f"{where}: {key}: missing required key")
        value = raw[name]
        if dataclasses.is_dataclass(ftype):
            kwargs[name] = build(ftype, value, where, key + ".")
        else:
            kwargs[name] = check_value(value, ftype, f.metadata, where, key)
    obj = cls(**kwargs)
    check = getattr(obj, "_validate", None)
    if check is not None:
        check(where, prefix)
    return obj


def set_dotted(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{where}: {show_value(key)}: expected a dotted key like "
                          f"array.rows")
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])}: is not a section, "
                              f"cannot set {key}")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the CLI; the value is read as YAML (``32``, ``skip_a``,
    ``true``, ``[1, 2]``)."""
    from accelsim.io.yamlio import parse_yaml

    shown = show_value(text)
    if "=" not in text:
        raise ConfigError(f"--set {shown}: expected KEY=VALUE, e.g. array.rows=32")
    key, _, val = text.partition("=")
    value = parse_yaml(val, f"--set {shown}") if val.strip() else ""
    return key.strip(), value


def hwconfig_to_yaml(hw: HwConfig) -> str:
    """The resolved config as YAML, every key with its value (defaults filled in), in
    the loader's key order; ``load_hwconfig`` of it gives an equal config."""
    import yaml

    head = (f"# resolved hardware config {hw.name} (config hash {hw.config_hash()}); every "
            f"default filled in\n")
    return head + yaml.safe_dump(hw.to_dict(), sort_keys=False, allow_unicode=True,
                                 width=100)


def resolve_hwconfig_path(path: str | os.PathLike) -> Path:
    """A path as given, else a shipped config by file name or stem."""
    from accelsim.io.paths import check_path, is_file, show_path

    p = check_path(path, ConfigError, what="hardware config")
    if is_file(p):
        return p
    if not p.parent.parts:
        for cand in (HWCONFIG_DIR / p.name, HWCONFIG_DIR / f"{p.name}.yaml"):
            if is_file(cand):
                return cand
    stems = [c.stem for c in shipped_configs()]
    hint = did_you_mean(p.stem, stems) if not p.parent.parts else ""
    raise ConfigError(f"{show_path(path, 200)}: hardware config not found{hint} (a path, or "
                      f"a shipped config: {', '.join(stems)}; accelsim list)")


def load_hwconfig(path: str | os.PathLike | Mapping[str, Any],
                  overrides: Mapping[str, Any] | None = None) -> HwConfig:
    """Load a hardware config from a YAML file (or a mapping), apply dotted overrides,
    validate strictly and return a frozen :class:`HwConfig`."""
    if isinstance(path, Mapping):
        raw, where = dict(path), "hwconfig"
    else:
        p = resolve_hwconfig_path(path)
        where = p.name
        raw = read_yaml(p)
        if isinstance(raw, dict):
            raw.setdefault("name", p.stem)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level: expected a mapping")
    raw = copy.deepcopy(raw)
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        set_dotted(raw, key, value, where=f"{where} (override {key})")
    try:
        return build(HwConfig, raw, where)
    except ConfigError as e:
        raise _blame_override(e, where, overrides) from None


def _blame_override(e: ConfigError, where: str, overrides: Mapping[str, Any]) -> ConfigError:
    """An error about a key that an override set, blamed on the override, not the file:
    ``override array.rows: expected an integer ..., got 'abc' (on x.yaml)``, with
    ``.override`` set to the key (the CLI says ``--set array.rows=abc``). Other errors
    are returned as they are."""
    msg = str(e)
    head = f"{where}: "
    if not overrides or not msg.startswith(head):
        return e
    dotted, sep, detail = msg[len(head):].partition(": ")
    if not sep:
        return e
    for key in overrides:
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            inner = detail if dotted == key else f"{dotted}: {detail}"
            err = ConfigError(f"override {key}: {inner} (on {where})")
            err.override = key  # type: ignore[attr-defined]
            return err
    return e
