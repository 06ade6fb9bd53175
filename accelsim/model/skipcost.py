"""What skipping costs, per design (docs/energy.md): scan and decode operations and the
per-PE metadata reads of a skipping PE, from the pair counts of each GEMM.

A design that *scans* an operand (formats ``dense``, ``bitmask``) looks at every pair it
walks and drops the ineffectual ones: one scan operation per dropped pair, and for a
bitmask one mask bit read per pair looked at. A design that *enumerates* an operand
(``rle``, ``csr``, ``coo``) walks only its nonzeros and never meets a pair with a zero
there: one decode operation per element it enumerates (two enumerated operands are merged,
one operation per element of their union), and the element's metadata (run or
coordinate bits) read from the PE's register file.
"""

from __future__ import annotations

import numpy as np

from accelsim.io.hwconfig import FormatConfig, HwConfig

ENUMERATING = ("rle", "csr", "coo")
#: policy -> the operands whose zeros it skips
TESTED = {"skip_a": ("a",), "skip_w": ("w",), "skip_both": ("a", "w")}
#: count columns, in report order
SKIP_KEYS = ("skip_scan_ops", "skip_decode_ops", "rf_a_meta_read_bits",
             "rf_w_meta_read_bits")


def element_meta_bits(fmt: FormatConfig) -> int:
    """Metadata bits an enumerating PE reads per element of a fiber in ``fmt``."""
    return {"rle": fmt.run_bits, "csr": fmt.index_bits, "coo": 2 * fmt.index_bits}.get(
        fmt.kind, 0)


def operand_kinds(hw: HwConfig, nm: bool) -> dict[str, str]:
    """The format each operand reaches the PEs in; N:M weights are walked slot by slot
    (their index bits drive the select mux, priced apart), i.e. scanned."""
    return {"a": hw.formats.a.kind, "w": "dense" if nm else hw.formats.w.kind}


def skip_costs(present: int, nz_a: int, nz_w: int, both: int, hw: HwConfig,
               nm: bool) -> dict[str, int]:
    """Scan/decode operations and metadata bits for pairs of which ``present`` are walked
    (not padding, N:M kept), ``nz_a`` / ``nz_w`` have a nonzero A / W and ``both`` both."""
    out = dict.fromkeys(SKIP_KEYS, 0)
    tested = TESTED.get(hw.zero_policy)
    if not tested:
        return out
    kinds = operand_kinds(hw, nm)
    enum = [x for x in tested if kinds[x] in ENUMERATING]
    scan = [x for x in tested if x not in enum]
    nz = {"a": nz_a, "w": nz_w}
    effectual = {"skip_a": nz_a, "skip_w": nz_w, "skip_both": both}[hw.zero_policy]
    if not enum:
        decode, visited = 0, present
    elif len(enum) == 1:
        decode = visited = nz[enum[0]]
    else:  # merge of two enumerated fibers: one step per element of their union
        decode, visited = nz_a + nz_w - both, both
    out["skip_scan_ops"] = visited - effectual
    out["skip_decode_ops"] = decode
    fmts = {"a": hw.formats.a, "w": hw.formats.w}
    for x in enum:
        out[f"rf_{x}_meta_read_bits"] += nz[x] * element_meta_bits(fmts[x])
    for x in scan:
        if kinds[x] == "bitmask":
            out[f"rf_{x}_meta_read_bits"] += visited
    return out


def gemm_skip_costs(classes: dict[str, np.ndarray], active: np.ndarray, hw: HwConfig,
                    nm: bool) -> dict[str, int]:
    """:func:`skip_costs` summed over the active GEMMs of per-GEMM pair classes [F, P]."""
    tot = {k: int(np.where(active, np.broadcast_to(classes[k], active.shape), 0).sum())
           for k in ("present", "a", "w", "both")}
    return skip_costs(tot["present"], tot["a"], tot["w"], tot["both"], hw, nm)
