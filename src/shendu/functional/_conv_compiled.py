"""Direct convolution loops for :mod:`shendu.functional.conv`, and the matrix products made
with them (imported only where Numba is installed): stride-1, undilated 2-D convolutions
computed from the zero-padded, batch-innermost input without a patch matrix, in vector
registers.

In the ``(C, H, W, N)`` layout, output row ``u`` of channel ``o`` is ``Wo * N`` contiguous
numbers, and the inputs one kernel tap ``(c, i, j)`` multiplies them with are a run of as
many contiguous numbers too (row ``u + i`` of channel ``c`` from column ``j`` on). So a
row of the output is a sum of ``C * kh * kw`` scaled runs,

    y[o, u, q] = b[o] + sum_t w[o, t] x[c_t, u + i_t, j_t N + q],   q < Wo * N,

and the weight gradient a sum of products of runs,

    dW[o, t] = sum_u sum_q dY[o, u, q] x[c_t, u + i_t, j_t N + q].

The inner loops hold a block of outputs in vector registers while the taps stream past
(:func:`_rows_micro`: 8 channels x 2 vectors of positions, then 4 and those left;
:func:`_dots_micro`: 4 channels x 4 taps of per-lane partial sums), written as LLVM vector
code through Numba intrinsics
(LLVM's own vectoriser keeps such accumulators in memory): one vector is 64 bytes, 16
float32 or 8 float64 numbers, which LLVM splits into the registers the processor has. A
multiply-add is ``llvm.fmuladd``: fused where the processor has FMA. Each output is summed
in tap order (the weight gradient: per lane in row and position order, then the lanes in
order), the same whatever the thread count.

The same loops are matrix products: with ``taps[t] = t * ldb`` the rows loop is ``C = A B``
for row-major ``A`` and ``B`` (:func:`gemm_rows`, :func:`gemm_at`), and with ``B`` a
panel of a weight's rows transposed in registers (:func:`_transpose_tile`) ``Linear``'s
``x W^T + b`` (:func:`linear_rows`; :func:`heads_rows` writes self-attention's projection
straight into its heads). ``shendu.functional._gemm`` sends them the products where they
beat OpenBLAS's (``rows_take``, ``linear_rows_take``).

Defined at module level so that Numba's disk cache finds them again in the next process.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["conv_rows", "conv_rows_split", "conv_weight_grad", "conv_weight_grad_split",
           "gemm_at", "gemm_at_split", "gemm_rows", "gemm_rows_add", "heads_rows",
           "heads_rows_split", "linear_rows", "linear_rows_split"]

_I32, _I64 = ir.IntType(32), ir.IntType(64)
VECTOR_BYTES = 64


def _vector(dtype) -> tuple[ir.VectorType, int, str]:
    """The LLVM vector of one 64-byte block of ``dtype`` numbers, its lanes and its name."""
    if dtype == types.float32:
        return ir.VectorType(ir.FloatType(), 16), 16, "v16f32"
    return ir.VectorType(ir.DoubleType(), 8), 8, "v8f64"


def _splat(builder, vec, lanes, s):
    v = builder.insert_element(ir.Constant(vec, None), s, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vec, None),
                                  ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))


def _at(builder, data, index):
    return builder.gep(data, [index])


def _load_vec(builder, data, index, vec):
    return builder.load(builder.bitcast(_at(builder, data, index), vec.as_pointer()), align=1)


def _store_vec(builder, value, data, index, vec):
    builder.store(value, builder.bitcast(_at(builder, data, index), vec.as_pointer()), align=1)


def _arrays(context, builder, signature, args, which):
    """The LLVM array structs of the arguments ``which`` of an intrinsic's call."""
    return [context.make_array(signature.args[i])(context, builder, args[i]) for i in which]


def _fmuladd(builder, vec, name):
    """``llvm.fmuladd`` on vectors ``vec`` (``name`` its type's suffix)."""
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fmuladd.{name}")


def _rows_micro(ob: int, nv: int, cols: bool = False, add: bool = False):
    """An intrinsic ``micro(x, xb, taps, w, wo, b, y, yo, yb)``: for ``k < ob`` and the
    ``nv`` vectors of positions from 0, ``y[yo[k] + yb + p] = b[k] + sum_t w[wo[k] + t]
    x[xb + taps[t] + p]``, the taps in order, the sums in registers; with ``cols``, ``b[yb
    + p]`` (a bias per position) in place of ``b[k]``; with ``add``, ``y[yo[k] + yb + p]``
    itself (the sums added to the output, ``b`` unused)."""

    @intrinsic
    def micro(typingctx, x, xb, taps, w, wo, b, y, yo, yb):
        sig = types.void(x, xb, taps, w, wo, b, y, yo, yb)

        def codegen(context, builder, signature, args):
            xb_, yb_ = args[1], args[8]
            vec, lanes, name = _vector(signature.args[0].dtype)
            xa, ta, wa, woa, ba, ya, yoa = _arrays(context, builder, signature, args,
                                                   (0, 2, 3, 4, 5, 6, 7))
            fma = _fmuladd(builder, vec, name)
            accs, wbase = [], []
            for k in range(ob):
                kk = ir.Constant(_I64, k)
                if add:
                    yk = builder.add(builder.load(_at(builder, yoa.data, kk)), yb_)
                    bks = [_load_vec(builder, ya.data,
                                     builder.add(yk, ir.Constant(_I64, v * lanes)), vec)
                           for v in range(nv)]
                elif cols:
                    bks = [_load_vec(builder, ba.data,
                                     builder.add(yb_, ir.Constant(_I64, v * lanes)), vec)
                           for v in range(nv)]
                else:
                    bks = [_splat(builder, vec, lanes,
                                  builder.load(_at(builder, ba.data, kk)))] * nv
                wbase.append(builder.load(_at(builder, woa.data, kk)))
                for v in range(nv):
                    p = cgutils.alloca_once(builder, vec)
                    builder.store(bks[v], p)
                    accs.append(p)
            n_taps = cgutils.unpack_tuple(builder, ta.shape, 1)[0]
            with cgutils.for_range(builder, n_taps) as loop:
                t = loop.index
                base = builder.add(xb_, builder.load(_at(builder, ta.data, t)))
                xs = [_load_vec(builder, xa.data, builder.add(base, ir.Constant(_I64, v * lanes)),
                                vec) for v in range(nv)]
                for k in range(ob):
                    wk = builder.load(_at(builder, wa.data, builder.add(wbase[k], t)))
                    wv = _splat(builder, vec, lanes, wk)
                    for v in range(nv):
                        p = accs[k * nv + v]
                        builder.store(builder.call(fma, [wv, xs[v], builder.load(p)]), p)
            for k in range(ob):
                yk = builder.add(builder.load(_at(builder, yoa.data, ir.Constant(_I64, k))), yb_)
                for v in range(nv):
                    _store_vec(builder, builder.load(accs[k * nv + v]), ya.data,
                               builder.add(yk, ir.Constant(_I64, v * lanes)), vec)
            return context.get_dummy_value()

        return sig, codegen

    return micro


def _dots_micro(ob: int, tb: int):
    """An intrinsic ``micro(g, go, gb, x, xo, xb, nq, acc)``: for ``k < ob``, ``m < tb`` and
    each lane ``l``, ``acc[(k*tb + m)*L + l] += sum_{q < nq} g[go[k] + gb + qL + l]
    x[xo[m] + xb + qL + l]``, ``q`` in order (``L`` the lanes of one vector)."""

    @intrinsic
    def micro(typingctx, g, go, gb, x, xo, xb, nq, acc):
        sig = types.void(g, go, gb, x, xo, xb, nq, acc)

        def codegen(context, builder, signature, args):
            gb_, xb_, nq_ = args[2], args[5], args[6]
            vec, lanes, name = _vector(signature.args[0].dtype)
            ga, goa, xa, xoa, aa = _arrays(context, builder, signature, args, (0, 1, 3, 4, 7))
            fma = _fmuladd(builder, vec, name)
            gbase = [builder.add(builder.load(_at(builder, goa.data, ir.Constant(_I64, k))), gb_)
                     for k in range(ob)]
            xbase = [builder.add(builder.load(_at(builder, xoa.data, ir.Constant(_I64, m))), xb_)
                     for m in range(tb)]
            accs = []
            for i in range(ob * tb):
                p = cgutils.alloca_once(builder, vec)
                builder.store(_load_vec(builder, aa.data, ir.Constant(_I64, i * lanes), vec), p)
                accs.append(p)
            with cgutils.for_range(builder, nq_) as loop:
                off = builder.mul(loop.index, ir.Constant(_I64, lanes))
                gs = [_load_vec(builder, ga.data, builder.add(gbase[k], off), vec)
                      for k in range(ob)]
                xs = [_load_vec(builder, xa.data, builder.add(xbase[m], off), vec)
                      for m in range(tb)]
                for k in range(ob):
                    for m in range(tb):
                        p = accs[k * tb + m]
                        builder.store(builder.call(fma, [gs[k], xs[m], builder.load(p)]), p)
            for i in range(ob * tb):
                _store_vec(builder, builder.load(accs[i]), aa.data,
                           ir.Constant(_I64, i * lanes), vec)
            return context.get_dummy_value()

        return sig, codegen

    return micro


_rows_8x2, _rows_4x2, _rows_3x2, _rows_2x2, _rows_1x2 = (_rows_micro(ob, 2)
                                                        for ob in (8, 4, 3, 2, 1))
_rows_8x1, _rows_4x1, _rows_3x1, _rows_2x1, _rows_1x1 = (_rows_micro(ob, 1)
                                                        for ob in (8, 4, 3, 2, 1))
_cols_8x2, _cols_4x2, _cols_3x2, _cols_2x2, _cols_1x2 = (_rows_micro(ob, 2, True)
                                                        for ob in (8, 4, 3, 2, 1))
_cols_8x1, _cols_4x1, _cols_3x1, _cols_2x1, _cols_1x1 = (_rows_micro(ob, 1, True)
                                                        for ob in (8, 4, 3, 2, 1))
_add_8x2, _add_8x1 = _rows_micro(8, 2, add=True), _rows_micro(8, 1, add=True)
_dots_4x4 = _dots_micro(4, 4)
OB = TB = 4       # output channels, and taps, of one block of the weight gradient
RB = 8            # output channels of one block of the rows loops


@njit(nogil=True, cache=True, inline="always")
def _micro2_rows(width, x, xb, taps, w, wb, b, y, yb, q):
    """The 2-vector micro-kernels for ``width`` (1-8) channels: eight at once, else
    four and then those left."""
    if width == 8:
        _rows_8x2(x, xb, taps, w, wb, b, y, yb, q)
        return
    o = 0
    if width >= 4:
        _rows_4x2(x, xb, taps, w, wb, b, y, yb, q)
        o = 4
    r = width - o
    if r > 0:
        wr, br, yr = wb[o:], b[o:], yb[o:]
        if r == 3:
            _rows_3x2(x, xb, taps, w, wr, br, y, yr, q)
        elif r == 2:
            _rows_2x2(x, xb, taps, w, wr, br, y, yr, q)
        else:
            _rows_1x2(x, xb, taps, w, wr, br, y, yr, q)


@njit(nogil=True, cache=True, inline="always")
def _micro2_cols(width, x, xb, taps, w, wb, b, y, yb, q):
    """The 2-vector micro-kernels, a bias per position, for ``width`` (1-8) channels:
    eight at once, else four and then those left."""
    if width == 8:
        _cols_8x2(x, xb, taps, w, wb, b, y, yb, q)
        return
    o = 0
    if width >= 4:
        _cols_4x2(x, xb, taps, w, wb, b, y, yb, q)
        o = 4
    r = width - o
    if r > 0:
        wr, br, yr = wb[o:], b, yb[o:]
        if r == 3:
            _cols_3x2(x, xb, taps, w, wr, br, y, yr, q)
        elif r == 2:
            _cols_2x2(x, xb, taps, w, wr, br, y, yr, q)
        else:
            _cols_1x2(x, xb, taps, w, wr, br, y, yr, q)


@njit(nogil=True, cache=True, inline="always")
def _micro1_rows(width, x, xb, taps, w, wb, b, y, yb, q):
    """The 1-vector micro-kernels for ``width`` (1-8) channels: eight at once, else
    four and then those left."""
    if width == 8:
        _rows_8x1(x, xb, taps, w, wb, b, y, yb, q)
        return
    o = 0
    if width >= 4:
        _rows_4x1(x, xb, taps, w, wb, b, y, yb, q)
        o = 4
    r = width - o
    if r > 0:
        wr, br, yr = wb[o:], b[o:], yb[o:]
        if r == 3:
            _rows_3x1(x, xb, taps, w, wr, br, y, yr, q)
        elif r == 2:
            _rows_2x1(x, xb, taps, w, wr, br, y, yr, q)
        else:
            _rows_1x1(x, xb, taps, w, wr, br, y, yr, q)


@njit(nogil=True, cache=True, inline="always")
def _micro1_cols(width, x, xb, taps, w, wb, b, y, yb, q):
    """The 1-vector micro-kernels, a bias per position, for ``width`` (1-8) channels:
    eight at once, else four and then those left."""
    if width == 8:
        _cols_8x1(x, xb, taps, w, wb, b, y, yb, q)
        return
    o = 0
    if width >= 4:
        _cols_4x1(x, xb, taps, w, wb, b, y, yb, q)
        o = 4
    r = width - o
    if r > 0:
        wr, br, yr = wb[o:], b, yb[o:]
        if r == 3:
            _cols_3x1(x, xb, taps, w, wr, br, y, yr, q)
        elif r == 2:
            _cols_2x1(x, xb, taps, w, wr, br, y, yr, q)
        else:
            _cols_1x1(x, xb, taps, w, wr, br, y, yr, q)


@njit(nogil=True, cache=True)
def conv_rows(x, taps, xrow, w, wrow, b, y, n_out, run, plane, u0, u1, lanes, cols=False):
    """Output rows ``u0..u1`` of a direct stride-1 convolution: ``y[o*plane + u*run + q] =
    b[o] + sum_t w[o*wrow + t] x[u*xrow + taps[t] + q]`` for ``q < run`` (``x``, ``w``,
    ``y`` flat; ``wrow`` at least the number of taps); with ``cols``, ``b[u*run + q]`` in
    place of ``b[o]``. Eight channels at a time (the last block those left), positions two
    vectors at a time, then one, then one by one."""
    k = taps.shape[0]
    nb = (n_out + RB - 1) // RB
    wo = np.empty((nb, RB), np.int64)
    yo = np.empty((nb, RB), np.int64)
    bb = np.empty((nb, RB), y.dtype)
    for blk in range(nb):
        for kk in range(RB):
            o = min(blk * RB + kk, n_out - 1)
            wo[blk, kk] = o * wrow
            yo[blk, kk] = o * plane
            bb[blk, kk] = 0 if cols else b[o]
    two = 2 * lanes
    for u in range(u0, u1):
        xb, yb = u * xrow, u * run
        for blk in range(nb):
            wb, ybk = wo[blk], yo[blk]
            bk = b if cols else bb[blk]
            width = min(RB, n_out - blk * RB)
            q = 0
            while q + two <= run:
                if cols:
                    _micro2_cols(width, x, xb + q, taps, w, wb, bk, y, ybk, yb + q)
                else:
                    _micro2_rows(width, x, xb + q, taps, w, wb, bk, y, ybk, yb + q)
                q += two
            while q + lanes <= run:
                if cols:
                    _micro1_cols(width, x, xb + q, taps, w, wb, bk, y, ybk, yb + q)
                else:
                    _micro1_rows(width, x, xb + q, taps, w, wb, bk, y, ybk, yb + q)
                q += lanes
            for qq in range(q, run):
                for kk in range(width):
                    s = b[yb + qq] if cols else bk[kk]
                    for t in range(k):
                        s += w[wb[kk] + t] * x[xb + qq + taps[t]]
                    y[ybk[kk] + yb + qq] = s


@njit(nogil=True, cache=True)
def conv_weight_grad(g, x, taps, xrow, n_out, run, plane, n_rows, dw, b0, b1, lanes):
    """Blocks ``b0..b1`` (of four channels by four taps, channel blocks outer) of a direct
    stride-1 convolution's weight gradient: ``dw[o, t] = sum_u sum_q g[o*plane + u*run + q]
    x[u*xrow + taps[t] + q]`` over ``n_rows`` rows ``u`` and ``q < run``; per lane of a
    vector, in row and position order, then the lanes in order, then what is left of each
    row one by one."""
    k = taps.shape[0]
    ntb = (k + TB - 1) // TB
    go = np.empty(OB, np.int64)
    xo = np.empty(TB, np.int64)
    acc = np.empty(OB * TB * lanes, dw.dtype)
    rest = np.empty(OB * TB, dw.dtype)
    nq = run // lanes
    for blk in range(b0, b1):
        o0, t0 = (blk // ntb) * OB, (blk % ntb) * TB
        for kk in range(OB):
            go[kk] = min(o0 + kk, n_out - 1) * plane
        for m in range(TB):
            xo[m] = taps[min(t0 + m, k - 1)]
        acc[:] = 0
        rest[:] = 0
        for u in range(n_rows):
            _dots_4x4(g, go, u * run, x, xo, u * xrow, nq, acc)
            for qq in range(nq * lanes, run):
                for kk in range(OB):
                    gv = g[go[kk] + u * run + qq]
                    for m in range(TB):
                        rest[kk * TB + m] += gv * x[xo[m] + u * xrow + qq]
        for kk in range(min(OB, n_out - o0)):
            for m in range(min(TB, k - t0)):
                i = kk * TB + m
                s = acc[i * lanes]
                for lane in range(1, lanes):
                    s += acc[i * lanes + lane]
                dw[o0 + kk, t0 + m] = s + rest[i]


@njit(parallel=True, nogil=True, cache=True)
def conv_rows_split(x, taps, xrow, w, wrow, b, y, n_out, run, plane, n_rows, lanes, t):
    """:func:`conv_rows` over all ``n_rows`` rows in ``t`` contiguous blocks, one per thread
    of one parallel region (on Numba's TBB layer, whose threads wait spinning a while:
    handing work to a sleeping pool thread cost ~50 µs a time here)."""
    for i in prange(t):
        conv_rows(x, taps, xrow, w, wrow, b, y, n_out, run, plane, n_rows * i // t,
                  n_rows * (i + 1) // t, lanes)


@njit(parallel=True, nogil=True, cache=True)
def conv_weight_grad_split(g, x, taps, xrow, n_out, run, plane, n_rows, dw, blocks, lanes, t):
    """:func:`conv_weight_grad` over all ``blocks`` in ``t`` contiguous runs, one per thread
    of one parallel region."""
    for i in prange(t):
        conv_weight_grad(g, x, taps, xrow, n_out, run, plane, n_rows, dw, blocks * i // t,
                         blocks * (i + 1) // t, lanes)



@intrinsic
def _pointer(typingctx, addr, like):
    """The integer ``addr`` as a pointer to numbers of ``like``'s type."""
    sig = types.CPointer(like)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(nogil=True, cache=True)
def gemm_rows(a, lda, b, ldb, c, ldc, n, k, lo, hi, lanes):
    """Rows ``lo..hi`` of the product ``C = A B`` of row-major matrices (flat arrays from
    their first element, with leading dimensions ``lda``, ``ldb``, ``ldc``; ``B`` (k, n)) by
    :func:`conv_rows`' loops: each number summed over the ``k`` in order from zero in a
    vector register (the columns of a last, partial vector one by one), the same whatever
    block of rows it is made in."""
    if hi > lo:
        conv_rows(b, np.arange(k) * ldb, 0, a[lo * lda:], lda, np.zeros(hi - lo, c.dtype),
                  c[lo * ldc:], hi - lo, n, ldc, 0, 1, lanes)


@njit(nogil=True, cache=True)
def gemm_rows_add(a, lda, b, ldb, c, ldc, n, k, lo, hi, lanes):
    """Rows ``lo..hi`` (whole blocks of eight from ``lo``) of ``C += A B`` as
    :func:`gemm_rows` makes ``C = A B``, for ``n`` a whole number of vectors: each number
    summed from its value in ``C`` over the ``k`` in order, in a vector register."""
    taps = np.arange(k) * ldb
    wo = np.empty(RB, np.int64)
    yo = np.empty(RB, np.int64)
    two = 2 * lanes
    for r0 in range(lo, hi, RB):
        for kk in range(RB):
            wo[kk] = (r0 + kk) * lda
            yo[kk] = (r0 + kk) * ldc
        q = 0
        while q + two <= n:
            _add_8x2(b, q, taps, a, wo, c, c, yo, q)
            q += two
        if q < n:
            _add_8x1(b, q, taps, a, wo, c, c, yo, q)


@njit(nogil=True, cache=True)
def _views(pa, lda, pb, ldb, pc, ldc, m, n, k, one):
    """The flat arrays of a product's operands at the addresses given."""
    return (carray(_pointer(pa, one), (m - 1) * lda + k),
            carray(_pointer(pb, one), (k - 1) * ldb + n),
            carray(_pointer(pc, one), (m - 1) * ldc + n))


@njit(nogil=True, cache=True)
def gemm_at(pa, lda, pb, ldb, pc, ldc, m, n, k, one, lanes):
    """:func:`gemm_rows` of the whole product, its operands at addresses (numbers of
    ``one``'s type), on the calling thread."""
    a, b, c = _views(pa, lda, pb, ldb, pc, ldc, m, n, k, one)
    gemm_rows(a, lda, b, ldb, c, ldc, n, k, 0, m, lanes)


@njit(parallel=True, nogil=True, cache=True)
def gemm_at_split(pa, lda, pb, ldb, pc, ldc, m, n, k, one, lanes, t):
    """:func:`gemm_at` in ``t`` blocks of rows (whole blocks of eight), one per thread of
    one parallel region."""
    a, b, c = _views(pa, lda, pb, ldb, pc, ldc, m, n, k, one)
    blocks = (m + RB - 1) // RB
    for i in prange(t):
        gemm_rows(a, lda, b, ldb, c, ldc, n, k, min(m, blocks * i // t * RB),
                  min(m, blocks * (i + 1) // t * RB), lanes)


@intrinsic
def _transpose_tile(typingctx, src, s0, lds, dst, d0, ldd):
    """The square tile of one vector's lanes a side at ``src[s0 + r*lds + c]`` into
    ``dst[d0 + c*ldd + r]``: its rows loaded as vectors, transposed in registers (one
    shuffle of pairs of rows per halving of the block size), stored as vectors."""
    sig = types.void(src, s0, lds, dst, d0, ldd)

    def codegen(context, builder, signature, args):
        _, s0_, lds_, _, d0_, ldd_ = args
        vec, lanes, _ = _vector(signature.args[0].dtype)
        sa, da = _arrays(context, builder, signature, args, (0, 3))
        rows = [_load_vec(builder, sa.data,
                          builder.add(s0_, builder.mul(ir.Constant(_I64, r), lds_)), vec)
                for r in range(lanes)]
        s = lanes // 2
        while s:
            low = [lane if not lane & s else lanes + lane - s for lane in range(lanes)]
            high = [lane + s if not lane & s else lanes + lane for lane in range(lanes)]
            for i in range(lanes):
                if not i & s:
                    a, b = rows[i], rows[i + s]
                    rows[i] = builder.shuffle_vector(
                        a, b, ir.Constant(ir.VectorType(_I32, lanes), low))
                    rows[i + s] = builder.shuffle_vector(
                        a, b, ir.Constant(ir.VectorType(_I32, lanes), high))
            s //= 2
        for c in range(lanes):
            _store_vec(builder, rows[c], da.data,
                       builder.add(d0_, builder.mul(ir.Constant(_I64, c), ldd_)), vec)
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True)
def _pack(w, k, j0, width, step, P, lanes):
    """Rows ``j0..j0 + width`` (whole vectors of them) of the row-major ``w`` (n, k, flat),
    transposed: ``P[t*step + q] = w[(j0 + q)*k + t]``, in square tiles of a vector's lanes."""
    whole = k - k % lanes
    for r0 in range(0, width, lanes):
        for t0 in range(0, whole, lanes):
            _transpose_tile(w, (j0 + r0) * k + t0, k, P, t0 * step + r0, step)
        for t in range(whole, k):
            for q in range(r0, r0 + lanes):
                P[t * step + q] = w[(j0 + q) * k + t]


@njit(nogil=True, cache=True)
def _panel_rows(P, taps, x, lda, b, y, ldy, m, width, wo, yo, lanes):
    """``y[r*ldy + q] = b[q] + sum_t x[r*lda + t] P[taps[t] + q]`` for rows ``r < m`` and
    ``q < width`` (whole vectors): :func:`conv_rows`' loops for one row of positions with a
    bias per position (its micro-kernels, so its numbers), eight rows at a time, without
    its scratch (``wo``, ``yo``: ``RB`` offsets each, given)."""
    two = 2 * lanes
    for r0 in range(0, m, RB):
        rows = min(RB, m - r0)
        for kk in range(RB):
            o = min(r0 + kk, m - 1)
            wo[kk] = o * lda
            yo[kk] = o * ldy
        q = 0
        while q + two <= width:
            _micro2_cols(rows, P, q, taps, x, wo, b, y, yo, q)
            q += two
        while q < width:
            _micro1_cols(rows, P, q, taps, x, wo, b, y, yo, q)
            q += lanes


@njit(nogil=True, cache=True)
def linear_rows(x, w, b, y, p0, p1, lanes):
    """Panels ``p0..p1`` (two vectors of columns each; ``n`` whole vectors) of ``y = x w^T
    + b`` (``x`` (m, k), ``w`` (n, k), ``y`` (m, n), all row-major; ``b`` (n,)): each
    panel's rows of ``w`` transposed into a block of its own (``B``'s rows), then every row
    of ``y`` made against it (:func:`_panel_rows`), each number from its bias summed over
    ``k`` in order."""
    m, k = x.shape
    n = w.shape[0]
    step = 2 * lanes
    P = np.empty(k * step, x.dtype)
    taps = np.arange(k) * step
    wo = np.empty(RB, np.int64)
    yo = np.empty(RB, np.int64)
    xf, wf, yf = x.reshape(-1), w.reshape(-1), y.reshape(-1)
    for p in range(p0, p1):
        j0 = p * step
        width = min(step, n - j0)
        _pack(wf, k, j0, width, step, P, lanes)
        _panel_rows(P, taps, xf, k, b[j0:], yf[j0:], n, m, width, wo, yo, lanes)


@njit(nogil=True, cache=True)
def linear_rows_stack(x, w, y, g0, g1, lanes):
    """Matrices ``g0..g1`` of the stack ``y[g] = x[g] w[g]^T`` (``x`` (G, m, k), ``w`` (G,
    n, k), ``y`` (G, m, n), C-contiguous): :func:`linear_rows`' numbers for each, from a
    bias of 0 (so each number summed over ``k`` in order from its first product), one
    block of scratch for them all (:func:`_panel_rows`)."""
    G, m, k = x.shape
    n = w.shape[1]
    step = 2 * lanes
    zero = np.zeros(step, x.dtype)
    P = np.empty(k * step, x.dtype)
    taps = np.arange(k) * step
    wo = np.empty(RB, np.int64)
    yo = np.empty(RB, np.int64)
    xf, wf, yf = x.reshape(-1), w.reshape(-1), y.reshape(-1)
    for g in range(g0, g1):
        for j0 in range(0, n, step):
            width = min(step, n - j0)
            _pack(wf[g * n * k:], k, j0, width, step, P, lanes)
            _panel_rows(P, taps, xf[g * m * k:], k, zero, yf[g * m * n + j0:], n, m, width,
                        wo, yo, lanes)


@njit(parallel=True, nogil=True, cache=True)
def linear_rows_stack_split(x, w, y, lanes, t):
    """:func:`linear_rows_stack` in ``t`` runs of whole matrices, one per thread of one
    parallel region: the same numbers."""
    G = x.shape[0]
    for i in prange(t):
        linear_rows_stack(x, w, y, G * i // t, G * (i + 1) // t, lanes)


@njit(parallel=True, nogil=True, cache=True)
def linear_rows_split(x, w, b, y, lanes, t):
    """:func:`linear_rows` over ``t`` threads of one parallel region, split so that the
    threads share the larger operand and each reads all of the smaller: by blocks of rows of
    ``x`` (whole blocks of eight; every thread transposing every panel of ``w`` for its own
    rows) where ``x`` has more rows than ``w`` and each thread gets at least eight, else by
    runs of panels (every thread reading all of ``x``). At two threads by rows against by
    panels, float32: the feed-forward's (2048, 128) x (512, 128)^T 208 against 182
    GFLOP/s, an attention output's (2048, 128) x (128, 128)^T 216 against 184; an MLP's
    (128, 784) x (256, 784)^T, its weight not in cache between layers, ran 5-15% slower by
    rows in the train step. The same numbers either way."""
    step = 2 * lanes
    panels = (w.shape[0] + step - 1) // step
    m = x.shape[0]
    if m >= 8 * t and m > w.shape[0]:
        blocks = m // 8
        for i in prange(t):
            r0 = 8 * (blocks * i // t)
            r1 = m if i == t - 1 else 8 * (blocks * (i + 1) // t)
            linear_rows(x[r0:r1], w, b, y[r0:r1], 0, panels, lanes)
    else:
        for i in prange(t):
            linear_rows(x, w, b, y, panels * i // t, panels * (i + 1) // t, lanes)


@njit(nogil=True, cache=True)
def heads_rows(x, w, b, out, batch_first, p0, p1, lanes, n0, n1):
    """Heads ``p0..p1`` (of ``3H``: q's, k's, then v's), sequences ``n0..n1``, of
    self-attention's packed projection ``x w^T + b`` (``x`` (A0·A1, E) row-major, ``(N,
    L)`` or, without ``batch_first``, ``(L, N)``; ``w`` (3E, E); ``b`` (3E,)) written
    straight into ``out`` (3, N, H, L, hd), where attention reads each head contiguously:
    every head's rows of ``w`` transposed first as :func:`linear_rows` transposes a panel,
    then each sequence's rows of ``x`` (in cache while they last) against every head, by
    :func:`_panel_rows`, so :func:`linear_rows`' numbers (``hd`` whole vectors). Sequences
    outer and no scratch made per head: (2048, 128) x (384, 128)^T on one thread 2.03 →
    1.90 ms against heads outer, a call of :func:`conv_rows` each."""
    k = x.shape[1]
    _, N, H, L, hd = out.shape
    P = np.empty((max(p1 - p0, 0), k * hd), x.dtype)
    taps = np.arange(k) * hd
    xf, wf, of = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    lda, step = (k, L * k) if batch_first else (N * k, k)      # rows of one sequence; next
    for p in range(p0, p1):
        _pack(wf, k, p * hd, hd, hd, P[p - p0], lanes)
    wo = np.empty(RB, np.int64)
    yo = np.empty(RB, np.int64)
    for n in range(n0, n1):
        for p in range(p0, p1):
            s, h = p // H, p % H
            _panel_rows(P[p - p0], taps, xf[n * step:], lda, b[p * hd:],
                        of[((s * N + n) * H + h) * L * hd:], hd, L, hd, wo, yo, lanes)


@njit(parallel=True, nogil=True, cache=True)
def heads_rows_split(x, w, b, out, batch_first, lanes, t):
    """:func:`heads_rows` over ``t`` threads of one parallel region: by runs of sequences
    where there are at least ``t`` (each thread transposing every head's rows of ``w``),
    so that the thread which then attends over a sequence's heads
    (``_regions_compiled.attention_heads``, runs of sequences' heads) and makes their rows
    of the output projection (``linear_rows_split``, by rows) finds them in its own cache
    rather than the other core's; else by runs of heads."""
    N = out.shape[1]
    heads = 3 * out.shape[2]
    if N >= t:
        for i in prange(t):
            heads_rows(x, w, b, out, batch_first, 0, heads, lanes, N * i // t,
                       N * (i + 1) // t)
    else:
        for i in prange(t):
            heads_rows(x, w, b, out, batch_first, heads * i // t, heads * (i + 1) // t, lanes,
                       0, N)


@intrinsic
def _vector_sum(typingctx, x, base, nvec):
    """The sum of ``nvec`` whole vectors of ``x`` from ``x[base]``: four vector
    accumulators taking the vectors in turn (those past the last four to the first), added
    as ``(a0 + a1) + (a2 + a3)``, then that vector's lanes in order."""
    sig = x.dtype(x, base, nvec)

    def codegen(context, builder, signature, args):
        _, base_, nvec_ = args
        vec, lanes, _ = _vector(signature.args[0].dtype)
        (xa,) = _arrays(context, builder, signature, args, (0,))
        zero = ir.Constant(vec, [0.0] * lanes)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
        four = builder.sdiv(nvec_, ir.Constant(_I64, 4))
        with cgutils.for_range(builder, four) as loop:
            off = builder.add(base_, builder.mul(loop.index, ir.Constant(_I64, 4 * lanes)))
            for a in range(4):
                v = _load_vec(builder, xa.data, builder.add(off, ir.Constant(_I64, a * lanes)),
                              vec)
                builder.store(builder.fadd(builder.load(accs[a]), v), accs[a])
        done = builder.mul(four, ir.Constant(_I64, 4))
        with cgutils.for_range(builder, builder.sub(nvec_, done)) as loop:
            i = builder.add(done, loop.index)
            v = _load_vec(builder, xa.data,
                          builder.add(base_, builder.mul(i, ir.Constant(_I64, lanes))), vec)
            builder.store(builder.fadd(builder.load(accs[0]), v), accs[0])
        a01 = builder.fadd(builder.load(accs[0]), builder.load(accs[1]))
        a23 = builder.fadd(builder.load(accs[2]), builder.load(accs[3]))
        total = builder.fadd(a01, a23)
        s = builder.extract_element(total, ir.Constant(_I32, 0))
        for lane in range(1, lanes):
            s = builder.fadd(s, builder.extract_element(total, ir.Constant(_I32, lane)))
        return s

    return sig, codegen


@njit(nogil=True, cache=True, inline="always")
def row_sum(x, base, n, lanes):
    """``x[base:base + n].sum()`` in a fixed order: the whole vectors by
    :func:`_vector_sum` (four accumulators), then the numbers left one by one."""
    nv = n // lanes
    s = _vector_sum(x, base, nv)
    for j in range(base + nv * lanes, base + n):
        s += x[j]
    return s
