"""The single-threaded ``cblas_?gemm`` of NumPy's own OpenBLAS, with the C signature the
kernels call MKL's with (CBLAS, 32-bit ints): compiled adapters that set OpenBLAS's thread
count to one (``_openblas.ONE_THREAD`` restores it around their callers) and call its
64-bit-int (ILP64) GEMM, which NumPy's wheels bring. Importing this module first tells LLVM
where the functions named here lie (:func:`shendu.functional._openblas.register`), or fails
with ImportError where they are not to be found."""

from __future__ import annotations

from numba import cfunc, types

from shendu.functional._openblas import register

__all__ = ["dgemm", "sgemm"]

# the names must be known before the adapters are compiled or loaded from the cache:
# LLVM aborts the process on a symbol it cannot resolve
if not register():
    raise ImportError("the OpenBLAS adapters need NumPy's BLAS to be an OpenBLAS with 64-bit-int "
                      "CBLAS and openblas_set_num_threads_local (functional._openblas)")

_i32, _i64, _p = types.int32, types.int64, types.voidptr


def _ilp64(real):
    return types.ExternalFunction(
        f"shendu_openblas_{'s' if real == types.float32 else 'd'}gemm",
        types.void(_i32, _i32, _i32, _i64, _i64, _i64, real, _p, _i64, _p, _i64, real, _p, _i64))


def _lp64(real):
    return types.void(_i32, _i32, _i32, _i32, _i32, _i32, real, _p, _i32, _p, _i32, real, _p,
                      _i32)


_local = types.ExternalFunction("shendu_openblas_local_threads", types.int32(_i32))
_sgemm64, _dgemm64 = _ilp64(types.float32), _ilp64(types.float64)


@cfunc(_lp64(types.float32), cache=True)
def sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    _local(1)
    _sgemm64(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


@cfunc(_lp64(types.float64), cache=True)
def dgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    _local(1)
    _dgemm64(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
