"""``accelsim validate``: the published and analytic checks of accelsim.analysis.validate."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    v = sub.add_parser(
        "validate", help="check the model against published and analytic results",
        description="Run accelsim's validation suite: dense cycles against SCALE-Sim, "
                    "closed forms of lockstep skipping and delta processing, 2:4 weights, "
                    "Cnvlutin and SparTen (docs/validation.md). Prints a pass/fail table "
                    "and exits 1 when a check fails.")
    v.add_argument("--check", action="append", metavar="NAME",
                   help="run only this check (repeatable); --list names them")
    v.add_argument("--list", action="store_true", help="list the checks and exit")
    v.add_argument("--traces", metavar="DIR", type=Path,
                   help="directory of the bundled traces (default: the checkout's traces/)")
    v.add_argument("-o", "--output", metavar="FILE",
                   help="also write the table (.csv or .json)")
    v.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from accelsim.analysis.validate import CHECKS, validate
    from accelsim.errors import ConfigError

    if args.list:
        for c in CHECKS:
            print(f"{c.name:32s} {c.source}")
        return 0
    out = None
    if args.output:
        out = Path(args.output)
        if out.suffix not in (".csv", ".json"):
            raise ConfigError(f"-o {args.output}: expected a .csv or .json file name")
    df = validate(args.traces, args.check)
    width = {c: max(len(c), *(len(str(x)) for x in df[c]))
             for c in ("check", "source_value", "accelsim_value", "status")}
    head = "  ".join(f"{c:{width[c]}s}" for c in width)
    print(head)
    print("-" * len(head))
    for _, row in df.iterrows():
        print("  ".join(f"{str(row[c]):{width[c]}s}" for c in width))
    print()
    for _, row in df.iterrows():
        print(f"{row['check']}: {row['source']}")
        print(f"    tolerance {row['tolerance']}; {row['detail']}")
    n_fail = int((df.status == "fail").sum())
    n_skip = int((df.status == "skipped").sum())
    print(f"\n{int((df.status == 'pass').sum())} passed, {n_fail} failed, {n_skip} skipped")
    if out is not None:
        from accelsim.io.atomic import write_text

        text = df.to_csv(index=False) if out.suffix == ".csv" else \
            df.to_json(orient="records", indent=1)
        write_text(out, text)
    return 1 if n_fail else 0
