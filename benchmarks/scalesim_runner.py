"""Run SCALE-Sim v3 on a list of layers and print its cycle counts as JSON.

Standalone: needs only the scratch venv that has ``scalesim`` installed (no accelsim import).

    /work/scalesim-venv/bin/python benchmarks/scalesim_runner.py layers.json \
        --rows 32 --cols 32 --dataflow os

``layers.json`` is a list of objects, each with ``name``, ``kind`` ("conv2d" or "gemm") and
either ``ifmap_h, ifmap_w`` (already padded), ``filt_h, filt_w, channels, num_filters, stride``
(conv2d, batch 1) or ``m, k, n`` (gemm: ifmap m x k, filter k x n).

Prints exactly one JSON object on stdout:

    {"wall_s": <seconds spent constructing and running SCALE-Sim>,
     "layers": [{"name": ..., "total_cycles": ..., "m": ..., "k": ..., "n": ...}, ...]}

``total_cycles`` is COMPUTE_REPORT.csv's "Total Cycles" column: the index of the last compute
cycle, one less than the cycle count (SCALE-Sim issue #125). ``m, k, n`` are the GEMM dims as
SCALE-Sim saw them (m uses SCALE-Sim's ``ceil((ifmap - filt + stride) / stride)`` ofmap size,
which exceeds the usual floor formula when ``(ifmap - filt) % stride != 0``; a warning is
printed on stderr for such layers). Everything SCALE-Sim itself prints goes to stderr.

All layers go into a single SCALE-Sim run (one topology file). GEMM layers are written as the
equivalent conv (ifmap m x k, 1 x k filter, 1 channel, n filters, stride 1), which is exactly
how SCALE-Sim's own GEMM reader maps them. The default mode is the stall-free
``InterfaceBandwidth: CALC``; ``--bandwidth W`` switches to USER mode with W words/cycle on all
three DRAM interfaces.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

CONV_KEYS = ("ifmap_h", "ifmap_w", "filt_h", "filt_w", "channels", "num_filters", "stride")
GEMM_KEYS = ("m", "k", "n")


def conv_row(layer: dict) -> list[int]:
    """Return the SCALE-Sim conv topology cells (without the name) for one layer."""
    kind = layer.get("kind")
    if kind == "conv2d":
        missing = [k for k in CONV_KEYS if k not in layer]
        if missing:
            raise ValueError(f"layer {layer.get('name')!r}: missing {missing}")
        return [int(layer[k]) for k in CONV_KEYS]
    if kind == "gemm":
        missing = [k for k in GEMM_KEYS if k not in layer]
        if missing:
            raise ValueError(f"layer {layer.get('name')!r}: missing {missing}")
        m, k, n = (int(layer[key]) for key in GEMM_KEYS)
        return [m, k, 1, k, 1, n, 1]
    raise ValueError(f"layer {layer.get('name')!r}: kind must be conv2d or gemm, got {kind!r}")


def scalesim_mkn(cells: list[int]) -> tuple[int, int, int]:
    ih, iw, fh, fw, ch, nf, s = cells
    oh = math.ceil((ih - fh + s) / s)
    ow = math.ceil((iw - fw + s) / s)
    return oh * ow, fh * fw * ch, nf


def config_text(rows: int, cols: int, dataflow: str, sram_kb: list[int] | tuple[int, ...],
                bandwidth: int | None, run_name: str = "run") -> str:
    """A SCALE-Sim 3 config (every section its parser insists on). ``bandwidth=None`` is
    the stall-free CALC mode; a number selects USER mode at that many words per cycle."""
    mode = "CALC" if bandwidth is None else "USER"
    bw = 10 if bandwidth is None else bandwidth
    # USER mode: ifmap/filter DRAM bandwidth come from the [layout] *SRAMBankBandwidth keys,
    # the ofmap one from Bandwidth. CALC mode ignores them.
    return f"""[general]
run_name = {run_name}

[run_presets]
InterfaceBandwidth = {mode}
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
ifmapsramszkB = {sram_kb[0]}
filtersramszkB = {sram_kb[1]}
ofmapsramszkB = {sram_kb[2]}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32
Bandwidth = {bw}

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = {bw}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = {bw}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = False
SparseRep = ellpack_block
OptimizedMapping = False
BlockSize = 8
RandomNumberGeneratorSeed = 40
"""


def read_total_cycles(report: Path) -> list[int]:
    with report.open() as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    header = [h.strip() for h in lines[0].rstrip(",").split(",")]
    col = header.index("Total Cycles")
    return [int(float(ln.rstrip(",").split(",")[col])) for ln in lines[1:]]


def run(layers: list[dict], rows: int, cols: int, dataflow: str, sram_kb: list[int],
        bandwidth: int | None, workdir: Path) -> dict:
    from scalesim.scale_sim import scalesim

    cells = [conv_row(layer) for layer in layers]
    lines = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
             "Num Filter, Strides,"]
    for i, c in enumerate(cells):
        # Positional names: SCALE-Sim splits any layer whose name contains "DP" per channel.
        lines.append(f"L{i}, " + ", ".join(map(str, c)) + ",")
        ih, iw, fh, fw, _, _, s = c
        if (ih - fh) % s or (iw - fw) % s:
            print(f"warning: layer {layers[i]['name']!r}: (ifmap - filt) % stride != 0, "
                  "SCALE-Sim's ofmap is one larger than floor((ifmap-filt)/stride)+1",
                  file=sys.stderr)
    topo = workdir / "topo.csv"
    topo.write_text("\n".join(lines) + "\n")
    layout = workdir / "layout.csv"
    layout.write_text("Layer name,\n")
    cfg = workdir / "cfg.cfg"
    cfg.write_text(config_text(rows, cols, dataflow, sram_kb, bandwidth))

    t0 = time.perf_counter()
    with redirect_stdout(sys.stderr):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg),
                       topology=str(topo), layout=str(layout), input_type_gemm=False)
        sim.run_scale(top_path=str(workdir / "out"))
    wall = time.perf_counter() - t0

    totals = read_total_cycles(workdir / "out" / "run" / "COMPUTE_REPORT.csv")
    if len(totals) != len(layers):
        raise RuntimeError(f"SCALE-Sim reported {len(totals)} layers, expected {len(layers)}")
    out_layers = []
    for layer, c, total in zip(layers, cells, totals, strict=True):
        m, k, n = scalesim_mkn(c)
        out_layers.append({"name": layer["name"], "total_cycles": total, "m": m, "k": k, "n": n})
    return {"wall_s": wall, "layers": out_layers}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layers", type=Path, help="JSON file with a list of layers")
    ap.add_argument("--rows", type=int, required=True, help="systolic array rows (height)")
    ap.add_argument("--cols", type=int, required=True, help="systolic array cols (width)")
    ap.add_argument("--dataflow", choices=("os", "ws", "is"), required=True)
    ap.add_argument("--sram-kb", type=int, nargs=3, default=[64, 64, 32],
                    metavar=("IFMAP", "FILTER", "OFMAP"),
                    help="SRAM sizes in kB (default 64 64 32; cycles in CALC mode ignore them)")
    ap.add_argument("--bandwidth", type=int, default=None,
                    help="USER mode with this DRAM bandwidth in words/cycle (default: CALC)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="parent for the temporary run directory (default: system temp)")
    args = ap.parse_args(argv)

    layers = json.loads(args.layers.read_text())
    if not isinstance(layers, list) or not layers:
        ap.error("layers file must hold a non-empty JSON list")
    with tempfile.TemporaryDirectory(prefix="scalesim_runner_", dir=args.workdir) as tmp:
        result = run(layers, args.rows, args.cols, args.dataflow, args.sram_kb,
                     args.bandwidth, Path(tmp))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
