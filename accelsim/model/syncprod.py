"""Fold steps from mask products, where the sync mode allows (docs/performance.md).

On os (ws and is further down) without N:M weights, with one MAC per PE and no load
balancing, PE (m, n) needs step k exactly when ``A[m, k] & W[n, k]``, with the effective masks
``A = (a | ua) & pad`` and ``W = w | uw`` (``ua``/``uw``: the policy does not test that
operand; ``pad``: the position is real). :func:`accelsim.model.kernels.fold_steps_kernel`
then reduces to products of masks:

* ``lockstep`` over the whole array: a step passes when some PE of the fold needs it,
  and ``OR_(m,n) A[m,k] W[n,k] = (OR_m A[m,k]) (OR_n W[n,k])``, so a fold's steps are
  one entry of the product of the block-ORed masks ``OA[rows blocks, K] @ OW[col
  blocks, K]ᵀ``; per PE row (``scope: row``) the max over its rows of ``A @ OWᵀ``; per
  PE column the max over its columns of ``OA @ Wᵀ``.
* ``barrier`` every C steps (``decoupled``: C = the PE buffer's steps): every PE counts
  its needed steps per chunk, ``P_c = A[:, c] @ W[:, c]ᵀ``; the group waits for its
  slowest PE at each barrier, so a fold takes ``sum_c max_(group) P_c`` (the max over
  the groups of that for ``scope`` row or col).

On ws and is a PE holds a stationary element ``S[k, x]`` and needs step t when
``S[k, x] & T[k, t]``, T the streamed operand; the same rules reduce to products of T
with the block-ORed S, to row sums of T, or to per-chunk sums of T
(:func:`stationary_steps`).

All are exact integer identities, checked against the walk by
tests/test_backend.py. The products run in chunks of M (whole PE-row blocks), of N
(whole PE-column blocks) and of barrier chunks, so their temporaries stay within a
byte budget; chunks combine exactly because each fold's value depends only on its own
rows and columns. The products and reductions run on a :mod:`accelsim.model.backend`.
"""

from __future__ import annotations

import numpy as np

from accelsim.model.backend import Backend


def applies(hw, nm) -> bool:
    """The fold steps of this config come from mask products (see the module doc)."""
    return (nm is None and hw.array.macs_per_pe == 1
            and hw.sync.balance == "none" and hw.sync.mode in ("lockstep", "barrier",
                                                                "decoupled"))


def _block(total: int, block: int, per_row: int, budget: int) -> int:
    """Rows per chunk: a multiple of ``block``, at most ``total`` rounded up, and
    ``per_row`` bytes a row within ``budget`` (at least one block)."""
    whole = -(-total // block) * block
    rows = max(1, budget // max(per_row * block, 1)) * block
    return min(rows, whole)


class _Eff:
    """Effective masks of one GEMM, in zero-padded row chunks."""

    def __init__(self, x: np.ndarray, untested: int, pad: np.ndarray | None,
                 kp: int) -> None:
        self.x, self.untested, self.pad, self.kp = x, untested, pad, kp

    def rows(self, r0: int, r1: int, block: int) -> np.ndarray:
        """uint8 [rows rounded up to ``block``, kp]; zeros beyond the data."""
        n = min(r1, self.x.shape[0]) - r0
        k = self.x.shape[1]
        out = np.zeros((-(-max(n, 0) // block) * block, self.kp), np.uint8)
        if n > 0:
            v = out[:n, :k]
            if self.untested:
                v[...] = 1
            else:
                v[...] = self.x[r0:r0 + n]
            if self.pad is not None:
                v &= self.pad[r0:r0 + n]
        return out


def _block_any(be: Backend, eff: _Eff, total: int, block: int, chunk: int) -> object:
    """OR over every ``block`` rows: device uint8 [ceil(total/block), kp]."""
    parts = []
    for r0 in range(0, total, chunk):
        x = be.load(eff.rows(r0, r0 + chunk, block))
        parts.append(be.amax(x.reshape(-1, block, eff.kp), (1,)))
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    import torch

    return torch.cat(parts, dim=0)


def gemm_steps(a: np.ndarray, w: np.ndarray, pad: np.ndarray | None, ua: int, uw: int,
               rows: int, cols: int, mode: str, chunk: int, scope: str, be: Backend,
               budget: int) -> np.ndarray:
    """Steps of every fold of one GEMM: int64 [ceil(M/rows), ceil(N/cols)]. ``a`` uint8
    [M, K], ``w`` uint8 [N, K] (0/1), ``pad`` uint8 [M, K] or None; ``mode`` lockstep or
    barrier (every ``chunk`` steps)."""
    m, k = a.shape
    n = w.shape[0]
    nr, nc = -(-m // rows), -(-n // cols)
    if not (m and k and n):  # no pairs: no steps
        return np.zeros((nr, nc), np.int64)
    wb = 1 + be.work_bytes  # a uint8 chunk and its float copy, per element
    if mode == "lockstep":
        ea, ew = _Eff(a, ua, pad, k), _Eff(w, uw, None, k)
        if scope == "array":
            oa = _block_any(be, ea, m, rows, _block(m, rows, k * wb, budget // 4))
            ow = _block_any(be, ew, n, cols, _block(n, cols, k * wb, budget // 4))
            return be.host(be.mm(oa, ow))
        out = np.zeros((nr, nc), np.int64)
        if scope == "row":
            ow = _block_any(be, ew, n, cols, _block(n, cols, k * wb, budget // 4))
            mc = _block(m, rows, k * wb + 8 * nc, budget // 2)
            for r0 in range(0, m, mc):
                res = be.mm(be.load(ea.rows(r0, r0 + mc, rows)), ow)
                out[r0 // rows:r0 // rows + res.shape[0] // rows] = be.host(
                    be.amax(res.reshape(-1, rows, nc), (1,)))
            return out
        oa = _block_any(be, ea, m, rows, _block(m, rows, k * wb, budget // 4))
        ncc = _block(n, cols, k * wb + 8 * nr, budget // 2)
        for c0 in range(0, n, ncc):
            res = be.mm(oa, be.load(ew.rows(c0, c0 + ncc, cols)))
            out[:, c0 // cols:c0 // cols + res.shape[1] // cols] = be.host(
                be.amax(res.reshape(nr, -1, cols), (2,)))
        return out
    # barrier: per chunk of steps, every PE's count; the group's slowest per chunk
    nch = -(-k // chunk)
    kp = nch * chunk
    ea, ew = _Eff(a, ua, pad, kp), _Eff(w, uw, None, kp)
    half = budget // 2
    mc = _block(m, rows, kp * wb, half // 2)
    ncc = _block(n, cols, kp * wb, half // 2)
    # product batch [g, mc, ncc] int64 plus its reductions
    while mc > rows and mc * ncc * 16 > half:
        mc = max(rows, (mc // 2) // rows * rows)
    while ncc > cols and mc * ncc * 16 > half:
        ncc = max(cols, (ncc // 2) // cols * cols)
    g = max(1, half // max(mc * ncc * 16, 1))
    out = np.zeros((nr, nc), np.int64)
    # a barrier chunk within one exact piece: products and maxima in the work dtype
    raw = chunk <= be.k_piece
    for r0 in range(0, m, mc):
        xa = be.transpose01(be.load(ea.rows(r0, r0 + mc, rows)).reshape(-1, nch, chunk))
        if raw:
            xa = be.prep(xa)
        mr = xa.shape[1]
        for c0 in range(0, n, ncc):
            xw = be.transpose01(be.load(ew.rows(c0, c0 + ncc, cols)).reshape(-1, nch, chunk))
            if raw:
                xw = be.prep(xw)
            nn = xw.shape[1]
            acc = be.zeros({"array": (mr // rows, nn // cols), "row": (mr, nn // cols),
                            "col": (mr // rows, nn)}[scope])
            for c in range(0, nch, g):
                p = (be.mm_raw if raw else be.mm)(xa[c:c + g], xw[c:c + g])  # [g, mr, nn]
                gg = p.shape[0]
                if scope == "array":
                    red = be.amax(p.reshape(gg, mr // rows, rows, nn // cols, cols), (2, 4))
                elif scope == "row":
                    red = be.amax(p.reshape(gg, mr, nn // cols, cols), (3,))
                else:
                    red = be.amax(p.reshape(gg, mr // rows, rows, nn), (2,))
                acc += be.to_int(red).sum(0)
            if scope == "row":
                acc = be.amax(acc.reshape(mr // rows, rows, nn // cols), (1,))
            elif scope == "col":
                acc = be.amax(acc.reshape(mr // rows, nn // cols, cols), (2,))
            i0, j0 = r0 // rows, c0 // cols
            res = be.host(acc)
            out[i0:i0 + res.shape[0], j0:j0 + res.shape[1]] = res
    return out


def _pad2(x: np.ndarray, r: int, c: int) -> np.ndarray:
    """``x`` zero-padded to [r, c] (``x`` itself when it has that shape)."""
    if x.shape == (r, c):
        return x
    out = np.zeros((r, c), x.dtype)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def _eff_t(x: np.ndarray, untested: int, pad: np.ndarray | None, r: int,
           c: int) -> np.ndarray:
    """The effective mask of ``x`` [C', R'] transposed, zero-padded to uint8 [r, c], in
    one copy."""
    out = np.zeros((r, c), np.uint8)
    v = out[:x.shape[1], :x.shape[0]]
    if untested:
        v[...] = 1
    else:
        v[...] = x.T
    if pad is not None:
        v &= pad.T
    return out


def stationary_steps(st: np.ndarray, tr: np.ndarray, rows: int, cols: int, mode: str,
                     chunk: int, scope: str, be: Backend, budget: int) -> np.ndarray:
    """ws and is: PE (k, x) holds ``st[k, x]`` and needs step t when ``st[k, x] &
    tr[k, t]`` (effective 0/1 uint8 masks, ``st`` [K, X], ``tr`` [K, T]); rows over K,
    columns over X. int64 [ceil(K/rows), ceil(X/cols)] (docs/performance.md)."""
    k, x = st.shape
    t = tr.shape[1]
    nr, nc = -(-k // rows), -(-x // cols)
    if not (k and x and t):
        return np.zeros((nr, nc), np.int64)
    stp = _pad2(st, nr * rows, nc * cols).reshape(nr, rows, nc, cols)
    ow = stp.max(axis=3)  # [nr, rows, nc]: some column of block j holds a nonzero
    if mode == "lockstep" and scope == "row":  # a PE row passes t when it needs it
        rs = _pad2(tr.sum(axis=1, dtype=np.int64)[:, None], nr * rows, 1).reshape(nr, rows, 1)
        return (ow * rs).max(axis=1)
    if mode == "lockstep":
        # a step passes when sum_(k in block) tr[k, t] * (OW or st)[k, .] > 0
        trp = _pad2(tr, nr * rows, t).reshape(nr, rows, t)
        right = ow if scope == "array" else stp.reshape(nr, rows, nc * cols)
        width = right.shape[2]
        ib = max(1, budget // max(1, (t * width * 16 + (t + width) * rows * 5)))
        out = np.zeros((nr, width), np.int64)
        for i0 in range(0, nr, ib):
            xa = be.load(np.ascontiguousarray(trp[i0:i0 + ib].transpose(0, 2, 1)))
            xw = be.load(np.ascontiguousarray(right[i0:i0 + ib].transpose(0, 2, 1)))
            out[i0:i0 + ib] = be.host((be.mm(xa, xw) > 0).sum(1))  # [ib, width]
        return out if scope == "array" else out.reshape(nr, nc, cols).max(axis=2)
    # barrier every `chunk` steps: a PE counts st[k, x] * S[k, c] in chunk c
    nch = -(-t // chunk)
    sc = _pad2(tr, nr * rows, nch * chunk).reshape(nr * rows, nch, chunk).sum(
        axis=2, dtype=np.int64).reshape(nr, rows, nch)
    if scope == "row":  # one PE row: its count times "some column of the block holds w"
        return (ow.astype(np.int64) * sc.sum(axis=2)[:, :, None]).max(axis=1)
    right = ow if scope == "array" else stp.reshape(nr, rows, nc * cols)
    width = right.shape[2]
    ib = max(1, budget // max(1, 16 * width * nch))
    out = np.zeros((nr, width), np.int64)
    for i0 in range(0, nr, ib):
        acc = np.zeros((min(ib, nr - i0), width, nch), np.int64)
        for r in range(rows):  # max over the rows of the block, per chunk
            np.maximum(acc, right[i0:i0 + ib, r, :, None] * sc[i0:i0 + ib, r, None, :],
                       out=acc)
        out[i0:i0 + ib] = acc.sum(axis=2)
    return out if scope == "array" else out.reshape(nr, nc, cols).max(axis=2)


def fold_steps(a: np.ndarray, w: np.ndarray, pad: np.ndarray | None, ua: int, uw: int,
               active: np.ndarray, rows: int, cols: int, mode: str, chunk: int, scope: str,
               be: Backend, budget: int, flow: str = "os") -> np.ndarray:
    """:func:`gemm_steps` (os) or :func:`stationary_steps` (ws, is) of every active GEMM
    of a batch: ``a`` [F, P, M, K], ``w`` [Fw, P, N, K], ``pad`` [1, P, M, K] or None;
    int64 [F, P, row folds, col folds]."""
    nf, npf, m, k = a.shape
    n = w.shape[2]
    lockstep = mode == "lockstep"
    if flow != "os":
        d_cols = n if flow == "ws" else m
        out = np.zeros((nf, npf, -(-k // rows), -(-d_cols // cols)), np.int64)
        for f in range(nf):
            fw = f if w.shape[0] > 1 else 0
            for pp in range(npf):
                if not active[f, pp]:
                    continue
                ea = _eff_t(a[f, pp], ua, None if pad is None else pad[0, pp],
                            -(-k // rows) * rows, m if flow == "ws" else -(-m // cols) * cols)
                ew = _eff_t(w[fw, pp], uw, None, -(-k // rows) * rows,
                            n if flow == "is" else -(-n // cols) * cols)
                st, tr = (ew, ea) if flow == "ws" else (ea, ew)
                out[f, pp] = stationary_steps(st, tr, rows, cols,
                                              "lockstep" if lockstep else "barrier", chunk,
                                              scope, be, budget)
        return out
    out = np.zeros((nf, npf, -(-m // rows), -(-n // cols)), np.int64)
    for f in range(nf):
        fw = f if w.shape[0] > 1 else 0
        for pp in range(npf):
            if active[f, pp]:
                out[f, pp] = gemm_steps(a[f, pp], w[fw, pp],
                                        None if pad is None else pad[0, pp], ua, uw, rows,
                                        cols, "lockstep" if mode == "lockstep" else "barrier",
                                        chunk, scope, be, budget)
    return out
