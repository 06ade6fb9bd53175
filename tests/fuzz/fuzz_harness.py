"""The fuzzing harness (issue 13): mutated inputs of every kind accelsim reads, and the
rule every case must follow.

A *case* is ``(family, case_seed)``: the seed drives a :class:`random.Random` that builds
the input (mutated hardware configs and ``--set`` overrides, trace manifests and ``.npy``
files, energy tables, sweep specs and result stores, CLI arguments) in a fresh
temporary directory and runs accelsim on it. Every case must end in one of:

* ``ok``: it ran;
* ``clean error``: an :class:`accelsim.errors.AccelsimError` whose message is one line
  (CLI: exit code 2 with one ``accelsim: error:`` line, or argparse's usage error);

and never in

* ``traceback``: any other exception;
* ``internal error``: the CLI's last-resort handler fired (exit 3), or an
  ``AccelsimError`` message spans lines or runs past :data:`MAX_MESSAGE` characters;
* ``hang``: the case used more than :data:`TIME_LIMIT_S` seconds of CPU (or six times
  that of wall time).

The same seed gives the same case, so a failure is reproduced with
``python tests/fuzz/run.py --family FAMILY --replay SEED``. The default test run
(``tests/fuzz/test_fuzz.py``) draws a few hundred case seeds with Hypothesis;
``tests/fuzz/run.py`` runs any number with a seed and prints the summary table.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import random
import signal
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

FAMILIES = ("hwconfig", "trace", "energy", "sweep", "cli")
LABELS = {"hwconfig": "hardware configs and overrides", "trace": "traces",
          "energy": "energy tables", "sweep": "sweep specs and stores",
          "cli": "CLI arguments"}
OUTCOMES = ("ok", "clean error", "traceback", "internal error", "hang")
#: CPU-time limit of one case, seconds (the issue's "hang" threshold); CPU time, not
#: wall time, so that a loaded machine does not turn slow cases into hangs
TIME_LIMIT_S = 20
#: wall-clock backstop for cases that block without using CPU, as a multiple of the limit
WALL_FACTOR = 6
#: longest acceptable error message, characters
MAX_MESSAGE = 2000
#: memory budget given to every simulation the harness runs
MAX_MEMORY = "512M"


@dataclass
class Result:
    family: str
    seed: int
    outcome: str
    detail: str = ""


class _Hang(BaseException):
    pass


# ============================================================================ values

def nasty(rng: random.Random) -> Any:
    """A value chosen to break loaders: odd types, extreme numbers, huge structures."""
    pool: list[Callable[[], Any]] = [
        lambda: 0, lambda: -1, lambda: 1, lambda: 2**31, lambda: 2**63, lambda: -2**63,
        lambda: 10**30, lambda: 10**400, lambda: 1e-300, lambda: 1e-15, lambda: 1e308,
        lambda: -0.0, lambda: math.nan, lambda: math.inf, lambda: -math.inf, lambda: 0.5,
        lambda: "", lambda: "x", lambda: "x" * rng.choice((300, 5000)), lambda: True,
        lambda: False, lambda: None, lambda: [], lambda: [1, 2], lambda: {"a": 1},
        lambda: {}, lambda: [[[[[[1]]]]]], lambda: "0b", lambda: "0x_", lambda: "1_000",
        lambda: "~nosuchuser/x", lambda: "../../x", lambda: "/dev/null", lambda: "a/" * 300,
        lambda: "\u00e9\u4e2d", lambda: rng.randint(-5, 70), lambda: rng.uniform(-2, 100),
        lambda: "1e-15", lambda: ".nan", lambda: [None] * 3, lambda: "os",
    ]
    return rng.choice(pool)()


def deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


#: YAML documents that attack the reader itself
EVIL_TEXTS: list[Callable[[random.Random], bytes]] = [
    lambda r: b"\xff\xfe\x00binary\x00\x01" + bytes(r.randrange(256) for _ in range(64)),
    lambda r: ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))).encode(),
    lambda r: ("[" * r.choice((100, 3000, 20000)) + "]" * 5).encode(),
    lambda r: "".join("  " * i + f"k{i}:\n" for i in range(r.choice((70, 500)))).encode(),
    lambda r: b"array: {rows: 0b, cols: 0x_, macs_per_pe: 0o9}\n",
    lambda r: b"!!python/object/apply:os.system ['echo hi']\n",
    lambda r: b"a: !!binary AAAA\nb: !!timestamp 2001-13-45\n",
    lambda r: b"x: 1\n\tbad: tab\n",
    lambda r: b"",
    lambda r: b"--- 1\n--- 2\n",
    lambda r: b"\x00\x00\x00",
    lambda r: b"a: 1\na: 2\n? [1, 2]\n: 3\n",
    lambda r: b"- " + b"9" * 5000 + b"\n",
    lambda r: b"a: .inf\nb: -.inf\nc: .nan\nd: 1e309\n",
]


def dump(obj: Any) -> bytes:
    try:
        return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True).encode("utf-8",
                                                                               "surrogatepass")
    except (yaml.YAMLError, RecursionError, ValueError):
        return b"{}"


def corrupt_text(rng: random.Random, text: bytes) -> bytes:
    """Text-level damage: truncation, byte flips, or a whole evil document."""
    k = rng.random()
    if k < 0.35:
        return rng.choice(EVIL_TEXTS)(rng)
    if k < 0.6 and text:
        return text[: rng.randrange(len(text))]
    if k < 0.8 and text:
        b = bytearray(text)
        for _ in range(rng.randint(1, 5)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if text:
        i = rng.randrange(len(text))
        return text[:i] + rng.choice([b"&x ", b"*x", b"{", b"]", b": :", b"%", b"\t", b"'"]) \
            + text[i:]
    return text


def leaves(d: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a nested dict/list document."""
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += leaves(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += leaves(v, prefix + (i,))
    return out


def set_path(d: Any, path: tuple, value: Any, delete: bool = False) -> None:
    node = d
    for p in path[:-1]:
        node = node[p]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    elif isinstance(node, (dict, list)):
        node[path[-1]] = value


def mutate_doc(rng: random.Random, doc: Any, plausible: Callable[[random.Random, tuple], Any]
               | None = None, n: int | None = None) -> Any:
    """Replace, delete or add a few fields of a document."""
    doc = copy.deepcopy(doc)
    for _ in range(n if n is not None else rng.randint(1, 3)):
        paths = leaves(doc)
        if not paths:
            return nasty(rng)
        path = rng.choice(paths)
        k = rng.random()
        if k < 0.15:
            set_path(doc, path, None, delete=True)
        elif k < 0.25 and isinstance(doc, dict):
            doc[rng.choice(["bogus", "Array", "", "x" * 200, "1"])] = nasty(rng)
        elif k < 0.65 and plausible is not None:
            set_path(doc, path, plausible(rng, path))
        else:
            set_path(doc, path, nasty(rng))
    return doc


# ============================================================================ inputs

def _hw_plausible(rng: random.Random, path: tuple) -> Any:
    key = path[-1] if path else ""
    table: dict[str, Callable[[], Any]] = {
        "rows": lambda: rng.choice([1, 2, 3, 4, 8, 16, 64, 4096, 5000]),
        "cols": lambda: rng.choice([1, 2, 5, 8, 16, 128]),
        "macs_per_pe": lambda: rng.choice([1, 2, 4, 64, 65]),
        "dataflow": lambda: rng.choice(["os", "ws", "is", "OS", "rs"]),
        "zero_policy": lambda: rng.choice(["none", "gate", "skip_a", "skip_w", "skip_both",
                                           "skip"]),
        "bandwidth_bytes_per_cycle": lambda: rng.choice([1e-3, 0.01, 0.5, 1, 16, math.inf,
                                                         1e-15, 1e-300, 1e300]),
        "kind": lambda: rng.choice(["dense", "bitmask", "rle", "csr", "coo", "zip"]),
        "a_bits": lambda: rng.choice([1, 4, 8, 16, 32, 64, 65]),
        "w_bits": lambda: rng.choice([1, 4, 8, 16, 32, 64]),
        "out_bits": lambda: rng.choice([1, 8, 32, 64]),
        "run_bits": lambda: rng.choice([1, 2, 4, 32]),
        "index_bits": lambda: rng.choice([1, 8, 32]),
        "ptr_bits": lambda: rng.choice([1, 16, 64]),
        "n": lambda: rng.choice([0, 1, 2, 3, 4]),
        "m": lambda: rng.choice([2, 4, 8, 64]),
        "enabled": lambda: rng.choice([True, False]),
        "threshold": lambda: rng.choice([0, 0.5, 3, 1e300]),
        "clock_ghz": lambda: rng.choice([0.001, 1, 2.5, 100, 101]),
        "double_buffer": lambda: rng.choice([True, False]),
        "state": lambda: rng.choice(["auto", "glb", "dram"]),
        "loop_order": lambda: rng.choice(["auto", "mnk", "kmn", "nkm", "mmk", "mn"]),
        "glb_tile": lambda: rng.choice(["auto", [1, 1, 1], [16, "full", 8], [0, 4, 4],
                                        [10**12, 2, 2], "full", [4, 4]]),
        "search": lambda: rng.choice(["fixed", "exhaustive", "random:3", "random:0",
                                      "random:x", "greedy"]),
        "objective": lambda: rng.choice(["energy", "cycles", "edp", "area"]),
        "shared": lambda: rng.choice([True, False, "yes"]),
        "pack_groups": lambda: rng.choice(["auto", "off", "on"]),
        "backend": lambda: rng.choice(["auto", "numpy", "torch", "cupy"]),
        "w_on_zero_a": lambda: rng.choice(["none", "rows", "cols"]),
    }
    if key in table:
        return table[key]()
    if isinstance(key, str) and key.endswith("_kib"):
        return rng.choice([0.001, 1, 64, 1024, 2.0**31])
    if isinstance(key, str) and key.endswith("_bytes"):
        return rng.choice([1, 16, 2**31])
    return nasty(rng)


def base_hw_doc() -> dict:
    from accelsim.io.hwconfig import resolve_hwconfig_path

    return yaml.safe_load(resolve_hwconfig_path("sparse_os_16x16").read_text())


def tiny_layers(rng: random.Random, max_layers: int = 2) -> list:
    """A few small valid layers of random kinds, shapes, dtypes and sparsity."""
    from accelsim.io import trace as T

    def tensor(shape, dt=None):
        dt = dt or rng.choice(["int8", "int8", "float32", "int16", "uint8", "float64"])
        x = np.random.default_rng(rng.randrange(2**32)).integers(-3, 4, shape)
        x[np.random.default_rng(rng.randrange(2**32)).random(shape) < rng.random()] = 0
        return x.astype(dt)

    out = []
    for i in range(rng.randint(1, max_layers)):
        kind = rng.choice(["linear", "conv2d", "conv1d", "matmul"])
        frames = rng.random() < 0.3
        t = (rng.randint(1, 3),) if frames else ()
        name = rng.choice([f"l{i}", f"layer.{i}", f"\u00e9{i}", f"x{i}" * 20])
        if kind == "linear":
            k, n = rng.randint(1, 24), rng.randint(1, 24)
            out.append(T.linear(name, tensor(t + (rng.randint(1, 12), k)),
                                tensor((n, k)), frames=frames))
        elif kind == "matmul":
            b, m, k, n = rng.randint(1, 2), rng.randint(1, 10), rng.randint(1, 10), \
                rng.randint(1, 10)
            out.append(T.matmul(name, tensor(t + (b, m, k)), tensor(t + (b, k, n)),
                                frames=frames))
        else:
            nsp = 2 if kind == "conv2d" else 1
            g = rng.choice([1, 1, 2])
            cin, cout = g * rng.randint(1, 3), g * rng.randint(1, 3)
            ks = tuple(rng.randint(1, 3) for _ in range(nsp))
            pad = rng.randint(0, 2)
            size = tuple(k + rng.randint(0, 5) for k in ks)
            fn = T.conv2d if nsp == 2 else T.conv1d
            out.append(fn(name, tensor(t + (1, cin) + size), tensor((cout, cin // g) + ks),
                          stride=rng.randint(1, 2), padding=pad, groups=g, frames=frames))
    return out


def write_tiny_trace(rng: random.Random, path: Path) -> Path:
    from accelsim.io.trace import write_trace

    return write_trace(path, tiny_layers(rng), model="fuzz")


def simulate_small(trace: Any, hw: Any) -> None:
    from accelsim.analysis.report import simulate, with_totals

    df = with_totals(simulate(trace, hw, max_memory=MAX_MEMORY))
    check_numbers(df)


def check_numbers(df: Any) -> None:
    """Every count is a non-negative integer and every energy finite (issue 13 item 6)."""
    import pandas as pd

    for col in df.columns:
        s = df[col]
        if col.endswith("_pj"):
            vals = pd.to_numeric(s, errors="coerce").to_numpy(float)
            if not np.isfinite(vals).all() or (vals < 0).any():
                raise AssertionError(f"column {col}: energy not finite and >= 0")
        elif pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s):
            if (s.dropna() < 0).any():
                raise AssertionError(f"column {col}: negative count")
        elif col in ("cycles", "stall_cycles", "compute_cycles", "macs_performed"):
            raise AssertionError(f"column {col}: counts are not integers ({s.dtype})")


# ============================================================================ families

def case_hwconfig(rng: random.Random, tmp: Path) -> None:
    from accelsim.io.hwconfig import load_hwconfig, parse_override
    from accelsim.io.trace import Trace

    doc = mutate_doc(rng, base_hw_doc(), _hw_plausible, n=rng.randint(0, 3))
    text = dump(doc)
    if rng.random() < 0.25:
        text = corrupt_text(rng, text)
    p = tmp / "hw.yaml"
    p.write_bytes(text)
    sets = []
    for _ in range(rng.randint(0, 3)):
        key = rng.choice(["array.rows", "array.cols", "zero_policy", "dataflow",
                          "memory.dram.bandwidth_bytes_per_cycle", "memory.glb.a_kib",
                          "formats.a.kind", "structured.n", "delta.enabled", "bogus.key",
                          "array", "array..rows", "", "precision.a_bits", "clock_ghz",
                          "mapping.loop_order", "mapping.glb_tile", "mapping.search",
                          "mapping.objective", "memory.glb.shared", "array.pack_groups",
                          "backend", "engine.kind", "fetch_skip.w_on_zero_a"])
        val = rng.choice([str(_hw_plausible(rng, (key.rsplit(".", 1)[-1],))),
                          dump(nasty(rng)).decode("utf-8", "replace").strip(),
                          rng.choice(EVIL_TEXTS)(rng).decode("utf-8", "replace")[:3000],
                          "[1, 2", "&a x", "0b", ".inf", "1e-15"])
        sets.append(rng.choice([f"{key}={val}", key, f"={val}"]))
    overrides = dict(parse_override(s) for s in sets)
    hw = load_hwconfig(p, overrides)
    trace = Trace.from_arrays("fuzz", tiny_layers(rng))
    simulate_small(trace, hw)


def _npy_damage(rng: random.Random, f: Path) -> None:
    k = rng.randrange(9)
    if k == 0:
        f.write_bytes(b"")
    elif k == 1:
        data = f.read_bytes()
        f.write_bytes(data[: rng.randrange(max(1, len(data)))])
    elif k == 2:
        np.save(f, np.array(rng.choice([3, 2.5])), allow_pickle=False)  # 0-d
    elif k == 3:
        np.save(f, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif k == 4:
        f.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<i1', 'fortran_order': False, "
                      b"'shape': (1000000000000, 1000000000), }" + b" " * 40 + b"\n")
    elif k == 5:
        np.save(f, np.full((2, 3), np.nan, np.float32))
    elif k == 6:
        np.save(f, np.zeros((0, 3), np.int8))
    elif k == 7:
        np.save(f, np.ones((2, 3), np.complex64))
    else:
        f.unlink()
        f.symlink_to(f.name)  # a symlink loop


def _trace_plausible(rng: random.Random, path: tuple) -> Any:
    key = path[-1] if path else ""
    if key in ("padding", "stride", "dilation"):
        return rng.choice([[10**15], [3000, 3000], [0], [1, 1], [-1], [2**31], [1.5],
                           300, [10**6, 10**6]])
    if key == "groups":
        return rng.choice([0, 2, 3, 1.0, 10**9])
    if key == "axis":
        return rng.choice([0, 1, -1, 5, 1.0, "0"])
    if key == "scale":
        return rng.choice([0.1, 0, -1, [0.5, 0.5], [math.nan], math.inf, "1"])
    if key == "scheme":
        return rng.choice(["none", "symmetric", "per_channel", "asym"])
    if key == "bits":
        return rng.choice([8, 0, 65, 8.0])
    if key == "file":
        return rng.choice(["../manifest.yaml", "/etc/passwd", "x" * 300 + ".npy", ["a"],
                           "nonexistent.npy", "loop.npy", "\u00e9.npy", ""])
    if key == "dtype":
        return rng.choice(["int8", "float32", "object", "complex64", "int64"])
    if key == "shape":
        return rng.choice([[1], [], "3", [10**20], None])
    if key == "kind":
        return rng.choice(["linear", "conv2d", "conv1d", "matmul", "conv3d"])
    if key == "frames":
        return rng.choice([True, False, 1, "yes"])
    return nasty(rng)


def case_trace(rng: random.Random, tmp: Path) -> None:
    from accelsim.io.hwconfig import load_hwconfig
    from accelsim.io.trace import conv1d, conv2d, load_trace, write_trace

    root = tmp / "trace"
    if rng.random() < 0.1:  # the resource cases: tiny files, huge padding
        x = np.ones((1, 2, 8, 8), np.int8)
        w = np.ones((4, 2, 3, 3), np.int8)
        lay = rng.choice([lambda: conv2d("pad", x, w, padding=rng.choice([300, 3000, 40000])),
                          lambda: conv1d("pad1", x[0], w[:, :, 0], padding=10**6)])
        write_trace(root, [lay()])
    else:
        write_tiny_trace(rng, root)
    (root / "loop.npy").symlink_to("loop.npy")
    k = rng.random()
    mpath = root / "manifest.yaml"
    if k < 0.45:
        doc = yaml.safe_load(mpath.read_text())
        mpath.write_bytes(dump(mutate_doc(rng, doc, _trace_plausible)))
    elif k < 0.6:
        mpath.write_bytes(corrupt_text(rng, mpath.read_bytes()))
    elif k < 0.85:
        files = sorted(root.glob("0*.npy"))
        _npy_damage(rng, rng.choice(files))
    elif k < 0.9:
        mpath.unlink()
        mpath.symlink_to("manifest.yaml")
    trace = load_trace(rng.choice([root, root, root, str(root), tmp / "nope",
                                   root / "manifest.yaml"]))
    hw = load_hwconfig("sparse_os_16x16", {
        "zero_policy": rng.choice(["none", "skip_a", "skip_both", "gate"]),
        "dataflow": rng.choice(["os", "ws", "is"]),
        "delta.enabled": rng.random() < 0.3})
    simulate_small(trace, hw)


def case_energy(rng: random.Random, tmp: Path) -> None:
    from accelsim.io.hwconfig import load_hwconfig
    from accelsim.io.trace import Trace
    from accelsim.model.energy import ENERGY_DIR

    src = rng.choice(sorted(ENERGY_DIR.glob("*.yaml")))
    doc = yaml.safe_load(src.read_text())

    def plausible(r: random.Random, path: tuple) -> Any:
        return r.choice([0, 0.5, 1e9, 1e10, -1, math.nan, math.inf, 1e308, "1", None])

    text = dump(mutate_doc(rng, doc, plausible))
    if rng.random() < 0.25:
        text = corrupt_text(rng, text)
    p = tmp / "energy.yaml"
    p.write_bytes(text)
    hw = load_hwconfig("sparse_os_16x16", {"energy": str(p), "zero_policy": "skip_both"})
    simulate_small(Trace.from_arrays("fuzz", tiny_layers(rng, 1)), hw)


CONSTRAINTS = [
    "array.rows <= array.cols", "array.rows * array.cols <= 256", "9**9**9 > 1",
    "'x' * 50000000 == dataflow", "'x' * 10 == dataflow", "(" * 300 + "1" + ")" * 300,
    "array.rows > 1e308 * 10", "1 / 0 > 1", "array.rows // 0 == 1", "__import__('os')",
    "lambda: 1", "array.rows.real", "[1] * 10**9 == 1", "dataflow % 5", "'%s' % dataflow",
    "array.rows == 'a'", "not true", "false", "array.rows < 1", "array.rows in (8, 16)",
    "bogus.key > 1", "zero_policy == 'skip_a' or dataflow == 'os'", "-array.rows < 0",
    "10**100 * 10**100 > 1", "2 ** 8 > 1", "array.rows + 'x'", "x" * 2000, "",
    "array.rows > 1 " + "and array.rows > 1 " * 150, "1 if true else 2", "{1: 2}",
    "array.rows < 8 and array.rows > 8",
]


def case_sweep(rng: random.Random, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from accelsim.analysis.sweep import load_results, load_spec, plan_sweep, sweep

    tr = write_tiny_trace(rng, tmp / "tr")
    keys = {"array.rows": [2, 4, 8, 16], "array.cols": [2, 4, 8], "zero_policy":
            ["none", "skip_a", "skip_both"], "dataflow": ["os", "ws", "is"],
            "memory.dram.bandwidth_bytes_per_cycle": [1, 16, math.inf]}
    grid = {}
    for k in rng.sample(sorted(keys), rng.randint(1, 3)):
        grid[k] = rng.sample(keys[k], rng.randint(1, len(keys[k])))
    spec: dict[str, Any] = {"name": "fz", "base": "sparse_os_16x16", "traces": [str(tr)],
                            "grid": grid}
    if rng.random() < 0.5:
        spec["constraints"] = rng.sample(CONSTRAINTS, rng.randint(1, 2))
    if rng.random() < 0.3:
        spec["sample"] = {"method": rng.choice(["random", "lhs", "sobol"]),
                          "n": rng.choice([1, 2, 5, 10**9, 0]), "seed": rng.choice([0, 1, -1])}
    if rng.random() < 0.2:
        spec["grid"] = {"array.rows": list(range(1, 101)), "array.cols": list(range(1, 101)),
                        "macs_per_pe" if rng.random() < 0.5 else "array.macs_per_pe":
                            list(range(1, 60))}
        spec["sample"] = {"method": "random", "n": 5}
        spec["constraints"] = ["array.rows < 1"]
    if rng.random() < 0.4:
        spec = mutate_doc(rng, spec, n=rng.randint(1, 2))
    text = dump(spec)
    if rng.random() < 0.15:
        text = corrupt_text(rng, text)
    p = tmp / "spec.yaml"
    p.write_bytes(text)
    loaded = load_spec(p)
    plan = plan_sweep(loaded)
    if len(plan.points) > 3:
        return
    out = tmp / "res"
    points = out / "points"
    points.mkdir(parents=True)
    for pt in plan.points[: rng.randint(0, 2)]:
        f = points / f"{pt.point_id}.parquet"
        k = rng.randrange(4)
        if k == 0:
            f.write_bytes(b"PAR1 not really")
        elif k == 1:
            pq.write_table(pa.table({"x": [1, 2]}), f)
        elif k == 2:
            pq.write_table(pa.table({"point_id": ["other"], "status": ["ok"],
                                     "swept": [""]}), f)
        else:
            f.write_bytes(b"")
    if rng.random() < 0.3:
        (points / ".junk.parquet.accelsim-tmp.999999999.ab").write_bytes(b"x")
        pq.write_table(pa.table({"cycles": ["a string"], "point_id": ["zz"]}),
                       points / "zz.parquet")
    sweep(loaded, out, workers=1)
    df = load_results(out)
    check_numbers(df[df["status"] == "ok"] if "status" in df else df)


def case_cli(rng: random.Random, tmp: Path) -> tuple[int, str]:
    from accelsim.cli.main import main

    tr = write_tiny_trace(rng, tmp / "tr")
    loop = tmp / "loop"
    loop.symlink_to("loop")
    (tmp / "bin.yaml").write_bytes(EVIL_TEXTS[0](rng))
    ro = tmp / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    paths = [str(tr), str(tr), str(tmp / "nope"), str(loop), "~nosuchuser/x", "", "x" * 300,
             str(tmp / "bin.yaml"), "/dev/null", str(tr / "manifest.yaml")]
    outs = [str(tmp / "o.csv"), str(tmp / "o.json"), str(tmp / "o.txt"), "/nonexistent/o.csv",
            str(ro / "o.csv"), str(tmp), str(tmp / ("y" * 300 + ".csv"))]
    sub = rng.choice(["simulate", "simulate", "simulate", "inspect", "sweep", "plot", "bogus"])
    argv: list[str] = [sub]
    if sub in ("simulate", "inspect"):
        argv.append(rng.choice(paths))
        if sub == "simulate":
            argv += ["--hw", rng.choice(["sparse_os_16x16", "sparse_os_16x16",
                                         str(tmp / "bin.yaml"), str(loop), "~nosuchuser/h",
                                         "x" * 300, ""])]
            for _ in range(rng.randint(0, 2)):
                argv += ["--set", rng.choice(["array.rows=8", "zero_policy=skip_a",
                                              "array.rows=" + "[" * 2000, "a=b=c", "x",
                                              "memory.dram.bandwidth_bytes_per_cycle=1e-15",
                                              "delta.enabled=true", "structured.n=2",
                                              "array.rows=10**9", "clock_ghz=.nan"])]
            opt = rng.random()
            if opt < 0.2:
                argv += ["--columns", rng.choice(["cycles,layer", "nope", "", ",,,",
                                                  "x" * 5000])]
            elif opt < 0.35:
                argv += ["--show", rng.choice(["energy", "traffic", "delta", "wrong"])]
            elif opt < 0.5:
                argv += ["--prune", rng.choice(["nm:2:4", "nm:0:0", "nm:5:4",
                                                "nm:99999999999999999999:4", "x"])]
            elif opt < 0.6:
                argv += ["--max-memory", rng.choice(["1M", "64K", "4G", "-1", "1e400", "x",
                                                     "10P"])]
            elif opt < 0.7:
                argv.append(rng.choice(["--per-frame", "--all-columns", "--functional"]))
        if rng.random() < 0.4:
            argv += ["-o", rng.choice(outs)]
    elif sub == "sweep":
        spec = tmp / "s.yaml"
        spec.write_text(yaml.safe_dump({"base": "sparse_os_16x16", "traces": [str(tr)],
                                        "grid": {"array.rows": [4, 8]}}))
        argv += [rng.choice([str(spec), str(spec), str(loop), str(tmp / "bin.yaml")]),
                 "-o", rng.choice([str(tmp / "res"), str(tmp / "res"), str(ro / "r"),
                                   "/dev/null/x"]), "--no-progress", "--workers", "1"]
        if rng.random() < 0.5:
            argv.append("--dry-run")
    elif sub == "plot":
        res = tmp / "res.csv"
        res.write_text(rng.choice(["layer,cycles\nA,1\n", "garbage\x00", "a,b\n1,2\n"]))
        argv += [rng.choice([str(res), str(tmp / "nope"), str(loop)]),
                 "--kind", rng.choice(["cycles", "pareto", "energy", "heatmap", "x"]),
                 "-o", rng.choice([str(tmp / "p.png"), "/nonexistent/p.png", str(ro / "p.png"),
                                   str(tmp / "p.xyz"), str(tmp)]),
                 "--dpi", rng.choice(["1", "100", "10000", "x", "72"])]
    if rng.random() < 0.1:
        argv.insert(rng.randrange(len(argv) + 1), rng.choice(["--bogus", "-o", "--hw", "\x00"]))
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    finally:
        os.chmod(ro, 0o700)
    return rc, err.getvalue()


CASES: dict[str, Callable[[random.Random, Path], Any]] = {
    "hwconfig": case_hwconfig, "trace": case_trace, "energy": case_energy,
    "sweep": case_sweep, "cli": case_cli,
}


# ============================================================================ running

def _on_alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def classify_cli(rc: int, err: str) -> tuple[str, str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 0:
        return "ok", ""
    if rc == 3 or any("internal error" in ln for ln in lines):
        return "internal error", lines[-1] if lines else f"exit {rc}"
    if rc == 2:
        errs = [ln for ln in lines if ln.startswith("accelsim: error:")]
        usage = [ln for ln in lines if "error:" in ln and ln.startswith(("usage", "accelsim"))
                 or ln.startswith("accelsim ") and ": error: " in ln]
        if len(errs) == 1 and len(errs[0]) <= MAX_MESSAGE:
            return "clean error", errs[0]
        if not errs and usage:
            return "clean error", usage[-1]  # argparse: usage lines + one error line
        return "internal error", f"exit 2 with {len(lines)} stderr lines"
    return "internal error", f"exit {rc}: {lines[-1] if lines else ''}"


def run_case(family: str, seed: int, time_limit: float = TIME_LIMIT_S) -> Result:
    """Run one case in this process and classify it (never raises, but for hangs of
    C code that ignores signals, which the runner's process timeout catches)."""
    from accelsim.errors import AccelsimError

    rng = random.Random(f"{family}:{seed}")
    old = signal.signal(signal.SIGALRM, _on_alarm)
    old_prof = signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, time_limit)
    signal.setitimer(signal.ITIMER_REAL, time_limit * WALL_FACTOR)
    try:
        with tempfile.TemporaryDirectory(prefix="accelsim-fuzz-") as d, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ret = CASES[family](rng, Path(d))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.setitimer(signal.ITIMER_PROF, 0)
        if family == "cli":
            rc, err = ret
            outcome, detail = classify_cli(rc, err)
            return Result(family, seed, outcome, detail)
        return Result(family, seed, "ok")
    except _Hang:
        return Result(family, seed, "hang", f"over {time_limit} s")
    except AccelsimError as e:
        msg = str(e)
        if "\n" in msg or len(msg) > MAX_MESSAGE or not msg:
            return Result(family, seed, "internal error",
                          f"bad message: {len(msg)} chars, {msg.count(chr(10)) + 1} lines")
        return Result(family, seed, "clean error", msg)
    except Exception as e:  # noqa: BLE001 - the harness records every failure
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if "accelsim" in f.filename and "fuzz" not in f.filename), "?")
        return Result(family, seed, "traceback",
                      f"{type(e).__name__} at {where}: {' '.join(str(e).split())[:200]}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGPROF, old_prof)


def summary_table(results: list[Result]) -> str:
    """The issue's table: family, cases, ok, clean error, traceback, internal error,
    hang; one row per family and a total."""
    head = "| family | cases | " + " | ".join(OUTCOMES) + " |"
    rows = [head, "|" + "---|" * (len(OUTCOMES) + 2)]
    tot = dict.fromkeys(OUTCOMES, 0)
    n_all = 0
    for fam in FAMILIES:
        rs = [r for r in results if r.family == fam]
        if not rs:
            continue
        counts = {o: sum(r.outcome == o for r in rs) for o in OUTCOMES}
        for o in OUTCOMES:
            tot[o] += counts[o]
        n_all += len(rs)
        rows.append(f"| {LABELS[fam]} | {len(rs):,} | "
                    + " | ".join(f"{counts[o]:,}" for o in OUTCOMES) + " |")
    rows.append(f"| **total** | **{n_all:,}** | "
                + " | ".join(f"**{tot[o]:,}**" for o in OUTCOMES) + " |")
    return "\n".join(rows)
