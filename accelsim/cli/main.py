"""The ``accelsim`` command. The only module that prints or exits.

Errors on bad input become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from accelsim.errors import AccelsimError, did_you_mean

if TYPE_CHECKING:  # pandas is imported where a command needs it: --help stays fast
    import pandas as pd

EPILOG = "Run 'accelsim COMMAND --help' for a command's options."


WIDTH = 100  # the terminal views fit this many columns


def _say(args: argparse.Namespace, text: str = "") -> None:
    """A line for people: wrapped to WIDTH; on stderr when stdout carries CSV/JSON."""
    import textwrap

    stream = sys.stderr if getattr(args, "_machine_stdout", False) else sys.stdout
    for line in text.splitlines() or [""]:
        print(textwrap.fill(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
              if len(line) > WIDTH else line, file=stream)


def _eng(value: float, kind: str, digits: int = 4) -> str:
    """One value in engineering units, under 1000 of its unit (``127.9 µJ``, ``8.981 M``,
    ``990.6 k cycles``)."""
    from accelsim.analysis.columns import UNITS

    units = UNITS["count" if kind == "cycles" else kind]
    v = float(value)
    div, unit = units[0]
    for d, u in units:
        if abs(v) >= d:
            div, unit = d, u
    if kind in ("count", "cycles") and div == 1.0:
        text = f"{int(v)}"
    else:
        text = f"{v / div:.{digits}g} {unit}".rstrip()
    return text + " cycles" if kind == "cycles" else text


def ratio_words(new: float, old: float, more: str, less: str, same: str
                ) -> tuple[str, bool]:
    """``new`` against ``old`` in words that read correctly whichever is larger:
    (``1.16× slower`` / ``1.16× faster``, True), (``1.14× more energy`` / ``1.14× less
    energy``, True); (``same``, False) when they agree to 0.5%. The flag says whether
    the words are a comparative (``than``) or not (``as``)."""
    if not (new > 0 and old > 0):
        return same, False
    r = new / old
    if r >= 1.005:
        return f"{r:.2f}× {more}", True
    if r <= 1 / 1.005:
        return f"{old / new:.2f}× {less}", True
    return same, False


def comparison_line(tot, base, name: str) -> str:
    """The delta/N:M line: this run (``tot``) against the same array without ``name``
    (``base``), e.g. ``with delta: 1.16× slower, 1.14× more energy than without delta``."""
    speed, _ = ratio_words(float(tot["cycles"]), float(base["cycles"]), "slower", "faster",
                           "as fast")
    energy, comparative = ratio_words(float(tot["energy_pj"]), float(base["energy_pj"]),
                                      "more energy", "less energy", "the same energy")
    joint = "than" if comparative else "as"
    return (f"with {name}: {speed}, {energy} {joint} without {name} (cycles "
            f"{_eng(base['cycles'], 'count')} -> {_eng(tot['cycles'], 'count')}, energy "
            f"{_eng(base['energy_pj'], 'energy')} -> {_eng(tot['energy_pj'], 'energy')}, "
            f"MACs performed {_eng(base['macs_performed'], 'count')} -> "
            f"{_eng(tot['macs_performed'], 'count')})")


#: the default view of simulate: what a person reads first (fits 100 columns)
SIMULATE_DEFAULT = ["layer", "kind", "macs_dense", "macs_performed", "cycles",
                    "stall_cycles", "util", "density_a", "density_w", "dram_bytes",
                    "energy_pj"]
#: --show groups of simulate
SHOW_GROUPS: dict[str, list[str]] = {
    "brief": SIMULATE_DEFAULT,
    "shape": ["layer", "kind", "m", "k", "n", "groups", "packed_groups", "frames", "gemms",
              "folds", "macs_dense", "macs_padding", "util"],
    "macs": ["layer", "kind", "macs_dense", "macs_performed", "macs_gated", "macs_skipped",
             "macs_padding", "compute_cycles", "stall_cycles", "cycles", "util"],
    "energy": ["layer", "energy_mac_pj", "energy_skip_pj", "energy_mux_pj", "energy_rf_pj",
               "energy_hop_pj", "energy_glb_pj", "energy_dram_pj", "energy_state_pj",
               "energy_leakage_pj", "energy_pj"],
    "delta": ["layer", "kind", "frames", "macs_performed", "cycles", "delta_density_a",
              "delta_gemms_skipped", "state_bytes", "state_in_dram", "state_cycles",
              "state_stall_cycles",
              "energy_state_pj", "energy_pj", "delta_err_max", "delta_err_rms",
              "delta_err_rel"],
    "threshold": ["layer", "kind", "macs_performed", "cycles", "density_a", "threshold_a",
                  "threshold_b", "thr_sparsity_a", "thr_err_rel", "thr_err_rms",
                  "thr_err_max", "energy_pj"],
    "traffic": ["layer", "compute_cycles", "stall_cycles", "dram_bytes", "glb_bytes",
                "out_format", "out_consumer"],
}
INSPECT_DEFAULT = ["layer", "kind", "m", "k", "n", "frames", "macs_dense", "density_a",
                   "density_w", "delta_density_a", "unchanged_frac_a", "bytes"]


def _pick_columns(args: argparse.Namespace, full: pd.DataFrame, default: list[str]
                  ) -> list[str]:
    """The columns to print: --columns, --all-columns, --show or the default view (where
    the default drops columns that are empty for every layer)."""
    if getattr(args, "columns", None):
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in columns if c not in full.columns]
        if unknown:
            raise AccelsimError(f"--columns: unknown column {unknown[0]!r}"
                                f"{did_you_mean(unknown[0], full.columns)}; known: "
                                f"{', '.join(full.columns)} (docs/columns.md)")
        return columns
    if getattr(args, "all_columns", False):
        return list(full.columns)
    show = getattr(args, "show", None) or "brief"
    cols = list(SHOW_GROUPS.get(show, default)) if show != "brief" else list(default)
    if show == "traffic":
        cols += [c for c in full.columns if c.endswith("_bytes") and c not in cols
                 and c != "state_bytes"]
    present = [c for c in cols if c in full.columns]
    body = full.iloc[:-1] if len(full) > 1 else full
    return [c for c in present if c in ("layer", "kind")
            or not body[c].isna().all()]


def _check_output_args(args: argparse.Namespace) -> str:
    """The output format, with -o checked, before any simulation runs."""
    from accelsim.analysis.output import check_writable, resolve_format

    fmt = resolve_format(args.output, args.format)
    if args.output:
        check_writable(args.output)
    args._machine_stdout = fmt != "table" and not args.output
    return fmt


def _emit(args: argparse.Namespace, df: pd.DataFrame, columns: list[str], fmt: str,
          prov: dict, text: str) -> None:
    """Print CSV/JSON on stdout (no -o) and write -o FILE in ``fmt``."""
    from accelsim.analysis.output import to_bytes, write_result

    data = df if fmt == "table" or not getattr(args, "columns", None) else df[columns]
    if args._machine_stdout:
        sys.stdout.write(to_bytes(data, fmt, prov).decode("utf-8"))
        sys.stdout.flush()
    if args.output:
        try:
            write_result(data, args.output, fmt, prov, table_text=text)
        except OSError as e:
            raise AccelsimError(f"-o {args.output}: cannot write "
                                f"({e.strerror or type(e).__name__})") from None
        _say(args, f"wrote {args.output} ({fmt}, with provenance)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from accelsim.analysis.columns import render
    from accelsim.analysis.output import provenance
    from accelsim.analysis.report import ENERGY_COLUMNS, simulate, with_totals
    from accelsim.io.hwconfig import parse_override

    fmt = _check_output_args(args)
    _check_report_dir(args)
    overrides = dict(parse_override(s) for s in args.set or [])
    if args.threshold:
        overrides.update(_threshold_overrides(args.threshold))
    if args.backend:
        overrides["backend"] = args.backend
    trace, hw = _simulate_inputs(args, overrides)
    if args.prune:
        trace = _prune(trace, args.prune, args)
    for note in _frame_notes(args, trace, hw):
        print(f"accelsim: warning: {note}", file=sys.stderr)
    prov = provenance(what="simulate --per-frame" if args.per_frame else "simulate",
                      trace_path=args.trace or args.topology, trace_model=trace.model,
                      hw=hw, argv=args._argv, synthetic=args.topology is not None)
    if args.per_frame:
        frames = simulate(trace, hw, per_frame=True, max_memory=args.max_memory)
        columns = _pick_columns(args, frames, list(frames.columns))
        text = render(frames, columns, WIDTH)
        if not args._machine_stdout:
            _say(args, f"trace {trace.model} on {hw.name}: per frame")
            print(text)
        _emit(args, frames, columns, fmt, prov, text)
        return 0
    bar = _LayerBar(args.progress or (sys.stderr.isatty() and len(trace) > 1), len(trace))
    try:
        df = simulate(trace, hw, functional=args.functional, max_memory=args.max_memory,
                      progress=bar)
    finally:
        bar.close()
    full = with_totals(df)
    columns = _pick_columns(args, full, SIMULATE_DEFAULT)
    text = render(full, columns, WIDTH)
    tot = full.iloc[-1]
    array = (f"{hw.array.rows}x{hw.array.cols} PEs x {hw.array.macs_per_pe} MAC, dataflow "
             f"{hw.dataflow}")
    if hw.engine.kind != "systolic":
        lanes = f"{hw.gemv_lanes} GEMV lanes" + (
            ", fetch_skip rows" if hw.fetch_skip.w_on_zero_a == "rows" else "")
        array = (f"{lanes}" if hw.engine.kind == "gemv"
                 else f"{array}; M = 1 layers on {lanes}")
    lines = [f"trace {trace.model} ({len(trace)} layers) on {hw.name}: {array}, "
             f"zero policy {hw.zero_policy}, {hw.clock_ghz:g} GHz"]
    summary = [f"total: {int(tot['cycles'])} cycles ({int(tot['stall_cycles'])} stall) = "
               f"{_eng(tot['latency_s'], 'time')}, {_eng(tot['macs_performed'], 'count')} "
               f"of {_eng(tot['macs_dense'], 'count')} MACs performed, utilisation "
               f"{tot['util']:.3f}, energy {_eng(tot['energy_pj'], 'energy')}"]
    comp = {c[len("energy_"):-len("_pj")]: tot[c] for c in ENERGY_COLUMNS[:-1]}
    if tot["energy_pj"] > 0:
        summary.append("energy breakdown: " + ", ".join(
            f"{k} {100 * v / tot['energy_pj']:.1f}%" for k, v in comp.items() if v > 0))
    features = _baseline_overrides(hw)
    if features and not args.no_baseline:
        import warnings

        from accelsim.errors import PrecisionWarning

        with warnings.catch_warnings():  # said once, for the run itself
            warnings.simplefilter("ignore", PrecisionWarning)
            base = with_totals(simulate(trace, hw.with_overrides(features),
                                        max_memory=args.max_memory)).iloc[-1]
        name = " and ".join(f for f in ("delta" if "delta.enabled" in features else "",
                                        "N:M" if "structured.n" in features else "") if f)
        summary.append(comparison_line(tot, base, name))
        prov["baseline"] = {"without": name, "cycles": int(base["cycles"]),
                            "energy_pj": float(base["energy_pj"])}
    if not args._machine_stdout:
        for line in lines:
            _say(args, line)
        print(text)
        for line in summary:
            _say(args, line)
    _emit(args, full, columns, fmt, prov, "\n".join(lines + [text] + summary))
    _write_report_dir(args, full, hw, prov, summary)
    return 0


class _LayerBar:
    """tqdm bar over the layers of ``simulate`` on stderr (``--progress``, or a TTY)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="layer", dynamic_ncols=True, file=sys.stderr,
                            desc="simulate")

    def __call__(self, done: int, total: int, name: str) -> None:
        if self.bar is not None:
            from accelsim.errors import safe_text

            self.bar.set_postfix_str(safe_text(name)[:40], refresh=False)
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _frame_notes(args: argparse.Namespace, trace, hw) -> list[str]:
    """What --functional and delta.enabled would quietly not do on this trace."""
    framed = any(layer.frames and layer.kind != "matmul" for layer in trace.layers)
    notes = []
    if hw.delta.enabled and not framed:
        notes.append(f"delta.enabled: trace {trace.model} has no layer with frames, so delta "
                     f"processing does nothing (every layer runs in full)")
    if args.functional and not (hw.delta.enabled and framed):
        why = (f"trace {trace.model} has no layer with frames" if hw.delta.enabled
               else "delta.enabled is false")
        notes.append(f"--functional: {why}, so there is no delta path to check (no "
                     f"delta_err_* values)")
    return notes


def _simulate_inputs(args: argparse.Namespace, overrides: dict):
    """The trace (a trace directory or a SCALE-Sim --topology) and the hardware (--hw or
    a SCALE-Sim --scalesim-cfg) of ``simulate``; exactly one of each."""
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
        hw = load_hwconfig_cli(args.hw, overrides, args.set)
    return trace, hw


def load_hwconfig_cli(name: str, overrides: dict, set_args: list[str] | None):
    """:func:`load_hwconfig` with an error in a ``--set`` value blamed on that ``--set``
    argument as typed, not on the YAML file."""
    from accelsim.errors import ConfigError
    from accelsim.io.hwconfig import load_hwconfig

    try:
        return load_hwconfig(name, overrides)
    except ConfigError as e:
        key = getattr(e, "override", None)
        if key is None:
            raise
        typed = next((t for t in reversed(set_args or [])
                      if t.partition("=")[0].strip() == key), None)
        detail = str(e).split(": ", 1)[1] if ": " in str(e) else str(e)
        label = f"--set {typed}" if typed is not None else f"override {key}"
        raise ConfigError(f"{label}: {detail}") from None


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


def _prune(trace, spec: str, args: argparse.Namespace):
    from accelsim.model.sparsity import prune_nm

    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "nm" or not all(p.isdigit() for p in parts[1:]):
        raise AccelsimError(f"--prune {spec!r}: expected nm:N:M, e.g. nm:2:4")
    n, m = int(parts[1]), int(parts[2])
    pruned, removed = prune_nm(trace, n, m)
    frac = pruned.provenance["transforms"][-1]["removed_fraction"]
    _say(args, f"pruned to {n}:{m} along K (magnitude): removed {100 * frac:.1f}% of "
               f"weights ({', '.join(f'{k} {100 * v:.1f}%' for k, v in removed.items())})")
    return pruned


def _cmd_inspect(args: argparse.Namespace) -> int:
    import pandas as pd

    from accelsim.analysis.columns import render
    from accelsim.analysis.inspect import inspect_totals, inspect_trace, kv_summary
    from accelsim.analysis.output import provenance
    from accelsim.io.trace import load_trace

    fmt = _check_output_args(args)
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
    prov_ = trace.provenance
    prov = provenance(what="inspect", trace_path=args.trace, trace_model=trace.model,
                      argv=args._argv, synthetic=bool(prov_.get("synthetic")))
    columns = _pick_columns(args, full, INSPECT_DEFAULT)
    text = render(full, columns, WIDTH)
    head = f"trace {trace.model}: {len(trace)} layers" + (" (synthetic)" if
                                                           prov_.get("synthetic") else "")
    kv = kv_summary(trace)
    if not args._machine_stdout:
        _say(args, head)
        print(text)
        if kv:
            _say(args, kv)
    _emit(args, full, columns, fmt, prov, "\n".join([head, text] + ([kv] if kv else [])))
    return 0


def _cmd_reprice(args: argparse.Namespace) -> int:
    from accelsim.analysis.columns import render
    from accelsim.analysis.output import command_line, read_table
    from accelsim.model.energy import load_energy_table, reprice

    fmt = _check_output_args(args)
    df = read_table(args.result)
    if not df.attrs.get("hwconfig"):
        raise AccelsimError(f"{args.result}: carries no provenance with a hardware config "
                            f"(write it with accelsim simulate -o or --report-dir)")
    if "kind" not in df.columns or "cycles" not in df.columns:
        raise AccelsimError(f"{args.result}: not a per-layer simulate table (no 'kind' "
                            f"and 'cycles' columns)")
    table = load_energy_table(args.energy)
    out = reprice(df, table)
    prov = dict(df.attrs.get("provenance", {}))
    before = prov.get("hw", {}).get("energy_table", "?")
    prov["repriced"] = {"from": before, "to": table.name,
                        "command": command_line(args._argv)}
    columns = _pick_columns(args, out, ["layer", "kind", *SHOW_GROUPS["energy"][1:]])
    text = render(out, columns, WIDTH)
    old_e = float(df["energy_pj"].iloc[-1]) if df["layer"].iloc[-1] == "TOTAL" else \
        float(df["energy_pj"].sum())
    new_e = float(out["energy_pj"].iloc[-1]) if out["layer"].iloc[-1] == "TOTAL" else \
        float(out["energy_pj"].sum())
    line = (f"{args.result}: energy {_eng(old_e, 'energy')} under {before} -> "
            f"{_eng(new_e, 'energy')} under {table.name}")
    if not args._machine_stdout:
        print(text)
        _say(args, line)
    _emit(args, out, columns, fmt, prov, "\n".join([text, line]))
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


def _check_report_dir(args: argparse.Namespace) -> None:
    """--report-dir DIR is checked before the simulation runs."""
    if args.force and not args.report_dir:
        raise AccelsimError("--force: only with --report-dir DIR")
    if args.report_dir:
        if args.per_frame:
            raise AccelsimError("--report-dir: not with --per-frame (the report is per "
                                "layer)")
        from accelsim.analysis.reportdir import check_report_dir

        check_report_dir(args.report_dir, force=args.force)


def _write_report_dir(args: argparse.Namespace, full: pd.DataFrame, hw, prov: dict,
                      summary: list[str]) -> None:
    if args.report_dir:
        from accelsim.analysis.reportdir import write_report_dir

        write_report_dir(args.report_dir, full, hw, prov, notes=summary, force=args.force)
        _say(args, f"wrote report {args.report_dir}/ (report.html, layers.csv/.parquet, "
                   f"COMPUTE_REPORT.csv, BANDWIDTH_REPORT.csv, plots, provenance)")


def _output_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-o", "--output", metavar="FILE",
                   help=f"also write {what} to FILE, every column unless --columns, "
                        f"with its provenance; the format from --format or the name "
                        f"(.csv, .json, .parquet, .txt)")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"),
                   help="table (default; the view printed), csv, json or parquet; without "
                        "-o, csv and json go to stdout in place of the table")


class _Parser(argparse.ArgumentParser):
    """argparse with one short line per usage error: an unrecognised argument or a bad
    choice can carry a value of any length or with line breaks (its sub-parsers inherit
    the class)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if len(message) > 300:
            message = message[:300] + "... (cut)"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    _output_args(s, "the per-layer table")
    s.add_argument("--report-dir", metavar="DIR",
                   help="also write a report directory: report.html, the resolved "
                        "config.yaml, provenance.json, layers.csv/.parquet, SCALE-Sim's "
                        "COMPUTE_REPORT.csv and BANDWIDTH_REPORT.csv, plots as PNG")
    s.add_argument("--force", action="store_true",
                   help="with --report-dir: replace an earlier report in DIR")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--columns", metavar="COLS",
                   help="comma-separated columns to print (and to write; docs/columns.md)")
    g.add_argument("--all-columns", action="store_true", help="print every column")
    g.add_argument("--show", choices=tuple(SHOW_GROUPS), default="brief",
                   help="column group to print: brief (default: MACs, cycles, densities, "
                        "DRAM traffic, energy), shape (GEMM shape and mapping), macs (MACs "
                        "and cycles in full), traffic (bytes per level, operand and "
                        "direction, data and metadata apart), energy (per component), "
                        "delta (delta density, state traffic, output error) or threshold "
                        "(thresholds, sparsity reached, output error)")
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
    s.add_argument("--backend", choices=("auto", "numpy", "torch"),
                   help="where the mask products run (same as --set backend=...): numpy, "
                        "torch (CUDA when present) or auto (torch on a CUDA device, else "
                        "numpy); results are identical")
    s.add_argument("--progress", action="store_true",
                   help="a progress bar over the layers on stderr (default: only when "
                        "stderr is a terminal and the trace has several layers)")
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
    _output_args(i, "the table")
    gi = i.add_mutually_exclusive_group()
    gi.add_argument("--columns", metavar="COLS",
                    help="comma-separated columns to print (and to write; docs/columns.md)")
    gi.add_argument("--all-columns", action="store_true", help="print every column")
    i.set_defaults(func=_cmd_inspect)
    r = sub.add_parser(
        "reprice", help="price a simulate result file again under another energy table",
        description="Read RESULT (a .csv, .json or .parquet written by accelsim simulate "
                    "-o or --report-dir, which carries its hardware config) and recompute "
                    "every energy column from its stored counts under TABLE.")
    r.add_argument("result", help="simulate result file")
    r.add_argument("--energy", required=True, metavar="TABLE",
                   help="energy table: a shipped name (e.g. 45nm_horowitz) or a YAML path")
    _output_args(r, "the repriced table")
    gr = r.add_mutually_exclusive_group()
    gr.add_argument("--columns", metavar="COLS", help="comma-separated columns to print")
    gr.add_argument("--all-columns", action="store_true", help="print every column")
    r.set_defaults(func=_cmd_reprice)
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
    from accelsim.cli.validate import register as register_validate
    register_validate(sub)
    from accelsim.cli.tools import register as register_tools
    register_tools(sub)
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
    args._argv = list(sys.argv[1:] if argv is None else argv)
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
