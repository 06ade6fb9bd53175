"""Reference N:M structured weights: kept slots picked group by group."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from accelsim.errors import SimulationError


@dataclass(frozen=True)
class _NM:
    """N:M kept slots of one GEMM's W: ``kept[n]`` = the kept k of column n, sorted."""

    n: int
    m: int
    kept: list[list[int]]


def _nm_kept(w: np.ndarray, n_keep: int, m_group: int) -> list[list[int]]:
    """Kept slots of every column of ``w[K, N]`` under N:M: per group of ``m_group``
    consecutive k, its nonzero positions, then its lowest-index zero positions, up to
    ``min(n_keep, group size)``, sorted by k. Raises :class:`SimulationError` if a group
    holds more than ``n_keep`` nonzeros."""
    k_dim, n_dim = w.shape
    w_list = w.tolist()
    kept = []
    for n in range(n_dim):
        col: list[int] = []
        for g in range(math.ceil(k_dim / m_group)):
            ks = list(range(g * m_group, min(k_dim, (g + 1) * m_group)))
            nonzeros = [k for k in ks if w_list[k][n] != 0]
            zeros = [k for k in ks if w_list[k][n] == 0]
            if len(nonzeros) > n_keep:
                raise SimulationError(
                    f"weights are not {n_keep}:{m_group} along K: output column {n}, "
                    f"K group {g} has {len(nonzeros)} nonzeros")
            take = min(n_keep, len(ks))
            col += sorted((nonzeros + zeros)[:take])
        kept.append(col)
    return kept


def _compressed_w(w: np.ndarray, kept: list[list[int]]) -> np.ndarray:
    """W'[k', n] = w[k, n] for the k'-th kept slot k of column n."""
    n_dim = w.shape[1]
    k_kept = len(kept[0])
    out = np.zeros((k_kept, n_dim), dtype=w.dtype)
    for n in range(n_dim):
        for kc in range(k_kept):
            out[kc, n] = w[kept[n][kc], n]
    return out


def _index_bits(m_group: int) -> int:
    """ceil(log2(m)) for m >= 2, by counting."""
    bits = 0
    while 2**bits < m_group:
        bits += 1
    return bits
