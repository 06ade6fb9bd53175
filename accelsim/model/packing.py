"""Group packing (``array.pack_groups``, ``docs/timing.md``, "Grouped convolutions").

A grouped convolution is ``G`` GEMMs per frame. When one group's GEMM is narrower than
the array along the dimensions it spreads over, ``G'`` consecutive groups of a frame run
as one *packed* GEMM: ``A' = [A_g | A_g+1 | ...]`` ([M, G'K], groups side by side along
K) times the block-diagonal ``W'`` ([G'K, G'N], group g's W at rows gK.., cols gN..).
The off-diagonal pairs are structural: no PE holds those weights (ws) or they stream in
as zero weights (os, is). They are never MACs: the MAC counts stay those of the unpacked
groups; only the fold timing comes from the packed GEMMs.

``G'`` follows from the dims the array holds (R rows, C logical columns):

* os (rows M, cols N): ``C // N`` when ``N < C``;
* ws (rows K, cols N): ``min(R // K, C // N)`` when ``K <= R`` and ``N <= C``;
* is (rows K, cols M): ``R // K`` when ``K < R``;

capped at ``G``; a width below 2 means no packing. The last pack of a frame may hold
fewer groups. By construction a packed GEMM has the fold grid of one group, so its
folds' cycles go onto the grid of its first active group and the other groups' folds
get 0 cycles (their data, and so the memory model's bytes, are unchanged).
"""

from __future__ import annotations

import numpy as np

from accelsim.io.hwconfig import HwConfig
from accelsim.model.dataflow import Plan


def pack_width(hw: HwConfig, plan: Plan, k: int, n: int, groups: int,
               nm_on: bool = False) -> int:
    """Groups per packed GEMM (1: no packing) for a layer of ``groups`` GEMMs per frame
    of K x N weights each. Packing needs ``pack_groups: auto``, one lane per PE
    (``pe_simd.width`` 1) and no N:M structure."""
    if (groups < 2 or hw.array.pack_groups != "auto" or hw.lanes > 1 or nm_on):
        return 1
    r, c = plan.rows, plan.cols
    if hw.dataflow == "os":
        g = c // n if n < c else 1
    elif hw.dataflow == "ws":
        g = min(r // k, c // n) if (k <= r and n <= c) else 1
    else:
        g = r // k if k < r else 1
    g = min(g, groups)
    return g if g >= 2 else 1


def pack_a(az: np.ndarray, g0: int, width: int, count: int) -> np.ndarray:
    """A[F, P, M, K] -> A'[F, count, M, width K]: pack j holds groups g0 + j width ..
    side by side along K."""
    part = az[:, g0:g0 + width * count]
    f, _, m, k = part.shape
    part = part.reshape(f, count, width, m, k)
    return np.ascontiguousarray(np.moveaxis(part, 2, 3)).reshape(f, count, m, width * k)


def pack_w(wz: np.ndarray, g0: int, width: int, count: int) -> np.ndarray:
    """W[Fw, P, K, N] -> block-diagonal W'[Fw, count, width K, width N]; the
    off-diagonal blocks are structural zeros."""
    fw, _, k, n = wz.shape
    part = wz[:, g0:g0 + width * count].reshape(fw, count, width, k, n)
    out = np.zeros((fw, count, width * k, width * n), wz.dtype)
    for i in range(width):
        out[:, :, i * k:(i + 1) * k, i * n:(i + 1) * n] = part[:, :, i]
    return out


def packed_timing(az: np.ndarray, wz: np.ndarray, hw: HwConfig, plan: Plan,
                  active: np.ndarray, rz: np.ndarray | None, width: int,
                  steps_fn, cycles_fn) -> tuple[np.ndarray, np.ndarray, int]:
    """Fold steps and cycles [F, P, row folds, col folds] of packed GEMMs mapped back
    onto the groups' grid (each pack's folds on its first active group, 0 elsewhere),
    and the number of folds the array runs. ``steps_fn``/``cycles_fn`` are
    :func:`accelsim.model.sync.fold_steps` and ``fold_cycles``. The full packs run as
    one batch, a last pack of fewer groups as another."""
    nf, npf, m, k = az.shape
    grid = (nf, npf) + plan.folds(m, k, wz.shape[-1])
    steps = np.zeros(grid, np.int64)
    cycles = np.zeros(grid, np.int64)
    folds = 0
    full = npf // width
    for g0, wd, count in ((0, width, full), (full * width, npf - full * width, 1)):
        if count == 0 or wd == 0:
            continue
        rp = None if rz is None else pack_a(rz, g0, wd, count)
        act_g = active[:, g0:g0 + wd * count].reshape(nf, count, wd)
        act = act_g.any(axis=2)
        st = steps_fn(pack_a(az, g0, wd, count), pack_w(wz, g0, wd, count), hw, plan,
                      None, act, rp)
        cy = cycles_fn(st, hw, plan, act)
        # pack_width keeps a pack within one fold along the packed dims, so a pack has
        # the fold grid of one group
        assert st.shape[2:] == grid[2:]
        # each pack's folds go onto its first active group (group g0 + j wd when none)
        first = g0 + np.arange(count)[None, :] * wd + np.argmax(act_g, axis=2)
        fi = np.broadcast_to(np.arange(nf)[:, None], first.shape)
        steps[fi, first] += st  # 0 where the pack is inactive
        cycles[fi, first] += cy
        folds += int(act.sum()) * grid[2] * grid[3]
    return steps, cycles, folds
