"""All numba code lives here: loops over flat, contiguous arrays, compiled once and cached.

Everything else in accelsim is numpy. Each kernel has a plain-Python twin in
``accelsim.reference`` or in the tests, and is checked against it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _block_nnz_rle(mask, bx, by, run_limit, nnz, entries):  # pragma: no cover - numba
    nb, nx, ny = mask.shape
    nbx = (nx + bx - 1) // bx
    nby = (ny + by - 1) // by
    for b in range(nb):
        for bi in range(nbx):
            x0 = bi * bx
            x1 = min(nx, x0 + bx)
            for bj in range(nby):
                y0 = bj * by
                y1 = min(ny, y0 + by)
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


def block_nnz_rle(mask: np.ndarray, bx: int, by: int,
                  run_bits: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``bx`` x ``by`` of a [B, X, Y] 0/1 mask: (nonzeros, RLE entries).

    Each block is walked row-major; an RLE entry is a nonzero, plus one extra entry per
    full run of ``2**run_bits`` zeros in the gap before it (``run_bits = 0``: entries not
    counted). Returns two int64 arrays [B, ceil(X/bx), ceil(Y/by)].
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    nb, nx, ny = m.shape
    shape = (nb, -(-nx // bx), -(-ny // by))
    nnz = np.zeros(shape, np.int64)
    entries = np.zeros(shape, np.int64)
    _block_nnz_rle(m, int(bx), int(by), (1 << run_bits) if run_bits else 0, nnz, entries)
    return nnz, entries
