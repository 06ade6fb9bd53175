"""Mapping at the global buffer: a loop order over (m, n, k) at the DRAM -> GLB level and
a GLB tile (Tm, Tn, Tk); its legality, its DRAM traffic by the reuse rule, and the order
in which it visits the array's folds (``docs/memory-model.md``, "Mapping at the global
buffer"). The array level stays fixed by the dataflow.

:func:`tile_stats` gathers, once per layer, what a mapping is priced from (the nonzero
masks in fiber layout, the formats, the partitions, the fold grid); :func:`price_mapping`
prices any mapping from them without re-simulating the layer, and
:func:`choose_mapping` resolves the configured mapping (``auto`` tiles by halving).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from accelsim.errors import SimulationError
from accelsim.io.hwconfig import HwConfig
from accelsim.io.trace import Layer, conv_out_size
from accelsim.model.kernels import block_nnz_rle

DIMS = "mnk"
#: the dimension a fold streams in time (os: k, ws: m, is: n)
TEMPORAL = {"os": "k", "ws": "m", "is": "n"}
#: loop order of ``loop_order: auto``, outer to inner (today's loop nest)
DEFAULT_ORDER = {"os": "mnk", "ws": "nmk", "is": "mnk"}
#: the fold grid in memory order: (outer dim, inner dim) per dataflow
FOLD_DIMS = {"os": ("m", "n"), "ws": ("n", "k"), "is": ("m", "k")}
#: the dims that index each operand
OPERAND_DIMS = {"a": "mk", "w": "nk", "out": "mn"}
_KEY = {"a": "a_kib", "w": "w_kib", "out": "out_kib"}
_WHAT = {"a": "A", "w": "W", "out": "partial-sum"}


@dataclass(frozen=True)
class Mapping:
    """A resolved mapping: ``order`` outer to inner, ``tile`` (Tm, Tn, Tk) in elements."""

    order: str
    tile: tuple[int, int, int]

    def t(self, d: str) -> int:
        return self.tile[DIMS.index(d)]


@dataclass
class TileStats:
    """Everything a mapping of one layer is priced from (computed once per layer)."""

    layer: str
    hw_name: str
    dataflow: str
    extent: dict[str, int]  # m, n, k: the GEMM's dims
    unit: dict[str, int]  # fold extent along each dim (1 for the temporal dim)
    nblocks: dict[str, int]  # folds along each array dim (the fold grid)
    nm: bool  # N:M weights: the k tile is always the full K
    caps: dict[str, int]  # partition bytes: a, w, out (out less any delta state)
    mult: int  # 2 under double buffering, else 1
    out_bits: int
    nf: int
    npf: int
    active: np.ndarray  # [F, P]
    w_layer_scope: bool  # weights may stay across frames (not matmul, frames > 1)
    pool: int | None = None  # shared GLB: bytes of the one pool (None: partitions)
    windows: ConvWindows | None = None  # convolutions: the A tiles' input windows
    _a: object = None  # callable (Tm, Tk) -> (data, meta) [F, P, tm, tk]
    _w: object = None  # callable (Tn, Tk) -> (data, meta) [Fw|1, P|1, tn, tk]
    _memo: dict = field(default_factory=dict)

    def a_tiles(self, tm: int, tk: int) -> tuple[np.ndarray, np.ndarray]:
        key = ("a", tm, tk)
        if key not in self._memo:
            self._memo[key] = self._a(tm, tk)
        return self._memo[key]

    def w_tiles(self, tn: int, tk: int) -> tuple[np.ndarray, np.ndarray]:
        key = ("w", tn, tk)
        if key not in self._memo:
            self._memo[key] = self._w(tn, tk)
        return self._memo[key]


def _bytes(bits):
    return (np.asarray(bits, np.int64) + 7) // 8


def _extents(total: int, block: int) -> np.ndarray:
    n = -(-total // block)
    e = np.full(n, block, np.int64)
    e[-1] = total - block * (n - 1)
    return e


def trips(stats: TileStats, mp: Mapping) -> dict[str, int]:
    return {d: -(-stats.extent[d] // mp.t(d)) for d in DIMS}


def reuse_factor(order: str, t: dict[str, int], dims: str) -> int | None:
    """Timeloop's reuse rule: how often each tile of an operand indexed by ``dims`` is
    fetched, the product of the trips of the loops above its innermost indexing loop
    that has more than one trip and that do not index it; None when no indexing loop
    has more than one trip (one tile, fetched once)."""
    idx = [i for i, d in enumerate(order) if d in dims and t[d] > 1]
    if not idx:
        return None
    return math.prod(t[d] for d in order[:idx[-1]] if d not in dims)


def psum_to_dram(order: str, t: dict[str, int]) -> bool:
    """Partial sums leave the GLB when k is iterated above the output tile's innermost
    indexing loop (with more than one trip)."""
    if t["k"] <= 1:
        return False
    idx = [i for i, d in enumerate(order) if d in "mn" and t[d] > 1]
    return bool(idx) and order.index("k") < idx[-1]


def psum_tiles(stats: TileStats, mp: Mapping) -> np.ndarray:
    """Bytes of every output tile at ``out_bits``: [tm, tn]."""
    em = _extents(stats.extent["m"], mp.t("m"))[:, None]
    en = _extents(stats.extent["n"], mp.t("n"))[None, :]
    return _bytes(em * en * stats.out_bits)


def op_mult(stats: TileStats, t: dict[str, int], op: str) -> int:
    """2 under double buffering when the operand has more than one tile in a GEMM (the
    next one is fetched while the current one is used), else 1."""
    if math.prod(t[d] for d in OPERAND_DIMS[op]) > 1:
        return stats.mult
    return 1


def needs(stats: TileStats, mp: Mapping) -> dict[str, int]:
    """Bytes each partition must hold: the largest real A and W tile (data + metadata),
    doubled under double buffering when the operand has more than one tile; the live
    partial sums: the output tile when Tk < K, else (ws, is) the largest fold block of
    partial sums inside the tile, (os) none."""
    ad, am = stats.a_tiles(mp.t("m"), mp.t("k"))
    wd, wm = stats.w_tiles(mp.t("n"), mp.t("k"))
    t = trips(stats, mp)
    out = {"a": int((ad + am).max(initial=0)) * op_mult(stats, t, "a"),
           "w": int((wd + wm).max(initial=0)) * op_mult(stats, t, "w")}
    tm, tn, tk = mp.tile
    if tk < stats.extent["k"]:
        out["out"] = int(-(-tm * tn * stats.out_bits // 8))
    elif stats.dataflow == "ws":
        out["out"] = int(-(-tm * min(tn, stats.unit["n"]) * stats.out_bits // 8))
    elif stats.dataflow == "is":
        out["out"] = int(-(-min(tm, stats.unit["m"]) * tn * stats.out_bits // 8))
    else:
        out["out"] = 0
    return out


def violation(stats: TileStats, mp: Mapping) -> tuple[str, int] | None:
    """The first operand (a, w, out) whose need exceeds its partition, with the need;
    with a shared GLB, when the needs together exceed the pool, the operand of the
    largest need (the first of a, w, out on ties)."""
    need = needs(stats, mp)
    if stats.pool is not None:
        if sum(need.values()) <= stats.pool:
            return None
        op = max(("a", "w", "out"), key=lambda o: (need[o], -"a w out".split().index(o)))
        return op, need[op]
    for op in ("a", "w", "out"):
        if need[op] > stats.caps[op]:
            return op, need[op]
    return None


def illegal_message(stats: TileStats, mp: Mapping, op: str, need: int,
                    hw: HwConfig) -> str:
    glb = hw.memory.glb
    kib = getattr(glb, _KEY[op])
    mult = op_mult(stats, trips(stats, mp), op) if op != "out" else 1
    if stats.pool is not None:
        need = needs(stats, mp)
        return (f"layer {stats.layer!r}: {stats.hw_name}: mapping {mp.order} "
                f"[{mp.tile[0]}, {mp.tile[1]}, {mp.tile[2]}]: the A, W and partial-sum "
                f"tiles need {need['a']} + {need['w']} + {need['out']} bytes (doubled where "
                f"swapped), more than the shared GLB (memory.glb.shared: a_kib + w_kib + "
                f"out_kib = {glb.a_kib + glb.w_kib + glb.out_kib:g} KiB, {stats.pool} "
                f"bytes available)")
    twice = " (x2, double buffering)" if mult == 2 else ""
    size = need // mult
    return (f"layer {stats.layer!r}: {stats.hw_name}: mapping {mp.order} "
            f"[{mp.tile[0]}, {mp.tile[1]}, {mp.tile[2]}]: the largest {_WHAT[op]} tile, "
            f"{size} bytes{twice}, does not fit memory.glb.{_KEY[op]} = {kib:g} KiB "
            f"({stats.caps[op]} bytes available)")


def price_mapping(stats: TileStats, mp: Mapping) -> dict[str, int]:
    """DRAM traffic of mapping ``mp`` (docs/memory-model.md, "Reuse rule"), summed over
    the layer's active GEMMs, and what each partition must hold: a dict of
    ``dram_{a,w}_read[_meta]_bytes``, ``dram_psum_{read,write}_bytes``, ``dram_bytes``,
    ``need_{a,w,out}_bytes`` and ``legal`` (1 or 0)."""
    t = trips(stats, mp)
    on = stats.active[:, :, None, None]
    out: dict[str, int] = {}
    if stats.windows is None:  # A tiles are disjoint: the reuse rule in closed form
        ad, am = stats.a_tiles(mp.t("m"), mp.t("k"))
        fa = reuse_factor(mp.order, t, OPERAND_DIMS["a"]) or 1
        out["dram_a_read_bytes"] = int(np.where(on, ad, 0).sum()) * fa
        out["dram_a_read_meta_bytes"] = int(np.where(on, am, 0).sum()) * fa
    else:  # windows overlap: the overlap with the held tile stays in the GLB
        ad, am = a_fetches(stats, mp, tile_sequence(stats, mp))
        on3 = stats.active[:, :, None]
        out["dram_a_read_bytes"] = int(np.where(on3, ad, 0).sum())
        out["dram_a_read_meta_bytes"] = int(np.where(on3, am, 0).sum())
    wd, wm = w_fetched(stats, mp)
    out["dram_w_read_bytes"] = int(wd.sum())
    out["dram_w_read_meta_bytes"] = int(wm.sum())
    ps = 0
    if psum_to_dram(mp.order, t):
        ps = int(psum_tiles(stats, mp).sum()) * (t["k"] - 1) * int(stats.active.sum())
    out["dram_psum_read_bytes"] = out["dram_psum_write_bytes"] = ps
    out["dram_bytes"] = sum(out.values())
    need = needs(stats, mp)
    for op in ("a", "w", "out"):
        out[f"need_{op}_bytes"] = need[op]
    out["legal"] = int(violation(stats, mp) is None)
    return out


def w_resident_layer(stats: TileStats, mp: Mapping) -> bool:
    """The W tile is the whole W and the W of every group fits the partition together
    (never swapped, so not doubled): the weights stay for the layer's frames, read by
    frame 0 only."""
    if not stats.w_layer_scope:
        return False
    t = trips(stats, mp)
    if t["n"] > 1 or t["k"] > 1:
        return False
    wd, wm = stats.w_tiles(mp.t("n"), mp.t("k"))
    one = np.broadcast_to((wd + wm)[:1].sum(axis=(2, 3)), (1, stats.npf))
    if stats.pool is not None:  # beside the A and partial-sum tiles
        need = needs(stats, mp)
        return int(one.sum()) + need["a"] + need["out"] <= stats.pool
    return int(one.sum()) <= stats.caps["w"]


def w_fetched(stats: TileStats, mp: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """DRAM W bytes per GEMM [F, P] (data, meta) under the reuse rule and the layer
    residency of weights across frames."""
    t = trips(stats, mp)
    fw = reuse_factor(mp.order, t, OPERAND_DIMS["w"]) or 1
    wd, wm = stats.w_tiles(mp.t("n"), mp.t("k"))
    shape = (stats.nf, stats.npf)
    d = np.broadcast_to(wd.sum(axis=(2, 3)), shape) * fw
    m = np.broadcast_to(wm.sum(axis=(2, 3)), shape) * fw
    keep = stats.active.copy()
    if w_resident_layer(stats, mp):
        keep[1:] = False
    return np.where(keep, d, 0), np.where(keep, m, 0)


def tile_sequence(stats: TileStats, mp: Mapping) -> np.ndarray:
    """The GLB tiles' (m, n, k) indices in loop order: [T, 3]."""
    t = trips(stats, mp)
    rows = []
    for combo in itertools.product(*(range(t[d]) for d in mp.order)):
        idx = dict(zip(mp.order, combo, strict=True))
        rows.append((idx["m"], idx["n"], idx["k"]))
    return np.array(rows, np.int64).reshape(-1, 3)


def _changed(tile_idx: np.ndarray, dims: str) -> np.ndarray:
    sub = tile_idx[:, [DIMS.index(d) for d in dims]]
    out = np.ones(len(sub), bool)
    out[1:] = (sub[1:] != sub[:-1]).any(axis=1)
    return out


def a_fetches(stats: TileStats, mp: Mapping,
              tile_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DRAM A bytes (data, meta) [F, P, T] per tile iteration: where the A tile changes,
    the tile, less (convolutions) the elements of the tile held before it."""
    tm, tk = mp.t("m"), mp.t("k")
    ad, am = stats.a_tiles(tm, tk)
    fetch = _changed(tile_idx, "mk")
    if stats.windows is None:
        return (ad[:, :, tile_idx[:, 0], tile_idx[:, 2]] * fetch,
                am[:, :, tile_idx[:, 0], tile_idx[:, 2]] * fetch)
    win = stats.windows
    m, k = stats.extent["m"], stats.extent["k"]
    shape = ad.shape[:2] + (len(tile_idx),)
    d_out = np.zeros(shape, np.int64)
    m_out = np.zeros(shape, np.int64)
    memo: dict = {}
    held = None
    for s in np.flatnonzero(fetch):
        im, ik = int(tile_idx[s, 0]), int(tile_idx[s, 2])
        key = (held, (im, ik))
        if key not in memo:
            new = win.touched(im * tm, min(m, (im + 1) * tm), ik * tk, min(k, (ik + 1) * tk))
            if held is not None:
                hm, hk = held
                old = win.touched(hm * tm, min(m, (hm + 1) * tm), hk * tk,
                                  min(k, (hk + 1) * tk))
                new = new & ~old
            memo[key] = win.size_of(new)
        d_out[:, :, s], m_out[:, :, s] = memo[key]
        held = (im, ik)
    return d_out, m_out


# --------------------------------------------------------------------------- choosing


def start_tile(stats: TileStats) -> tuple[int, int, int]:
    """The tile ``auto`` starts from: the whole GEMM (M, N, K)."""
    return tuple(stats.extent[d] for d in DIMS)


def _halve(stats: TileStats, d: str, v: int) -> int:
    """One halving step of tile size ``v`` along ``d``, in fold units (temporal: 1)."""
    u = stats.unit[d]
    nb = -(-v // u)
    return ((nb + 1) // 2) * u


def _can_shrink(stats: TileStats, d: str, v: int) -> bool:
    if stats.nm and d == "k":
        return False
    return v > stats.unit[d]


def auto_tile(stats: TileStats, order: str, hw: HwConfig) -> Mapping:
    """The largest legal tile found by halving from the whole GEMM: while some
    operand (A, W, then partial sums) does not fit, halve one of the dims that index it,
    array dims before the temporal dim and, among those, the innermost in ``order``
    first, preferring a dim whose halving lowers that operand's need. A layer with no
    legal tile is a one-line :class:`SimulationError`."""
    mp = Mapping(order, start_tile(stats))
    temporal = TEMPORAL[stats.dataflow]
    while True:
        bad = violation(stats, mp)
        if bad is None:
            return mp
        op, need = bad
        cands = [d for d in reversed(order) if d in OPERAND_DIMS[op] and d != temporal]
        cands += [temporal] if temporal in OPERAND_DIMS[op] else []
        cands = [d for d in cands if _can_shrink(stats, d, mp.t(d))]
        if not cands:
            raise SimulationError(illegal_message(stats, mp, op, need, hw)
                                  + "; no smaller legal GLB tile")
        pick = None
        for d in cands:
            tile = list(mp.tile)
            tile[DIMS.index(d)] = _halve(stats, d, mp.t(d))
            trial = Mapping(order, tuple(tile))
            if needs(stats, trial)[op] < need:
                pick = trial
                break
        if pick is None:
            d = cands[0]
            tile = list(mp.tile)
            tile[DIMS.index(d)] = _halve(stats, d, mp.t(d))
            pick = Mapping(order, tuple(tile))
        mp = pick


def pinned_tile(stats: TileStats, order: str, spec, hw: HwConfig) -> Mapping:
    """A configured [Tm, Tn, Tk]: ``full`` or a size >= the dim is the full dim; an
    array dim's size must be a multiple of its fold extent; with N:M weights Tk is
    the full K. An illegal tile is a one-line :class:`SimulationError`."""
    tile = []
    for d, v in zip(DIMS, spec, strict=True):
        e = stats.extent[d]
        v = e if v == "full" else min(int(v), e)
        if v < e and v % stats.unit[d]:
            raise SimulationError(
                f"layer {stats.layer!r}: {hw.name}: mapping.glb_tile: T{d} = {v} is not a "
                f"multiple of the fold extent {stats.unit[d]} along {d} (nor the full "
                f"{d} = {e})")
        if v < e and stats.nm and d == "k":
            raise SimulationError(
                f"layer {stats.layer!r}: {hw.name}: mapping.glb_tile: Tk = {v} < K = {e} "
                f"is not modelled with N:M weights (use full)")
        tile.append(v)
    mp = Mapping(order, tuple(tile))
    bad = violation(stats, mp)
    if bad is not None:
        raise SimulationError(illegal_message(stats, mp, *bad, hw))
    return mp


def fixed_mapping(stats: TileStats, hw: HwConfig) -> Mapping:
    """The mapping of ``search: fixed``: ``loop_order`` and ``glb_tile`` as configured,
    auto tiles by halving."""
    cfg = hw.mapping
    order = DEFAULT_ORDER[stats.dataflow] if cfg.loop_order == "auto" else cfg.loop_order
    if cfg.glb_tile == "auto":
        return auto_tile(stats, order, hw)
    return pinned_tile(stats, order, cfg.glb_tile, hw)


def candidate_sizes(stats: TileStats, d: str) -> list[int]:
    """The tile sizes the search tries along ``d``: the fold extent times powers of two
    below the dim, then the dim itself (N:M weights: K only)."""
    e, u = stats.extent[d], stats.unit[d]
    out = []
    if not (stats.nm and d == "k"):
        v = u
        while v < e:
            out.append(v)
            v *= 2
    return out + [e]


def _search_space(stats: TileStats, hw: HwConfig) -> tuple[tuple[str, ...], list[list[int]]]:
    """The loop orders and the per-dim tile sizes a search walks: a pinned
    ``loop_order`` or ``glb_tile`` is kept as set."""
    from accelsim.io.hwconfig import LOOP_ORDERS

    cfg = hw.mapping
    orders = LOOP_ORDERS if cfg.loop_order == "auto" else (cfg.loop_order,)
    if cfg.glb_tile == "auto":
        sizes = [candidate_sizes(stats, d) for d in DIMS]
    else:
        sizes = [[stats.extent[d] if v == "full" else min(int(v), stats.extent[d])]
                 for d, v in zip(DIMS, cfg.glb_tile, strict=True)]
    return tuple(orders), sizes


def candidates(stats: TileStats, hw: HwConfig) -> list[Mapping]:
    """The search's candidates in canonical order (loop orders as in
    :data:`~accelsim.io.hwconfig.LOOP_ORDERS`, then Tm, Tn, Tk ascending); a pinned
    ``loop_order`` or ``glb_tile`` is kept as set."""
    orders, sizes = _search_space(stats, hw)
    return [Mapping(o, tile) for o in orders for tile in itertools.product(*sizes)]


def maximal_candidates(stats: TileStats, hw: HwConfig) -> list[Mapping]:
    """The candidates ``exhaustive`` prices: every loop order x the maximal legal tiles
    of the candidate set (a legal tile no other legal candidate tile contains). A tile
    inside a larger one of the set (sizes along each dim nest: the fold extent doubling,
    then the dim) never moves fewer DRAM bytes under the same order (no more trips, no
    more reuse factor, no more partial-sum passes, no more convolution halo), so the
    others cannot win; legality is monotone the same way, so along Tm the largest legal
    size is found walking down from the dim. (Bytes are rounded up per tile, and csr /
    coo pay per fiber of a tile, so smaller tiles only add; RLE is not monotone and is
    searched without pruning.) The reference model prices every candidate."""
    orders, sizes = _search_space(stats, hw)

    def legal(tile) -> bool:
        return violation(stats, Mapping(orders[0], tile)) is None

    top = []
    sm = sizes[0]
    found: dict[tuple[int, int], int] = {}  # (n, k size index) -> largest legal Tm index
    for j in reversed(range(len(sizes[1]))):
        for i in reversed(range(len(sizes[2]))):
            # a tile inside a legal one is legal: Tm below the bound is dominated
            bound = max(found.get((j + 1, i), -1), found.get((j, i + 1), -1))
            found[(j, i)] = bound
            for x in reversed(range(bound + 1, len(sm))):  # large tiles size cheaply
                if legal((sm[x], sizes[1][j], sizes[2][i])):
                    found[(j, i)] = x
                    top.append((sm[x], sizes[1][j], sizes[2][i]))
                    break
    maximal = [t for t in top if not any(u != t and all(a >= b for a, b in zip(u, t, strict=True))
                                         for u in top)]
    return [Mapping(o, t) for o in orders for t in maximal]


def objective_value(priced: dict[str, int], objective: str, p: dict[str, float],
                    compute_cycles: int, hw: HwConfig) -> float:
    """What the search minimises for a priced mapping (docs/memory-model.md,
    "Searching"): ``energy`` = DRAM bytes x the DRAM price + A and W fill bytes x the GLB
    write prices (pJ; the rest of the energy does not depend on the mapping);
    ``cycles`` = compute + DRAM transfer cycles, or their maximum under double
    buffering; ``edp`` = their product."""
    fill_a = priced["dram_a_read_bytes"] + priced["dram_a_read_meta_bytes"]
    fill_w = priced["dram_w_read_bytes"] + priced["dram_w_read_meta_bytes"]
    energy = priced["dram_bytes"] * p["dram"] + fill_a * p["glb_a_write"] \
        + fill_w * p["glb_w_write"]
    xfer = math.ceil(priced["dram_bytes"] / hw.memory.dram.bandwidth_bytes_per_cycle)
    cycles = max(compute_cycles, xfer) if hw.memory.glb.double_buffer \
        else compute_cycles + xfer
    return {"energy": energy, "cycles": float(cycles),
            "edp": energy * cycles}[objective]


def tie_key(mp: Mapping, dataflow: str) -> tuple:
    """Ties go to the dataflow's default loop order, then the larger tile (volume, then
    Tm, Tn, Tk), then the earlier loop order."""
    from accelsim.io.hwconfig import LOOP_ORDERS

    return (mp.order != DEFAULT_ORDER[dataflow], -math.prod(mp.tile),
            tuple(-v for v in mp.tile), LOOP_ORDERS.index(mp.order))


#: seed of ``search: random:N``
SEARCH_SEED = 0


def sample(n_cands: int, n: int) -> list[int]:
    """Indices (ascending) of the ``random:N`` candidates among ``n_cands``."""
    if n >= n_cands:
        return list(range(n_cands))
    rng = np.random.default_rng(SEARCH_SEED)
    return sorted(int(i) for i in rng.choice(n_cands, size=n, replace=False))


def choose_mapping(stats: TileStats, hw: HwConfig, compute_cycles: int = 0) -> Mapping:
    """The mapping ``hw.mapping`` asks for on this layer: the fixed one, or the legal
    candidate (the fixed one among them) of least objective. ``compute_cycles``: the
    layer's compute cycles (for the cycles objective)."""
    kind, num = hw.mapping.search_kind()
    fixed = None
    try:
        fixed = fixed_mapping(stats, hw)
    except SimulationError:
        if kind == "fixed" or hw.mapping.glb_tile != "auto":
            raise
    if kind == "fixed":
        return fixed
    if kind == "random":
        cands = candidates(stats, hw)
        cands = [cands[i] for i in sample(len(cands), num)]
    elif "rle" in (hw.formats.a.kind, hw.formats.w.kind):
        # RLE sizes are not monotone in the tile (a run split at a tile edge can need
        # fewer overflow entries than the whole run): no pruning
        cands = candidates(stats, hw)
    else:
        cands = maximal_candidates(stats, hw)
    if fixed is not None:
        cands.append(fixed)
    from accelsim.model.energy import load_energy_table, prices

    p = prices(hw, load_energy_table(hw.energy))
    legal: dict[tuple[int, int, int], bool] = {}  # legality does not depend on the order
    best, best_key = None, None
    for mp in cands:
        if mp.tile not in legal:
            legal[mp.tile] = violation(stats, mp) is None
        if not legal[mp.tile]:
            continue
        value = objective_value(price_mapping(stats, mp), hw.mapping.objective, p,
                                compute_cycles, hw)
        key = (value,) + tie_key(mp, stats.dataflow)
        if best_key is None or key < best_key:
            best, best_key = mp, key
    if best is None:  # no legal candidate: the fixed mapping's error
        fixed_mapping(stats, hw)
    return best


# --------------------------------------------------------------------------- stats


def _format_tile_bytes(fmt, bits: int, nnz, numel, fibers, entries):
    from accelsim.model.memory import format_bits

    d, m = format_bits(fmt, bits, nnz, numel, fibers, entries)
    return _bytes(d), _bytes(m)


class BlockSums:
    """Nonzeros of a [B, X, Y] fiber-layout mask per block of ``ux`` x ``uy`` elements
    (the array's fold extents; 1 along the temporal dim), as 2-D prefix sums: the
    nonzeros of any GLB tile made of whole blocks (or reaching the edge) are four
    look-ups, so a mapping's tiles are priced without walking the mask again. RLE
    entries do not add up over blocks: those tiles are counted on the mask."""

    def __init__(self, mask3: np.ndarray, ux: int, uy: int) -> None:
        self.mask, self.ux, self.uy = mask3, ux, uy
        nnz, _ = block_nnz_rle(mask3, ux, uy, 0)
        nb, bx, by = nnz.shape
        self.prefix = np.zeros((nb, bx + 1, by + 1), np.int64)
        self.prefix[:, 1:, 1:] = nnz.cumsum(axis=1).cumsum(axis=2)

    def nnz(self, tx: int, ty: int) -> np.ndarray:
        """Nonzeros of every tx x ty tile: [B, ceil(X/tx), ceil(Y/ty)]."""
        nb, px, py = self.prefix.shape
        sx = px - 1 if tx >= self.mask.shape[1] else tx // self.ux
        sy = py - 1 if ty >= self.mask.shape[2] else ty // self.uy
        xs = np.minimum(np.arange(0, px - 1 + sx, sx), px - 1)
        ys = np.minimum(np.arange(0, py - 1 + sy, sy), py - 1)
        xs, ys = np.unique(xs), np.unique(ys)
        p = self.prefix[:, xs][:, :, ys]
        return p[:, 1:, 1:] - p[:, :-1, 1:] - p[:, 1:, :-1] + p[:, :-1, :-1]

    def tiles(self, tx: int, ty: int, fmt, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """(data, meta) bytes of every tx x ty tile (tx, ty whole blocks or the edge)."""
        nb, nx, ny = self.mask.shape
        rows = _extents(nx, tx)[:, None]
        cols = _extents(ny, ty)[None, :]
        numel = np.broadcast_to(rows * cols, (nb, rows.size, cols.size))
        if fmt.kind == "dense":
            nnz = entries = numel
        elif fmt.kind == "rle":
            nnz, entries = block_nnz_rle(self.mask, tx, ty, fmt.run_bits)
        else:
            nnz = entries = self.nnz(tx, ty)
        return _format_tile_bytes(fmt, bits, nnz, numel, rows, entries)


class ConvWindows:
    """The input elements the A GLB tiles of a convolution read. A tile holds the
    elements its im2col block reads (padding excluded), once each, stored in the input's
    order with fibers along its last axis; the index geometry is the same for every
    frame and group, the values are not."""

    def __init__(self, layer: Layer, x_mask: np.ndarray, fmt, bits: int) -> None:
        x = x_mask if layer.frames else x_mask[None]
        nf, nb, c = x.shape[:3]
        sp = x.shape[3:]
        g = layer.groups
        cg = c // g
        self.layer, self.fmt, self.bits = layer, fmt, bits
        self.ks = tuple(np.shape(layer.w)[2:])
        self.sp, self.nb, self.cg = sp, nb, cg
        self.outs = tuple(conv_out_size(sp[i], self.ks[i], layer.stride[i],
                                        layer.padding[i], layer.dilation[i])
                          for i in range(len(sp)))
        # per frame and group, the input in storage order [N, C/G, *sp] flattened
        self.xg = np.moveaxis(x.reshape((nf, nb, g, cg) + sp), 2, 1).reshape(nf, g, -1)
        self._touched: dict = {}
        self._tiles: dict = {}

    def touched(self, m0: int, m1: int, k0: int, k1: int) -> np.ndarray:
        """Boolean mask over a group's input: the elements im2col rows m0:m1, columns
        k0:k1 read. Rows are output positions (batch, *out) row-major and columns
        (channel, *kernel offset): a channel's touched positions are the union, over its
        kernel offsets in the column range, of the selected outputs shifted to the input
        (strided slices), so the cost is offsets x outputs, not the im2col block."""
        key = (m0, m1, k0, k1)
        if key in self._touched:
            return self._touched[key]
        kper = math.prod(self.ks)
        offsets = min(k1 - k0, 3 * kper)  # kernel offsets the strided path walks
        if (m1 - m0) * (k1 - k0) <= offsets * self.nb * math.prod(self.outs) + self.xg.shape[2]:
            out = self._enumerated(m0, m1, k0, k1)  # a small block: walk its pairs
        else:
            out = self._sliced(m0, m1, k0, k1)
        if len(self._touched) < 4096:
            self._touched[key] = out
        return out

    def _enumerated(self, m0: int, m1: int, k0: int, k1: int) -> np.ndarray:
        """touched() by walking the im2col block's (row, column) pairs."""
        lay, sp = self.layer, self.sp
        psp = math.prod(sp)
        sstride = [math.prod(sp[i + 1:]) for i in range(len(sp))]
        kk = np.arange(k0, k1)
        kc = np.unravel_index(kk, (self.cg,) + self.ks)
        out = np.zeros(self.xg.shape[2], bool)
        step = max(1, (1 << 22) // max(1, kk.size))
        for r0 in range(m0, m1, step):
            rr = np.arange(r0, min(m1, r0 + step))
            mo = np.unravel_index(rr, (self.nb,) + self.outs)
            flat = mo[0][:, None] * (self.cg * psp) + kc[0][None, :] * psp
            ok = np.ones((rr.size, kk.size), bool)
            for i in range(len(sp)):
                pos = (mo[i + 1][:, None] * lay.stride[i] - lay.padding[i]
                       + kc[i + 1][None, :] * lay.dilation[i])
                ok &= (pos >= 0) & (pos < sp[i])
                flat = flat + pos * sstride[i]
            out[flat[ok]] = True
        return out

    def _sliced(self, m0: int, m1: int, k0: int, k1: int) -> np.ndarray:
        """touched() from strided slices per kernel offset (a large block)."""
        out = np.zeros((self.nb, self.cg) + self.sp, bool)
        if m1 > m0 and k1 > k0:
            sel = np.zeros(self.nb * math.prod(self.outs), bool)
            sel[m0:m1] = True
            sel = sel.reshape((self.nb,) + self.outs)
            kper = math.prod(self.ks)
            c0, c1 = k0 // kper, (k1 - 1) // kper
            out[:, c0] = self._spatial(sel, k0 - c0 * kper, min(k1 - c0 * kper, kper))
            if c1 > c0:
                out[:, c1] = self._spatial(sel, 0, k1 - c1 * kper)
            if c1 > c0 + 1:
                out[:, c0 + 1:c1] = self._spatial(sel, 0, kper)[:, None]
        return out.reshape(-1)

    def _spatial(self, sel: np.ndarray, o0: int, o1: int) -> np.ndarray:
        """[nb, *sp] input positions that the selected outputs ``sel`` [nb, *out] read
        through the kernel offsets o0..o1 (row-major over the kernel)."""
        lay, sp = self.layer, self.sp
        res = np.zeros((self.nb,) + sp, bool)
        for o in range(o0, o1):
            kc = np.unravel_index(o, self.ks)
            src, dst = [slice(None)], [slice(None)]
            for i in range(len(sp)):
                st, pad, off = lay.stride[i], lay.padding[i], int(kc[i]) * lay.dilation[i]
                lo = max(0, -(-(pad - off) // st))  # first output whose input is >= 0
                hi = min(self.outs[i], (sp[i] - 1 + pad - off) // st + 1)
                if hi <= lo:
                    break
                start = lo * st - pad + off
                src.append(slice(lo, hi))
                dst.append(slice(start, start + (hi - lo - 1) * st + 1, st))
            else:
                res[tuple(dst)] |= sel[tuple(src)]
        return res

    def size_of(self, sel_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(data, meta) bytes [F, G] of the elements ``sel_mask`` selects, per frame and
        group, sized as one tile in storage order."""
        fmt = self.fmt
        sel = np.flatnonzero(sel_mask)
        vals = self.xg[:, :, sel]
        nnz = vals.sum(axis=-1, dtype=np.int64)
        numel = np.full(nnz.shape, sel.size, np.int64)
        fibers = np.full(nnz.shape, int(sel_mask.reshape(-1, self.sp[-1]).any(axis=1).sum()),
                         np.int64)
        entries = nnz.copy()
        if fmt.kind == "rle":
            for f in range(vals.shape[0]):
                for gi in range(vals.shape[1]):
                    pos = np.flatnonzero(vals[f, gi])
                    gaps = np.diff(pos, prepend=-1) - 1
                    entries[f, gi] = pos.size + int((gaps >> fmt.run_bits).sum())
        return _format_tile_bytes(fmt, self.bits, nnz, numel, fibers, entries)

    def tiles(self, m: int, k: int, tm: int, tk: int) -> tuple[np.ndarray, np.ndarray]:
        """(data, meta) bytes [F, G, tm tiles, tk tiles] of every A GLB tile."""
        hit = self._tiles.get((m, k, tm, tk))
        if hit is not None:
            return hit[0].copy(), hit[1].copy()
        me, ke = _extents(m, tm), _extents(k, tk)
        nf, g = self.xg.shape[:2]
        data = np.zeros((nf, g, me.size, ke.size), np.int64)
        meta = np.zeros_like(data)
        for im in range(me.size):
            for ik in range(ke.size):
                sel = self.touched(im * tm, im * tm + int(me[im]), ik * tk,
                                   ik * tk + int(ke[ik]))
                data[:, :, im, ik], meta[:, :, im, ik] = self.size_of(sel)
        if len(self._tiles) < 256:
            self._tiles[(m, k, tm, tk)] = (data.copy(), meta.copy())
        return data, meta


#: ConvWindows of read-only masks (a sweep worker's cached operands,
#: accelsim.model.reuse), kept across calls: what they compute depends only on the
#: mask, the layer's geometry and the A format. Keyed by the mask object, which each
#: entry holds (so its id is not reused) and which cannot change (read-only).
_WINDOWS: OrderedDict = OrderedDict()
_WINDOWS_MAX = 16


def conv_windows(layer: Layer, x_mask: np.ndarray, fmt, bits: int) -> ConvWindows:
    if x_mask.flags.writeable:
        return ConvWindows(layer, x_mask, fmt, bits)
    key = (id(x_mask), layer.kind, layer.frames, tuple(layer.stride), tuple(layer.padding),
           tuple(layer.dilation), layer.groups, tuple(np.shape(layer.w)), fmt, bits)
    hit = _WINDOWS.get(key)
    if hit is not None and hit[0] is x_mask:
        _WINDOWS.move_to_end(key)
        return hit[1]
    win = ConvWindows(layer, x_mask, fmt, bits)
    _WINDOWS[key] = (x_mask, win)
    while len(_WINDOWS) > _WINDOWS_MAX:
        _WINDOWS.popitem(last=False)
    return win


def tile_stats(layer: Layer, az: np.ndarray, wz: np.ndarray, hw: HwConfig, *, rows: int,
               cols: int, a_bits: int, a_mask: np.ndarray | None, nm, active: np.ndarray,
               out_cap: int) -> TileStats:
    """The statistics a mapping of ``layer`` is priced from. ``az`` [F, P, M, K] and
    ``wz`` [Fw, P, K, N] are the nonzero masks (as in :func:`simulate_memory`)."""
    from accelsim.model.memory import _nm_bytes

    nf, npf, m, k = az.shape
    n = wz.shape[-1]
    df = hw.dataflow
    kk = nm.k_kept if nm is not None else k
    unit = {"os": {"m": rows, "n": cols, "k": 1}, "ws": {"m": 1, "n": cols, "k": rows},
            "is": {"m": cols, "n": 1, "k": rows}}[df]
    extent = {"m": m, "n": n, "k": k}
    nblocks = {d: -(-extent[d] // unit[d]) for d in DIMS}
    if df == "ws":
        nblocks["k"] = -(-kk // rows)  # folds along K' with N:M
    fa, fw = hw.formats.a, hw.formats.w
    glb = hw.memory.glb
    az3 = az.reshape((-1,) + az.shape[-2:])
    wt3 = np.swapaxes(wz, -1, -2).reshape((-1, n, k))
    fwn = wz.shape[0]
    is_conv = layer.kind in ("conv1d", "conv2d", "conv3d")
    windows = None
    if is_conv:
        windows = conv_windows(layer, (np.asarray(layer.a) != 0) if a_mask is None
                              else a_mask, fa, a_bits)

    sums = {}

    def blocks(op: str) -> BlockSums:  # built once per layer, on first use
        if op not in sums:
            sums[op] = (BlockSums(az3, unit["m"], unit["k"]) if op == "a"
                        else BlockSums(wt3, unit["n"], unit["k"]))
        return sums[op]

    def a_fn(tm: int, tk: int):
        if windows is not None:
            return windows.tiles(m, k, tm, tk)
        d, mt = blocks("a").tiles(tm, tk, fa, a_bits)
        return d.reshape((nf, npf) + d.shape[1:]), mt.reshape((nf, npf) + mt.shape[1:])

    def w_fn(tn: int, tk: int):
        if nm is not None:
            d, mt = _nm_bytes(kk * _extents(n, tn), hw, nm)
            return d.reshape(1, 1, -1, 1), mt.reshape(1, 1, -1, 1)
        d, mt = blocks("w").tiles(tn, tk, fw, hw.precision.w_bits)
        return d.reshape((fwn, npf) + d.shape[1:]), mt.reshape((fwn, npf) + mt.shape[1:])

    return TileStats(
        layer=layer.name, hw_name=hw.name, dataflow=df, extent=extent, unit=unit,
        nblocks=nblocks, nm=nm is not None,
        caps={"a": int(glb.a_kib * 1024), "w": int(glb.w_kib * 1024), "out": int(out_cap)},
        mult=2 if glb.double_buffer else 1, out_bits=hw.precision.out_bits, nf=nf,
        npf=npf, active=np.asarray(active, bool),
        w_layer_scope=layer.kind != "matmul" and nf > 1, windows=windows, _a=a_fn,
        _w=w_fn, pool=(int(glb.a_kib * 1024) + int(glb.w_kib * 1024) + int(out_cap))
        if glb.shared else None)


# --------------------------------------------------------------------------- visit order


@dataclass
class Visit:
    """The sub-folds of one GEMM in the mapping's order (the same for every GEMM):
    each is a fold (``outer``, ``inner`` in the fold grid) restricted to a GLB tile
    (``tile``, its index in loop order) and that tile's chunk of the temporal dim
    (``t0``..``t1`` of ``span``). Per tile: its (m, n, k) index, its first and last
    sub-fold, and whether A, W are fetched there and partial sums read / written."""

    outer: np.ndarray
    inner: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    span: int
    tile_idx: np.ndarray  # [T, 3]
    first: np.ndarray  # [T]
    last: np.ndarray  # [T]
    fetch_a: np.ndarray  # [T] bool
    fetch_w: np.ndarray
    psum_read: np.ndarray
    psum_write: np.ndarray


def visit_order(stats: TileStats, mp: Mapping) -> Visit:
    t = trips(stats, mp)
    od, idim = FOLD_DIMS[stats.dataflow]
    temporal = TEMPORAL[stats.dataflow]
    span = stats.extent[temporal]
    bpt = {d: (-(-mp.t(d) // stats.unit[d]) if mp.t(d) < stats.extent[d]
               else stats.nblocks[d]) for d in (od, idim)}
    # every GLB tile in loop order (itertools.product's order: the last loop fastest),
    # then its folds' blocks, outer-major, vectorised over the tiles
    shape = tuple(t[d] for d in mp.order)
    combos = np.indices(shape, dtype=np.int64).reshape(len(shape), -1).T  # [T, 3]
    col = {d: mp.order.index(d) for d in mp.order}
    tile_idx = np.ascontiguousarray(combos[:, [col["m"], col["n"], col["k"]]])
    o0 = combos[:, col[od]] * bpt[od]
    no_ = np.minimum(stats.nblocks[od], o0 + bpt[od]) - o0
    i0 = combos[:, col[idim]] * bpt[idim]
    ni_ = np.minimum(stats.nblocks[idim], i0 + bpt[idim]) - i0
    cnt = no_ * ni_
    start = np.concatenate([np.zeros(1, np.int64), np.cumsum(cnt)[:-1]])
    owner = np.repeat(np.arange(cnt.size), cnt)
    local = np.arange(int(cnt.sum()), dtype=np.int64) - start[owner]
    c = combos[:, col[temporal]]
    lo = c * mp.t(temporal)
    hi = np.minimum(span, (c + 1) * mp.t(temporal))
    first, last = start, start + cnt - 1
    sub_outer = o0[owner] + local // ni_[owner]
    sub_inner = i0[owner] + local % ni_[owner]
    sub_t0, sub_t1 = lo[owner], hi[owner]

    ps = psum_to_dram(mp.order, t)
    kcol = tile_idx[:, 2]
    return Visit(
        outer=sub_outer, inner=sub_inner, t0=sub_t0, t1=sub_t1, span=span,
        tile_idx=tile_idx, first=first, last=last,
        fetch_a=_changed(tile_idx, "mk"), fetch_w=_changed(tile_idx, "nk"),
        psum_read=(kcol > 0) & ps, psum_write=(kcol < t["k"] - 1) & ps)


def share(x: np.ndarray, v: Visit) -> np.ndarray:
    """Per sub-fold the integer share of per-fold quantities ``x`` [..., outer, inner]
    for its temporal chunk: ``floor(x*t1/T) - floor(x*t0/T)``."""
    g = np.asarray(x, np.int64)[..., v.outer, v.inner]
    return (g * v.t1) // v.span - (g * v.t0) // v.span
