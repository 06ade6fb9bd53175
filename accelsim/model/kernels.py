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
    cols = m if by == 1 else _sum_last(m, by)  # [B, X, nby]; by 1: the uint8 view itself
    if bx == 1:
        out = np.swapaxes(cols, -1, -2)
    else:
        out = _sum_last(np.swapaxes(cols, -1, -2), bx)
    return np.ascontiguousarray(out.swapaxes(-1, -2), dtype=np.int64)


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


# ----------------------------------------------------------------------------- timing
# Fold timing under a synchronisation mode (docs/timing.md). The operands arrive laid
# out so that the time dimension is the last, contiguous axis wherever it indexes them:
#   os: a[F,P,M,K], w[Fw,P,N,K], pad[1,P,M,K], idx[Fw,P,N,K']   (time: k, or k' with N:M)
#   ws: a[F,P,K,M], w[Fw,P,K,N], pad[1,P,K,M], idx[Fw,P,K',N]   (time: m)
#   is: a[F,P,M,K], w[Fw,P,K,N], pad[1,P,M,K]                   (time: n)
# A PE needs a slot at a step when its pair is present (not skipped padding, a kept N:M
# slot) and the zero policy does not skip it.

@njit(cache=True, nogil=True, inline="always")
def _need(a, w, pad, has_pad, idx, has_nm, flow, ua, uw, f, fw, pp, y, x, t):  # pragma: no cover
    """1 where the PE at rows-dim ``y``, cols-dim ``x`` needs a slot at step ``t``; ``ua``
    / ``uw`` are 1 where the policy does not test that operand's zeros."""
    if flow == 0:  # os: rows m, cols n, time k
        k = idx[fw, pp, x, t] if has_nm else t
        av = a[f, pp, y, k]
        wv = w[fw, pp, x, k]
        pres = pad[0, pp, y, k] if has_pad else 1
    elif flow == 1:  # ws: rows k (k' with N:M), cols n, time m
        k = idx[fw, pp, y, x] if has_nm else y
        av = a[f, pp, k, t]
        wv = w[fw, pp, k, x]
        pres = pad[0, pp, k, t] if has_pad else 1
    else:  # is: rows k, cols m, time n
        av = a[f, pp, x, y]
        wv = w[fw, pp, y, t]
        pres = pad[0, pp, x, y] if has_pad else 1
    return pres & (av | ua) & (wv | uw)


@njit(cache=True, nogil=True)
def _fill_pe(s, q, a, w, pad, has_pad, idx, has_nm, flow, ua, uw, f, fw, pp, y, x,
             tt):  # pragma: no cover - numba
    """s[q, :] = the steps PE q (rows-dim y, cols-dim x) needs; the common layouts as
    branch-free contiguous loops."""
    if flow == 0 and not has_nm:
        if has_pad:
            for t in range(tt):
                s[q, t] = pad[0, pp, y, t] & (a[f, pp, y, t] | ua) & (w[fw, pp, x, t] | uw)
        else:
            for t in range(tt):
                s[q, t] = (a[f, pp, y, t] | ua) & (w[fw, pp, x, t] | uw)
    elif flow == 1:
        k = idx[fw, pp, y, x] if has_nm else y
        wv = w[fw, pp, k, x] | uw
        if has_pad:
            for t in range(tt):
                s[q, t] = pad[0, pp, k, t] & (a[f, pp, k, t] | ua) & wv
        else:
            for t in range(tt):
                s[q, t] = (a[f, pp, k, t] | ua) & wv
    elif flow == 2:
        av = (a[f, pp, x, y] | ua) & (pad[0, pp, x, y] if has_pad else 1)
        for t in range(tt):
            s[q, t] = av & (w[fw, pp, y, t] | uw)
    else:
        for t in range(tt):
            s[q, t] = _need(a, w, pad, has_pad, idx, has_nm, flow, ua, uw, f, fw, pp, y, x, t)


@njit(cache=True, nogil=True)
def _window(s, u, lo, hi, st, t0, t1, p, la):  # pragma: no cover - numba
    """Cycles for PEs lo, lo+st, .. < hi sharing one stream pointer over steps [t0, t1)
    (``u[t]``: some of them needs step t): steps no PE needs pass free; each cycle every
    PE takes at most ``p`` of its needed steps among the next ``la``, and the pointer
    moves to the earliest PE's cut."""
    if p == 1:
        cyc = 0
        for t in range(t0, t1):
            cyc += u[t]
        return cyc
    cyc = 0
    h = t0
    while True:
        while h < t1 and not u[h]:
            h += 1
        if h >= t1:
            return cyc
        cyc += 1
        e = min(h + la, t1)
        cut = e
        for q in range(lo, hi, st):
            cnt = 0
            for x in range(h, min(e, cut)):
                if s[q, x]:
                    cnt += 1
                    if cnt == p:
                        cut = x + 1
                        break
        h = cut


@njit(cache=True, nogil=True)
def _fifo(s, u, lo, hi, st, t1, p, depth, rel, last, cnt, done):  # pragma: no cover
    """Cycles for PEs sharing a stream through a FIFO of ``depth`` elements: the stream
    carries the steps some PE needs; element j enters once every PE is done with
    element j - depth; a PE takes up to ``p`` arrived elements per cycle, in order."""
    for q in range(lo, hi, st):
        last[q] = -1
        cnt[q] = 0
        done[q] = 0
    j = 0
    end = 0
    for t in range(t1):
        if not u[t]:
            continue
        arr = rel[j - depth] if j >= depth else 0
        rj = 0
        for q in range(lo, hi, st):
            if s[q, t]:
                if arr > last[q]:
                    last[q] = arr
                    cnt[q] = 1
                elif cnt[q] < p:
                    cnt[q] += 1
                else:
                    last[q] += 1
                    cnt[q] = 1
                done[q] = last[q] + 1
            elif arr > done[q]:
                done[q] = arr
            if done[q] > rj:
                rj = done[q]
        rel[j] = rj
        if rj > end:
            end = rj
        j += 1
    return end


@njit(cache=True, nogil=True)
def _dims(flow, a, w, idx, has_nm):  # pragma: no cover - numba
    """(rows-dim, cols-dim, time) sizes of the GEMM in the kernel layout."""
    if flow == 0:
        return a.shape[2], w.shape[2], (idx.shape[3] if has_nm else a.shape[3])
    if flow == 1:
        return (idx.shape[2] if has_nm else a.shape[2]), w.shape[3], a.shape[3]
    return a.shape[3], a.shape[2], w.shape[3]


@njit(cache=True, nogil=True)
def balance_keys_kernel(a, w, pad, has_pad, idx, has_nm, active, flow, ua, uw, chunk,
                        keys):  # pragma: no cover - numba
    """keys[F, P, chunks, cols-dim]: the needed steps of every cols-dim index (a filter
    on os/ws, an input row on is), summed over the rows dim, per chunk of time steps."""
    nf, npf = a.shape[0], a.shape[1]
    d_rows, d_cols, tt = _dims(flow, a, w, idx, has_nm)
    for f in range(nf):
        fw = f if w.shape[0] > 1 else 0
        for pp in range(npf):
            if not active[f, pp]:
                continue
            for x in range(d_cols):
                for y in range(d_rows):
                    for t in range(tt):
                        keys[f, pp, t // chunk, x] += _need(a, w, pad, has_pad, idx, has_nm,
                                                            flow, ua, uw, f, fw, pp, y, x, t)


@njit(cache=True, nogil=True)
def fold_steps_kernel(a, w, pad, has_pad, idx, has_nm, active, perm, flow, ua, uw, rows,
                      cols, p, la, mode, chunk, scope, depth, out):  # pragma: no cover
    """out[F, P, row folds, col folds]: the steps (cycles, fill apart) each fold of each
    active GEMM takes under sync ``mode`` (0 lockstep, 1 barrier every ``chunk`` steps,
    2 fifo of ``depth``) within groups of PEs (``scope`` 0 array, 1 row, 2 col); the
    fold takes as long as its slowest group. ``perm[F|1, P|1, chunks, cols-dim]`` maps
    a PE column slot to the cols-dim index it holds in each chunk (load balancing)."""
    nf, npf = a.shape[0], a.shape[1]
    d_rows, d_cols, tt = _dims(flow, a, w, idx, has_nm)
    nr = (d_rows + rows - 1) // rows
    nc = (d_cols + cols - 1) // cols
    npe = rows * cols
    s = np.zeros((npe, max(tt, 1)), np.uint8)
    u = np.zeros(max(tt, 1), np.uint8)
    rel = np.zeros(max(tt, 1), np.int64)
    last = np.zeros(npe, np.int64)
    cnt = np.zeros(npe, np.int64)
    done = np.zeros(npe, np.int64)
    pchunks = perm.shape[2]
    for f in range(nf):
        fw = f if w.shape[0] > 1 else 0
        fp = f if perm.shape[0] > 1 else 0
        for pp in range(npf):
            ppp = pp if perm.shape[1] > 1 else 0
            if not active[f, pp]:
                for i in range(nr):
                    for j in range(nc):
                        out[f, pp, i, j] = 0
                continue
            for i in range(nr):
                for j in range(nc):
                    for r in range(rows):
                        y = i * rows + r
                        for c in range(cols):
                            q = r * cols + c
                            slot = j * cols + c
                            if y >= d_rows or slot >= d_cols:
                                s[q, :tt] = 0
                            elif pchunks == 1:
                                _fill_pe(s, q, a, w, pad, has_pad, idx, has_nm, flow, ua, uw,
                                         f, fw, pp, y, perm[fp, ppp, 0, slot], tt)
                            else:
                                for t in range(tt):
                                    x = perm[fp, ppp, min(t // chunk, pchunks - 1), slot]
                                    s[q, t] = _need(a, w, pad, has_pad, idx, has_nm, flow,
                                                    ua, uw, f, fw, pp, y, x, t)
                    ng = 1 if scope == 0 else (rows if scope == 1 else cols)
                    steps = 0
                    for g in range(ng):
                        if scope == 0:
                            lo, hi, st = 0, npe, 1
                        elif scope == 1:
                            lo, hi, st = g * cols, (g + 1) * cols, 1
                        else:
                            lo, hi, st = g, npe, cols
                        if mode != 1:  # barrier PEs pass steps on their own
                            u[:tt] = 0
                            for q in range(lo, hi, st):
                                for t in range(tt):
                                    u[t] |= s[q, t]
                        if mode == 0:
                            v = _window(s, u, lo, hi, st, 0, tt, p, la)
                        elif mode == 1:
                            v = 0
                            for t0 in range(0, tt, chunk):
                                t1 = min(t0 + chunk, tt)
                                worst = 0
                                for q in range(lo, hi, st):
                                    x = _window(s, s[q], q, q + 1, 1, t0, t1, p, la)
                                    if x > worst:
                                        worst = x
                                v += worst
                        else:
                            v = _fifo(s, u, lo, hi, st, tt, p, depth, rel, last, cnt, done)
                        if v > steps:
                            steps = v
                    out[f, pp, i, j] = steps


@njit(cache=True, nogil=True)
def timeline_kernel(new_tile, fetch, comp, grd, gwr, dwr, depth):  # pragma: no cover
    """The demand-driven stall timeline (docs/memory-model.md, "Stalls") over ``S``
    sub-folds in program order; every argument but ``depth`` is a flat int64 [S] array
    of cycles (``new_tile`` 1 on each GLB tile's first sub-fold, ``fetch`` that tile's
    DRAM fetch on it). ``depth`` is 2 with double buffering, else 1. Returns the cycle
    at which the last compute or transfer ends."""
    s = comp.shape[0]
    nt = 0
    for f in range(s):
        nt += new_tile[f]
    tile = np.empty(s, np.int64)
    first = np.empty(nt, np.int64)
    last = np.empty(nt, np.int64)
    t = -1
    for f in range(s):
        if new_tile[f]:
            t += 1
            first[t] = f
        tile[f] = t
        last[t] = f
    fdone = np.zeros(nt, np.int64)  # when each tile's DRAM fetch has landed
    rdone = np.zeros(s, np.int64)  # when each sub-fold's GLB reads are done
    dfree = 0  # the DRAM channel is busy until this cycle
    gfree = 0  # the GLB port likewise
    for u in range(min(depth, nt)):  # the first tiles' buffers are free at cycle 0
        c = fetch[first[u]]
        if c > 0:
            dfree += c
            fdone[u] = dfree
    for g in range(min(depth, s)):  # the first register buffers are free at cycle 0
        if grd[g] > 0:
            gfree += grd[g]
            rdone[g] = gfree
    end = 0
    for f in range(s):  # compute waits for the sub-fold before, its reads, its tile's data
        end = max(max(end, rdone[f]), fdone[tile[f]]) + comp[f]
        c = dwr[f]  # its DRAM writes
        if c > 0:
            dfree = max(end, dfree) + c
        t = tile[f]
        if f == last[t] and t + depth < nt:  # a tile buffer is free: fetch tile t+depth
            c = fetch[first[t + depth]]
            if c > 0:
                dfree = max(end, dfree) + c
                fdone[t + depth] = dfree
            else:
                fdone[t + depth] = end
        c = gwr[f]  # its GLB writes, then the GLB reads of sub-fold f+depth
        if c > 0:
            gfree = max(end, gfree) + c
        g = f + depth
        if g < s:
            c = grd[g]
            if c > 0:
                gfree = max(end, gfree) + c
                rdone[g] = gfree
            else:
                rdone[g] = end
    return max(end, max(dfree, gfree))
