"""All numba code lives here: loops over flat, contiguous arrays, compiled once and cached.

Everything else in accelsim is numpy. Each kernel has a plain-Python twin in
``accelsim.reference`` or in the tests, and is checked against it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _block_nnz_rle(mask, xb, yb, run_limit, nnz, entries):  # pragma: no cover - numba
    nb = mask.shape[0]
    nbx = xb.shape[0]
    nby = yb.shape[0]
    for b in range(nb):
        for bi in range(nbx):
            x0 = xb[bi, 0]
            x1 = xb[bi, 1]
            for bj in range(nby):
                y0 = yb[bj, 0]
                y1 = yb[bj, 1]
                cnt = 0
                ent = 0
                gap = 0
                for x in range(x0, x1):
                    for y in range(y0, y1):
                        if mask[b, x, y]:
                            cnt += 1
                            if run_limit > 0:
                                ent += 1 + gap // run_limit
                            gap = 0
                        else:
                            gap += 1
                nnz[b, bi, bj] = cnt
                entries[b, bi, bj] = ent


@njit(cache=True, nogil=True)
def _block_nnz(mask, xb, yb, nnz):  # pragma: no cover - numba
    # nonzeros only: row-major and branch-free, so the inner sum vectorises
    nb = mask.shape[0]
    for b in range(nb):
        for bi in range(xb.shape[0]):
            for x in range(xb[bi, 0], xb[bi, 1]):
                row = mask[b, x]
                for bj in range(yb.shape[0]):
                    acc = 0
                    for y in range(yb[bj, 0], yb[bj, 1]):
                        acc += row[y]
                    nnz[b, bi, bj] += acc


def block_nnz_rle(mask: np.ndarray, bx: int, by: int,
                  run_bits: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``bx`` x ``by`` of a [B, X, Y] 0/1 mask: (nonzeros, RLE entries).

    Each block is walked row-major; an RLE entry is a nonzero, plus one extra entry per
    full run of ``2**run_bits`` zeros in the gap before it (``run_bits = 0``: entries not
    counted). Returns two int64 arrays [B, ceil(X/bx), ceil(Y/by)].
    """
    nb, nx, ny = mask.shape
    if run_bits == 0:
        nnz = _uniform_block_sums(mask, bx, by)
        return nnz, np.zeros_like(nnz)
    return range_nnz_rle(mask, uniform_bounds(nx, bx), uniform_bounds(ny, by), run_bits)


def _sum_last(x: np.ndarray, block: int) -> np.ndarray:
    """Sums over consecutive blocks of the last axis (the last block may be shorter),
    without copying the input: full blocks as a reshaped view, the rest apart."""
    n = x.shape[-1]
    full = n // block
    acc = np.uint16 if block < 2**16 and x.dtype == np.uint8 else np.int64
    parts = []
    if full:
        v = x[..., : full * block].reshape(x.shape[:-1] + (full, block))
        parts.append(np.add.reduce(v, axis=-1, dtype=acc).astype(np.int64))
    if n - full * block:
        parts.append(x[..., full * block:].sum(axis=-1, dtype=np.int64)[..., None])
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def _uniform_block_sums(mask: np.ndarray, bx: int, by: int) -> np.ndarray:
    """Nonzeros per bx x by block of a [B, X, Y] 0/1 mask, with numpy reductions over a
    uint8 view (no RLE needed, so no sequential scan)."""
    m = np.asarray(mask)
    m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)
    cols = _sum_last(m, by)  # [B, X, nby]
    return np.ascontiguousarray(_sum_last(np.swapaxes(cols, -1, -2), bx).swapaxes(-1, -2))


def uniform_bounds(n: int, block: int) -> np.ndarray:
    """[[start, end), ...] of consecutive blocks of ``block`` over ``n`` (last shorter)."""
    starts = np.arange(0, n, block, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + block, n)], axis=1)


def range_nnz_rle(mask: np.ndarray, xb: np.ndarray, yb: np.ndarray,
                  run_bits: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`block_nnz_rle` for explicit row ranges ``xb`` and column ranges ``yb``
    (int arrays [n, 2] of [start, end)); ranges may overlap."""
    m = np.ascontiguousarray(mask)
    if m.dtype != np.bool_:
        m = m != 0
    xb = np.ascontiguousarray(xb, dtype=np.int64)
    yb = np.ascontiguousarray(yb, dtype=np.int64)
    shape = (m.shape[0], xb.shape[0], yb.shape[0])
    nnz = np.zeros(shape, np.int64)
    entries = np.zeros(shape, np.int64)
    if run_bits:
        _block_nnz_rle(m, xb, yb, 1 << run_bits, nnz, entries)
    else:
        _block_nnz(m.view(np.uint8), xb, yb, nnz)
    return nnz, entries
