"""The ``accelsim`` command. The only module that prints or exits.

Errors on bad input become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from .errors import AccelsimError

EPILOG = "Run 'accelsim COMMAND --help' for a command's options."


def _fmt_table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    view = df[cols].copy()
    for c in cols:
        if c in ("util",) or c.startswith("density") or c.endswith("_frac"):
            view[c] = view[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        elif c.endswith("_pj") or c.endswith("_s"):
            view[c] = view[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        else:
            view[c] = view[c].astype(object).where(view[c].notna(), "")
    return view.to_string(index=False)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .hwconfig import load_hwconfig, parse_override
    from .report import BRIEF_COLUMNS, ENERGY_COLUMNS, simulate, with_totals, write_table
    from .trace import load_trace

    overrides = dict(parse_override(s) for s in args.set or [])
    hw = load_hwconfig(args.hw, overrides)
    trace = load_trace(args.trace)
    df = simulate(trace, hw)
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
            f"{k} {100 * v / tot['energy_pj']:.1f}%" for k, v in comp.items()))
    if args.output:
        try:
            write_table(full, args.output)
        except (OSError, ValueError) as e:
            raise AccelsimError(f"-o {args.output}: {e}") from None
        print(f"wrote {args.output}")
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
    s.add_argument("trace", help="trace directory (holding manifest.yaml)")
    s.add_argument("--hw", required=True,
                   help="hardware config YAML (a path, or the name of a shipped config "
                        "in hwconfigs/, e.g. sparse_os_16x16)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set array.rows=32 (repeatable)")
    s.add_argument("-o", "--output", metavar="FILE",
                   help="also write all columns to FILE (.csv or .json)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--columns", help="comma-separated columns to print")
    g.add_argument("--all-columns", action="store_true", help="print every column")
    g.add_argument("--show", choices=("brief", "traffic", "energy"), default="brief",
                   help="column group to print: brief (default), traffic (bytes per level, "
                        "operand and direction, data and metadata apart) or energy (pJ per "
                        "component)")
    s.set_defaults(func=_cmd_simulate)
    return p


def _version() -> str:
    from . import __version__

    return f"accelsim {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AccelsimError as e:
        print(f"accelsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
