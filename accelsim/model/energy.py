"""Energy tables and pricing: energy = sum of action counts x price per action.

Counts stay in the simulation result, so :func:`reprice` prices them again under another
table without simulating.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from accelsim.errors import ConfigError
from accelsim.io.hwconfig import (
    DRAM_TYPES,
    HWCONFIG_DIR,
    HwConfig,
    build,
    check_keys,
    show_value,
)
from accelsim.io.yamlio import read_yaml

ENERGY_DIR = HWCONFIG_DIR / "energy"
MAC_TYPES = ("int8", "int16", "fp16", "fp32")
#: largest price accepted in a table (pJ per event / per byte / mW): far above any
#: real technology, low enough that energy sums stay finite
MAX_PRICE = 1e9
#: largest multiplier (e.g. sram.write_factor)
MAX_FACTOR = 1e3
COMPONENTS = ("mac", "skip", "mux", "rf", "hop", "glb", "dram", "state", "leakage")


@dataclass(frozen=True)
class EnergyTable:
    name: str
    mac: Mapping[str, Mapping[str, float]]  # dtype -> performed/gated/skipped
    rf_points: tuple[tuple[float, float], ...]  # (bytes, pJ/byte), sorted by size
    sram_points: tuple[tuple[float, float], ...]  # (KiB, pJ/byte), sorted by size
    sram_write_factor: float
    dram_pj_per_bit: Mapping[str, float]
    leak_pe_mw: float
    leak_sram_mw_per_kib: float
    nm_mux_pj: float = 0.0
    decode_pj: float = 0.0
    pe_hop_pj_per_byte: float = 0.0

    def sram_pj_per_byte(self, kib: float) -> float:
        """Read energy per byte of an SRAM of ``kib`` KiB (log2-linear interpolation)."""
        return _interp(self.sram_points, kib)

    def rf_pj_per_byte(self, size_bytes: float) -> float:
        """Access energy per byte of a register file of ``size_bytes`` bytes."""
        return _interp(self.rf_points, size_bytes)


def _interp(pts: tuple[tuple[float, float], ...], size: float) -> float:
    """Linear interpolation in log2(size) between sorted (size, value) points; clamped."""
    if size <= pts[0][0]:
        return pts[0][1]
    if size >= pts[-1][0]:
        return pts[-1][1]
    for (k0, e0), (k1, e1) in zip(pts, pts[1:], strict=False):
        if k0 <= size <= k1:
            t = (math.log2(size) - math.log2(k0)) / (math.log2(k1) - math.log2(k0))
            return e0 + t * (e1 - e0)
    raise AssertionError("unreachable")


def _num(d: Any, key: str, where: str, path: str) -> float:
    if not isinstance(d, Mapping) or key not in d:
        raise ConfigError(f"{where}: {path}{key}: missing required key")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise ConfigError(f"{where}: {path}{key}: expected a number >= 0, got "
                          f"{show_value(v)}")
    if not v <= MAX_PRICE:
        raise ConfigError(f"{where}: {path}{key}: expected a number <= {MAX_PRICE:g}, got "
                          f"{show_value(v)}")
    return float(v)


def _factor(d: Mapping, key: str, where: str, path: str) -> float:
    """A multiplier in (0, MAX_FACTOR]; 1 when absent."""
    v = d.get(key, 1.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_FACTOR:
        raise ConfigError(f"{where}: {path}{key}: expected a number > 0 and <= "
                          f"{MAX_FACTOR:g}, got {show_value(v)}")
    return float(v)


def _check_keys(d: Any, allowed: set[str], where: str, path: str) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: {path.rstrip('.') or 'top level'}: expected a mapping")
    check_keys(d, sorted(allowed), where, path)


def _points(section: Mapping, unit: str, where: str, path: str) -> list[tuple[float, float]]:
    pts = section.get("points")
    if not isinstance(pts, list) or not pts:
        raise ConfigError(f"{where}: {path}.points: expected a non-empty list")
    out = []
    for i, pt in enumerate(pts):
        loc = f"{path}.points[{i}]."
        _check_keys(pt, {unit, "pj_per_byte"}, where, loc)
        size = _num(pt, unit, where, loc)
        if size <= 0:
            raise ConfigError(f"{where}: {loc}{unit}: expected a number > 0, got {size:g}")
        out.append((size, _num(pt, "pj_per_byte", where, loc)))
    return out


def resolve_energy_path(name: str | os.PathLike, base: Path | None = None) -> Path:
    from accelsim.io.paths import check_path, is_file

    p = check_path(name, ConfigError, what="energy table")
    cands = [p]
    if base is not None:
        cands.append(base / p)
    cands += [ENERGY_DIR / p.name, ENERGY_DIR / f"{p.name}.yaml"]
    for c in cands:
        if is_file(c):
            return c
    names = ", ".join(c.stem for c in sorted(ENERGY_DIR.glob("*.yaml")))
    raise ConfigError(f"energy table {show_value(str(name))}: not found (a path, or a "
                      f"shipped table: "
                      f"{names})")


def load_energy_table(name: str | os.PathLike | Mapping[str, Any]) -> EnergyTable:
    """Load an energy table by name (``45nm_horowitz``), path or mapping; strict.

    Tables read from files are cached by path and modification time."""
    if isinstance(name, Mapping):
        return _parse_table(dict(name), "energy table")
    path = resolve_energy_path(name).resolve()
    return _load_file(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _load_file(path: Path, mtime_ns: int) -> EnergyTable:
    return _parse_table(read_yaml(path), path.name)


def _parse_table(raw: Any, where: str) -> EnergyTable:
    _check_keys(raw, {"name", "mac", "rf", "sram", "dram_pj_per_bit", "leakage", "nm_mux_pj",
                      "decode_pj", "pe_hop_pj_per_byte"}, where, "")
    mac = raw.get("mac")
    _check_keys(mac, set(MAC_TYPES), where, "mac.")
    prices = {}
    for dt, entry in mac.items():
        _check_keys(entry, {"performed", "gated", "skipped"}, where, f"mac.{dt}.")
        prices[dt] = {a: _num(entry, a, where, f"mac.{dt}.")
                      for a in ("performed", "gated", "skipped")}
    rf = raw.get("rf")
    _check_keys(rf, {"points"}, where, "rf.")
    rf_points = _points(rf, "bytes", where, "rf")
    sram = raw.get("sram")
    _check_keys(sram, {"points", "write_factor"}, where, "sram.")
    points = _points(sram, "kib", where, "sram")
    dram = raw.get("dram_pj_per_bit")
    _check_keys(dram, set(DRAM_TYPES), where, "dram_pj_per_bit.")
    leak = raw.get("leakage")
    _check_keys(leak, {"pe_mw", "sram_mw_per_kib"}, where, "leakage.")
    return EnergyTable(
        name=str(raw.get("name", where)), mac=prices,
        rf_points=tuple(sorted(rf_points)),
        sram_points=tuple(sorted(points)),
        sram_write_factor=_factor(sram, "write_factor", where, "sram."),
        dram_pj_per_bit={k: _num(dram, k, where, "dram_pj_per_bit.") for k in dram},
        leak_pe_mw=_num(leak, "pe_mw", where, "leakage."),
        leak_sram_mw_per_kib=_num(leak, "sram_mw_per_kib", where, "leakage."),
        nm_mux_pj=_num(raw, "nm_mux_pj", where, ""),
        decode_pj=_num(raw, "decode_pj", where, ""),
        pe_hop_pj_per_byte=_num(raw, "pe_hop_pj_per_byte", where, ""),
    )


def mac_type(hw: HwConfig) -> str:
    if hw.precision.mac_type != "auto":
        return hw.precision.mac_type
    bits = max(hw.precision.a_bits, hw.precision.w_bits)
    return "int8" if bits <= 8 else "int16" if bits <= 16 else "fp32"


def prices(hw: HwConfig, table: EnergyTable) -> dict[str, float]:
    """Price of every action for ``hw`` under ``table`` (pJ per count)."""
    mt = mac_type(hw)
    if mt not in table.mac:
        raise ConfigError(f"{table.name}: mac.{mt}: missing, needed by {hw.name} "
                          f"(precision {mt})")
    dt = hw.memory.dram.type
    if dt not in table.dram_pj_per_bit:
        raise ConfigError(f"{table.name}: dram_pj_per_bit.{dt}: missing, needed by {hw.name}")
    glb = hw.memory.glb
    wf = table.sram_write_factor
    p = {f"mac_{a}": table.mac[mt][a] for a in ("performed", "gated", "skipped")}
    rf = hw.memory.rf
    for op, size in (("a", rf.a_bytes), ("w", rf.w_bytes), ("out", rf.out_bytes)):
        p[f"rf_{op}"] = table.rf_pj_per_byte(size)
    for op, kib in (("a", glb.a_kib), ("w", glb.w_kib), ("out", glb.out_kib)):
        e = table.sram_pj_per_byte(kib)
        p[f"glb_{op}_read"], p[f"glb_{op}_write"] = e, e * wf
    p["dram"] = table.dram_pj_per_bit[dt] * 8
    # on-chip delta state: the state buffer of state_kib (state: auto), or the GLB's out
    # partition that it shares (state: glb)
    d = hw.delta
    e = table.sram_pj_per_byte(glb.out_kib if d.state == "glb" else d.state_kib)
    p["state_sram_read"], p["state_sram_write"] = e, e * wf
    p["a_bits"] = float(hw.precision.a_bits)
    p["nm_mux"] = table.nm_mux_pj
    p["decode"] = table.decode_pj
    p["pe_hop"] = table.pe_hop_pj_per_byte
    # a decoupled PE's operand buffer is priced by its size like a register file; an
    # accumulator buffer like the PE's output register file (docs/energy.md)
    p["pe_buf"] = table.rf_pj_per_byte(max(1, hw.array.pe_buffer_bytes))
    p["acc_buf"] = p["rf_out"]
    pes = hw.array.rows * hw.array.cols
    pe_buf_kib = hw.array.pe_buffer_bytes / 1024 if hw.pe_buffered() else 0.0
    leak_mw = pes * (table.leak_pe_mw + pe_buf_kib * table.leak_sram_mw_per_kib) + \
        (glb.a_kib + glb.w_kib + glb.out_kib + state_buffer_kib(hw)) * table.leak_sram_mw_per_kib
    p["leakage_per_cycle"] = leak_mw / hw.clock_ghz  # mW x ns = pJ
    return p


def state_buffer_kib(hw: HwConfig) -> float:
    """KiB of the dedicated delta state buffer: ``delta.state_kib`` when delta is on with
    ``state: auto`` (built whether or not a layer's state fits it); 0 under ``glb`` (the
    state shares the GLB's out partition) or ``dram``."""
    d = hw.delta
    return d.state_kib if d.enabled and d.state == "auto" else 0.0


def energy_of(counts: Mapping[str, Any], p: Mapping[str, float]) -> dict[str, float]:
    """Energy per component and in total (pJ) from a mapping of counts."""
    c = counts
    e = {}
    # a MAC with an A operand one bit wider (delta layers: macs_wide_*) costs
    # (a_bits + 1) / a_bits of the table's MAC: a multiplier grows as a_bits x w_bits
    # cells (the table's own int16 derivation); scaling the adder too over-prices it
    # slightly (docs/energy.md)
    e["mac"] = c["macs_performed"] * p["mac_performed"] + c["macs_gated"] * p["mac_gated"]
    e["mac"] += (c.get("macs_wide_performed", 0) * p["mac_performed"]
                 + c.get("macs_wide_gated", 0) * p["mac_gated"]) / p["a_bits"]
    # skipping, per design (docs/energy.md): a skipped pair costs only where the design
    # scans it; enumerating designs pay per decoded element; both read metadata bits
    e["skip"] = (c.get("skip_scan_ops", 0) * p["mac_skipped"]
                 + c.get("skip_decode_ops", 0) * p["decode"]
                 + c.get("rf_a_meta_read_bits", 0) * p["rf_a"] / 8
                 + c.get("rf_w_meta_read_bits", 0) * p["rf_w"] / 8)
    e["rf"] = sum((c[f"rf_{op}_read_bytes"] + c[f"rf_{op}_write_bytes"]) * p[f"rf_{op}"]
                  for op in ("a", "w", "out"))
    e["rf"] += ((c.get("pe_buf_read_bytes", 0) + c.get("pe_buf_write_bytes", 0)) * p["pe_buf"]
                + (c.get("acc_buf_read_bytes", 0) + c.get("acc_buf_write_bytes", 0))
                * p["acc_buf"])
    e["hop"] = sum(c.get(f"pe_hop_{op}_bytes", 0) for op in ("a", "w", "psum")) * p["pe_hop"]
    glb = 0.0
    for op in ("a", "w"):
        glb += (c[f"glb_{op}_read_bytes"] + c[f"glb_{op}_read_meta_bytes"]) * p[f"glb_{op}_read"]
        glb += ((c[f"glb_{op}_write_bytes"] + c[f"glb_{op}_write_meta_bytes"])
                * p[f"glb_{op}_write"])
    glb += c["glb_psum_read_bytes"] * p["glb_out_read"]
    glb += (c["glb_psum_write_bytes"] + c["glb_out_write_bytes"]
            + c.get("glb_out_write_meta_bytes", 0)) * p["glb_out_write"]
    glb += c.get("glb_kv_write_bytes", 0) * p["glb_w_write"]  # KV cache (model/kvcache.py)
    e["glb"] = glb
    dram_bytes = sum(c[k] for k in ("dram_a_read_bytes", "dram_a_read_meta_bytes",
                                    "dram_w_read_bytes", "dram_w_read_meta_bytes",
                                    "dram_psum_read_bytes", "dram_psum_write_bytes",
                                    "dram_out_write_bytes"))
    dram_bytes += c.get("dram_out_write_meta_bytes", 0)  # outputs in the consumer's format
    dram_bytes += c.get("dram_kv_read_bytes", 0) + c.get("dram_kv_write_bytes", 0)
    e["dram"] = dram_bytes * p["dram"]
    reads = c.get("state_ref_read_bytes", 0) + c.get("state_acc_read_bytes", 0)
    writes = c.get("state_ref_write_bytes", 0) + c.get("state_acc_write_bytes", 0)
    if c.get("state_in_dram", 0):
        e["state"] = (reads + writes) * p["dram"]
    else:
        e["state"] = reads * p["state_sram_read"] + writes * p["state_sram_write"]
    e["state"] += c.get("state_enc_read_bytes", 0) * p["dram"]  # the encoder's dense read
    e["mux"] = c.get("nm_mux_ops", 0) * p["nm_mux"]
    e["leakage"] = c["cycles"] * p["leakage_per_cycle"]
    out = {f"energy_{k}_pj": float(e[k]) for k in COMPONENTS}
    out["energy_pj"] = float(sum(e.values()))
    return out


def reprice(result: pd.DataFrame, table: str | os.PathLike | Mapping | EnergyTable,
            hw: HwConfig | None = None) -> pd.DataFrame:
    """Energy of a simulation result under another table, from its stored counts.

    ``result`` is a DataFrame returned by :func:`accelsim.simulate` (the hardware config
    travels in ``result.attrs``; pass ``hw`` for a DataFrame read back from a file).
    Returns a copy with every ``energy_*`` column recomputed."""
    if hw is None:
        raw = result.attrs.get("hwconfig")
        if raw is None:
            raise ConfigError("reprice: result carries no hardware config; pass hw=")
        hw = build(HwConfig, raw, "reprice")
    if not isinstance(table, EnergyTable):
        table = load_energy_table(table)
    p = prices(hw, table)
    out = result.copy()
    is_layer = out["kind"] != "total" if "kind" in out else pd.Series(True, index=out.index)
    rows = [energy_of(r, p) for r in out.loc[is_layer].to_dict("records")]
    for col in rows[0] if rows else []:
        out.loc[is_layer, col] = [r[col] for r in rows]
        if (~is_layer).any():
            out.loc[~is_layer, col] = out.loc[is_layer, col].sum()
    out.attrs = dict(result.attrs) | {"energy_table": table.name}
    return out
