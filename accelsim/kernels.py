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
    return range_nnz_rle(mask, uniform_bounds(nx, bx), uniform_bounds(ny, by), run_bits)


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
