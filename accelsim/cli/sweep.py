"""``accelsim sweep`` and ``accelsim plot``: the CLI side of :mod:`accelsim.sweep` and
:mod:`accelsim.plot`. Printing and the progress bar live here, not in the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from accelsim.errors import AccelsimError, did_you_mean

PLOT_KINDS = ("pareto", "cycles", "energy", "heatmap", "density")


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {n}")
    return n


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n


#: accepted --dpi values (FreeType fails below, memory runs out far above)
DPI_RANGE = (20, 1200)
#: image formats plot writes, by file name suffix
PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def _dpi(text: str) -> int:
    lo, hi = DPI_RANGE
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer {lo} to {hi}, got "
                                         f"{text[:40]!r}") from None
    if not lo <= n <= hi:
        raise argparse.ArgumentTypeError(f"expected an integer {lo} to {hi}, got {n}")
    return n


def _check_output(path_text: str) -> None:
    """Refuse an image path that cannot be written before any work is done."""
    import os

    from accelsim.io.paths import check_path, is_dir

    p = check_path(path_text, AccelsimError, what="output file", label=f"-o {path_text[:80]}")
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise AccelsimError(f"-o {path_text[:80]}: expected a file name ending in "
                            f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    parent = p.parent if str(p.parent) else Path(".")
    if not is_dir(parent):
        raise AccelsimError(f"-o {path_text[:80]}: directory {str(parent)[:80]} does not "
                            f"exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AccelsimError(f"-o {path_text[:80]}: directory {str(parent)[:80]} is not "
                            f"writable")
    if is_dir(p):
        raise AccelsimError(f"-o {path_text[:80]}: is a directory")


class _Bar:
    """tqdm progress bar with ETA, fed by :class:`accelsim.sweep.SweepEvent`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.failed = 0

    def __call__(self, ev: Any) -> None:
        if ev.kind == "start":
            if ev.skipped:
                print(f"{ev.skipped} points already stored: skipped", file=sys.stderr)
            if self.enabled and ev.total:
                from tqdm import tqdm

                self.bar = tqdm(total=ev.total, unit="pt", dynamic_ncols=True,
                                file=sys.stderr, desc="sweep")
            return
        if ev.status != "ok":
            self.failed += 1
            msg = f"{ev.status}: {ev.label} [{ev.trace}]: {ev.error}"
            if self.bar is not None:
                self.bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr)
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_sweep(args: argparse.Namespace) -> int:
    from accelsim.analysis.sweep import load_spec, plan_sweep, stored_points, sweep

    spec = load_spec(args.spec)
    if args.dry_run:
        plan = plan_sweep(spec)
        stored = stored_points(args.output) if Path(args.output, "points").is_dir() else {}
        ids = {p.point_id for p in plan.points}
        bad = sum(1 for p in plan.points if p.error)
        print(f"sweep {spec.name}: grid {spec.grid_size}, {plan.dropped} dropped by "
              f"constraints, {plan.configs} configs x {len(spec.traces)} traces = "
              f"{len(ids)} points ({bad} with configs that do not resolve), "
              f"{len(ids & set(stored))} already stored in {args.output}")
        return 0
    bar = _Bar(enabled=not args.no_progress)
    try:
        s = sweep(spec, args.output, workers=args.workers, scheduler=args.scheduler,
                  dask_local=args.dask_local, retry_failed=args.retry_failed,
                  progress=bar, cache_bytes=args.cache_mib * 2**20)
    finally:
        bar.close()
    print(f"sweep {spec.name} -> {s.results_dir}: {s.points} points "
          f"({s.configs} configs x {len(spec.traces)} trace"
          f"{'s' if len(spec.traces) > 1 else ''}; grid {s.grid_size}, "
          f"{s.dropped} dropped by constraints)")
    line = f"ok {s.ok}, failed {s.failed}, skipped {s.skipped}"
    if s.lost:
        line += f", lost {s.lost} (not stored; rerun to retry)"
    if s.ran:
        line += (f"; {s.wall_s:.1f} s wall on {s.backend or 'no workers'}, "
                 f"{s.per_point_s:.3f} s per point, {s.sim_s / s.ran:.3f} s simulate "
                 f"per point in the workers")
    print(line)
    for label, err in s.errors[:5]:
        print(f"  failed: {label}: {err}")
    if len(s.errors) > 5:
        print(f"  ... and {len(s.errors) - 5} more (status == 'failed' in the store)")
    return _sweep_status(s)


def _sweep_status(s: Any) -> int:
    """Exit code 1, with one line on stderr saying why, when any point failed or was lost,
    or when no point was planned at all (every one dropped by the constraints)."""
    if s.failed or s.lost:
        print(f"accelsim: sweep: {s.failed} of {s.points} points failed"
              + (f", {s.lost} lost" if s.lost else ""), file=sys.stderr)
        return 1
    if s.points == 0:
        print(f"accelsim: sweep: no point ran ({s.dropped} of {s.grid_size} dropped by "
              f"the constraints)", file=sys.stderr)
        return 1
    return 0


def _select_point(df: Any, point: str | None, trace: str | None) -> tuple[Any, str]:
    from accelsim.analysis.sweep import totals_only

    if "point_id" not in df.columns:
        return df, ""
    tot = totals_only(df)
    if trace is not None:
        tot = tot[tot["trace"] == trace]
        if tot.empty:
            raise AccelsimError(f"--trace {trace}: no ok points of that trace")
    if point is not None:
        hit = tot[tot["point_id"].astype(str).str.startswith(point)]
        if hit["point_id"].nunique() != 1:
            raise AccelsimError(f"--point {point}: matches {hit['point_id'].nunique()} "
                                f"ok points (give more of the id)")
        pid = str(hit["point_id"].iloc[0])
        why = "chosen"
    else:
        if tot.empty:
            raise AccelsimError("no ok points in the results")
        edp = tot["energy_pj"].astype(float) * tot["latency_s"].astype(float)
        pid = str(tot.loc[edp.idxmin(), "point_id"])
        why = "lowest energy-delay"
    sel = df[df["point_id"] == pid]
    return sel, f"point {pid} ({why})"


def _cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accelsim.analysis import plot
    from accelsim.analysis.sweep import load_results

    _check_output(args.output)
    df = load_results(args.results)
    if df.empty:
        raise AccelsimError(f"{args.results}: no results to plot")
    for flag, col in (("--x", args.x), ("--y", args.y), ("--color", args.color),
                      ("--metric", args.metric)):
        if col is not None and col not in df.columns:
            raise AccelsimError(f"plot {flag} {col[:80]}: unknown column"
                                f"{did_you_mean(col, df.columns)} (columns of {args.results}: "
                                f"{', '.join(map(str, df.columns))})")
    swept = df.attrs.get("swept_keys", [])
    if args.trace is not None and "trace" in df.columns and args.kind != "cycles" \
            and args.kind != "energy":
        df = df[df["trace"] == args.trace]
    note = ""
    try:
        if args.kind == "pareto":
            color = args.color or ("zero_policy" if "zero_policy" in swept else
                                   (swept[0] if swept else None))
            ax = plot.pareto(df, x=args.x or "latency_s", y=args.y or "energy_pj",
                             color=color, logx=args.logx, logy=args.logy)
        elif args.kind in ("cycles", "energy"):
            sel, note = _select_point(df, args.point, args.trace)
            ax = (plot.layer_cycles if args.kind == "cycles" else plot.energy_breakdown)(sel)
        elif args.kind == "heatmap":
            x = args.x or (swept[0] if swept else None)
            y = args.y or (swept[1] if len(swept) > 1 else None)
            if x is None or y is None:
                raise AccelsimError("--kind heatmap needs two swept keys (--x and --y)")
            ax = plot.heatmap(df, x=x, y=y, metric=args.metric or "edp_pj_s")
        else:
            ax = plot.density_speedup(df, key=args.key, baseline=args.baseline,
                                      metric=args.metric or "cycles",
                                      density=args.x or "density_a")
    except (KeyError, ValueError) as e:
        raise AccelsimError(f"plot --kind {args.kind}: {e}") from None
    if args.logx and args.kind != "pareto":
        ax.set_xscale("log")
    if args.logy and args.kind != "pareto":
        ax.set_yscale("log")
    from accelsim.io.atomic import atomic_file

    fmt = Path(args.output).suffix.lower().lstrip(".")
    try:
        with atomic_file(args.output) as tmp:
            ax.figure.savefig(tmp, dpi=args.dpi, format=fmt)
    except OSError as e:
        raise AccelsimError(f"-o {args.output}: cannot write "
                            f"({e.strerror or type(e).__name__})") from None
    except ValueError as e:
        raise AccelsimError(f"-o {args.output}: {' '.join(str(e).split())[:200]}") from None
    plt.close(ax.figure)
    print(f"wrote {args.output}" + (f" ({note})" if note else ""))
    return 0


def register(sub: Any) -> None:
    """Add the ``sweep`` and ``plot`` subcommands to the ``accelsim`` parser."""
    s = sub.add_parser(
        "sweep", help="run a design-space sweep (resumable, parallel)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every point of the sweep SPEC (a grid of config keys x traces, "
                    "see docs/sweeps.md) and store\none Parquet file per point in "
                    "RESULTS_DIR/points/. Rerunning the same command skips the points\n"
                    "already stored, so a killed sweep resumes where it stopped. A point "
                    "that fails is stored\nwith its error and the sweep goes on.",
        epilog="examples:\n"
               "  accelsim sweep sweeps/array_and_policy.yaml -o results/ap --workers 2\n"
               "  accelsim sweep sweeps/array_and_policy.yaml -o results/ap --dask-local 2\n"
               "  accelsim sweep SPEC -o DIR --scheduler tcp://10.0.0.5:8786\n"
               "then: accelsim plot results/ap --kind pareto -o pareto.png, or in Python\n"
               "  df = accelsim.load_results('results/ap')")
    s.add_argument("spec", help="sweep spec YAML")
    s.add_argument("-o", "--output", required=True, metavar="RESULTS_DIR",
                   help="result store directory (created; reused to resume)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--workers", type=_positive, metavar="N",
                   help="local worker processes (default: all cores; 1 runs in-process)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster, e.g. tcp://host:8786 (needs the "
                        "dask extra; traces must be readable at the same path on workers)")
    g.add_argument("--dask-local", type=_positive, metavar="N",
                   help="run on a Dask LocalCluster of N single-threaded worker processes")
    s.add_argument("--retry-failed", action="store_true",
                   help="run points stored as failed again (default: skip them)")
    s.add_argument("--dry-run", action="store_true",
                   help="only count the points (grid, dropped, already stored) and exit")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--cache-mib", type=_non_negative, default=256, metavar="MIB",
                   help="per-worker budget for work reused across points (256; 0: off)")
    s.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "plot", help="plot sweep results or a simulate table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Plot RESULTS (a sweep's RESULTS_DIR, or a .csv/.parquet table) to a "
                    "PNG/PDF/SVG file.\nkinds:\n"
                    "  pareto   all configs as energy vs latency (--x/--y to change), "
                    "Pareto front drawn,\n           coloured by --color (default: "
                    "zero_policy)\n"
                    "  cycles   per-layer compute vs stall cycles of one point\n"
                    "  energy   per-layer energy by component of one point\n"
                    "  heatmap  --metric (default edp_pj_s) over two swept keys --x and --y\n"
                    "  density  per-layer speedup over --key=--baseline vs density\n"
                    "For cycles/energy the point is --point ID (a prefix is enough) or, by "
                    "default, the one\nwith the lowest energy-delay product.")
    p.add_argument("results", help="result store directory, or a .csv / .parquet table")
    p.add_argument("--kind", choices=PLOT_KINDS, default="pareto",
                   help="what to draw (default: pareto)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="image file to write (.png, .pdf, .svg)")
    p.add_argument("--x", help="x column (pareto, heatmap, density)")
    p.add_argument("--y", help="y column (pareto, heatmap)")
    p.add_argument("--metric", help="metric column (heatmap: edp_pj_s; density: cycles)")
    p.add_argument("--color", help="column to colour pareto points by")
    p.add_argument("--point", help="point id (prefix) for --kind cycles/energy")
    p.add_argument("--trace", help="only this trace (model name)")
    p.add_argument("--key", default="zero_policy",
                   help="swept key compared by --kind density (default: zero_policy)")
    p.add_argument("--baseline", default="none",
                   help="baseline value of --key for --kind density (default: none)")
    p.add_argument("--logx", action="store_true", help="log-scale x axis")
    p.add_argument("--logy", action="store_true", help="log-scale y axis")
    p.add_argument("--dpi", type=_dpi, default=150,
                   help=f"resolution, {DPI_RANGE[0]} to {DPI_RANGE[1]} (default 150)")
    p.set_defaults(func=_cmd_plot)
