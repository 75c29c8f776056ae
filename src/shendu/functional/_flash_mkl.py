"""The blockwise attention kernel's tile loops (:mod:`shendu.functional._flash`) as compiled
functions that call Intel MKL themselves, for the common case: float32, no mask, no dropout
and every key in one block.

Each kernel thread runs its head groups through one such function, which holds no
interpreter lock: the Python loop over tiles makes some forty calls a tile, and two threads
making theirs take turns at the GIL (at T = 256 on two threads they spent a third of their
time waiting). Without that cost the tiles can be small enough to stay in the core's cache.

The arithmetic is the Python loop's (the same products, on MKL's strided batch call, the
same ``exp`` on MKL's vector math, the same shift rule and the same bound on the scores), but
the row sums, the norms behind the bound and the scaling run as loops here: the results
agree with the Python loop's to float32 rounding, not bit for bit.

Used when Numba is installed and MKL loaded (``shendu[mkl]``), unless ``SHENDU_NUMBA=0``.
The loops themselves are in :mod:`shendu.functional._flash_compiled`, which calls MKL through
addresses passed in at run time, so that Numba caches them on disk like the other compiled
loops (as closures over ctypes functions they were compiled again in every process, about
two seconds at the first blockwise call).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

__all__ = ["kernels"]

_lock = threading.Lock()
_loaded: list = []
#: [the address of the single-product GEMM the tiles call one head at a time, or 0 for
#: MKL's strided batch call]: OpenBLAS's adapter where the kernels' products are on it
FS = [0]


def kernels():
    """The compiled tile loops (a namespace), or None where Numba or MKL is missing (the
    lazy loader of ``_numba.kernels``)."""
    from shendu.functional._numba import once

    return once(_loaded, _lock, _build)


def _rows(args) -> bool:
    """Whether the compiled tiles' scores (and the forward's ``P V``) are the rows loops':
    as ``_gemm.rows_take`` would take them (the products OpenBLAS's, Numba's loops there),
    the scores' and the output's rows whole vectors and each head's keys and values in a
    core's cache; the forward and the backward decide alike."""
    from shendu.functional import _gemm

    q, k, v = args[:3]
    S, E, Ev = k.shape[2], q.shape[3], v.shape[3]
    ldk = S + 16 if (S * 4) % 4096 == 0 else S         # the keys' rows as padded for them
    return (FS[0] != 0 and _gemm.rows_take(np.dtype(np.float32), E, S, ldk)
            and Ev % 16 == 0 and 4 * S * Ev <= _gemm.ROWS_MAX_BYTES)


def _build():
    from shendu.functional import _gemm, _numba

    if _numba.kernels() is None:
        return None
    st = _gemm._load()
    lib = st.get("lib")
    if lib is None or _gemm._ilp64():
        return None
    try:
        fb = ctypes.cast(lib.cblas_sgemm_batch_strided, ctypes.c_void_p).value
        fe = ctypes.cast(lib.vmsExp, ctypes.c_void_p).value
    except AttributeError:
        return None
    from shendu.functional import _flash_compiled as c
    from shendu.functional._openblas import ONE_THREAD

    if st["name"] == "openblas":
        FS[0] = st["addresses"][np.dtype(np.float32)]

    class K:
        @staticmethod
        def forward(*args):
            with ONE_THREAD:    # the adapter sets OpenBLAS's (process-wide) count
                c.forward(fb, FS[0], fe, *args, _rows(args))

        @staticmethod
        def backward(*args):
            with ONE_THREAD:
                c.backward(fb, FS[0], fe, *args, _rows(args))

    return K
