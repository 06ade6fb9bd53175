"""``accelsim list`` and ``accelsim config show``: what is shipped, and what a config
resolves to. Only YAML and the config dataclasses are loaded, never the simulator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from accelsim.errors import AccelsimError

#: the bundled traces of a source checkout (``<repo>/traces``), when there is one
CHECKOUT_TRACES = Path(__file__).resolve().parents[2] / "traces"


#: the lines of ``accelsim list`` fit this many columns
WIDTH = 100


def _first_line(text: str, limit: int = 1000) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _mapping(path: Path, what: str) -> dict | str:
    """The YAML mapping in ``path`` (the project's bounded safe reader), or a short
    note in parentheses saying why there is none."""
    from accelsim.errors import AccelsimError
    from accelsim.io.yamlio import read_yaml

    try:
        raw = read_yaml(path, allow_empty=True) or {}
    except AccelsimError:
        return f"(unreadable {what})"
    return raw if isinstance(raw, dict) else f"({what} is not a mapping)"


def _config_line(path: Path) -> str:
    raw = _mapping(path, "config")
    if isinstance(raw, str):
        return raw
    desc = raw.get("description") or ""
    return _first_line(desc) if desc else "(no description)"


def _energy_line(path: Path) -> str:
    """The first comment line of an energy table (its title)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        return f"(unreadable: {type(e).__name__})"
    for ln in lines:
        s = ln.strip()
        if s.startswith("#") and s.lstrip("#").strip():
            return _first_line(s.lstrip("#").strip())
        if s and not s.startswith("#"):
            break
    return "(no description)"


def _trace_line(manifest: Path) -> str:
    """Model name, layers, frames and operand widths of a trace, from its manifest."""
    raw = _mapping(manifest, "manifest")
    if isinstance(raw, str):
        return raw
    layers = raw.get("layers") if isinstance(raw.get("layers"), list) else []
    prov = raw.get("provenance") if isinstance(raw.get("provenance"), dict) else {}
    kinds: dict[str, int] = {}
    bits: set[int] = set()
    framed = 0
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        kinds[str(layer.get("kind"))] = kinds.get(str(layer.get("kind")), 0) + 1
        framed += bool(layer.get("frames"))
        for t in (layer.get("tensors") or {}).values() if isinstance(
                layer.get("tensors"), dict) else ():
            q = t.get("quant") if isinstance(t, dict) else None
            if isinstance(q, dict) and isinstance(q.get("bits"), int):
                bits.add(q["bits"])
    model = str(raw.get("model", manifest.parent.name))
    parts = [("" if model == manifest.parent.name else f"model {model}: ")
             + f"{len(layers)} layers ("
             + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")"]
    if framed:
        parts.append(f"{framed} with frames")
    if bits:
        parts.append("int" + "/int".join(str(b) for b in sorted(bits)))
    if prov.get("synthetic"):
        parts.append("synthetic")
    return _first_line("; ".join(parts))


def _traces_dir(arg: str | None) -> Path | None:
    if arg is not None:
        p = Path(arg)
        if not p.is_dir():
            raise AccelsimError(f"--traces {arg[:80]}: not a directory")
        return p
    for cand in (Path("traces"), CHECKOUT_TRACES):
        if cand.is_dir():
            return cand
    return None


def _cmd_list(args: argparse.Namespace) -> int:
    from accelsim.io.hwconfig import HWCONFIG_DIR, shipped_configs

    def section(title: str, rows: list[tuple[str, str]]) -> None:
        print(title)
        width = max((len(n) for n, _ in rows), default=0)
        for name, desc in rows:
            print(f"  {name:<{width}}  {_first_line(desc, WIDTH - width - 4)}")

    what = args.what
    if what in (None, "configs"):
        section("hardware configs (accelsim simulate TRACE --hw NAME; accelsim config show "
                "NAME):", [(p.stem, _config_line(p)) for p in shipped_configs()])
    if what in (None, "energy"):
        section("energy tables (energy: NAME in a config; accelsim reprice --energy NAME):",
                [(p.stem, _energy_line(p)) for p in sorted((HWCONFIG_DIR / "energy")
                                                           .glob("*.yaml"))])
    if what in (None, "traces"):
        tdir = _traces_dir(args.traces)
        if tdir is None:
            print("traces: none found (no ./traces directory; a source checkout has them in "
                  "traces/; --traces DIR)")
        else:
            rows = [(p.parent.name, _trace_line(p)) for p in sorted(tdir.glob("*/manifest.yaml"))]
            section(f"traces in {tdir}/:", rows)
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    from accelsim.cli.main import load_hwconfig_cli
    from accelsim.io.hwconfig import parse_override

    overrides = dict(parse_override(s) for s in args.set or [])
    hw = load_hwconfig_cli(args.config, overrides, args.set)
    text = yaml.safe_dump(hw.to_dict(), sort_keys=False, allow_unicode=True, width=1000)
    sets = "".join(f" --set {s}" for s in args.set or [])
    sys.stdout.write(f"# {args.config}{sets}\n# resolved, every default filled in; config hash "
                     f"{hw.config_hash()}\n" + text)
    return 0


def register(sub: Any) -> None:
    """Add ``list`` and ``config`` to the ``accelsim`` parser."""
    ls = sub.add_parser(
        "list", help="list the shipped configs, energy tables and bundled traces",
        description="One line each: the shipped hardware configs and energy tables (package "
                    "data, found from any directory) and the traces in ./traces (or the "
                    "source checkout's traces/, or --traces DIR).")
    ls.add_argument("what", nargs="?", choices=("configs", "energy", "traces"),
                    help="only this section")
    ls.add_argument("--traces", metavar="DIR", help="list the traces in DIR")
    ls.set_defaults(func=_cmd_list)

    c = sub.add_parser("config", help="show a hardware config resolved (config show NAME)",
                       description="Work with hardware configs.")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser(
        "show", help="print a config resolved, as YAML, every default filled in",
        description="Print CONFIG (a shipped name or a YAML path) with the --set overrides "
                    "applied and every default filled in, as YAML that loads back to the same "
                    "config (accelsim simulate TRACE --hw FILE).")
    show.add_argument("config", metavar="CONFIG", help="shipped config name or YAML path")
    show.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a config key, e.g. --set array.rows=32 (repeatable)")
    show.set_defaults(func=_cmd_config_show)
