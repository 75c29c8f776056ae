"""The compiled regions of :mod:`shendu.functional._regions`, and calls into MKL from
compiled code through addresses given at run time (imported only where Numba is installed).

Defined at module level, so that Numba's disk cache finds them again in the next process (a
closure's cache entry is keyed on its cells, which differ between processes); the addresses
are arguments, not constants, for the same reason."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from shendu.functional._conv_compiled import (
    VECTOR_BYTES,
    _transpose_tile,
    gemm_rows,
    gemm_rows_add,
    linear_rows,
    linear_rows_stack,
)

__all__ = ["attention_heads", "call_gemm", "call_gemm_batch", "call_loop", "call_vexp",
           "add_layer_norm_rows", "add_layer_norm_split", "feed_forward", "layer_norm_grad_rows",
           "layer_norm_grad_split", "layer_norm_rows", "layer_norm_split", "lstm_back_parts",
           "lstm_back_steps", "lstm_scan", "lstm_scan_parts", "lstm_scan_serial",
           "lstm_weight_grad",
           "normalize_slab", "shift_slab", "split", "split_stack",
           "stack_serial", "vector_call"]


def _foreign(kinds: str):
    """The codegen of a call to a C function whose address is the first argument, the others
    converted by ``kinds``: ``i`` a 32-bit int, ``l`` a 64-bit one, ``p`` an address (passed
    as an integer), ``r`` a float or double as given. A constant leading ``101`` (CBLAS's
    row-major) is added where ``kinds`` starts with ``R``."""
    row = kinds.startswith("R")
    kinds = kinds[1:] if row else kinds

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ptr = ir.IntType(8).as_pointer()
        params, vals = ([i32], [ir.Constant(i32, 101)]) if row else ([], [])
        for kind, v, ty in zip(kinds, args[1:], signature.args[1:]):
            if kind == "i":
                params.append(i32)
                vals.append(builder.trunc(v, i32))
            elif kind == "l":
                params.append(i64)
                vals.append(v)
            elif kind == "p":
                params.append(ptr)
                vals.append(builder.inttoptr(v, ptr))
            else:
                real = ir.FloatType() if ty == types.float32 else ir.DoubleType()
                params.append(real)
                vals.append(v)
        fnty = ir.FunctionType(ir.VoidType(), params)
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), vals)
        return context.get_dummy_value()

    return codegen


@intrinsic
def call_gemm(typingctx, f, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc):
    """``cblas_?gemm(CblasRowMajor, ta, tb, ...)`` at address ``f``: sgemm's float
    scalars when ``alpha`` is float32, dgemm's double ones when float64."""
    sig = types.void(f, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc)
    return sig, _foreign("Riiiiirpipirpi")


@intrinsic
def call_gemm_batch(typingctx, f, ta, tb, m, n, k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc,
                    ldc, sc, count):
    """``cblas_?gemm_batch_strided(CblasRowMajor, ta, tb, ...)`` at address ``f``."""
    sig = types.void(f, ta, tb, m, n, k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc,
                     count)
    return sig, _foreign("Riiiiirpiipiirpiii")


@intrinsic
def call_vexp(typingctx, f, n, pa, py, mode):
    """``v?Exp(n, a, y, mode)`` (MKL's vector math, ``mode`` a 64-bit int) at address
    ``f``."""
    return types.void(f, n, pa, py, mode), _foreign("ippl")


@intrinsic
def call_loop(typingctx, f, pargs, pdims, psteps, data):
    """A NumPy ufunc's inner loop, ``f(char **args, npy_intp *dimensions, npy_intp *steps,
    void *data)``, at address ``f`` (the arrays of pointers, counts and strides at the
    addresses given)."""
    return types.void(f, pargs, pdims, psteps, data), _foreign("pppp")


@njit(nogil=True, cache=True)
def vector_call(f, mode, data, n, px, py, isz):
    """``y = fn(x)`` over ``n`` contiguous elements of size ``isz`` at ``px`` into ``py``:
    MKL's vector math at ``f`` in VML mode ``mode`` where ``mode >= 0``; otherwise the NumPy
    ufunc loop at ``f`` with its ``data`` (``_regions.numpy_loop``: NumPy's own function,
    so its bits)."""
    if mode >= 0:
        call_vexp(f, n, px, py, mode)
        return n
    buf = np.empty(5, np.int64)             # args [x, y], dimensions [n], steps [isz, isz]
    buf[0] = px
    buf[1] = py
    buf[2] = n
    buf[3] = isz
    buf[4] = isz
    b = buf.ctypes.data
    call_loop(f, b, b + 16, b + 24, data)
    return buf[2]                           # buf stays alive until the loop has run


@njit(parallel=True, nogil=True, cache=True)
def split(f, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, isz, t):
    rows = m >= n
    size = m if rows else n
    for i in prange(t):
        lo = size * i // t
        hi = size * (i + 1) // t
        if hi > lo:
            if rows:                    # rows lo..hi of op(A) and of C
                oa = lo * lda if ta == 111 else lo
                call_gemm(f, ta, tb, hi - lo, n, k, alpha, pa + isz * oa, lda, pb, ldb,
                          beta, pc + isz * lo * ldc, ldc)
            else:                       # columns lo..hi of op(B) and of C
                ob = lo if tb == 111 else lo * ldb
                call_gemm(f, ta, tb, m, hi - lo, k, alpha, pa, lda, pb + isz * ob, ldb,
                          beta, pc + isz * lo, ldc)



@njit(parallel=True, nogil=True, cache=True)
def split_stack(f, ta, tb, m, n, k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc,
                count, isz, t):
    """``count`` products ``C_g = alpha op(A_g) op(B_g) + beta C_g``, the matrices ``g``
    lying ``sa``, ``sb``, ``sc`` elements apart (0: one matrix for all), in ``t`` runs of
    consecutive ``g``, one per thread."""
    for i in prange(t):
        for g in range(count * i // t, count * (i + 1) // t):
            call_gemm(f, ta, tb, m, n, k, alpha, pa + isz * sa * g, lda, pb + isz * sb * g,
                      ldb, beta, pc + isz * sc * g, ldc)


@njit(nogil=True, cache=True)
def stack_serial(f, ta, tb, m, n, k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc,
                 count, isz):
    """:func:`split_stack`'s products on the calling thread, one ``cblas_?gemm`` call per
    matrix: MKL's strided batch call, entered from two threads at once, ran each call 11
    times slower here (attention's 64 heads of (64, 32) @ (32, 64): 180 µs alone, 2.0 ms
    beside another), where these loops run side by side at full speed (170 and 184 µs)."""
    for g in range(count):
        call_gemm(f, ta, tb, m, n, k, alpha, pa + isz * sa * g, lda, pb + isz * sb * g, ldb,
                  beta, pc + isz * sc * g, ldc)


@njit(nogil=True, cache=True)
def _lstm_rows(fg, fth, dth, W, Z, Sf, P, j, p, n, kdim, lo, hi, wrap, lean, b0, b1):
    """Hidden units ``lo..hi`` of one LSTM step for the sequences (columns) ``b0..b1``
    (``recurrent.LSTMScan``'s slab ``Sf[j]`` = ``[i, o, f, g, tanh c_t, c_{t-1}]`` flat,
    each block (H, b1 - b0): the slabs hold those columns alone). ``W``'s rows ``4 lo .. 4
    hi`` are the fused weights of those units' four gates, in the slab's gate order: one
    product ``W[4 lo:4 hi] @ Z[p][:kdim, b0:b1]`` by ``cblas_?gemm`` at ``fg`` (by the rows
    loops, ``_conv_compiled.gemm_rows``, where ``fg`` is 0: ``_gemm.rows_take``) into ``P``
    (flat; the slab's gate rows themselves when it is None, for all units), NumPy's own
    ``tanh`` loop at ``fth`` (its data ``dth``) over it, the gates' fix-up and ``c_t``
    (into ``Sf[j + 1]``) as ``_numba.lstm_gates``, ``tanh c_t`` and ``h_t = o tanh c_t``
    into the h rows of ``Z[n]``; with ``wrap``, ``c_t`` also into ``Sf[0]`` (the slabs are
    reused in a ring). ``lean`` (inference: nothing of the step is kept but ``c_t`` and
    ``h_t``): the gates are not written back to the slab, ``c_t`` made in one loop from the
    activated product and ``h_t`` in another, the same arithmetic (so the same bits) in two
    passes instead of six."""
    G, K = W.shape
    H = G // 4
    B = Z.shape[2]
    Bs = b1 - b0                                # the slabs' width
    hb = H * Bs
    isz = W.itemsize
    one, zero, half = W.dtype.type(1), W.dtype.type(0), W.dtype.type(0.5)
    s, sn = Sf[j], Sf[j + 1]
    rows, a = hi - lo, lo * Bs
    nb = rows * Bs
    q = s[:4 * hb] if P is None else P[:4 * nb]
    pq = q.ctypes.data
    if fg == 0:
        gemm_rows(W.reshape(-1)[4 * lo * K:], K, Z.reshape(-1)[p * K * B + b0:], B, q, Bs, Bs,
                  kdim, 0, 4 * rows, VECTOR_BYTES // isz)
    else:
        call_gemm(fg, 111, 111, 4 * rows, Bs, kdim, one, W.ctypes.data + isz * 4 * lo * K, K,
                  Z.ctypes.data + isz * (p * K * B + b0), B, zero, pq, Bs)
    vector_call(fth, -1, dth, 4 * nb, pq, pq, isz)
    gap = hb if P is None else nb               # between one gate's block and the next
    qa = a if P is None else 0                  # the units' first element in each block
    cp, cn = s[5 * hb + a:5 * hb + a + nb], sn[5 * hb + a:5 * hb + a + nb]
    zn = Z[n]
    if lean:
        qi, qo = q[qa:qa + nb], q[gap + qa:gap + qa + nb]
        qf, qg = q[2 * gap + qa:2 * gap + qa + nb], q[3 * gap + qa:3 * gap + qa + nb]
        for x in range(nb):
            cn[x] = (qi[x] * half + half) * qg[x] + (qf[x] * half + half) * cp[x]
        tc = s[4 * hb + a:4 * hb + a + nb]
        vector_call(fth, -1, dth, nb, cn.ctypes.data, tc.ctypes.data, isz)
        for u in range(lo, hi):
            h = zn[K - H + u, b0:b1]
            r = (u - lo) * Bs
            for v in range(Bs):
                h[v] = (qo[r + v] * half + half) * tc[r + v]
    else:
        # one loop per output, each over two or three streams, so that each vectorises
        for g in range(3):                      # i, o, f: σ(a) = (1 + tanh(a/2)) / 2
            src, dst = q[g * gap + qa:g * gap + qa + nb], s[g * hb + a:g * hb + a + nb]
            for x in range(nb):
                dst[x] = src[x] * half + half
        gt = s[3 * hb + a:3 * hb + a + nb]
        if P is not None:
            src = q[3 * gap:3 * gap + nb]
            for x in range(nb):
                gt[x] = src[x]
        it, ft = s[a:a + nb], s[2 * hb + a:2 * hb + a + nb]
        for x in range(nb):
            cn[x] = it[x] * gt[x] + ft[x] * cp[x]
        vector_call(fth, -1, dth, nb, sn.ctypes.data + isz * (5 * hb + a),
                    s.ctypes.data + isz * (4 * hb + a), isz)
        for u in range(lo, hi):
            h = zn[K - H + u, b0:b1]
            for v in range(Bs):
                h[v] = s[hb + u * Bs + v] * s[4 * hb + u * Bs + v]
    if wrap:
        s0 = Sf[0]
        for x in range(a, a + nb):
            s0[5 * hb + x] = sn[5 * hb + x]


@njit(parallel=True, nogil=True, cache=True)
def lstm_scan(fg, fth, dth, W, Z, S, T, reverse, C, ring, kx, P):
    """``recurrent.LSTMScan``'s forward steps, each one region of ``t = len(P)`` threads,
    thread ``i`` computing hidden units ``H i / t .. H (i + 1) / t`` (:func:`_lstm_rows`,
    into its scratch ``P[i]``): ``W`` (4H, K) the fused weights with each thread's gate
    rows together, ``Z`` (T + 1, K, B) the columns, ``S``
    (C + 1, 6H, B) the slabs, step ``k`` in slab ``k % C`` (``ring``, inference: ``c_t``
    carried back to slab 0 when that wraps, and the gates not kept, see
    :func:`_lstm_rows`); the first step's product over the first ``kx`` columns only."""
    H = W.shape[0] // 4
    B = Z.shape[2]
    t = P.shape[0]
    Sf = S.reshape((S.shape[0], S.shape[1] * S.shape[2]))
    for k in range(T):
        p, n = (T - k, T - 1 - k) if reverse else (k, k + 1)
        j = k % C
        kdim = kx if k == 0 else W.shape[1]
        wrap = ring and (j == C - 1 or k == T - 1)
        for i in prange(t):
            _lstm_rows(fg, fth, dth, W, Z, Sf, P[i], j, p, n, kdim, H * i // t,
                       H * (i + 1) // t, wrap, ring, 0, B)


@njit(nogil=True, cache=True)
def _lstm_scan_columns(fg, fth, dth, W, Z, Sf, T, reverse, C, ring, kx, b0, b1):
    """Every step of the sequences ``b0..b1`` on the calling thread (:func:`_lstm_rows`
    over all units), their slabs ``Sf`` ((C + 1), 6H (b1 - b0)) their own."""
    H = W.shape[0] // 4
    for k in range(T):
        p, n = (T - k, T - 1 - k) if reverse else (k, k + 1)
        j = k % C
        kdim = kx if k == 0 else W.shape[1]
        _lstm_rows(fg, fth, dth, W, Z, Sf, None, j, p, n, kdim, 0, H,
                   ring and (j == C - 1 or k == T - 1), ring, b0, b1)


@njit(nogil=True, cache=True)
def lstm_scan_serial(fg, fth, dth, W, Z, S, T, reverse, C, ring, kx):
    """:func:`lstm_scan` on the calling thread alone (``W`` in the slab's gate order)."""
    Sf = S.reshape((S.shape[0], S.shape[1] * S.shape[2]))
    _lstm_scan_columns(fg, fth, dth, W, Z, Sf, T, reverse, C, ring, kx, 0, Z.shape[2])


@njit(parallel=True, nogil=True, cache=True)
def lstm_scan_parts(fg, fth, dth, W, Z, S, T, reverse, C, ring, kx):
    """:func:`lstm_scan` split by sequences instead of by units: the batch's columns in
    ``m = len(S)`` equal parts, each part's whole scan one iteration of one parallel region
    (the parts never wait for each other, nor read what another wrote), ``S`` (m, C + 1,
    6H, B / m) each part's own slabs."""
    m = S.shape[0]
    w = Z.shape[2] // m
    for i in prange(m):
        Sf = S[i].reshape((S.shape[1], S.shape[2] * S.shape[3]))
        _lstm_scan_columns(fg, fth, dth, W, Z, Sf, T, reverse, C, ring, kx, i * w, (i + 1) * w)


@njit(nogil=True, cache=True)
def lstm_weight_grad(D, a0, lda, Z, z0, m, b0, b1, Zt, dW, lanes):
    """``dW += A Zt`` for ``m`` steps of the sequences ``b0..b1``: ``A`` (G, m (b1 - b0))
    their ``δa``, row ``g`` at ``D[a0 + g lda:]`` (flat; step-major, then sequence), and
    ``Zt`` (scratch, (m (b1 - b0), Kp)) their columns ``[1; x; h_prev]`` transposed from
    ``Z[z0 .. z0 + m]`` ((K, B) each), its last ``Kp - K`` columns zero; ``dW`` (G, Kp) by
    :func:`gemm_rows_add` (each number summed from its value over the steps and sequences
    in order), so the same numbers for a part of the batch wherever it is made."""
    K, B = Z.shape[1], Z.shape[2]
    w = b1 - b0
    G, Kp = dW.shape
    Zf, Ztf = Z.reshape(-1), Zt.reshape(-1)
    kv, wv = K - K % lanes, w - w % lanes
    for j in range(m):
        s0, d0 = (z0 + j) * K * B + b0, j * w * Kp
        for r0 in range(0, kv, lanes):
            for c0 in range(0, wv, lanes):
                _transpose_tile(Zf, s0 + r0 * B + c0, B, Ztf, d0 + c0 * Kp + r0, Kp)
        for r in range(K):
            for c in range(wv if r < kv else 0, w):
                Ztf[d0 + c * Kp + r] = Zf[s0 + r * B + c]
        for c in range(w):
            for r in range(K, Kp):
                Ztf[d0 + c * Kp + r] = 0
    gemm_rows_add(D[a0:], lda, Ztf, Kp, dW.reshape(-1), Kp, Kp, m * w, 0, G, lanes)


@njit(nogil=True, cache=True)
def _lstm_grads_rows(E, x, D, dj, lo, hi, one, c, b0, b1):
    """Hidden units ``lo..hi``, sequences ``b0..b1``, of ``_numba.lstm_step_grads_gates``
    (its arithmetic, so its bits): from the carried ``E = [δc, δh]`` (2, H, B) and the
    step's slab ``x`` (6, H, b1 - b0) = ``[i, o, f, g, tanh c_t, c_{t-1}]``, the step's
    ``δa`` into ``D`` (4H, C B) from offset ``dj`` of each row (gate ``k``'s unit ``u`` in
    row ``k H + u``), ``δc`` carried to ``c_{t-1}``; ``c`` (H, B) scratch."""
    dc, dh = E[0], E[1]
    H = dc.shape[0]
    B = b1 - b0
    for u in range(lo, hi):
        ig, og, fg, gg, tc, cp = x[0, u], x[1, u], x[2, u], x[3, u], x[4, u], x[5, u]
        dcu, dhu, cu = dc[u, b0:b1], dh[u, b0:b1], c[u, b0:b1]
        for b in range(B):
            cu[b] = dcu[b] + dhu[b] * ((one - tc[b] * tc[b]) * og[b])
        a = D[u, dj:dj + B]
        for b in range(B):
            a[b] = (one - ig[b]) * ig[b] * gg[b] * cu[b]
        a = D[H + u, dj:dj + B]
        for b in range(B):
            a[b] = (one - og[b]) * og[b] * tc[b] * dhu[b]
        a = D[2 * H + u, dj:dj + B]
        for b in range(B):
            a[b] = (one - fg[b]) * fg[b] * cp[b] * cu[b]
        a = D[3 * H + u, dj:dj + B]
        for b in range(B):
            a[b] = (one - gg[b] * gg[b]) * ig[b] * cu[b]
        for b in range(B):
            dcu[b] = cu[b] * fg[b]


@njit(nogil=True, cache=True)
def _lstm_carry_rows(fg, whhT, D, dj, dh, lo, hi, b0, b1):
    """Rows ``lo..hi``, columns ``b0..b1``, of ``δh = W_hh^T δa``, ``δa`` the columns of
    ``D`` (4H, C B) from offset ``dj`` of each row: by ``cblas_?gemm`` at ``fg`` on those
    rows of ``whhT`` (H, 4H), by the rows loops where ``fg`` is 0."""
    G, L = D.shape
    B = dh.shape[1]
    isz = D.itemsize
    if fg == 0:
        gemm_rows(whhT.reshape(-1), G, D.reshape(-1)[dj:], L, dh.reshape(-1)[b0:], B,
                  b1 - b0, G, lo, hi, VECTOR_BYTES // isz)
    elif hi > lo:
        call_gemm(fg, 111, 111, hi - lo, b1 - b0, G, D.dtype.type(1),
                  whhT.ctypes.data + isz * lo * G, G, D.ctypes.data + isz * dj, L,
                  D.dtype.type(0), dh.ctypes.data + isz * (lo * B + b0), B)


@njit(nogil=True, cache=True)
def _lstm_back_block(fg, whhT, D, x, E, g_out, nz, tm, prev, cur, lo, hi, c, b0, b1):
    """Hidden units ``lo..hi``, sequences ``b0..b1``, of the backward's step at time
    ``tm`` (its slab ``x`` (6, H, b1 - b0)): their rows of ``δh = W_hh^T δa`` from the
    step before's ``δa`` at offset ``prev`` of ``D``'s rows (none where it is negative),
    the output's gradient joining them, then their ``δa`` at offset ``cur``
    (:func:`_lstm_grads_rows`)."""
    dh = E[1]
    if prev >= 0:
        _lstm_carry_rows(fg, whhT, D, prev, dh, lo, hi, b0, b1)
    if nz[tm]:
        g = g_out[tm]
        for u in range(lo, hi):
            for b in range(b0, b1):
                dh[u, b] += g[b, u]
    _lstm_grads_rows(E, x, D, cur, lo, hi, D.dtype.type(1), c, b0, b1)


@njit(nogil=True, cache=True)
def _lstm_back_columns(fg, whhT, D, S, E, g_out, nz, ts, reverse, owed, carry_last, c, b0,
                       b1, base, step):
    """:func:`lstm_back_steps` for the sequences ``b0..b1`` alone, on the calling thread,
    ``S`` (T + 1, 6H, b1 - b0) their own slabs, column ``j`` of their ``δa`` at offset
    ``base + j step`` of ``D``'s rows."""
    H = D.shape[0] // 4
    C = D.shape[1] // E.shape[2]
    T = g_out.shape[0]
    for s in range(ts.shape[0]):
        tm = ts[s]
        x = S[T - 1 - tm if reverse else tm].reshape((6, H, b1 - b0))
        prev = ts[s - 1] % C if s > 0 else owed
        _lstm_back_block(fg, whhT, D, x, E, g_out, nz, tm,
                         base + prev * step if prev >= 0 else -1, base + tm % C * step, 0, H,
                         c, b0, b1)
    if carry_last and ts.shape[0] > 0:
        _lstm_carry_rows(fg, whhT, D, base + ts[ts.shape[0] - 1] % C * step, E[1], 0, H,
                         b0, b1)


@njit(parallel=True, nogil=True, cache=True)
def lstm_back_steps(fg, whhT, D, S, E, g_out, nz, ts, reverse, owed, carry_last, c, t):
    """Steps of ``recurrent.LSTMScan``'s backward at the times ``ts`` (in order), each one
    region of ``t`` threads, each a block of hidden units. Block ``lo..hi`` of a step: its
    rows of ``δh = W_hh^T δa`` from the step before's ``δa`` (before the first step from
    column ``owed`` of ``D`` unless it is negative), the output's gradient joining them,
    then the step's ``δa`` for those units into column ``time % C`` of ``D`` (4H, C B),
    column ``j`` its numbers ``j B .. (j + 1) B`` of each row (:func:`_lstm_back_block`) —
    a block needs only its own rows of ``δh``, so one region a step. The last step's
    ``δh`` is made after it only with ``carry_last`` (else the next call owes it). Where a
    step's column is the one its ``δh`` comes from (C = 1), that product is a region of
    its own first. ``S`` (T + 1, 6H, B) the forward's slabs, ``E = [δc, δh]`` (2, H, B),
    ``whhT`` (H, 4H), ``g_out`` (T, B, H) with ``nz`` saying which steps it reaches; ``c``
    (H, B) scratch."""
    G = D.shape[0]
    H = G // 4
    B = E.shape[2]
    C = D.shape[1] // B
    T = g_out.shape[0]
    dh = E[1]
    for s in range(ts.shape[0]):
        tm = ts[s]
        prev = ts[s - 1] % C if s > 0 else owed
        if prev == tm % C:
            for i in prange(t):
                _lstm_carry_rows(fg, whhT, D, prev * B, dh, H * i // t, H * (i + 1) // t, 0, B)
            prev = -1
        x = S[T - 1 - tm if reverse else tm].reshape((6, H, B))
        for i in prange(t):
            _lstm_back_block(fg, whhT, D, x, E, g_out, nz, tm, prev * B if prev >= 0 else -1,
                             tm % C * B, H * i // t, H * (i + 1) // t, c, 0, B)
    if carry_last and ts.shape[0] > 0:
        last = ts[ts.shape[0] - 1] % C
        for i in prange(t):
            _lstm_carry_rows(fg, whhT, D, last * B, dh, H * i // t, H * (i + 1) // t, 0, B)


@njit(parallel=True, nogil=True, cache=True)
def lstm_back_parts(fg, whhT, D, S, E, g_out, nz, ts, reverse, owed, carry_last, c, Z, chunks,
                    Zt, dW):
    """:func:`lstm_back_steps` split by sequences, as :func:`lstm_scan_parts` splits the
    forward: each of the ``m = len(S)`` parts of the batch (``S`` (m, T + 1, 6H, B / m)
    their slabs) all its steps of the chunks ``chunks`` (rows ``(lo, hi, z0)``: the times
    ``ts[lo:hi]``, their columns ``Z[z0 ..]``) in one iteration of one region. After each
    chunk's steps (their ``δa`` together in ``D`` (4H, C B): part ``i``'s column ``j`` at
    offset ``(i C + j) B / m`` of each row) the part adds its share of the weight gradient
    to ``dW[i]`` (:func:`lstm_weight_grad`, ``Zt[i]`` its scratch): nothing a part makes
    is read by another thread, and the region is the whole backward where the input's
    gradient is not wanted. A chunk's last ``δh`` is made in the next chunk's first step
    (before the first, from column ``owed``), after the last only with ``carry_last``."""
    m = S.shape[0]
    B = E.shape[2]
    w = B // m
    C = D.shape[1] // B
    lanes = VECTOR_BYTES // D.itemsize
    n = chunks.shape[0]
    for i in prange(m):
        prev = owed
        for q in range(n):
            lo, hi, z0 = chunks[q, 0], chunks[q, 1], chunks[q, 2]
            _lstm_back_columns(fg, whhT, D, S[i], E, g_out, nz, ts[lo:hi], reverse, prev,
                               carry_last and q == n - 1, c, i * w, (i + 1) * w, i * C * w, w)
            lstm_weight_grad(D.reshape(-1), i * C * w, C * B, Z, z0, hi - lo, i * w,
                             (i + 1) * w, Zt[i], dW[i], lanes)
            prev = ts[hi - 1] % C


@njit(parallel=True, nogil=True, cache=True)
def feed_forward(fg, r1, r2, x, w1, b1, w2, b2, h, y, t):
    """The transformer's feed-forward ``y = max(x w1^T + b1, 0) w2^T + b2`` in ``t`` blocks
    of rows, one per thread, each block whole in its thread (its two products, its bias
    and ReLU between them while in cache): the rows the split products would give each
    thread, so their bits. Each product by ``cblas_?gemm`` at ``fg`` or, where ``r1``
    (``r2``) says, by the rows loops (``_conv_compiled.linear_rows``, as
    ``_gemm.linear``). ``h`` receives the hidden activations (M, F); ``x`` (M, d), ``w1``
    (F, d), ``w2`` (d', F), ``y`` (M, d'), all C-contiguous."""
    M, d = x.shape
    F = w1.shape[0]
    e = w2.shape[0]
    isz = x.itemsize
    lanes = VECTOR_BYTES // isz
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    zeros = np.zeros(F, x.dtype)
    px, pw1, pw2, ph, py = x.ctypes.data, w1.ctypes.data, w2.ctypes.data, h.ctypes.data, \
        y.ctypes.data
    for i in prange(t):
        lo, hi = M * i // t, M * (i + 1) // t
        if hi > lo:
            if r1:
                linear_rows(x[lo:hi], w1, zeros, h[lo:hi], 0, -(-F // (2 * lanes)), lanes)
            else:
                call_gemm(fg, 111, 112, hi - lo, F, d, one, px + isz * lo * d, d, pw1, d,
                          zero, ph + isz * lo * F, F)
            for r in range(lo, hi):             # _numba.bias_relu's arithmetic
                row = h[r]
                for j in range(F):
                    v = row[j] + b1[j]
                    row[j] = 0 if v <= 0 else v
            if r2:
                linear_rows(h[lo:hi], w2, b2, y[lo:hi], 0, -(-e // (2 * lanes)), lanes)
            else:
                for r in range(lo, hi):
                    out = y[r]
                    for j in range(e):
                        out[j] = b2[j]
                call_gemm(fg, 111, 112, hi - lo, e, F, one, ph + isz * lo * F, F, pw2, F, one,
                          py + isz * lo * e, e)


@njit(nogil=True, cache=True)
def shift_slab(s, m, scale):
    """``s *= scale; s -= max(s, axis=0)`` in place for one slab ``s`` (S, L), a max of
    ``-inf`` (a column with every entry masked) taken as 0 and a NaN winning its column:
    NumPy's product, max and subtraction (their bits), the slab in cache between the two
    loops; ``m`` (L,) scratch, ``scale`` of ``s``'s dtype (1 leaves ``s`` as it is)."""
    S, L = s.shape
    r = s[0]
    for i in range(L):
        v = r[i] * scale
        r[i] = v
        m[i] = v
    for j in range(1, S):
        r = s[j]
        for i in range(L):
            v = r[i] * scale
            r[i] = v
            if v > m[i] or v != v:
                m[i] = v
    for i in range(L):
        if m[i] == -np.inf:
            m[i] = 0
    for j in range(S):
        r = s[j]
        for i in range(L):
            r[i] -= m[i]


@njit(nogil=True, cache=True, error_model="numpy")
def normalize_slab(s, z):
    """``s /= z`` for one slab ``s`` (S, L), ``z = s.sum(axis=0)`` (a sum of 0, a fully
    masked column, made 1), summed row by row in NumPy's order: NumPy's sum and division,
    their bits, in one pass over the slab; ``z`` (L,) scratch."""
    S, L = s.shape
    r = s[0]
    for i in range(L):
        z[i] = r[i]
    for j in range(1, S):
        r = s[j]
        for i in range(L):
            z[i] += r[i]
    for i in range(L):
        if z[i] == 0:
            z[i] = 1
    for j in range(S):
        r = s[j]
        for i in range(L):
            r[i] /= z[i]


@njit(nogil=True, cache=True, error_model="numpy")
def _attend_head(fg, fexp, mode, dexp, pq, pk, pv, s, po, E, Ev, m, scale, scored):
    """One head of ``attention._forward_by_heads`` with its scores in the transposed layout
    and the scale folded into the shift: ``s`` (S, L) ``= K Q^T`` by ``cblas_?gemm`` at
    ``fg`` (``K`` at ``pk`` (S, E), ``Q`` at ``pq`` (L, E)), unless ``scored`` (``s``
    holds them already); :func:`shift_slab`; ``exp`` at
    ``fexp`` as ``_gemm.exp`` takes it (:func:`vector_call`: MKL's in VML mode ``mode``, or
    NumPy's loop with its data ``dexp``); :func:`normalize_slab`; then ``O = s^T V`` into
    ``po`` (L, Ev), ``V`` at ``pv`` (S, Ev). ``m`` (L,) scratch."""
    S, L = s.shape
    one, zero = s.dtype.type(1), s.dtype.type(0)
    ps = s.ctypes.data
    if not scored:
        call_gemm(fg, 111, 112, S, L, E, one, pk, E, pq, E, zero, ps, L)
    shift_slab(s, m, scale)
    vector_call(fexp, mode, dexp, S * L, ps, ps, s.itemsize)
    normalize_slab(s, m)
    call_gemm(fg, 112, 111, L, Ev, S, one, ps, L, pv, Ev, zero, po, Ev)


@njit(parallel=True, nogil=True, cache=True)
def attention_heads(fg, fexp, mode, dexp, q, k, v, p, out, scale, t, lanes):
    """Scaled dot-product attention over ``G`` heads with no mask, in ``t`` runs of whole
    heads, one per thread (:func:`_attend_head`): ``q`` (G, L, E), ``k`` (G, S, E), ``v``
    (G, S, Ev), ``out`` (G, L, Ev) and the probabilities ``p`` (G, S, L) (transposed, as
    the fused kernel keeps them for backward), all C-contiguous; ``scale`` in their
    dtype; the scores by the rows loops where ``lanes`` is not 0
    (``_conv_compiled.linear_rows_stack``, as ``_gemm.rows_nt`` makes the fused kernel's).
    Each head's operations are the fused kernel's, so its bits."""
    G, L, E = q.shape
    S = k.shape[1]
    Ev = v.shape[2]
    isz = q.itemsize
    for i in prange(t):
        m = np.empty(L, p.dtype)
        for g in range(G * i // t, G * (i + 1) // t):
            if lanes > 0:
                linear_rows_stack(k, q, p, g, g + 1, lanes)
            _attend_head(fg, fexp, mode, dexp, q.ctypes.data + isz * g * L * E,
                         k.ctypes.data + isz * g * S * E, v.ctypes.data + isz * g * S * Ev,
                         p[g], out.ctypes.data + isz * g * L * Ev, E, Ev, m, scale,
                         lanes > 0)


#: the row sums of layer norm may be reassociated (float64 sums, vectorised)
_njit_sum = njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "arcp", "contract"})


@_njit_sum
def _mean_rstd(xr, d, eps):
    """A row's mean and ``1/sqrt(var + eps)`` (biased variance, two passes, float64 sums)."""
    s = 0.0
    for j in range(d):
        s += xr[j]
    mu = s / d
    v = 0.0
    for j in range(d):
        c = xr[j] - mu
        v += c * c
    return mu, 1.0 / np.sqrt(v / d + eps)


@_njit_sum
def layer_norm_rows(x, w, b, eps, y, xhat, rstd, lo, hi):
    """Rows ``lo..hi`` of ``x`` (M, D): ``xhat = (x - mean) r``, ``r = 1/sqrt(var +
    eps)`` (biased variance, two passes, sums in float64), ``y = xhat w + b``."""
    d = x.shape[1]
    for r in range(lo, hi):
        xr = x[r]
        mu, rs = _mean_rstd(xr, d, eps)
        rstd[r] = rs
        hr, yr = xhat[r], y[r]
        for j in range(d):
            h = (xr[j] - mu) * rs
            hr[j] = h
            yr[j] = h * w[j] + b[j]


@_njit_sum
def add_layer_norm_rows(x, q, w, b, eps, y, keep, xhat, rstd, lo, hi):
    """:func:`layer_norm_rows` of ``x + q`` (a residual connection and the norm after
    it), each row's sum made into a scratch row that stays in cache (never stored
    whole): the bits of ``np.add`` then :func:`layer_norm_rows`. The sum is its own
    loop, so that the reassociation the sums below may use cannot reach it. ``xhat``
    and ``rstd`` are written only with ``keep`` (training; inference passes ``y`` and
    writes ``y`` alone, with the same sums, so the same bits)."""
    d = x.shape[1]
    t = np.empty(d, x.dtype)
    for r in range(lo, hi):
        xr, qr = x[r], q[r]
        for j in range(d):
            t[j] = xr[j] + qr[j]
        mu, rs = _mean_rstd(t, d, eps)
        yr = y[r]
        if keep:
            rstd[r] = rs
            hr = xhat[r]
            for j in range(d):
                h = (t[j] - mu) * rs
                hr[j] = h
                yr[j] = h * w[j] + b[j]
        else:
            for j in range(d):
                yr[j] = (t[j] - mu) * rs * w[j] + b[j]


@_njit_sum
def layer_norm_grad_rows(g, xhat, rstd, w, dx, lo, hi):
    """Rows ``lo..hi`` of ``dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))``,
    ``dxhat = g w``."""
    d = g.shape[1]
    for r in range(lo, hi):
        gr, hr = g[r], xhat[r]
        m1 = 0.0
        m2 = 0.0
        for j in range(d):
            dh = gr[j] * w[j]
            m1 += dh
            m2 += dh * hr[j]
        m1 /= d
        m2 /= d
        rs = rstd[r]
        dr = dx[r]
        for j in range(d):
            dr[j] = (gr[j] * w[j] - m1 - hr[j] * m2) * rs


@njit(parallel=True, nogil=True, cache=True)
def layer_norm_split(x, w, b, eps, y, xhat, rstd, t):
    """:func:`layer_norm_rows` over every row of ``x`` in ``t`` blocks, one per thread (rows
    are independent: the bits of any split)."""
    M = x.shape[0]
    for i in prange(t):
        layer_norm_rows(x, w, b, eps, y, xhat, rstd, M * i // t, M * (i + 1) // t)


@njit(parallel=True, nogil=True, cache=True)
def add_layer_norm_split(x, q, w, b, eps, y, keep, xhat, rstd, t):
    """:func:`add_layer_norm_rows` over every row in ``t`` blocks, one per thread."""
    M = x.shape[0]
    for i in prange(t):
        add_layer_norm_rows(x, q, w, b, eps, y, keep, xhat, rstd, M * i // t, M * (i + 1) // t)


@njit(parallel=True, nogil=True, cache=True)
def layer_norm_grad_split(g, xhat, rstd, w, dx, t):
    """:func:`layer_norm_grad_rows` over every row in ``t`` blocks, one per thread."""
    M = g.shape[0]
    for i in prange(t):
        layer_norm_grad_rows(g, xhat, rstd, w, dx, M * i // t, M * (i + 1) // t)
