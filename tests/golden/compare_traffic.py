"""Side-by-side traffic and stall numbers: accelsim vs SCALE-Sim v3 on the golden layers.

    python tests/golden/compare_traffic.py     # rewrites tests/golden/traffic_comparison.csv

Runs accelsim (not SCALE-Sim) on every layer of scalesim_cycles.csv (CALC mode, 64/64/32 kB
SRAMs) and scalesim_stalls.csv (USER mode, 1 kB SRAMs, 10 words/cycle), with dense 8-bit
operands and formats so that bytes == elements, and writes both tools' counts side by side.
The README's model section explains each difference; tests/test_scalesim_golden.py checks the
columns where the two models agree.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

import accelsim
from accelsim.io import trace as tr
from accelsim.model.engine import simulate_layer
from accelsim.model.workload import gemm_shape

HERE = Path(__file__).resolve().parent


def layer_of(row: dict) -> tr.Layer:
    m, k, n = int(row["m"]), int(row["k"]), int(row["n"])
    if row["kind"] == "conv2d":
        c, f = int(row["channels"]), int(row["num_filters"])
        kh, kw, s = int(row["filt_h"]), int(row["filt_w"]), int(row["stride"])
        layer = tr.conv2d(row["layer"], np.ones((1, c, int(row["ifmap_h"]), int(row["ifmap_w"])),
                                                np.int8),
                          np.ones((f, c, kh, kw), np.int8), stride=s)
        if gemm_shape(layer).m == m:
            return layer
    return tr.linear(row["layer"], np.ones((m, k), np.int8), np.ones((n, k), np.int8))


def hw_of(row: dict, user: bool):
    kib = [float(row[f"{x}_sram_kb"]) for x in ("ifmap", "filter", "ofmap")]
    bw = float(row["dram_bw_ifmap_words_per_cycle"]) if user else math.inf
    return accelsim.load_hwconfig({
        "name": "scalesim_like", "array": {"rows": int(row["array_rows"]),
                                           "cols": int(row["array_cols"])},
        "dataflow": row["dataflow"], "zero_policy": "none", "timing": "scalesim",
        "precision": {"a_bits": 8, "w_bits": 8, "out_bits": 8},
        "memory": {"dram": {"bandwidth_bytes_per_cycle": bw},
                   "glb": {"a_kib": kib[0], "w_kib": kib[1], "out_kib": kib[2],
                           "bandwidth_bytes_per_cycle": math.inf, "double_buffer": True}}})


def compare() -> list[dict]:
    out = []
    for fname, user in (("scalesim_cycles.csv", False), ("scalesim_stalls.csv", True)):
        for row in csv.DictReader((HERE / fname).open()):
            s = simulate_layer(layer_of(row), hw_of(row, user)).as_dict()
            out.append({
                "layer": row["layer"], "kind": row["kind"], "dataflow": row["dataflow"],
                "array": f"{row['array_rows']}x{row['array_cols']}",
                "mode": row["interface_bandwidth"], "m": row["m"], "k": row["k"], "n": row["n"],
                "scalesim_sram_ifmap_reads": row["sram_ifmap_reads"],
                "accelsim_glb_a_reads": s["glb_a_read_bytes"],
                "scalesim_sram_filter_reads": row["sram_filter_reads"],
                "accelsim_glb_w_reads": s["glb_w_read_bytes"],
                "scalesim_sram_ofmap_writes": row["sram_ofmap_writes"],
                "accelsim_glb_psum_and_out_writes": s["glb_psum_write_bytes"]
                + s["glb_out_write_bytes"],
                "scalesim_dram_ifmap_reads": row["dram_ifmap_reads"],
                "accelsim_dram_a_reads": s["dram_a_read_bytes"],
                "scalesim_dram_filter_reads": row["dram_filter_reads"],
                "accelsim_dram_w_reads": s["dram_w_read_bytes"],
                "scalesim_dram_ofmap_writes": row["dram_ofmap_writes"],
                "accelsim_dram_out_and_psum_writes": s["dram_out_write_bytes"]
                + s["dram_psum_write_bytes"],
                "scalesim_stall_cycles": row["scalesim_stall_cycles"],
                "accelsim_stall_cycles": s["stall_cycles"],
            })
    return out


if __name__ == "__main__":
    rows = compare()
    path = HERE / "traffic_comparison.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path} ({len(rows)} rows)")
