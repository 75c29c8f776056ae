"""Products split over threads in one compiled parallel region: each thread runs the kernels'
single-threaded GEMM (Intel MKL's, or NumPy's OpenBLAS one thread per call:
:mod:`shendu.functional._gemm`) on its own block of rows (or columns) of the result.

With several kernel threads, a product outside the kernels' own parallel regions used to go
to NumPy's threaded OpenBLAS. Split here instead it runs 10-40% faster on the shapes of our
layers at two threads (an MLP's (128, 784) @ (784, 256): 194 µs against 268; a feed-forward's
(2048, 128) @ (128, 512): 864 against 990; an LSTM step's (512, 64) @ (64, 256): 64 against
73), and no OpenBLAS thread is left spinning beside the element-wise passes that follow (for
that, ``_gemm.matmul`` then takes every product from OpenBLAS's own threading threshold, and
the kernels' bias and normalisation sums go through it: ``_util.column_sums``, ``matvec``).

The region runs on Numba's TBB threading layer only: it is fork-safe and safe to enter from
several Python threads at once (GNU OpenMP kills a forked child that enters a region, and
the workqueue layer aborts on concurrent entry). Where Numba has not started its threads yet
it is asked for TBB alone; where it runs another layer already (the user's own parallel
code came first), or TBB is missing, products stay where they were.

The GEMM is called through an address passed in at run time (an LLVM indirect call), so the
compiled region is cached on disk like the other compiled loops. The same way, whole
stretches of a layer run in one region where an op's products would be split by rows:
the LSTM's steps (:func:`lstm`: each thread a block of hidden units, its gate rows'
product, NumPy's own ``tanh`` loop (:func:`numpy_loop`) and the gate arithmetic), the
transformer's feed-forward (:func:`feed_forward`: each thread a block of rows through both
products) and unmasked attention's heads (:func:`attention`). A product's split depends on
its shape and the thread count only: the same product gives the same bits every time.
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["attention", "feed_forward", "gemm", "lstm", "numpy_loop", "tbb"]

_lock = threading.Lock()
_loaded: list = []          # [what gemm() returns]


def gemm():
    """``((split, addresses), (split_stack, addresses), (stack_serial, addresses))``: the
    compiled drivers and the address of ``cblas_?gemm`` for each dtype, or None where Numba,
    its TBB layer or the kernels' own GEMM (MKL's LP64 one, or the OpenBLAS adapters) is
    missing.

    ``split(f, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, isz, t)`` computes
    the row-major ``C = alpha op(A) op(B) + beta C`` in ``t`` blocks, of rows when ``m >=
    n`` and of columns otherwise, one per thread; ``alpha`` and ``beta`` in the operands'
    dtype, addresses as integers, ``isz`` the element size. ``split_stack(f, ta, tb, m, n,
    k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc, count, isz, t)`` computes a stack
    of ``count`` such products with element strides ``sa``, ``sb``, ``sc`` between their
    matrices, in ``t`` runs of whole matrices; ``stack_serial`` (the same arguments but
    ``t``) makes them on the calling thread."""
    from shendu.functional._numba import once

    return once(_loaded, _lock, _build)


_tbb_lock = threading.Lock()
_tbb_loaded: list = []      # [what _tbb() returned]


def tbb() -> bool:
    """Whether Numba's parallel regions run on TBB here (:func:`_tbb`, asked once)."""
    from shendu.functional._numba import once

    return once(_tbb_loaded, _tbb_lock, _tbb)


def _tbb() -> bool:
    """Whether Numba's parallel regions run on TBB: started here with TBB alone where they
    have not started yet."""
    try:
        import numba
        from numba.np.ufunc import parallel
    except ImportError:
        return False
    try:
        if not parallel._is_initialized:
            before = numba.config.THREADING_LAYER
            if before not in ("default", "tbb", "safe", "threadsafe", "forksafe"):
                return False
            numba.config.THREADING_LAYER = "safe"
            try:
                parallel._launch_threads()
            finally:
                numba.config.THREADING_LAYER = before
        return numba.threading_layer() == "tbb"
    except Exception:           # no TBB, or one too old: Numba's own error
        return False


def _build():
    from shendu.functional import _gemm, _numba

    if _numba.kernels() is None:            # no Numba, or SHENDU_NUMBA=0
        return None
    addresses = _gemm._load()["addresses"]
    if not addresses or not tbb():
        return None
    from shendu.functional._regions_compiled import split, split_stack, stack_serial

    return (split, addresses), (split_stack, addresses), (stack_serial, addresses)


_lstm_lock = threading.Lock()
_lstm_loaded: list = []     # [what lstm() returns]


def numpy_loop(ufunc, dtype):
    """``(address, data)`` of NumPy's own inner loop of the one-input ``ufunc`` for
    ``dtype`` (e.g. ``np.tanh``'s ``f->f``), for compiled code to call
    (``_regions_compiled.vector_call``): NumPy's function, so NumPy's bits and speed, on any
    processor. Read from the ufunc object's C struct (NumPy's public ``PyUFuncObject``),
    whose layout is checked against what Python sees (name, inputs, type signatures) and
    the loop against the ufunc itself on a probe; None where anything differs."""
    import numpy as np

    dt = np.dtype(dtype)
    code = f"{dt.char}->{dt.char}"
    try:
        if not isinstance(ufunc, np.ufunc) or (ufunc.nin, ufunc.nout) != (1, 1):
            return None
        idx = ufunc.types.index(code)
        base = id(ufunc)
        cint, ptr = ctypes.c_int, ctypes.c_void_p
        w = ctypes.sizeof(ptr)
        head = 2 * w                                    # PyObject_HEAD
        at = head + 16                                  # after nin, nout, nargs, identity
        # the plain ints first: only where they match are the pointers followed
        nin, nout = cint.from_address(base + head).value, cint.from_address(base + head + 4).value
        ntypes = cint.from_address(base + at + 2 * w).value
        if (nin, nout, ntypes) != (1, 1, ufunc.ntypes):
            return None
        funcs, data = ptr.from_address(base + at).value, ptr.from_address(base + at + w).value
        name = ctypes.string_at(ptr.from_address(base + at + 2 * w + 8).value)
        types = ctypes.string_at(ptr.from_address(base + at + 3 * w + 8).value, 2 * ntypes)
        if name != ufunc.__name__.encode() or not funcs:
            return None
        for i, sig in enumerate(ufunc.types):   # the struct's type numbers match the names
            a, b = sig.split("->")
            if types[2 * i] != np.dtype(a).num or types[2 * i + 1] != np.dtype(b).num:
                return None
        f = ptr.from_address(funcs + w * idx).value
        d = (ptr.from_address(data + w * idx).value or 0) if data else 0
    except (ValueError, TypeError, OSError):
        return None
    if not f:
        return None
    loop = ctypes.CFUNCTYPE(None, ptr, ptr, ptr, ptr)(f)
    x = np.linspace(-20, 20, 1001, dtype=dt)
    y = np.empty_like(x)
    args = np.array([x.ctypes.data, y.ctypes.data], np.int64)
    dims, steps = np.array([x.size], np.int64), np.array([dt.itemsize] * 2, np.int64)
    loop(args.ctypes.data, dims.ctypes.data, steps.ctypes.data, d)
    if not np.array_equal(y, ufunc(x)):
        return None
    return f, d


def lstm():
    """``(scan, serial, back, gemms, tanhs, scan_parts, back_parts)`` for the LSTM's steps
    in compiled code: the forward's split over threads by hidden units
    (``_regions_compiled.lstm_scan``) and on one (``lstm_scan_serial``), the backward's
    (``lstm_back_steps``), with the addresses of ``cblas_?gemm`` and NumPy's ``tanh`` loop
    (:func:`numpy_loop`: address and data) for each dtype, and the forward and backward
    split by sequences instead (``lstm_scan_parts``, ``lstm_back_parts``); ``scan``,
    ``back`` and the parts None without the TBB region, everything None where Numba or the
    kernels' own GEMM is missing."""
    from shendu.functional._numba import once

    return once(_lstm_loaded, _lstm_lock, _build_lstm)


def _build_lstm():
    from shendu.functional import _gemm, _numba

    if _numba.kernels() is None:
        return None
    gemms = _gemm._load()["addresses"]
    if not gemms:
        return None
    import numpy as np

    from shendu.functional._regions_compiled import (
        lstm_back_parts,
        lstm_back_steps,
        lstm_scan,
        lstm_scan_parts,
        lstm_scan_serial,
    )

    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    tanhs = {f32: numpy_loop(np.tanh, f32), f64: numpy_loop(np.tanh, f64)}
    if None in tanhs.values():
        return None
    if not gemm():
        return None, lstm_scan_serial, None, gemms, tanhs, None, None
    return lstm_scan, lstm_scan_serial, lstm_back_steps, gemms, tanhs, lstm_scan_parts, \
        lstm_back_parts


def feed_forward():
    """``(feed_forward, gemms)``: ``_regions_compiled.feed_forward`` (the transformer's
    feed-forward in row blocks, one per thread) and the ``cblas_?gemm`` address per dtype,
    where the split region runs (:func:`gemm`); None elsewhere."""
    found = gemm()
    if not found:
        return None
    from shendu.functional._regions_compiled import feed_forward as ff

    return ff, found[0][1]


_attention_lock = threading.Lock()
_attention_loaded: list = []


def attention():
    """``(attention_heads, gemm, exp, mode, data)``: ``_regions_compiled.attention_heads``
    (unmasked attention's heads in runs, one per thread) with the address of
    ``cblas_sgemm`` and the float32 ``exp`` that ``_gemm.exp`` runs (MKL's ``vmsExp`` with
    its VML mode, data 0; or NumPy's loop, :func:`numpy_loop`, mode -1), where the split
    region runs (:func:`gemm`); None elsewhere."""
    from shendu.functional._numba import once

    return once(_attention_loaded, _attention_lock, _build_attention)


def _build_attention():
    found = gemm()
    if not found:
        return None
    import numpy as np

    from shendu.functional import _gemm
    from shendu.functional._regions_compiled import attention_heads

    st = _gemm._load()
    if st["exp"]:
        fe, mode, data = ctypes.cast(st["lib"].vmsExp, ctypes.c_void_p).value, \
            _gemm._VML_MODE, 0
    else:
        loop = numpy_loop(np.exp, np.float32)
        if loop is None:
            return None
        (fe, data), mode = loop, -1
    return attention_heads, found[0][1][np.dtype(np.float32)], fe, mode, data
