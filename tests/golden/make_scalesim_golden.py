"""Regenerate the SCALE-Sim v3 golden reference CSVs used by accelsim's tests.

Run with the scratch venv that has SCALE-Sim installed (NOT the project venv):

    /work/scalesim-venv/bin/python tests/golden/make_scalesim_golden.py

This script deliberately does not import accelsim. It writes two files next to itself:

* ``scalesim_cycles.csv``: every layer shape below x dataflow (os, ws, is) x array shape,
  simulated in SCALE-Sim's stall-free ``InterfaceBandwidth: CALC`` mode.
* ``scalesim_stalls.csv``: a handful of layers on an 8x8 array in ``InterfaceBandwidth: USER``
  mode with small SRAMs and a low DRAM bandwidth, so that SCALE-Sim reports stalls.

Where the numbers come from (SCALE-Sim 3.0.0 writes these reports per run into
``<top_path>/<run_name>/``; header cells are separated by ", " and every row ends with ","):

* ``scalesim_total_cycles``  <- COMPUTE_REPORT.csv, column "Total Cycles" (the third column,
  NOT "Total Cycles (incl. prefetch)"). In CALC mode this is the stall-free compute time; it is
  the index of the last cycle in which the OFMAP SRAM is written, i.e. one less than the number
  of cycles (SCALE-Sim GitHub issue #125).
* ``scalesim_total_cycles_incl_prefetch`` <- COMPUTE_REPORT.csv "Total Cycles (incl. prefetch)"
  (last OFMAP DRAM write cycle minus the first, possibly negative, DRAM prefetch cycle).
* ``scalesim_stall_cycles``  <- COMPUTE_REPORT.csv "Stall Cycles" (always 0 in CALC mode).
* ``sram_ifmap_reads, sram_filter_reads, sram_ofmap_writes, dram_ifmap_reads,
  dram_filter_reads, dram_ofmap_writes`` <- DETAILED_ACCESS_REPORT.csv columns
  "SRAM IFMAP Reads", "SRAM Filter Reads", "SRAM OFMAP Writes", "DRAM IFMAP Reads",
  "DRAM Filter Reads", "DRAM OFMAP Writes". Units: elements (words); SCALE-Sim hard-codes a
  word size of 1 byte, so elements == bytes. SCALE-Sim reports no other read/write counts.

Conv layers are given to SCALE-Sim with their ifmap ALREADY PADDED, batch 1. SCALE-Sim computes
``ofmap = ceil((ifmap - filt + stride) / stride)``, which is one larger than the usual
``floor((ifmap - filt) / stride) + 1`` whenever ``(ifmap - filt) % stride != 0`` (layer
``c12_s2_ceil`` below is such a case on purpose). The ``m`` column is SCALE-Sim's value.
GEMM layers are given in SCALE-Sim's GEMM topology format (``name, M, N, K,``) which it maps
internally to a conv with ifmap MxK, a 1xK filter, 1 channel and N filters.

The script also checks the closed form ``folds * per_fold - 1`` against every CALC row and
prints the result; it never changes what SCALE-Sim reported.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

from scalesim.scale_sim import scalesim

# one SCALE-Sim config template for the golden data and the benchmark
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from scalesim_runner import config_text  # noqa: E402

HERE = Path(__file__).resolve().parent
# package data, so that `accelsim validate` has it after a plain install (a symlink here)
CYCLES_CSV = HERE.parents[1] / "accelsim" / "analysis" / "data" / "scalesim_cycles.csv"
STALLS_CSV = HERE / "scalesim_stalls.csv"

# SCALE-Sim hard-codes a 1-byte word (single_layer_sim.py: word_size = 1).
WORD_SIZE_BYTES = 1

# CALC (stall-free) runs: SRAM sizes are fixed for every row and recorded in the CSV.
CALC_SRAM_KB = (64, 64, 32)  # ifmap, filter, ofmap

# USER (bandwidth-limited) runs.
USER_SRAM_KB = (1, 1, 1)
USER_BW_WORDS_PER_CYCLE = 10  # used for the ifmap, filter and ofmap DRAM interfaces alike
USER_ARRAY = (8, 8)

DATAFLOWS = ("os", "ws", "is")
ARRAYS = ((8, 8), (32, 32), (16, 8))  # (rows, cols) == (ArrayHeight, ArrayWidth)

# name, padded ifmap_h, padded ifmap_w, filt_h, filt_w, channels, num_filters, stride
CONV_LAYERS = [
    ("c01_1x1_c3_f17", 8, 8, 1, 1, 3, 17, 1),
    ("c02_3x3_c17_f33", 10, 10, 3, 3, 17, 33, 1),
    ("c03_3x3_s2_c33_f17", 9, 9, 3, 3, 33, 17, 2),
    ("c04_5x5_c3_f100", 12, 12, 5, 5, 3, 100, 1),
    ("c05_7x7_s2_c3_f33", 13, 13, 7, 7, 3, 33, 2),
    ("c06_1x1_s2_c100_f33", 7, 7, 1, 1, 100, 33, 2),
    ("c07_3x3_c5_f7", 6, 6, 3, 3, 5, 7, 1),
    ("c08_5x5_s2_c17_f13", 11, 11, 5, 5, 17, 13, 2),
    ("c09_7x7_c3_f16", 14, 14, 7, 7, 3, 16, 1),
    ("c10_1x1_c33_f100", 5, 5, 1, 1, 33, 100, 1),
    ("c11_3x3_rect_c17_f9", 9, 7, 3, 3, 17, 9, 1),
    ("c12_s2_ceil_c64_f64", 8, 8, 3, 3, 64, 64, 2),
    ("c13_3x3_c3_f1", 16, 16, 3, 3, 3, 1, 1),
]

# name, M, K, N   (ifmap M x K, filter K x N, ofmap M x N)
GEMM_LAYERS = [
    ("g01_13x37x100", 13, 37, 100),
    ("g02_m1", 1, 64, 64),
    ("g03_k1", 64, 1, 64),
    ("g04_n1", 64, 64, 1),
    ("g05_37x100x13", 37, 100, 13),
    ("g06_100x13x37", 100, 13, 37),
    ("g07_32x32x32", 32, 32, 32),
    ("g08_1x1x1", 1, 1, 1),
    ("g09_8x8x8", 8, 8, 8),
    ("g10_17x33x9", 17, 33, 9),
    ("g11_100x100x100", 100, 100, 100),
    ("g12_3x200x5", 3, 200, 5),
    ("g13_65x17x31", 65, 17, 31),
]

# Layers re-run in USER bandwidth mode (for all three dataflows).
STALL_LAYERS = [
    "c02_3x3_c17_f33",
    "c04_5x5_c3_f100",
    "c12_s2_ceil_c64_f64",
    "g01_13x37x100",
    "g07_32x32x32",
    "g11_100x100x100",
]

REPORT_COLUMNS = {
    # csv column -> (report file, SCALE-Sim header)
    "scalesim_total_cycles": ("COMPUTE_REPORT.csv", "Total Cycles"),
    "scalesim_total_cycles_incl_prefetch": ("COMPUTE_REPORT.csv", "Total Cycles (incl. prefetch)"),
    "scalesim_stall_cycles": ("COMPUTE_REPORT.csv", "Stall Cycles"),
    "sram_ifmap_reads": ("DETAILED_ACCESS_REPORT.csv", "SRAM IFMAP Reads"),
    "sram_filter_reads": ("DETAILED_ACCESS_REPORT.csv", "SRAM Filter Reads"),
    "sram_ofmap_writes": ("DETAILED_ACCESS_REPORT.csv", "SRAM OFMAP Writes"),
    "dram_ifmap_reads": ("DETAILED_ACCESS_REPORT.csv", "DRAM IFMAP Reads"),
    "dram_filter_reads": ("DETAILED_ACCESS_REPORT.csv", "DRAM Filter Reads"),
    "dram_ofmap_writes": ("DETAILED_ACCESS_REPORT.csv", "DRAM OFMAP Writes"),
}

SHAPE_COLUMNS = [
    "layer", "kind", "ifmap_h", "ifmap_w", "filt_h", "filt_w", "channels", "num_filters",
    "stride", "ofmap_h", "ofmap_w", "m", "k", "n",
]
HW_COLUMNS = [
    "array_rows", "array_cols", "dataflow", "interface_bandwidth",
    "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb", "word_size_bytes",
]
BW_COLUMNS = ["dram_bw_ifmap_words_per_cycle", "dram_bw_filter_words_per_cycle",
              "dram_bw_ofmap_words_per_cycle"]
CYCLES_FIELDS = SHAPE_COLUMNS + HW_COLUMNS + list(REPORT_COLUMNS)
STALLS_FIELDS = (SHAPE_COLUMNS + HW_COLUMNS + BW_COLUMNS + list(REPORT_COLUMNS)
                 + ["calc_total_cycles"])


def layer_shapes() -> dict[str, dict]:
    """All layers as dicts with the shape columns filled in the way SCALE-Sim sees them."""
    shapes: dict[str, dict] = {}
    for name, ih, iw, fh, fw, ch, nf, s in CONV_LAYERS:
        oh = math.ceil((ih - fh + s) / s)  # SCALE-Sim's formula (topology_utils.py)
        ow = math.ceil((iw - fw + s) / s)
        shapes[name] = dict(layer=name, kind="conv2d", ifmap_h=ih, ifmap_w=iw, filt_h=fh,
                            filt_w=fw, channels=ch, num_filters=nf, stride=s, ofmap_h=oh,
                            ofmap_w=ow, m=oh * ow, k=fh * fw * ch, n=nf)
    for name, m, k, n in GEMM_LAYERS:
        shapes[name] = dict(layer=name, kind="gemm", ifmap_h="", ifmap_w="", filt_h="",
                            filt_w="", channels="", num_filters="", stride="", ofmap_h="",
                            ofmap_w="", m=m, k=k, n=n)
    return shapes


def write_topology(path: Path, shape: dict) -> bool:
    """Write a one-layer topology file; returns True if it is in GEMM (M, N, K) format.

    The layer is always named "L0": SCALE-Sim treats any name containing "DP" as a depthwise
    conv and splits it per channel, so user names never reach it.
    """
    if shape["kind"] == "gemm":
        path.write_text(f"Layer, M, N, K,\nL0, {shape['m']}, {shape['n']}, {shape['k']},\n")
        return True
    cells = [shape[c] for c in ("ifmap_h", "ifmap_w", "filt_h", "filt_w", "channels",
                                "num_filters", "stride")]
    path.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                    "Channels, Num Filter, Strides,\nL0, " + ", ".join(map(str, cells)) + ",\n")
    return False


def read_report(path: Path) -> dict[str, str]:
    """Read a one-layer SCALE-Sim report into {header: value}."""
    with path.open() as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    header = [h.strip() for h in lines[0].rstrip(",").split(",")]
    values = [v.strip() for v in lines[1].rstrip(",").split(",")]
    assert len(lines) == 2 and len(header) == len(values), path
    return dict(zip(header, values, strict=True))


def as_number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def run_one(workdir: Path, shape: dict, rows: int, cols: int, dataflow: str,
            sram_kb: tuple[int, int, int], user_bw: int | None) -> dict:
    """Run SCALE-Sim on a single layer and return the report columns."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cfg, topo, layout = workdir / "cfg.cfg", workdir / "topo.csv", workdir / "layout.csv"
    cfg.write_text(config_text(rows, cols, dataflow, sram_kb, user_bw, run_name="golden"))
    is_gemm = write_topology(topo, shape)
    layout.write_text("Layer name,\n")  # required by the API; unused without custom layouts
    with redirect_stdout(sys.stderr):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                       layout=str(layout), input_type_gemm=is_gemm)
        sim.run_scale(top_path=str(workdir / "out"))
    reports = {name: read_report(workdir / "out" / "golden" / name)
               for name in ("COMPUTE_REPORT.csv", "DETAILED_ACCESS_REPORT.csv")}
    out = {col: as_number(reports[fname][header])
           for col, (fname, header) in REPORT_COLUMNS.items()}
    shutil.rmtree(workdir)
    return out


def closed_form(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    """folds * per_fold - 1, the formula accelsim expects SCALE-Sim's Total Cycles to follow."""
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]
    folds = math.ceil(sr / rows) * math.ceil(sc / cols)
    per_fold = rows + cols + t - 2 if dataflow == "os" else 2 * rows + cols + t - 2
    return folds * per_fold - 1


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> int:
    t0 = time.perf_counter()
    shapes = layer_shapes()
    order = [name for name, *_ in CONV_LAYERS] + [name for name, *_ in GEMM_LAYERS]
    cycles_rows: list[dict] = []
    stalls_rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="scalesim_golden_") as tmp:
        work = Path(tmp) / "run"
        for rows, cols in ARRAYS:
            for dataflow in DATAFLOWS:
                for name in order:
                    rep = run_one(work, shapes[name], rows, cols, dataflow, CALC_SRAM_KB, None)
                    cycles_rows.append({
                        **shapes[name], "array_rows": rows, "array_cols": cols,
                        "dataflow": dataflow, "interface_bandwidth": "CALC",
                        "ifmap_sram_kb": CALC_SRAM_KB[0], "filter_sram_kb": CALC_SRAM_KB[1],
                        "ofmap_sram_kb": CALC_SRAM_KB[2], "word_size_bytes": WORD_SIZE_BYTES,
                        **rep,
                    })
            print(f"CALC {rows}x{cols} done at {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        calc_lookup = {(r["layer"], r["array_rows"], r["array_cols"], r["dataflow"]):
                       r["scalesim_total_cycles"] for r in cycles_rows}
        rows, cols = USER_ARRAY
        for name in STALL_LAYERS:
            for dataflow in DATAFLOWS:
                rep = run_one(work, shapes[name], rows, cols, dataflow, USER_SRAM_KB,
                              USER_BW_WORDS_PER_CYCLE)
                stalls_rows.append({
                    **shapes[name], "array_rows": rows, "array_cols": cols,
                    "dataflow": dataflow, "interface_bandwidth": "USER",
                    "ifmap_sram_kb": USER_SRAM_KB[0], "filter_sram_kb": USER_SRAM_KB[1],
                    "ofmap_sram_kb": USER_SRAM_KB[2], "word_size_bytes": WORD_SIZE_BYTES,
                    "dram_bw_ifmap_words_per_cycle": USER_BW_WORDS_PER_CYCLE,
                    "dram_bw_filter_words_per_cycle": USER_BW_WORDS_PER_CYCLE,
                    "dram_bw_ofmap_words_per_cycle": USER_BW_WORDS_PER_CYCLE,
                    **rep,
                    "calc_total_cycles": calc_lookup[(name, rows, cols, dataflow)],
                })

    write_csv(CYCLES_CSV, CYCLES_FIELDS, cycles_rows)
    write_csv(STALLS_CSV, STALLS_FIELDS, stalls_rows)

    mismatches = []
    for r in cycles_rows:
        expect = closed_form(r["m"], r["k"], r["n"], r["array_rows"], r["array_cols"],
                             r["dataflow"])
        if expect != r["scalesim_total_cycles"]:
            mismatches.append((r["layer"], r["array_rows"], r["array_cols"], r["dataflow"],
                               r["scalesim_total_cycles"], expect))
    n_ok = len(cycles_rows) - len(mismatches)
    print(f"wrote {len(cycles_rows)} rows to {CYCLES_CSV.name}, "
          f"{len(stalls_rows)} rows to {STALLS_CSV.name} "
          f"in {time.perf_counter() - t0:.1f} s")
    print(f"closed form folds*per_fold-1 holds on {n_ok}/{len(cycles_rows)} rows")
    for layer, r_, c_, df, got, expect in mismatches:
        print(f"  MISMATCH {layer} {r_}x{c_} {df}: scalesim={got} formula={expect}")
    n_sum = sum(1 for r in stalls_rows
                if r["scalesim_total_cycles"]
                == r["calc_total_cycles"] + r["scalesim_stall_cycles"])
    print(f"USER rows with total == calc_total + stalls: {n_sum}/{len(stalls_rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
