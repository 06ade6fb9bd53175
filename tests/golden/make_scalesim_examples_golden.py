"""Run real SCALE-Sim v3 on the example topology files in examples/scalesim/ as they are.

Run with the scratch venv that has SCALE-Sim installed (NOT the project venv):

    /work/scalesim-venv/bin/python tests/golden/make_scalesim_examples_golden.py

This script does not import accelsim. It hands SCALE-Sim each topology file unchanged (so the
files are checked to be valid SCALE-Sim input), with a complete SCALE-Sim config for the array,
dataflow and SRAM sizes of the example ``.cfg`` named below, in the stall-free
``InterfaceBandwidth: CALC`` mode, and writes ``scalesim_examples.csv``: one row per row of
SCALE-Sim's COMPUTE_REPORT.csv ("Total Cycles", the index of the last cycle, one less than
the cycle count). SCALE-Sim splits a layer whose name contains ``DP`` into one row per channel;
``layer`` names the topology row and ``part`` counts those rows.
"""

from __future__ import annotations

import configparser
import csv
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

from scalesim.scale_sim import scalesim

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from scalesim_runner import config_text, read_total_cycles  # noqa: E402

EXAMPLES = ROOT / "examples" / "scalesim"
OUT = Path(__file__).resolve().parent / "scalesim_examples.csv"

# (topology, config whose array / dataflow / SRAM sizes are used)
RUNS = [
    ("mobilenet_dp.csv", "eyeriss_ws.cfg"),
    ("vit_s_block.csv", "scale_os_32x32.cfg"),
]


def array_of(cfg: Path) -> tuple[int, int, str, list[int]]:
    cp = configparser.ConfigParser()
    cp.read(cfg)
    a = cp["architecture_presets"]
    return (int(a["ArrayHeight"]), int(a["ArrayWidth"]), a["Dataflow"].strip(),
            [int(a["IfmapSramSzkB"]), int(a["FilterSramSzkB"]), int(a["OfmapSramSzkB"])])


def topology_rows(path: Path) -> tuple[bool, list[tuple[str, int]]]:
    """(is GEMM form, [(layer name, rows SCALE-Sim reports for it)])."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    head = [c.strip().lower() for c in lines[0].split(",")]
    gemm = head[1:4] == ["m", "n", "k"]
    rows = []
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.split(",")]
        name = cells[0]
        parts = int(cells[5]) if (not gemm and "DP" in name) else 1
        rows.append((name, parts))
    return gemm, rows


def main() -> int:
    out_rows = []
    t0 = time.perf_counter()
    for topo, cfg in RUNS:
        rows, cols, dataflow, sram = array_of(EXAMPLES / cfg)
        gemm, layers = topology_rows(EXAMPLES / topo)
        with tempfile.TemporaryDirectory(prefix="scalesim_examples_") as tmp:
            work = Path(tmp)
            (work / "cfg.cfg").write_text(config_text(rows, cols, dataflow, sram, None))
            (work / "layout.csv").write_text("Layer name,\n")
            with redirect_stdout(sys.stderr):
                sim = scalesim(save_disk_space=True, verbose=False,
                               config=str(work / "cfg.cfg"), topology=str(EXAMPLES / topo),
                               layout=str(work / "layout.csv"), input_type_gemm=gemm)
                sim.run_scale(top_path=str(work / "out"))
            totals = read_total_cycles(work / "out" / "run" / "COMPUTE_REPORT.csv")
        expanded = [(name, part) for name, parts in layers for part in range(parts)]
        if len(expanded) != len(totals):
            raise RuntimeError(f"{topo}: SCALE-Sim reported {len(totals)} rows, expected "
                               f"{len(expanded)}")
        for (name, part), total in zip(expanded, totals, strict=True):
            out_rows.append({"topology": topo, "config": cfg, "array_rows": rows,
                             "array_cols": cols, "dataflow": dataflow, "layer": name,
                             "part": part, "scalesim_total_cycles": total})
        print(f"{topo} on {cfg}: {len(totals)} rows at {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    with OUT.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(out_rows)
    print(f"wrote {len(out_rows)} rows to {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
