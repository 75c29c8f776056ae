"""Compiled loops for the kernels whose NumPy form makes several passes over memory, when
Numba is installed (it comes with the ``audio``, ``tour`` and ``test`` extras, through
librosa, and with the ``numba`` extra); NumPy otherwise, or under ``SHENDU_NUMBA=0``.

Max pooling's loops compute what its NumPy passes compute, bit for bit (a maximum and the
offset that won it are exact), as do the LSTM's, ReLU's, the feed-forward's, the softmax's
and SGD's: the same operations in the same order and dtype (scalars come in the arrays'
dtype, since a literal would make the arithmetic float64). Layer norm's sum each row in
float64, reassociated so that they vectorise: not NumPy's bits, but as close to the exact
result or closer. Every loop releases the interpreter lock; the row loops work on a range
of rows, so the kernels' threads split them as they split the NumPy loops (the same bits
for any count). A loop touching many arrays at once is written as one loop per output
where LLVM would otherwise not vectorise it (too many pointers to check for overlap).
Loops with ``tanh`` or ``exp`` stay in NumPy: without Intel's SVML, Numba's ``tanh`` runs
50 times slower than NumPy's vectorised one.
The compiled code is cached on disk (Numba's ``cache=True``): the first use in a fresh
install compiles for about a second, later processes load it in milliseconds.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["kernels", "kernels_for", "once", "run_flat"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_lock = threading.Lock()
_loaded: list = []          # [the module of compiled loops, or None]


def kernels():
    """The compiled loops (a namespace), or None when Numba is absent or switched off."""
    return once(_loaded, _lock, _build)


def once(loaded: list, lock, build):
    """``build()``'s result, made on the first call and kept as ``loaded[0]`` (``lock``
    held while it is made): the lazy loaders of the compiled code."""
    if loaded:
        return loaded[0]
    with lock:
        if not loaded:
            loaded.append(build())
    return loaded[0]


def kernels_for(x: np.ndarray, *params, min_size: int = 0):
    """The compiled loops for ``x`` when it is float32 or float64 with at least ``min_size``
    elements and the ``params`` given (None skipped) share its dtype; None otherwise (the
    caller's NumPy passes then)."""
    if x.dtype not in _DTYPES or x.size < min_size:
        return None
    if any(p is not None and p.dtype != x.dtype for p in params):
        return None
    return kernels()


def run_flat(fn, arrays, *scalars) -> None:
    """``fn(*arrays, *scalars)`` for an element-wise loop over flat arrays of one size,
    split into contiguous ranges over the kernel threads where the arrays are large enough
    (``conv.parallel``'s rules: a large model's optimizer step); each element's arithmetic,
    so its bits, do not depend on the split."""
    from shendu.functional import conv

    n = arrays[0].size
    conv.parallel(lambda lo, hi: fn(*[a[lo:hi] for a in arrays], *scalars), n, n)


def _build():
    choice = os.environ.get("SHENDU_NUMBA", "1").lower()
    if choice in ("0", "false", "no", "off"):
        return None
    try:
        import numba
    except ImportError:
        return None
    njit = numba.njit(cache=True, nogil=True)
    from shendu.functional._regions_compiled import (
        add_layer_norm_rows,
        add_layer_norm_split,
        layer_norm_grad_rows,
        layer_norm_grad_split,
        layer_norm_rows,
        layer_norm_split,
        normalize_slab,
        shift_slab,
    )
    # IEEE division (inf or NaN, no ZeroDivisionError): what NumPy gives, and what lets a
    # loop with a division vectorise
    njit_ieee = numba.njit(cache=True, nogil=True, error_model="numpy")

    @njit
    def max_tiles(z, kh, kw, best, code, lo, hi):
        """Max over the ``kh x kw`` tiles of ``z`` (A, H, W, B) into ``best`` (A, Ho, Wo,
        B), and the row-major offset of the first maximum into ``code``, for the output
        rows ``lo..hi`` of the ``A * Ho`` (row ``r`` is ``best[r // Ho, r % Ho]``); a NaN
        wins its window (as ``np.maximum``)."""
        ho, wo, nb = best.shape[1], best.shape[2], best.shape[3]
        if nb >= 256:       # long rows (spatial-outer): window by window
            for r in range(lo, hi):
                a, i = r // ho, r % ho
                for j in range(wo):
                    b, c = best[a, i, j], code[a, i, j]
                    first = z[a, i * kh, j * kw]
                    for n in range(nb):
                        b[n] = first[n]
                        c[n] = 0
                    for u in range(kh):
                        for v in range(kw):
                            if u == 0 and v == 0:
                                continue
                            q, k = z[a, i * kh + u, j * kw + v], u * kw + v
                            for n in range(nb):
                                if q[n] > b[n]:
                                    b[n] = q[n]
                                    c[n] = k
                                elif q[n] != q[n]:
                                    b[n] = q[n]
            return
        for r in range(lo, hi):   # short rows (batch-innermost): offset by offset per row
            a, i = r // ho, r % ho
            b, c = best[a, i], code[a, i]       # (Wo, B)
            first = z[a, i * kh]
            for j in range(wo):
                for n in range(nb):             # the innermost axis: one vector loop
                    b[j, n] = first[j * kw, n]
                    c[j, n] = 0
            for u in range(kh):
                zu = z[a, i * kh + u]
                for v in range(kw):
                    if u == 0 and v == 0:
                        continue
                    k = u * kw + v
                    for j in range(wo):
                        for n in range(nb):
                            q = zu[j * kw + v, n]
                            if q > b[j, n]:
                                b[j, n] = q
                                c[j, n] = k
                            elif q != q:
                                b[j, n] = q

    @njit
    def route_tiles(g, code, kh, kw, dz, lo, hi):
        """``dz`` (A, H, W, B) under the output rows ``lo..hi`` of the ``A * Ho`` (as in
        :func:`max_tiles`): each tile's gradient ``g`` at the offset ``code`` names, 0 at
        the others (rows and columns past the tiles are left as they are)."""
        ho, wo, nb = g.shape[1], g.shape[2], g.shape[3]
        for r in range(lo, hi):
            a, i = r // ho, r % ho
            gr, cr = g[a, i], code[a, i]        # (Wo, B): one row's windows at a time
            for u in range(kh):
                du = dz[a, i * kh + u]
                for j in range(wo):
                    for v in range(kw):
                        k = u * kw + v
                        for n in range(nb):
                            du[j * kw + v, n] = gr[j, n] if cr[j, n] == k else 0

    @njit
    def col2im_unit(dcols, first, pt, pl, dx, lo, hi):
        """Channels ``lo..hi`` of conv's col2im for stride 1 and dilation 1: ``dx`` (C, H, W,
        N) = the tap ``first`` (which reads every input once) plus every other tap in order,
        each added where it read (``dcols`` (C, kh, kw, Ho, Wo, N)): the NumPy loop's adds in
        its order (its bits), in one pass over ``dx``."""
        kh, kw, ho, wo, nb = dcols.shape[1:]
        fi, fj = first // kw, first % kw
        for c in range(lo, hi):
            for y in range(dx.shape[1]):
                for x in range(dx.shape[2]):
                    d = dx[c, y, x]
                    s0 = dcols[c, fi, fj, y - fi + pt, x - fj + pl]
                    for n in range(nb):
                        d[n] = s0[n]
                    for k in range(kh * kw):
                        i, j = k // kw, k % kw
                        yo, xo = y - i + pt, x - j + pl
                        if k != first and 0 <= yo < ho and 0 <= xo < wo:
                            sk = dcols[c, i, j, yo, xo]
                            for n in range(nb):
                                d[n] += sk[n]

    @njit
    def tile_patches(xc, r0, sh, sw, dh, dw, pt, pl, cols):
        """A tile of conv's patch matrix: ``cols`` (C, kh, kw, R, Wo, N) =
        ``xc[c, (r0 + y)*sh + i*dh - pt, x*sw + j*dw - pl]`` of the batch-innermost input
        ``xc`` (C, H, W, N), zero where that lies in the padding (the NumPy loop's copies
        of the padded input, in one call)."""
        nc, kh, kw, rr, wo, nb = cols.shape
        h, w = xc.shape[1], xc.shape[2]
        for c in range(nc):
            for i in range(kh):
                for j in range(kw):
                    for y in range(rr):
                        dst = cols[c, i, j, y]
                        yi = (r0 + y) * sh + i * dh - pt
                        if yi < 0 or yi >= h:
                            for x in range(wo):
                                d = dst[x]
                                for n in range(nb):
                                    d[n] = 0
                            continue
                        src = xc[c, yi]
                        for x in range(wo):
                            xi, d = x * sw + j * dw - pl, dst[x]
                            if xi < 0 or xi >= w:
                                for n in range(nb):
                                    d[n] = 0
                            else:
                                s = src[xi]
                                for n in range(nb):
                                    d[n] = s[n]

    @njit
    def gather_taps(prod, ys, xs, sh, sw, dx, q0, q1):
        """Rows ``q0..q1`` of conv's input gradient ``dx`` (C, H, W, N) from the products of
        kernel row ``i`` (``prod[i]`` (C, kw, NY, Wo, N), output rows ``ys[i, 0]..ys[i, 1]``
        whose first reads row ``q0 + ys[i, 2]``) and their column taps (``xs[j]``: outputs
        ``xs[j, 0]..xs[j, 1]`` read column ``xs[j, 2]`` on): zero, then every tap added
        where it read, kernel row by row and column by column (the NumPy loop's adds in its
        order: its bits)."""
        nc, w, nb = dx.shape[0], dx.shape[2], dx.shape[3]
        kh, kw = ys.shape[0], xs.shape[0]
        for c in range(nc):
            for q in range(q0, q1):
                for x in range(w):
                    d = dx[c, q, x]
                    for n in range(nb):
                        d[n] = 0
            for i in range(kh):
                y0, y1, iy = ys[i, 0], ys[i, 1], ys[i, 2]
                for yy in range(y1 - y0):
                    row = dx[c, q0 + iy + yy * sh]
                    for j in range(kw):
                        x0, x1, ix = xs[j, 0], xs[j, 1], xs[j, 2]
                        src = prod[i, c, j, yy]
                        for x in range(x1 - x0):
                            d, p = row[ix + x * sw], src[x0 + x]
                            for n in range(nb):
                                d[n] += p[n]

    @njit
    def patch_rows(x4, r0, sh, sw, dh, dw, pt, pl, kh, kw, rows, ones):
        """Rows of conv's patch matrix for output rows ``r0..``: ``rows`` (R, Wo, N, K)
        = ``x4[(r0 + y)*sh + i*dh - pt, x*sw + j*dw - pl, n, c]`` at column ``(i*kw + j)*C +
        c`` of the spatial-outer input ``x4`` (H, W, N, C), zero in the padding, and a last
        column of ones when ``ones`` (the bias's)."""
        rr, wo, nb, kp = rows.shape
        h, w, c = x4.shape[0], x4.shape[1], x4.shape[3]
        for y in range(rr):
            for x in range(wo):
                for n in range(nb):
                    d = rows[y, x, n]
                    for i in range(kh):
                        yi = (r0 + y) * sh + i * dh - pt
                        for j in range(kw):
                            xi, base = x * sw + j * dw - pl, (i * kw + j) * c
                            if yi < 0 or yi >= h or xi < 0 or xi >= w:
                                for cc in range(c):
                                    d[base + cc] = 0
                            else:
                                s = x4[yi, xi, n]
                                for cc in range(c):
                                    d[base + cc] = s[cc]
                    if ones:
                        d[kp - 1] = 1

    @njit
    def gather_rows(prod, ys, xs, sh, sw, dx, q0, q1):
        """Rows ``q0..q1`` of conv's input gradient ``dx`` (H, W, N, C), spatial-outer,
        from the products of kernel row ``i`` (``prod[i]`` (NY, Wo, N, kw*C): output rows
        ``ys[i, 0]..ys[i, 1]``, whose first reads row ``q0 + ys[i, 2]``) and their column
        taps (``xs[j]``: outputs ``xs[j, 0]..xs[j, 1]`` read column ``xs[j, 2]`` on): zero,
        then every tap added where it read, kernel row by row, column by column."""
        w, nb, c = dx.shape[1], dx.shape[2], dx.shape[3]
        kh, kw = ys.shape[0], xs.shape[0]
        for q in range(q0, q1):
            for x in range(w):
                for n in range(nb):
                    d = dx[q, x, n]
                    for cc in range(c):
                        d[cc] = 0
        for i in range(kh):
            y0, y1, iy = ys[i, 0], ys[i, 1], ys[i, 2]
            for yy in range(y1 - y0):
                row = dx[q0 + iy + yy * sh]
                for j in range(kw):
                    x0, x1, ix = xs[j, 0], xs[j, 1], xs[j, 2]
                    for x in range(x1 - x0):
                        dst, src = row[ix + x * sw], prod[i, yy, x0 + x]
                        for n in range(nb):
                            d, p = dst[n], src[n]
                            for cc in range(c):
                                d[cc] += p[j * c + cc]

    @njit
    def column_sums(g, out, lo, hi):
        """``out[b]`` (float64) = the sums down the columns of ``g`` (M, O) over its rows
        ``b*B..(b+1)*B`` for the blocks ``lo..hi`` (``B = ceil(M / len(out))``), each a
        running float64 sum."""
        m, o = g.shape
        step = (m + out.shape[0] - 1) // out.shape[0]
        for b in range(lo, hi):
            acc = out[b]
            for k in range(o):
                acc[k] = 0.0
            for r in range(b * step, min(m, (b + 1) * step)):
                row = g[r]
                for k in range(o):
                    acc[k] += row[k]

    @njit
    def lstm_gates(s, sn, hb, half):
        """One LSTM step after its ``tanh``: ``s`` (6·hb,) = ``[tanh(a_i/2), tanh(a_o/2),
        tanh(a_f/2), g, ·, c_{t-1}]`` becomes ``[i, o, f, g, ·, c_{t-1}]`` (``σ(a) = (1 +
        tanh(a/2)) / 2``) and ``c_t = i g + f c_{t-1}`` goes to ``sn[5·hb:]``: the NumPy
        passes' arithmetic in their order, so their bits, in one pass."""
        for x in range(hb):
            i = s[x] * half + half
            o = s[hb + x] * half + half
            f = s[2 * hb + x] * half + half
            s[x] = i
            s[hb + x] = o
            s[2 * hb + x] = f
            sn[5 * hb + x] = i * s[3 * hb + x] + f * s[5 * hb + x]

    @njit
    def lstm_factors(X, F, hb, one, rev):
        """The LSTM's backward factors of m steps: each row of ``X`` (m, 6·hb) = ``[i, o, f,
        g, tanh c_t, c_{t-1}]`` gives a row of ``F`` (m, 6·hb) = ``[g i(1-i), tanh(c_t)
        o(1-o), c_{t-1} f(1-f), i(1-g²), o(1-tanh² c_t), f]`` (row ``s`` into row ``s``, or
        ``m-1-s`` with ``rev``): ``recurrent._lstm_factors``'s NumPy passes' arithmetic in
        their order (their bits). A loop per factor, so that each vectorises (one loop over
        the twelve streams does not); ``one`` is 1 in the arrays' dtype (a literal 1 would
        make the arithmetic float64)."""
        m = X.shape[0]
        for s in range(m):
            x, d = X[s], F[m - 1 - s if rev else s]
            for q in range(3):                  # σ'(a) = σ(1-σ), times g, tanh c_t, c_{t-1}
                a, b, o = x[q * hb:(q + 1) * hb], x[(q + 3) * hb:(q + 4) * hb], \
                    d[q * hb:(q + 1) * hb]
                for k in range(hb):
                    o[k] = (one - a[k]) * a[k] * b[k]
            for q in range(2):                  # (1 - g²) i, (1 - tanh² c_t) o
                a, b, o = x[(q + 3) * hb:(q + 4) * hb], x[q * hb:(q + 1) * hb], \
                    d[(q + 3) * hb:(q + 4) * hb]
                for k in range(hb):
                    o[k] = (one - a[k] * a[k]) * b[k]
            a, o = x[2 * hb:3 * hb], d[5 * hb:6 * hb]
            for k in range(hb):
                o[k] = a[k]

    @njit
    def lstm_step_grads(dc, dh, f, da):
        """One step of the LSTM's backward from its factors ``f`` (6, H, B) (see
        ``recurrent._lstm_factors``) and the carried ``δc, δh`` (H, B): ``δc += δh f_4``,
        ``δa = [f_0 δc, f_1 δh, f_2 δc, f_3 δc]`` into ``da`` (4, H, B), then ``δc *= f_5``;
        the NumPy passes' arithmetic in their order, so their bits, in one pass."""
        nh, nb = dc.shape
        for h in range(nh):
            dcr, dhr = dc[h], dh[h]
            f0, f1, f2, f3, f4, f5 = f[0, h], f[1, h], f[2, h], f[3, h], f[4, h], f[5, h]
            a0, a1, a2, a3 = da[0, h], da[1, h], da[2, h], da[3, h]
            for b in range(nb):
                c = dcr[b] + dhr[b] * f4[b]
                a0[b] = f0[b] * c
                a1[b] = f1[b] * dhr[b]
                a2[b] = f2[b] * c
                a3[b] = f3[b] * c
                dcr[b] = c * f5[b]

    @njit
    def lstm_step_grads_gates(dc, dh, x, da, one, c):
        """:func:`lstm_step_grads` from the step's slab ``x`` (6, H, B) = ``[i, o, f, g,
        tanh c_t, c_{t-1}]`` instead of its factors: each factor made where it is used, in
        :func:`lstm_factors`' arithmetic (so the same bits), a loop per output so that
        each vectorises; ``c`` (H·B,) scratch for ``δc``."""
        n = dc.size
        nh, nb = dc.shape
        dcf, dhf, xf = dc.reshape(n), dh.reshape(n), x.reshape(6, n)
        ig, og, fg, gg, tc, cp = xf[0], xf[1], xf[2], xf[3], xf[4], xf[5]
        for k in range(n):
            c[k] = dcf[k] + dhf[k] * ((one - tc[k] * tc[k]) * og[k])
        for h in range(nh):
            a, o = da[0, h], h * nb
            for b in range(nb):
                a[b] = (one - ig[o + b]) * ig[o + b] * gg[o + b] * c[o + b]
        for h in range(nh):
            a, o = da[1, h], h * nb
            for b in range(nb):
                a[b] = (one - og[o + b]) * og[o + b] * tc[o + b] * dhf[o + b]
        for h in range(nh):
            a, o = da[2, h], h * nb
            for b in range(nb):
                a[b] = (one - fg[o + b]) * fg[o + b] * cp[o + b] * c[o + b]
        for h in range(nh):
            a, o = da[3, h], h * nb
            for b in range(nb):
                a[b] = (one - gg[o + b] * gg[o + b]) * ig[o + b] * c[o + b]
        for k in range(n):
            dcf[k] = c[k] * fg[k]

    @njit
    def shift_columns(s, scale):
        """``s *= scale; s -= max(s, axis=1)`` in place for ``s`` (G, S, L), a max of
        ``-inf`` (a column with every entry masked) taken as 0 and a NaN winning its
        column: NumPy's product, max and subtraction in one pass over each (S, L) slab
        (``_regions_compiled.shift_slab``; their bits). ``scale`` of ``s``'s dtype (1
        leaves ``s`` as it is: ``x * 1`` is ``x``)."""
        m = np.empty(s.shape[2], s.dtype)
        for g in range(s.shape[0]):
            shift_slab(s[g], m, scale)

    @njit
    def row_max(x, out):
        """``out = x.max(axis=1)`` for ``x`` (M, C), C >= 1, a NaN winning its row (as
        NumPy's): exact, so NumPy's value."""
        for n in range(x.shape[0]):
            r = x[n]
            m = r[0]
            for j in range(1, r.shape[0]):
                v = r[j]
                if v > m or v != v:
                    m = v
            out[n] = m

    @njit
    def normalize_columns(s):
        """``s /= z`` for ``s`` (G, S, L), ``z = s.sum(axis=1)`` (a sum of 0, a fully masked
        column, made 1), each (S, L) slab summed row by row in NumPy's order and divided
        while it is still in cache (``_regions_compiled.normalize_slab``): NumPy's sum and
        division, their bits, in one pass."""
        z = np.empty(s.shape[2], s.dtype)
        for g in range(s.shape[0]):
            normalize_slab(s[g], z)

    @njit
    def sgd_momentum(p, g, b, mu, neg_lr):
        """Heavy-ball SGD on flat arrays, in place: ``b = mu b + g``, ``p += neg_lr b``, the
        NumPy passes' roundings in their order (their bits), in one pass."""
        for i in range(p.size):
            v = b[i] * mu
            v = v + g[i]
            b[i] = v
            p[i] = p[i] + v * neg_lr

    @njit
    def sgd_plain(p, g, neg_lr):
        """Plain SGD on flat arrays, in place: ``p += neg_lr g`` with NumPy's two roundings
        (the product, then the sum), in one pass."""
        for i in range(p.size):
            p[i] = p[i] + g[i] * neg_lr

    @njit_ieee
    def adam_step(p, g, m, v, decay, w, small, b2, omb2, bc2, eps, nss):
        """One Adam (or AdamW) step on flat arrays, in place: ``optim.adam.adam_update``'s
        NumPy passes' arithmetic, element by element in their order (their bits), in one
        pass that vectorises. ``decay``: AdamW's ``1 - γλ`` (1 for none: the product by 1
        changes no bits); ``small``: ``|1-β₁| < ½``, where ``w`` is ``1-β₁`` (torch's
        lerp), else ``w`` is ``1 - (1-β₁)`` (its mirrored form); ``nss`` = ``-γ/(1-β₁ᵗ)``,
        ``bc2`` = ``√(1-β₂ᵗ)``."""
        n = p.size
        if small:
            for i in range(n):
                d = g[i]
                mi = m[i] + (d - m[i]) * w
                m[i] = mi
                vi = v[i] * b2 + (d * omb2) * d
                v[i] = vi
                p[i] = p[i] * decay + (mi * nss) / (np.sqrt(vi) / bc2 + eps)
        else:
            for i in range(n):
                d = g[i]
                mi = d - (d - m[i]) * w
                m[i] = mi
                vi = v[i] * b2 + (d * omb2) * d
                v[i] = vi
                p[i] = p[i] * decay + (mi * nss) / (np.sqrt(vi) / bc2 + eps)

    @njit
    def additive_grads(t, dp, w, gq, gk, one):
        """Additive attention's ``dU = (1 - T²) de w`` (``t`` (N, L, S, H) the saved ``T``,
        ``dp`` (N, L, S) ``de``, ``w`` (H,)) summed over the keys into ``gq`` (N, L, H) and
        over the queries into ``gk`` (N, S, H), without writing ``dU``: NumPy's passes
        ``(1 - T·T) de w`` element by element, and its sums' order (0, then each term in
        turn: a -0 term alone sums to +0): their bits. ``one``: 1 in the arrays' dtype (a
        literal 1 would make the arithmetic float64)."""
        n_, l_, s_, h_ = t.shape
        zero = one - one
        for n in range(n_):
            for l in range(l_):
                q = gq[n, l]
                for s in range(s_):
                    c = dp[n, l, s]
                    x, k = t[n, l, s], gk[n, s]
                    for h in range(h_):
                        u = (one - x[h] * x[h]) * c * w[h]
                        if s == 0:
                            q[h] = zero + u
                        else:
                            q[h] += u
                        if l == 0:
                            k[h] = zero + u
                        else:
                            k[h] += u

    @njit
    def bias_relu(h, b):
        """``h = max(h + b, 0)`` in place for ``h`` (M, N), ``b`` (N,): ``np.add`` then
        ``np.maximum`` in one pass, their bits (a NaN kept, -0 made +0, as ``np.maximum``
        does)."""
        m, n = h.shape
        for i in range(m):
            r = h[i]
            for j in range(n):
                v = r[j] + b[j]
                r[j] = 0 if v <= 0 else v

    @njit
    def relu_grad(d, h):
        """``d *= [h > 0]`` in place (``h`` the ReLU's output, ``d`` (M, N) the gradient at
        it; a NaN ``h`` passes ``d``): the NumPy passes' product by 1 or 0, in one pass."""
        m, n = d.shape
        for i in range(m):
            dr, hr = d[i], h[i]
            for j in range(n):
                dr[j] = dr[j] * (0 if hr[j] <= 0 else 1)

    @njit
    def relu_into(a, out):
        """``out = max(a, 0)`` over flat arrays: ``np.maximum(a, 0)``'s bits (a NaN kept, -0
        made +0) in one pass that vectorises (NumPy's ``maximum`` takes twice as long on a
        (128, 256) float32 array, its NaN handling included)."""
        for i in range(a.size):
            v = a[i]
            out[i] = 0 if v <= 0 else v

    @njit
    def relu_grad_into(g, h, out):
        """``out = g [h > 0]`` over flat arrays (``h`` the ReLU's output; a NaN ``h`` passes
        ``g``): NumPy's ``g * ~(h <= 0)`` in one pass, its bits."""
        for i in range(g.size):
            out[i] = g[i] * (0 if h[i] <= 0 else 1)

    @njit
    def dropout_relu_grad(d, h, keep, inv):
        """``d = d inv keep [h > 0]`` in place (inverted dropout's mask ``keep`` and scale
        ``inv``, then ReLU's): three NumPy passes' products in their order, in one pass."""
        m, n = d.shape
        for i in range(m):
            dr, hr, kr = d[i], h[i], keep[i]
            for j in range(n):
                dr[j] = dr[j] * inv * (1 if kr[j] else 0) * (0 if hr[j] <= 0 else 1)

    @njit
    def heads_split(y, b, bias, batch_first, out, lo, hi):
        """Self-attention's packed projection ``y`` (A0, A1, 3, H, hd) as ``q, k, v`` in
        one array ``out`` (3, N, H, L, hd), rows ``lo..hi`` of A0 (``(N, L)`` or, without
        ``batch_first``, ``(L, N)``), adding the bias ``b`` (3, H, hd) when ``bias``:
        ``y + b``'s bits, written where the heads read them contiguously."""
        a1, c3, nh, hd = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
        for i in range(lo, hi):
            for j in range(a1):
                n, t = (i, j) if batch_first else (j, i)
                for c in range(c3):
                    for h in range(nh):
                        src, dst = y[i, j, c, h], out[c, n, h, t]
                        if bias:
                            bb = b[c, h]
                            for e in range(hd):
                                dst[e] = src[e] + bb[e]
                        else:
                            for e in range(hd):
                                dst[e] = src[e]

    @njit
    def heads_merge(gq, gk, gv, batch_first, g, lo, hi):
        """:func:`heads_split`'s layout back: ``g`` (A0, A1, 3, H, hd) from the heads'
        gradients ``gq, gk, gv`` (N, H, L, hd), rows ``lo..hi`` of A0."""
        a1, nh, hd = g.shape[1], g.shape[3], g.shape[4]
        for i in range(lo, hi):
            for j in range(a1):
                n, t = (i, j) if batch_first else (j, i)
                for h in range(nh):
                    d0, d1, d2 = g[i, j, 0, h], g[i, j, 1, h], g[i, j, 2, h]
                    s0, s1, s2 = gq[n, h, t], gk[n, h, t], gv[n, h, t]
                    for e in range(hd):
                        d0[e] = s0[e]
                    for e in range(hd):
                        d1[e] = s1[e]
                    for e in range(hd):
                        d2[e] = s2[e]

    @njit
    def speed_interp(x, factor, out):
        """``out[i] = x(i * factor)`` by linear interpolation between samples, as
        ``np.interp(np.arange(len(out)) * factor, np.arange(len(x)), x)`` computes it
        (float64 arithmetic, the last sample past the end, the same NaN fallbacks; its
        bits, tested), rounded to ``out``'s dtype; ``len(x) >= 2``."""
        last = x.shape[0] - 1
        for i in range(out.shape[0]):
            t = i * factor
            if t != t:
                out[i] = t
                continue
            if t >= last:
                out[i] = x[last]
                continue
            j = int(t)                                  # t >= 0: its floor
            if j == t:
                out[i] = x[j]
                continue
            y0, y1 = np.float64(x[j]), np.float64(x[j + 1])
            slope = y1 - y0                             # over a unit step
            v = slope * (t - j) + y0
            if v != v:                                  # NaN one way: the other way
                v = slope * (t - (j + 1)) + y1
                if v != v and y0 == y1:
                    v = y0
            out[i] = v

    @njit
    def add_scaled(out, noise, sd):
        """``out += (sd * noise).astype(out.dtype)`` in one pass (``noise`` float64, the
        product rounded to ``out``'s dtype before the add, as NumPy's passes do: their
        bits)."""
        for j in range(out.shape[0]):
            out[j] = out[j] + out.dtype.type(sd * noise[j])

    @njit
    def permute_rows(src, out, dims, sst, dst, lo, hi):
        """``out[Σ i_k dst_k] = src[Σ i_k sst_k]`` (flat arrays, element strides) over the
        box ``dims`` of 4 axes, ``i_0`` in ``lo..hi``: the copy of a transposed view whose
        axis 2 is contiguous in ``src`` (``sst[2] == 1``) and axis 3 in ``out``
        (``dst[3] == 1``), axes 2 and 3 walked in tiles of 16 x 16 so that both sides of a
        tile stay in cache; each source run read in one go."""
        d1, d2, d3 = dims[1], dims[2], dims[3]
        s3, t2 = sst[3], dst[2]
        for i0 in range(lo, hi):
            for i1 in range(d1):
                ob = i0 * dst[0] + i1 * dst[1]
                sb = i0 * sst[0] + i1 * sst[1]
                for j0 in range(0, d2, 16):
                    j1 = min(j0 + 16, d2)
                    for k0 in range(0, d3, 16):
                        for k in range(k0, min(k0 + 16, d3)):
                            q, o = sb + k * s3, ob + k
                            for j in range(j0, j1):
                                out[o + j * t2] = src[q + j]

    class Kernels:
        pass

    K = Kernels()
    K.max_tiles, K.route_tiles, K.col2im_unit = max_tiles, route_tiles, col2im_unit
    K.tile_patches, K.gather_taps = tile_patches, gather_taps
    K.patch_rows, K.gather_rows, K.column_sums = patch_rows, gather_rows, column_sums
    K.layer_norm_rows, K.layer_norm_grad_rows = layer_norm_rows, layer_norm_grad_rows
    K.add_layer_norm_rows = add_layer_norm_rows
    K.layer_norm_split, K.layer_norm_grad_split = layer_norm_split, layer_norm_grad_split
    K.add_layer_norm_split = add_layer_norm_split
    K.lstm_gates, K.lstm_step_grads = lstm_gates, lstm_step_grads
    K.lstm_factors, K.lstm_step_grads_gates = lstm_factors, lstm_step_grads_gates
    K.shift_columns, K.normalize_columns = shift_columns, normalize_columns
    K.bias_relu, K.relu_grad, K.dropout_relu_grad = bias_relu, relu_grad, dropout_relu_grad
    K.relu_grad_into, K.sgd_momentum, K.sgd_plain = relu_grad_into, sgd_momentum, sgd_plain
    K.relu_into, K.adam_step, K.additive_grads = relu_into, adam_step, additive_grads
    K.heads_split, K.heads_merge = heads_split, heads_merge
    K.row_max, K.permute_rows = row_max, permute_rows
    K.speed_interp, K.add_scaled = speed_interp, add_scaled
    return K

