"""The tile loops of :mod:`shendu.functional._flash_mkl`, compiled at module level with
MKL's addresses as arguments (``fb``: ``cblas_sgemm_batch_strided``, ``fe``: ``vmsExp``), so
that Numba's disk cache keeps them between processes (imported only where Numba is
installed)."""

from __future__ import annotations

import numpy as np
from numba import njit

from shendu.functional import _flash, _gemm
from shendu.functional._conv_compiled import gemm_rows, row_sum
from shendu.functional._regions_compiled import call_gemm, call_gemm_batch, call_vexp

__all__ = ["forward", "backward"]

N, T = 111, 112
MODE = np.int64(_gemm._VML_MODE)
big = np.float32(_flash._NO_SHIFT)
tiny = -np.finfo(np.float32).max                   # -lse of a row with no key: P = 0


@njit(nogil=True, cache=True)
def gemm(fb, fs, ta, tb, m, n, k, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc, count):
    """``count`` products ``sa``, ``sb``, ``sc`` elements apart: one strided batch call at
    ``fb`` (MKL's), or where ``fs`` is not 0 one single-product call at ``fs`` each
    (the OpenBLAS adapter, on processors where MKL's batch call takes its generic path)."""
    if fs == 0:
        call_gemm_batch(fb, ta, tb, m, n, k, np.float32(1.0), pa, lda, sa, pb, ldb, sb, beta,
                        pc, ldc, sc, count)
        return
    for g in range(count):
        call_gemm(fs, ta, tb, m, n, k, np.float32(1.0), pa + 4 * sa * g, lda, pb + 4 * sb * g,
                  ldb, beta, pc + 4 * sc * g, ldc)


@njit(nogil=True, cache=True)
def _keys_buffer(hg, e, S, rows):
    """The group's transposed keys (hg, e, ldk) for the rows loops (an empty stand-in
    without ``rows``): rows of ``S`` numbers, padded by a vector where ``S`` floats would
    put them a multiple of 4 KiB apart (onto the same few cache sets)."""
    if not rows:
        return np.empty((1, 1, 1), np.float32)
    return np.empty((hg, e, S + 16 if (S * 4) % 4096 == 0 else S), np.float32)


@njit(nogil=True, cache=True)
def _keys_transposed(kh, kt):
    """A head's keys ``kh`` (S, e) into ``kt`` (e, ldk) as ``K^T`` (the rows loops' ``B``)."""
    S, e = kh.shape
    for c in range(e):
        for j in range(S):
            kt[c, j] = kh[j, c]


@njit(nogil=True, cache=True)
def _scores(qs, kt, S, sbuf, i0, nb, r):
    """The ``r`` heads' scores ``Q[i0:i0 + nb] K^T`` (``S`` keys) by the rows loops into
    ``sbuf`` (r, nb, S): ``qs`` (heads, L, e) the queries (the backward's with its ``-lse``
    column), ``kt`` (heads, e, ldk) the keys transposed (:func:`_keys_transposed`)."""
    e, ldk = kt.shape[1], kt.shape[2]
    for h in range(r):
        gemm_rows(qs[h].reshape(-1)[i0 * e:], e, kt[h].reshape(-1), ldk, sbuf[h * nb * S:], S,
                  S, e, 0, nb, 16)


@njit(nogil=True, cache=True)
def forward(fb, fs, fe, q, k, v, out, m_out, den, scale, c0, c1, hg, bq, sbuf, qbuf, kbuf, vbuf,
            rows=False):
    """Head groups ``c0..c1-1`` of blockwise attention: ``out`` (G, L, Ev) and each row's
    shift ``m_out`` and normaliser ``den`` (G, L); ``lse = m + log(den)`` is the caller's.
    ``q`` (A, B, L, E), ``k`` (A, B, S, E), ``v`` (A, B, S, Ev) float32 in any strides
    (head ``g`` is ``[g // B, g % B]``); ``qbuf``, ``kbuf``, ``vbuf`` a group's copies.
    With ``rows``, the products are the rows loops' (``_conv_compiled.gemm_rows``): the
    scores against each head's keys transposed once (rows padded off a multiple of 4 KiB
    apart), the output ``P V`` (``Ev`` whole vectors)."""
    nB, L, E = q.shape[1], q.shape[2], q.shape[3]
    G = q.shape[0] * nB
    S = k.shape[2]
    Ev = v.shape[3]
    kn = np.empty(hg, np.float32)
    qn = np.empty((hg, L), np.float32)
    kt = _keys_buffer(hg, E, S, rows)
    for hb in range(c0, c1):
        h0 = hb * hg
        h1 = min(h0 + hg, G)
        r = h1 - h0
        for h in range(r):                          # the group's scaled queries, keys
            a, b = (h0 + h) // nB, (h0 + h) % nB    # and values, contiguous
            for i in range(L):
                acc = 0.0
                for e in range(E):
                    x = q[a, b, i, e] * scale
                    qbuf[h, i, e] = x
                    acc += float(x) ** 2
                qn[h, i] = np.float32(np.sqrt(acc) * (1 + 1e-3))
            best = 0.0
            for j in range(S):
                acc = 0.0
                for e in range(E):
                    x = k[a, b, j, e]
                    kbuf[h, j, e] = x
                    acc += float(x) ** 2
                best = max(best, acc)
                for e in range(Ev):
                    vbuf[h, j, e] = v[a, b, j, e]
            kn[h] = np.float32(np.sqrt(best) * (1 + 1e-3))
            if rows:
                _keys_transposed(kbuf[h], kt[h])
        for i0 in range(0, L, bq):
            i1 = min(i0 + bq, L)
            nb = i1 - i0
            if rows:
                _scores(qbuf, kt, S, sbuf, i0, nb, r)
            else:
                gemm(fb, fs, N, T, nb, S, E, qbuf.ctypes.data + i0 * E * 4, E, L * E,
                     kbuf.ctypes.data, E, S * E, np.float32(0.0), sbuf.ctypes.data, S, nb * S, r)
            bound = 0.0
            for h in range(r):
                for i in range(i0, i1):
                    bound = max(bound, qn[h, i] * kn[h])
            shifted = False
            if not bound < big:                     # the row max, and the shift if
                ok = True                           # a row max leaves +-16
                for h in range(r):
                    for i in range(nb):
                        base = (h * nb + i) * S
                        mx = sbuf[base]
                        for j in range(1, S):
                            if sbuf[base + j] > mx or sbuf[base + j] != sbuf[base + j]:
                                mx = sbuf[base + j]
                        m_out[h0 + h, i0 + i] = mx
                        if not abs(mx) < big:
                            ok = False
                if not ok:
                    shifted = True
                    for h in range(r):
                        for i in range(nb):
                            base = (h * nb + i) * S
                            mx = m_out[h0 + h, i0 + i]
                            for j in range(S):
                                sbuf[base + j] -= mx
            if not shifted:
                for h in range(r):
                    for i in range(i0, i1):
                        m_out[h0 + h, i] = 0
            call_vexp(fe, r * nb * S, sbuf.ctypes.data, sbuf.ctypes.data, MODE)
            for h in range(r):                      # the row sums, in vector registers
                for i in range(nb):
                    den[h0 + h, i0 + i] = row_sum(sbuf, (h * nb + i) * S, S, 16)
            if rows:
                of = out.reshape(-1)
                for h in range(r):
                    gemm_rows(sbuf[h * nb * S:], S, vbuf[h].reshape(-1), Ev,
                              of[((h0 + h) * L + i0) * Ev:], Ev, Ev, S, 0, nb, 16)
            else:
                po = out.ctypes.data + ((h0 * L) + i0) * Ev * 4
                gemm(fb, fs, N, N, nb, Ev, S, sbuf.ctypes.data, S, nb * S, vbuf.ctypes.data,
                     Ev, S * Ev, np.float32(0.0), po, Ev, L * Ev, r)
            for h in range(r):
                for i in range(i0, i1):
                    d = den[h0 + h, i]
                    row = out[h0 + h, i]
                    for e in range(Ev):
                        row[e] = row[e] / d

@njit(nogil=True, cache=True)
def backward(fb, fs, fe, q, k, v, go, o, lse, gq, gk, gv, scale, c0, c1, hg, bq, pbuf, dsbuf,
             gqbuf, qa, ka, goa, va, rows=False):
    """Head groups ``c0..c1-1`` of the blockwise backward (see ``_flash``): ``gq``,
    ``gk``, ``gv`` (G, ·, ·) written whole for these heads. ``q``, ``k``, ``v``, ``go``
    (the output's gradient) and ``o`` (the output) (A, B, ·, ·) in any strides, ``lse``
    (G, L); ``qa``, ``ka``, ``goa``, ``va`` scratch of (hg, L | S, E + 1) for the
    operands with their extra column. With ``rows`` (as :func:`forward`'s), the scores
    ``S - lse`` are the rows loops' too, so the forward's scores to the bit, and ``P``
    consistent with its ``lse``."""
    nB, L, E = q.shape[1], q.shape[2], q.shape[3]
    G = q.shape[0] * nB
    S = k.shape[2]
    Ev = v.shape[3]
    E1, V1 = E + 1, Ev + 1
    kt = _keys_buffer(hg, E1, S, rows)
    for hb in range(c0, c1):
        h0 = hb * hg
        h1 = min(h0 + hg, G)
        r = h1 - h0
        for h in range(r):
            g = h0 + h
            a, b = g // nB, g % nB
            for i in range(L):
                nl = -lse[g, i]
                qa[h, i, E] = tiny if nl == -np.inf else nl
                for e in range(E):
                    qa[h, i, e] = q[a, b, i, e] * scale
                dsum = np.float32(0.0)
                for e in range(Ev):
                    dsum += go[a, b, i, e] * o[a, b, i, e]
                    goa[h, i, e] = go[a, b, i, e]
                goa[h, i, Ev] = -dsum
            for j in range(S):
                for e in range(E):
                    ka[h, j, e] = k[a, b, j, e]
                    gk[g, j, e] = 0
                ka[h, j, E] = 1
                for e in range(Ev):
                    va[h, j, e] = v[a, b, j, e]
                    gv[g, j, e] = 0
                va[h, j, Ev] = 1
            if rows:
                _keys_transposed(ka[h], kt[h])
        for i0 in range(0, L, bq):
            i1 = min(i0 + bq, L)
            nb = i1 - i0
            pp, pd = pbuf.ctypes.data, dsbuf.ctypes.data
            if rows:
                _scores(qa, kt, S, pbuf, i0, nb, r)
            else:
                gemm(fb, fs, N, T, nb, S, E1, qa.ctypes.data + i0 * E1 * 4, E1, L * E1,
                     ka.ctypes.data, E1, S * E1, np.float32(0.0), pp, S, nb * S, r)
            call_vexp(fe, r * nb * S, pp, pp, MODE)                 # P = exp(S - lse)
            gemm(fb, fs, T, N, S, Ev, nb, pp, S, nb * S, goa.ctypes.data + i0 * V1 * 4, V1,
                 L * V1, np.float32(1.0), gv.ctypes.data + h0 * S * Ev * 4, Ev, S * Ev,
                 r)                                         # dV += P^T dO
            gemm(fb, fs, N, T, nb, S, V1, goa.ctypes.data + i0 * V1 * 4, V1, L * V1,
                 va.ctypes.data, V1, S * V1, np.float32(0.0), pd, S, nb * S, r)
            n = r * nb * S
            for x in range(n):                               # dS = P (dP - D)
                dsbuf[x] *= pbuf[x]
            gemm(fb, fs, N, N, nb, E, S, pd, S, nb * S, ka.ctypes.data, E1, S * E1,
                 np.float32(0.0), gqbuf.ctypes.data, E, nb * E, r)   # dS K
            gemm(fb, fs, T, N, S, E, nb, pd, S, nb * S, qa.ctypes.data + i0 * E1 * 4, E1, L * E1,
                 np.float32(1.0), gk.ctypes.data + h0 * S * E * 4, E, S * E, r)  # dK
            for h in range(r):
                for i in range(nb):
                    for e in range(E):
                        gq[h0 + h, i0 + i, e] = gqbuf[(h * nb + i) * E + e] * scale
