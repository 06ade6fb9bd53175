"""Silicon area estimate of a hardware config, in mm² at 45 nm.

The estimate is first-order, meant to put a third axis (area) beside energy and latency
in a design-space sweep; it is not a floorplan. Area = PE array + global buffer:

* **PE** = MAC units + register files + zero-handling logic.
  - MAC: one multiplier of the operand widths plus one accumulator adder of the output
    width, from Horowitz, "Computing's energy problem (and what we can do about it)",
    ISSCC 2014 (45 nm, the area table of the same talk whose energies our
    ``45nm_horowitz`` table uses): 8-bit int add 36 µm², 32-bit int add 137 µm², 8-bit int
    mult 282 µm², 32-bit int mult 3495 µm², 16-bit FP add 1360 µm², 16-bit FP mult
    1640 µm², 32-bit FP add 4184 µm², 32-bit FP mult 7700 µm².
    Other integer widths are *derived*: adder area linear in bits between the two
    published adders, multiplier area quadratic in bits scaled from the 8-bit one
    (an array multiplier has ~n² partial-product cells).
  - Register files: one flip-flop per bit, NanGate FreePDK45 Open Cell Library DFF_X1,
    4.522 µm² (1.4 µm cell height x 3.23 µm). Read muxes are not counted, so this is a
    lower bound (*derived*).
  - Zero handling: ``gate`` adds nothing (*assumption*: one clock-gating cell per PE is
    negligible next to the MAC). One-sided skipping (``skip_a``, ``skip_w``) adds 4.49%
    of the PE, the whole-chip area overhead Cnvlutin reports for skipping zero
    activations (Albericio et al., ISCA 2016). Two-sided skipping (``skip_both``) adds
    twice that, 8.98% (*derived assumption*: both operands need the zero-detect and
    offset logic).
* **Decoupled PE buffers** (``array.pe_buffer_bytes`` under ``sync.mode: decoupled``)
  are priced at the global buffer's SRAM density below (*assumption*: a buffer of a few
  hundred bytes is an SRAM macro, not flip-flops).
* **Global buffer** (SRAM): Intel's 45 nm 6T bitcell is 0.346 µm² (Mistry et al., IEDM
  2007). With an array efficiency of 50% (*assumption*: decoders, sense amplifiers and
  I/O take the other half in small macros) one KiB = 8192 bits takes
  8192 · 0.346 / 0.5 µm² = 5669 µm² = 0.00567 mm² (*derived*).

* **Delta state buffer** (``delta.state_kib`` when ``delta.enabled`` with ``state:
  auto``): SRAM at the same density (``area_state_mm2``). Under ``state: glb`` the state
  shares the GLB's out partition and adds no area.

DRAM is off chip and not counted. Numbers are for 45 nm whatever energy table the
config names; scale by (node/45)² for a rough other-node estimate.
"""

from __future__ import annotations

from typing import Any

from accelsim.io.hwconfig import HwConfig

UM2_PER_MM2 = 1e6

#: Horowitz ISSCC 2014, 45 nm, µm²
INT_ADD_UM2 = {8: 36.0, 32: 137.0}
INT_MULT_UM2 = {8: 282.0, 32: 3495.0}
FP_ADD_UM2 = {16: 1360.0, 32: 4184.0}
FP_MULT_UM2 = {16: 1640.0, 32: 7700.0}
#: NanGate FreePDK45 DFF_X1, µm² per stored bit
DFF_UM2 = 4.522
#: Cnvlutin (ISCA 2016) area overhead of zero-activation skipping, fraction
SKIP_ONE_SIDED_OVERHEAD = 0.0449
#: derived assumption: two-sided skipping doubles the one-sided logic
SKIP_TWO_SIDED_OVERHEAD = 2 * SKIP_ONE_SIDED_OVERHEAD
ZERO_POLICY_OVERHEAD = {"none": 0.0, "gate": 0.0, "skip_a": SKIP_ONE_SIDED_OVERHEAD,
                        "skip_w": SKIP_ONE_SIDED_OVERHEAD,
                        "skip_both": SKIP_TWO_SIDED_OVERHEAD}
#: Intel 45 nm 6T SRAM bitcell (Mistry et al., IEDM 2007), µm²
SRAM_BITCELL_UM2 = 0.346
#: assumption: fraction of an SRAM macro that is bitcells
SRAM_ARRAY_EFFICIENCY = 0.5
#: derived: mm² per KiB of SRAM
SRAM_MM2_PER_KIB = 8192 * SRAM_BITCELL_UM2 / SRAM_ARRAY_EFFICIENCY / UM2_PER_MM2


def int_adder_um2(bits: int) -> float:
    """Integer adder area, linear in width through Horowitz's 8- and 32-bit points."""
    (b0, a0), (b1, a1) = sorted(INT_ADD_UM2.items())
    return max(a0 + (a1 - a0) * (bits - b0) / (b1 - b0), a0 * bits / b0)


def int_mult_um2(a_bits: int, w_bits: int) -> float:
    """Integer multiplier area, ~ a_bits x w_bits cells, scaled from the 8x8 one."""
    return INT_MULT_UM2[8] * (a_bits * w_bits) / 64.0


def mac_um2(hw: HwConfig) -> float:
    """One MAC unit (multiplier + accumulator adder) of ``hw``, µm²."""
    from accelsim.model.energy import mac_type

    mt = mac_type(hw)
    if mt == "fp16":
        return FP_MULT_UM2[16] + FP_ADD_UM2[32]
    if mt == "fp32":
        return FP_MULT_UM2[32] + FP_ADD_UM2[32]
    p = hw.precision
    return int_mult_um2(p.a_bits, p.w_bits) + int_adder_um2(p.out_bits)


def pe_um2(hw: HwConfig) -> float:
    """One PE: MACs, register files and zero-handling logic, µm²."""
    rf = hw.memory.rf
    rf_bits = 8 * (rf.a_bytes + rf.w_bytes + rf.out_bytes)
    base = hw.array.macs_per_pe * hw.lanes * mac_um2(hw) + rf_bits * DFF_UM2
    if hw.pe_buffered():  # a decoupled PE's operand buffer: SRAM cells, as the GLB's
        base += hw.array.pe_buffer_bytes / 1024 * SRAM_MM2_PER_KIB * UM2_PER_MM2
    return base * (1.0 + ZERO_POLICY_OVERHEAD[hw.zero_policy])


def area_of(hw: HwConfig) -> dict[str, Any]:
    """Area estimate of ``hw`` in mm²: ``area_pe_mm2`` (whole array), ``area_glb_mm2``
    (global buffer SRAM), ``area_state_mm2`` (the delta state buffer) and their sum
    ``area_mm2``."""
    from accelsim.model.energy import state_buffer_kib

    pes = hw.array.rows * hw.array.cols
    pe_mm2 = pes * pe_um2(hw) / UM2_PER_MM2
    glb = hw.memory.glb
    glb_mm2 = (glb.a_kib + glb.w_kib + glb.out_kib) * SRAM_MM2_PER_KIB
    state_mm2 = state_buffer_kib(hw) * SRAM_MM2_PER_KIB
    return {"area_pe_mm2": pe_mm2, "area_glb_mm2": glb_mm2, "area_state_mm2": state_mm2,
            "area_mm2": pe_mm2 + glb_mm2 + state_mm2}
