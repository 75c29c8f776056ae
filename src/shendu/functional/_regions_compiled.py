"""The compiled regions of :mod:`shendu.functional._regions`, and calls into MKL from
compiled code through addresses given at run time (imported only where Numba is installed).

Defined at module level, so that Numba's disk cache finds them again in the next process (a
closure's cache entry is keyed on its cells, which differ between processes); the addresses
are arguments, not constants, for the same reason."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = ["call_gemm", "call_gemm_batch", "call_vexp", "split", "split_stack"]


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
