"""NumPy's own OpenBLAS as the kernels' single-threaded GEMM (:mod:`shendu.functional._gemm`
takes it where MKL is not the faster library: on processors other than Intel's).

MKL takes a generic code path on other vendors' processors. On an AMD EPYC with AVX-512,
one thread, OpenBLAS's sgemm runs 10-25% faster than MKL's on our layers' shapes (an LSTM
step's (512, 161) @ (161, 64): 97 GFLOP/s against 77; a convolution tile's (1024, 289) @
(289, 64): 95 against 87). The kernels call their GEMM with MKL's C signature (CBLAS,
32-bit ints), from Python through ``ctypes`` and from compiled regions through its address;
NumPy's wheels bring OpenBLAS with 64-bit ints (``scipy_cblas_sgemm64_``). Two compiled
adapters (:mod:`shendu.functional._openblas_compiled`, cached on disk like the other
compiled loops) take the one signature and call the other with OpenBLAS's thread count at
one (``openblas_set_num_threads_local``), so that each call runs on the thread that makes
it, as MKL's sequential layer does, and OpenBLAS's own threads never start for the
kernels' products.

That count is the process's, not the calling thread's, despite the function's name (in the
pthreads builds NumPy's wheels bring, setting it on one thread sets it for all: NumPy's own
``a @ b`` then runs on one thread too). So it is one only while the kernels make products:
:data:`ONE_THREAD` sets it to one when the first of them starts, on any thread, and gives
the count it found back when the last one ends; every Python-level product and every
region whose threads call the adapters runs inside it (``_gemm._call``, ``_gemm._split``,
``conv.split_threads``, the LSTM's, attention's and the feed-forward's regions). NumPy's
products made meanwhile by another thread of the program run on one thread too. The
adapters set the count to one themselves as well (where a caller forgot the guard its
products still run on their own thread; ``test_numpy_blas_threads_left_as_found`` finds
such a caller by the count it leaves behind).

The adapters find OpenBLAS's functions by names given to LLVM at run time
(``llvmlite.binding.add_symbol``), so the cached machine code holds no address of this
process. Where NumPy's BLAS is not an OpenBLAS with these functions (an older one without
``openblas_set_num_threads_local``, Accelerate on macOS, a NumPy built against another
BLAS), or Numba is missing, :func:`load` returns None.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

__all__ = ["ONE_THREAD", "load"]

#: (sgemm, dgemm) names of the 64-bit-int CBLAS GEMM in OpenBLAS builds: SciPy's wheels'
#: (NumPy >= 2), then the ``64_``-suffixed ones of older NumPy wheels
_NAMES = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"), ("cblas_sgemm64_", "cblas_dgemm64_"))
_LOCAL = "openblas_set_num_threads_local"


def _library():
    """A handle on NumPy's OpenBLAS (the library threadpoolctl finds in NumPy's folders),
    or None."""
    from shendu.functional import conv

    for lib in conv._blas():
        if getattr(lib, "internal_api", "") == "openblas" and conv._in_numpy(lib.filepath):
            try:
                return ctypes.CDLL(lib.filepath)
            except OSError:
                return None
    return None


def register() -> bool:
    """Tell LLVM where NumPy's OpenBLAS GEMM and thread-count setter lie, under the names the
    adapters call (once; again is harmless); False where there is no such OpenBLAS."""
    try:
        import llvmlite.binding as ll
    except ImportError:
        return False
    lib = _library()
    if lib is None or not hasattr(lib, _LOCAL):
        return False
    names = next((pair for pair in _NAMES if all(hasattr(lib, n) for n in pair)), None)
    if names is None:
        return False

    def address(name):
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value

    ll.add_symbol("shendu_openblas_sgemm", address(names[0]))
    ll.add_symbol("shendu_openblas_dgemm", address(names[1]))
    ll.add_symbol("shendu_openblas_local_threads", address(_LOCAL))
    return True


def load():
    """``{dtype: (ctypes function, address)}`` of the adapters for float32 and float64, or
    None where NumPy's BLAS has no such OpenBLAS GEMM or Numba is missing; where found,
    :data:`ONE_THREAD` is armed."""
    try:    # registers the names first; fails without Numba or without such an OpenBLAS
        from shendu.functional._openblas_compiled import dgemm, sgemm
    except ImportError:
        return None
    import numpy as np

    setter = getattr(_library(), _LOCAL)
    setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
    ONE_THREAD.arm(setter)
    return {np.dtype(np.float32): (sgemm.ctypes, sgemm.address),
            np.dtype(np.float64): (dgemm.ctypes, dgemm.address)}


class _OneThread:
    """A context: OpenBLAS's (process-wide) thread count at one from when the first caller
    on any thread enters until the last one leaves, then the count found on the first
    entry given back. Does nothing until :meth:`arm` (products not on OpenBLAS).

    ``with ONE_THREAD:`` costs about 1 µs where it sets and restores the count (two calls
    through ``ctypes``), a lock's 0.2 µs each way where another caller holds it."""

    __slots__ = ("_set", "_lock", "_inside", "_found")

    def __init__(self) -> None:
        self._set = None
        self._lock = threading.Lock()
        self._inside = 0
        self._found = 1

    def arm(self, setter) -> None:
        self._set = setter

    def around(self, fn):
        """``fn`` run inside the guard: for a function that makes many small products in
        turn (a scan's steps), so that the count is switched once, not around each."""
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return guarded

    def _after_fork(self) -> None:
        """In a child forked while another thread was inside (a data loader's worker, say):
        a fresh lock, which that thread can no longer release there."""
        self._lock = threading.Lock()

    def __enter__(self):
        if self._set is not None:
            with self._lock:
                if self._inside == 0:
                    self._found = self._set(1)
                self._inside += 1
        return self

    def __exit__(self, *exc) -> None:
        if self._set is not None:
            with self._lock:
                self._inside -= 1
                if self._inside == 0 and self._found != 1:
                    self._set(self._found)


#: the guard of every product the kernels make on OpenBLAS (see the module docstring)
ONE_THREAD = _OneThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ONE_THREAD._after_fork)
