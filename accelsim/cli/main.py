"""The ``accelsim`` command. The only module that prints or exits.

Errors on bad input become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import pandas as pd

from accelsim.errors import AccelsimError

EPILOG = "Run 'accelsim COMMAND --help' for a command's options."


def _fmt_table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    view = df[cols].copy()
    for c in cols:
        if c == "util" or "density" in c or "frac" in c:
            view[c] = view[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        elif c.endswith("_pj") or c.endswith("_s"):
            view[c] = view[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        else:
            view[c] = view[c].astype(object).where(view[c].notna(), "")
    return view.to_string(index=False)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from accelsim.analysis.report import BRIEF_COLUMNS, ENERGY_COLUMNS, simulate, with_totals
    from accelsim.io.hwconfig import parse_override

    overrides = dict(parse_override(s) for s in args.set or [])
    if args.threshold:
        overrides.update(_threshold_overrides(args.threshold))
    trace, hw = _simulate_inputs(args, overrides)
    if args.prune:
        trace = _prune(trace, args.prune)
    if args.per_frame:
        frames = simulate(trace, hw, per_frame=True, max_memory=args.max_memory)
        print(f"trace {trace.model} on {hw.name}: per frame")
        print(_fmt_table(frames, list(frames.columns)))
        if args.output:
            _write(frames, args.output)
        return 0
    df = simulate(trace, hw, functional=args.functional, max_memory=args.max_memory)
    full = with_totals(df)
    if args.columns:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in columns if c not in full.columns]
        if unknown:
            raise AccelsimError(f"--columns: unknown column {unknown[0]!r}; known: "
                                f"{', '.join(full.columns)}")
    elif args.all_columns:
        columns = list(full.columns)
    elif args.show == "energy":
        columns = ["layer", "kind", "cycles", *ENERGY_COLUMNS]
    elif args.show == "delta":
        columns = ["layer", "kind", "frames", "macs_performed", "compute_cycles", "cycles",
                   "delta_density_a", "delta_gemms_skipped", "state_ref_read_bytes",
                   "state_ref_write_bytes", "state_acc_read_bytes", "state_acc_write_bytes",
                   "state_in_dram", "state_cycles", "energy_state_pj", "energy_pj",
                   "delta_err_max", "delta_err_rms", "delta_err_rel"]
    elif args.show == "threshold":
        columns = ["layer", "kind", "macs_dense", "macs_performed", "cycles", "density_a",
                   "threshold_a", "threshold_b", "thr_sparsity_a", "thr_err_rel",
                   "thr_err_rms", "thr_err_max", "energy_pj"]
    elif args.show == "traffic":
        columns = ["layer", "kind", "compute_cycles", "stall_cycles", "cycles",
                   *[c for c in full.columns if c.endswith("_bytes")]]
    else:
        columns = BRIEF_COLUMNS
    print(f"trace {trace.model} ({len(trace)} layers) on {hw.name}: {hw.array.rows}x"
          f"{hw.array.cols} PEs x {hw.array.macs_per_pe} MAC, dataflow {hw.dataflow}, "
          f"zero policy {hw.zero_policy}, {hw.clock_ghz:g} GHz")
    print(_fmt_table(full, columns))
    tot = full.iloc[-1]
    print(f"total: {int(tot['cycles'])} cycles ({int(tot['stall_cycles'])} stall) = "
          f"{tot['latency_s'] * 1e3:.4g} ms, {int(tot['macs_performed'])}/"
          f"{int(tot['macs_dense'])} MACs performed, utilisation {tot['util']:.3f}, "
          f"energy {tot['energy_pj'] / 1e6:.4g} uJ")
    comp = {c[len("energy_"):-len("_pj")]: tot[c] for c in ENERGY_COLUMNS[:-1]}
    if tot["energy_pj"] > 0:
        print("energy breakdown: " + ", ".join(
            f"{k} {100 * v / tot['energy_pj']:.1f}%" for k, v in comp.items() if v > 0))
    features = _baseline_overrides(hw)
    if features and not args.no_baseline:
        base = with_totals(simulate(trace, hw.with_overrides(features),
                                    max_memory=args.max_memory)).iloc[-1]
        name = " and ".join(f for f in ("delta" if "delta.enabled" in features else "",
                                        "N:M" if "structured.n" in features else "") if f)
        print(f"against the same array without {name}: {base['cycles'] / tot['cycles']:.3f}x "
              f"speedup ({int(base['cycles'])} -> {int(tot['cycles'])} cycles), "
              f"{base['energy_pj'] / tot['energy_pj']:.3f}x less energy, MACs performed "
              f"{int(base['macs_performed'])} -> {int(tot['macs_performed'])}")
    if args.output:
        _write(full, args.output)
    return 0


def _simulate_inputs(args: argparse.Namespace, overrides: dict):
    """The trace (a trace directory or a SCALE-Sim --topology) and the hardware (--hw or
    a SCALE-Sim --scalesim-cfg) of ``simulate``; exactly one of each."""
    from accelsim.io.hwconfig import load_hwconfig
    from accelsim.io.trace import load_trace

    if (args.trace is None) == (args.topology is None):
        raise AccelsimError("simulate: give a trace directory or --topology FILE.csv (one "
                            "of them)")
    if (args.hw is None) == (args.scalesim_cfg is None):
        raise AccelsimError("simulate: give --hw CONFIG or --scalesim-cfg FILE.cfg (one of "
                            "them)")
    if args.topology is None and (args.density_a is not None or args.density_w is not None):
        raise AccelsimError("--density-a/--density-w: only with --topology (a trace "
                            "directory has its own values)")
    if args.topology is not None:
        from accelsim.io.scalesim import load_topology

        trace = load_topology(args.topology, density_a=_density(args.density_a, "a"),
                              density_w=_density(args.density_w, "w"), seed=args.seed)
    else:
        trace = load_trace(args.trace)
    if args.scalesim_cfg is not None:
        from accelsim.io.scalesim import load_scalesim_hwconfig, read_scalesim_cfg, topology_nm

        nm = None
        if args.topology is not None and read_scalesim_cfg(args.scalesim_cfg).sparsity_support:
            nm = topology_nm(args.topology)
        hw = load_scalesim_hwconfig(args.scalesim_cfg, overrides, nm=nm)
    else:
        hw = load_hwconfig(args.hw, overrides)
    return trace, hw


def _density(text: str | None, which: str) -> float:
    if text is None:
        return 1.0
    try:
        d = float(text)
    except ValueError:
        d = -1.0
    if not 0.0 <= d <= 1.0:
        raise AccelsimError(f"--density-{which} {text!r}: expected a number in [0, 1] (the "
                            f"fraction of nonzero values)")
    return d


def _write(df: pd.DataFrame, path: str) -> None:
    from accelsim.analysis.report import write_table

    try:
        write_table(df, path)
    except (OSError, ValueError) as e:
        raise AccelsimError(f"-o {path}: {e}") from None
    print(f"wrote {path}")


def _threshold_overrides(spec: str) -> dict:
    """``--threshold VALUE|PERCENT%[@PATTERNS]`` as config overrides."""
    body, _, pats = spec.partition("@")
    out: dict = {}
    try:
        if body.endswith("%"):
            out["threshold.target"] = float(body[:-1]) / 100
        else:
            out["threshold.value"] = float(body)
    except ValueError:
        raise AccelsimError(f"--threshold {spec!r}: expected VALUE (stored units, e.g. 3) "
                            f"or PERCENT% (a target sparsity, e.g. 50%), optionally "
                            f"@PATTERNS (e.g. 50%@*.fc1,*.fc2)") from None
    if pats:
        out["threshold.layers"] = pats
    return out


def _size(text: str) -> int:
    from accelsim.model.budget import parse_size

    try:
        return parse_size(text)
    except AccelsimError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def _baseline_overrides(hw) -> dict:
    out: dict = {}
    if hw.delta.enabled:
        out["delta.enabled"] = False
    if hw.structured.n:
        out["structured.n"] = 0
    return out


def _prune(trace, spec: str):
    from accelsim.model.sparsity import prune_nm

    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "nm" or not all(p.isdigit() for p in parts[1:]):
        raise AccelsimError(f"--prune {spec!r}: expected nm:N:M, e.g. nm:2:4")
    n, m = int(parts[1]), int(parts[2])
    pruned, removed = prune_nm(trace, n, m)
    frac = pruned.provenance["transforms"][-1]["removed_fraction"]
    print(f"pruned to {n}:{m} along K (magnitude): removed {100 * frac:.1f}% of weights "
          f"({', '.join(f'{k} {100 * v:.1f}%' for k, v in removed.items())})")
    return pruned


def _cmd_inspect(args: argparse.Namespace) -> int:
    from accelsim.analysis.inspect import inspect_totals, inspect_trace
    from accelsim.io.trace import load_trace

    trace = load_trace(args.trace)
    df = inspect_trace(trace)
    tot = inspect_totals(df)
    tot = tot.drop(labels=[c for c in tot.index if c not in df.columns])
    tot["layer"] = "TOTAL"
    full = pd.concat([df, tot.to_frame().T], ignore_index=True)
    for col in df.columns:
        if pd.api.types.is_integer_dtype(df[col]):
            full[col] = full[col].astype("Int64")
        elif pd.api.types.is_float_dtype(df[col]):
            full[col] = full[col].astype(float)
    prov = trace.provenance
    print(f"trace {trace.model}: {len(trace)} layers"
          + (" (synthetic)" if prov.get("synthetic") else ""))
    print(_fmt_table(full, list(full.columns)))
    from accelsim.analysis.inspect import kv_summary

    kv = kv_summary(trace)
    if kv:
        print(kv)
    if args.output:
        _write(full, args.output)
    return 0


def _cmd_trace_onnx(args: argparse.Namespace) -> int:
    import warnings

    from accelsim.model.workload import gemm_shape
    from accelsim.tracing.onnx import load_inputs_npz, trace_onnx

    inputs = load_inputs_npz(args.inputs, frames=args.frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped products are printed below
        res = trace_onnx(args.model, inputs, args.out, quantize=args.quantize,
                         model_name=args.name)
    macs = sum(gemm_shape(layer).macs_dense for layer in res.trace.layers)
    kinds: dict[str, int] = {}
    for layer in res.trace.layers:
        kinds[layer.kind] = kinds.get(layer.kind, 0) + 1
    print(f"traced {len(res.trace)} layers ({', '.join(f'{n} {k}' for k, n in kinds.items())}; "
          f"{macs} MACs) from {args.model} into {res.path}")
    for s in res.skipped:
        print(f"not traced: {s.name} ({s.op_type}): {s.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="accelsim",
        description="Cycle-level simulator of sparse DNN accelerators, driven by real "
                    "activation and weight traces.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "simulate", help="simulate a trace on a hardware config",
        description="Simulate every layer of TRACE on the hardware config and print one "
                    "row per layer plus a TOTAL row: MACs (dense, performed, gated, "
                    "skipped), compute/stall cycles, utilisation, memory traffic and "
                    "energy.")
    s.add_argument("trace", nargs="?",
                   help="trace directory (holding manifest.yaml); or use --topology")
    s.add_argument("--hw",
                   help="hardware config YAML (a path, or the name of a shipped config "
                        "(accelsim/hwconfigs/), e.g. sparse_os_16x16)")
    sc = s.add_argument_group("SCALE-Sim inputs (docs/interop.md)")
    sc.add_argument("--scalesim-cfg", metavar="FILE.cfg",
                    help="a SCALE-Sim config as the hardware (instead of --hw)")
    sc.add_argument("--topology", metavar="FILE.csv",
                    help="a SCALE-Sim topology (conv or GEMM form) as a synthetic trace "
                         "(instead of TRACE)")
    sc.add_argument("--density-a", metavar="D",
                    help="with --topology: fraction of nonzero activations (default 1)")
    sc.add_argument("--density-w", metavar="D",
                    help="with --topology: fraction of nonzero weights (default 1)")
    sc.add_argument("--seed", type=int, default=0,
                    help="with --topology: seed of the random values (default 0)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set array.rows=32 (repeatable)")
    s.add_argument("-o", "--output", metavar="FILE",
                   help="also write all columns to FILE (.csv or .json)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--columns", help="comma-separated columns to print")
    g.add_argument("--all-columns", action="store_true", help="print every column")
    g.add_argument("--show", choices=("brief", "traffic", "energy", "delta", "threshold"),
                   default="brief",
                   help="column group to print: brief (default), traffic (bytes per level, "
                        "operand and direction, data and metadata apart), energy (pJ per "
                        "component), delta (delta density, state traffic, output error) or "
                        "threshold (thresholds, sparsity reached, output error)")
    s.add_argument("--prune", metavar="nm:N:M",
                   help="magnitude-prune every weight to N:M along K before simulating")
    s.add_argument("--threshold", metavar="SPEC",
                   help="thresholded activation sparsity: VALUE (|x| <= VALUE counts as "
                        "zero, stored units) or PERCENT%% (calibrate each layer to that "
                        "sparsity), optionally @PATTERNS of layer names, e.g. 50%%@*.fc1; "
                        "same as --set threshold.value/target/layers")
    s.add_argument("--functional", action="store_true",
                   help="compute delta-path outputs and report their error against direct "
                        "computation (delta_err_* columns)")
    s.add_argument("--per-frame", action="store_true",
                   help="print one row per (layer, frame) instead")
    s.add_argument("--max-memory", metavar="SIZE", type=_size,
                   help="refuse a layer whose working set would exceed SIZE (e.g. 4G, "
                        "512M; default half the physical memory)")
    s.add_argument("--no-baseline", action="store_true",
                   help="with delta or N:M on, skip the comparison run without them")
    s.set_defaults(func=_cmd_simulate)

    i = sub.add_parser(
        "inspect", help="per-layer shapes, densities and delta densities of a trace",
        description="Print, per layer of TRACE: kind, GEMM shape (m, k, n), dense MACs, "
                    "density of each operand (exact zeros, and |q| > 1 for quantised "
                    "tensors), the density of changes between consecutive frames, and "
                    "stored bytes; then the totals.")
    i.add_argument("trace", help="trace directory (holding manifest.yaml)")
    i.add_argument("-o", "--output", metavar="FILE", help="also write the table (.csv/.json)")
    i.set_defaults(func=_cmd_inspect)
    o = sub.add_parser(
        "trace-onnx", help="trace an ONNX model run with onnxruntime (extra: onnx)",
        description="Run MODEL with onnxruntime on the inputs in INPUTS (an .npz with one "
                    "array per graph input, by name) and write every Conv, Gemm and MatMul "
                    "it computed, with its real operand values, as a trace directory OUT. "
                    "Initializers are weights; a MatMul of two activations is a matmul "
                    "layer (docs/interop.md).")
    o.add_argument("model", help="the .onnx file")
    o.add_argument("inputs", help=".npz of the model's inputs, keyed by input name")
    o.add_argument("out", help="trace directory to write (replaced if it exists)")
    o.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="int8: symmetric per-tensor activations, per-output-channel weights, "
                        "as trace_torch (default none: float values)")
    o.add_argument("--frames", action="store_true",
                   help="the leading axis of every input array is frames: run the model once "
                        "per frame (for delta processing)")
    o.add_argument("--name", help="model name in the trace (default: the graph's name)")
    o.set_defaults(func=_cmd_trace_onnx)
    from accelsim.cli.sweep import register
    register(sub)
    return p


def _version() -> str:
    from accelsim import __version__

    return f"accelsim {__version__}"


def _one_line(text: str, limit: int = 500) -> str:
    """A message as one printable line of bounded length."""
    text = " ".join(str(text).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"accelsim: warning: {_one_line(str(message))}", file=sys.stderr)


def _internal_error(e: BaseException) -> int:
    """Last resort: one line, the traceback to a file, exit 3 (a bug, not bad input)."""
    import tempfile
    import traceback

    detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    where = "(could not write the traceback)"
    try:
        fd, where = tempfile.mkstemp(prefix="accelsim-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(detail)
    except OSError:
        pass
    print(f"accelsim: internal error: {type(e).__name__}: {_one_line(str(e), 200)}; "
          f"details in {where}", file=sys.stderr)
    return 3


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    for stream in (sys.stdout, sys.stderr):  # lone surrogates in names must not crash
        reconf = getattr(stream, "reconfigure", None)
        if reconf is not None:
            reconf(errors="backslashreplace")
    try:
        return int(args.func(args) or 0)
    except AccelsimError as e:
        print(f"accelsim: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("accelsim: error: out of memory (lower --max-memory or the layer sizes)",
              file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last resort, see _internal_error
        return _internal_error(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
