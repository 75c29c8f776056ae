"""Matrix products for the kernels: a single-threaded GEMM of their own — Intel MKL's when
the optional ``mkl`` wheel is installed (``pip install shendu[mkl]``) on Intel's processors,
NumPy's own OpenBLAS called one thread per call through compiled adapters where Numba is
installed on other processors (:mod:`shendu.functional._openblas`: MKL's generic path there
runs 10-25% slower), whichever of the two is present otherwise — or NumPy's ``matmul``
where neither is. What is said of MKL's GEMM below holds for the OpenBLAS adapters too,
but for MKL's batched calls: a stack of products with one batch stride is then a compiled
loop of single calls, one without goes to NumPy.

NumPy's wheels bring OpenBLAS, whose sgemm runs 10–50% below MKL's on the shapes of our
layers (a (2048, 128) × (128, 512) product, an im2col convolution's (16384, 288) × (288, 64):
see BENCHMARKS.md). MKL is called through ``ctypes`` on its single-threaded layer, where
the kernels run on one thread (:func:`shendu.functional.conv.set_kernel_threads`) and in
each piece of a kernel's own parallel region (attention's groups of heads). A product the
kernels make outside such a region with several threads is split over them in one compiled
region, each thread running MKL's one-threaded GEMM on a block of the result
(:mod:`shendu.functional._regions`, where Numba and its TBB layer are installed: 10-40%
faster than NumPy's threaded OpenBLAS at two threads, whose threads then never start and
never spin beside ours), else it goes to NumPy's BLAS (MKL's OpenMP layer would split it,
but beside torch's OpenMP runtime in one process it returns wrong matrix-vector products);
a thin one (a short inner dimension or a small output: :data:`SKINNY_K`), which threads do
not speed up, stays on MKL's one thread. So the library that computes a product, and its
rounding, depends on the thread count and on the product's size; a product of a given size
at a given thread count always gets the same one, and the same bits.

Where the products are OpenBLAS's and Numba is installed, two kinds of product are the
direct convolution's loops' instead (``_conv_compiled``: a block of the result in vector
registers while the rows of ``B`` stream past): ``C = A B`` of row-major operands whose
``B`` stays in a core's cache (:func:`rows_take`: a recurrent step's ``W [x; h]``, a
layer's input gradient ``dY W``), and :func:`linear`'s ``x w^T + b``, ``w`` transposed two
vectors of rows at a time in registers (:func:`linear_rows_take`). OpenBLAS makes these
from packed copies of its operands; for the shapes of our layers its one thread ran 6-26%
slower (BENCHMARKS.md). Each number of such a product is summed in one order, in one
thread, whatever the thread count.

:func:`matmul` takes what ``np.matmul`` takes and returns what it returns; the shapes MKL
cannot take as they are (integer dtypes, mixed dtypes, strides that are not a matrix layout,
small products where a foreign call costs more than it saves) go to ``np.matmul``.
``SHENDU_GEMM=numpy`` in the environment keeps every product on NumPy (the path the tests
also run), ``SHENDU_GEMM=mkl`` or ``openblas`` asks for that library on any processor (an
error where it cannot be loaded).

:func:`exp` is ``np.exp`` on MKL's vector math (VML, high-accuracy mode) for float32 arrays
of some size, on Intel's processors (:func:`vml_pays`): twice as fast as NumPy's there, and
closer to the true value (measured within 0.72 ulp, against NumPy's 2.4); float64 stays on
NumPy, whose ``exp`` gives the same bits there.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading

import numpy as np

from shendu.functional._openblas import ONE_THREAD

__all__ = ["matmul", "linear", "exp", "Repeated", "backend", "numpy_products"]

MIN_FLOPS = 1 << 22     # m·n·k below which np.matmul wins (a call here costs ~7 µs more)
MIN_STACK_FLOPS = 1 << 20  # the same for each product of a stack (see _small_stack)
MIN_REPEATED_FLOPS = 1 << 20  # the same for a Repeated product (a bare call: ~2 µs)
MIN_LINEAR_FLOPS = 1 << 18  # the same for :func:`linear` (no general checks)
MIN_EXP = 1 << 12       # elements below which np.exp wins
#: m·n·k from which NumPy's BLAS (OpenBLAS) runs a product on several threads; with
#: several kernel threads and the split region (:func:`_splitter`) every product from
#: here on is made here instead, so that its threads never start: they would spin beside
#: ours for milliseconds after each product (the split at two threads then ran at the
#: speed of one: a feed-forward's (2048, 128) @ (128, 512) 1770 µs against 900 alone)
BLAS_THREADED_FLOPS = 1 << 18
#: with several threads, a product this thin (inner dimension, or output elements, below
#: these) runs faster on MKL's one thread than on NumPy's threaded BLAS, whose threads do
#: not split it well (cnn32's first convolution: (32, 27) @ (27, 65536) 0.90 against 0.78
#: ms, its weight gradient (32, 65536) @ (65536, 27) 1.98 against 1.51)
SKINNY_K, SKINNY_OUT = 32, 1 << 12
#: VML_HA | VML_ERRMODE_IGNORE | VML_FTZDAZ_OFF: high accuracy, no error reporting (an
#: overflow gives inf, without NumPy's warning), subnormal results kept as NumPy keeps them
_VML_MODE = 0x2 | 0x100 | 0x140000

_NO_TRANS, _TRANS, _ROW_MAJOR = 111, 112, 101
_lock = threading.Lock()
_BYTE = ctypes.c_byte
_state: dict = {}       # "lib", "gemm" / "batch" / "group" {dtype: fn}, "exp", "name"
_GEMM: dict | None = None   # _state["gemm"] once loaded ({} on the NumPy path)
_EXP = None                 # vmsExp once loaded, False on the NumPy path
_SPLIT = None               # (driver, addresses) of the threads' split products, or False
_conv = None                # shendu.functional.conv (its kernel threads), once loaded
_ROWS = None                # the rows loops (:func:`rows_take`) once looked for, or False
#: whether the products the rows loops take are theirs (:func:`rows_take`)
ROWS = True
#: the largest ``B`` (bytes) of a product the rows loops take: a core's L2 cache here (1
#: MiB); beyond it they read ``B`` from farther and ran at half OpenBLAS's speed
ROWS_MAX_BYTES = 1 << 20


def _find_mkl_rt() -> str | None:
    """The path of ``mkl_rt`` as the ``mkl`` wheel installs it, if it does."""
    try:
        from importlib import metadata

        files = metadata.distribution("mkl").files or []
    except Exception:
        return None
    names = ("libmkl_rt.so", "mkl_rt", "libmkl_rt.")
    for f in files:
        base = os.path.basename(str(f))
        if base.startswith(names) and (".so" in base or base.endswith((".dll", ".dylib"))):
            p = str(f.locate())
            if os.path.exists(p):
                return p
    return None


def _load() -> dict:
    global _GEMM, _EXP, _conv
    with _lock:
        if _state:
            return _state
        choice = os.environ.get("SHENDU_GEMM", "auto").lower()
        if choice not in ("auto", "mkl", "numpy", "openblas"):
            raise ValueError("SHENDU_GEMM should be 'auto', 'mkl', 'openblas' or 'numpy', got "
                             f"{choice!r}")
        lib = None
        if choice in ("auto", "mkl"):
            path = _find_mkl_rt()
            if path is not None:
                try:
                    lib = ctypes.CDLL(path)
                    lib.MKL_Set_Threading_Layer(1)          # MKL_THREADING_SEQUENTIAL
                except (OSError, AttributeError):
                    lib = None
            if lib is None and choice == "mkl":
                raise RuntimeError("SHENDU_GEMM=mkl, but Intel MKL could not be loaded: "
                                   "pip install 'shendu[mkl]' (Linux and Windows on x86-64)")
        from shendu.functional import conv as _conv

        openblas = None
        if choice == "openblas" or (choice == "auto" and (lib is None or not mkl_pays())):
            from shendu.functional import _openblas

            openblas = _openblas.load()
            if openblas is None and choice == "openblas":
                raise RuntimeError("SHENDU_GEMM=openblas, but NumPy's BLAS is not an OpenBLAS "
                                   "with 64-bit-int CBLAS and openblas_set_num_threads_local, "
                                   "or Numba is missing")
        # "lib": MKL where loaded, whose vector math (and, in blockwise attention, batched
        # GEMM: _flash_mkl) serve even where the products are OpenBLAS's
        _state["lib"] = lib
        _state["name"] = "openblas" if openblas else "numpy" if lib is None else "mkl"
        _state["gemm"], _state["batch"], _state["group"], _state["exp"] = {}, {}, {}, False
        _state["addresses"] = {}
        if lib is not None:
            P, I = ctypes.c_void_p, ctypes.c_longlong if _ilp64() else ctypes.c_int
            i = ctypes.c_int
            gemm, batch = {}, {}
            for dt, scal, name in ((np.float32, ctypes.c_float, "s"),
                                   (np.float64, ctypes.c_double, "d")):
                f = getattr(lib, f"cblas_{name}gemm")
                f.argtypes = [i, i, i, I, I, I, scal, P, I, P, I, scal, P, I]
                f.restype = None
                gemm[np.dtype(dt)] = f
                f = getattr(lib, f"cblas_{name}gemm_batch_strided", None)
                if f is not None:
                    f.argtypes = [i, i, i, I, I, I, scal, P, I, I, P, I, I, scal, P, I, I, I]
                    f.restype = None
                    batch[np.dtype(dt)] = f
            group = {}
            for dt, name in ((np.float32, "s"), (np.float64, "d")):
                f = getattr(lib, f"cblas_{name}gemm_batch", None)
                if f is not None:
                    f.argtypes = [i] + [P] * 13 + [I, P]
                    f.restype = None
                    group[np.dtype(dt)] = f
            if openblas is None:
                _state["gemm"], _state["batch"], _state["group"] = gemm, batch, group
                if not _ilp64():
                    _state["addresses"] = {dt: ctypes.cast(f, ctypes.c_void_p).value
                                           for dt, f in gemm.items()}
            f = getattr(lib, "vmsExp", None)
            if f is not None and vml_pays():
                f.argtypes = [I, P, P, ctypes.c_longlong]
                f.restype = None
                _state["exp"] = f
        if openblas is not None:
            _state["gemm"] = {dt: f for dt, (f, _) in openblas.items()}
            _state["addresses"] = {dt: a for dt, (_, a) in openblas.items()}
            _state["batch"] = {dt: _serial_stack(dt, a) for dt, (_, a) in openblas.items()}
        _GEMM, _EXP = _state["gemm"], _state["exp"]
        return _state


def _serial_stack(dt, address: int):
    """A strided stack of products, with the arguments of MKL's
    ``cblas_?gemm_batch_strided``, as a compiled loop of calls of the GEMM at ``address``
    on the calling thread (``_regions_compiled.stack_serial``): the batch call where the
    products are OpenBLAS's."""
    from shendu.functional._regions_compiled import stack_serial

    dt = np.dtype(dt)

    def batch(order, ta, tb, m, n, k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc,
              count):
        stack_serial(address, ta, tb, m, n, k, dt.type(alpha), pa, lda, sa, pb, ldb, sb,
                     dt.type(beta), pc, ldc, sc, count, dt.itemsize)

    return batch


def mkl_pays() -> bool:
    """Whether MKL's GEMM is the kernels' where both it and NumPy's OpenBLAS could be
    (:mod:`shendu.functional._openblas`): on Intel's processors; elsewhere MKL takes a
    generic path, 10-25% slower than OpenBLAS on our layers' products on an AMD EPYC."""
    return _cpu_vendor() == "GenuineIntel"


def vml_pays() -> bool:
    """Whether MKL's vector math (``exp``, ``tanh``) is used where loaded: on Intel's
    processors, where it is NumPy's speed or twice it; on others MKL takes a generic path
    (on an AMD EPYC with AVX-512, 32768 float32: ``tanh`` 85 µs against NumPy's 12, ``exp``
    30 against 15). ``SHENDU_VML=1`` or ``0`` in the environment decides instead."""
    choice = os.environ.get("SHENDU_VML", "").lower()
    if choice in ("0", "1"):
        return choice == "1"
    return _cpu_vendor() == "GenuineIntel"


def _cpu_vendor() -> str:
    """The processor's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...), or ``""``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    name = platform.processor()             # Windows: "... GenuineIntel" / "AuthenticAMD"
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in name), "")


def _ilp64() -> bool:
    """mkl_rt's default interface is LP64 (32-bit ints); it stays so unless the environment
    asks otherwise."""
    return os.environ.get("MKL_INTERFACE_LAYER", "").upper().startswith("ILP64")


def backend() -> str:
    """``"mkl"`` when the products run on Intel MKL, ``"openblas"`` when on NumPy's OpenBLAS
    called one thread per call (:mod:`shendu.functional._openblas`), ``"numpy"`` when on
    ``np.matmul``."""
    return _load()["name"]


@contextlib.contextmanager
def numpy_products():
    """Every product on NumPy inside the block. Which library computes a product depends on
    its size (:data:`MIN_FLOPS`), and the two round differently; a comparison of runs whose
    products have different sizes (one process against ranks on half batches) holds to
    the last bits only on one library."""
    global _GEMM
    _load()
    before, _GEMM = _GEMM, {}
    try:
        yield
    finally:
        _GEMM = before


def _layout(a: np.ndarray):
    """(transpose flag, leading dimension) of the last two axes of ``a`` as a BLAS matrix,
    or None when they are not one (the leading dimension must be a whole, positive
    number of elements of at least the other side)."""
    r, c = a.shape[-2:]
    s0, s1 = a.strides[-2:]
    isz = a.itemsize
    if (c == 1 or s1 == isz) and (r == 1 or (s0 % isz == 0 and s0 // isz >= max(c, 1))):
        return _NO_TRANS, (s0 // isz if r > 1 else max(c, 1))
    if (r == 1 or s0 == isz) and (c == 1 or (s1 % isz == 0 and s1 // isz >= max(r, 1))):
        return _TRANS, (s1 // isz if c > 1 else max(r, 1))
    return None


def _batch_stride(a: np.ndarray, lead: tuple):
    """The one element stride between consecutive matrices of ``a`` broadcast to the batch
    shape ``lead`` (0 where it is broadcast), or None when its batch axes do not flatten."""
    pad = len(lead) - (a.ndim - 2)
    shape, strides = (1,) * pad + a.shape[:-2], (0,) * pad + a.strides[:-2]
    step, run = None, 1
    for size, n, s in reversed(list(zip(lead, shape, strides))):
        if size == 1:
            continue
        s = 0 if n == 1 else s
        if step is None:
            step, run = s, size                 # the innermost batch axis: its stride
        elif s != step * run:
            return None
        else:
            run *= size
    step = step or 0
    return None if step % a.itemsize else step // a.itemsize


def exp(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.exp(x, out=out)`` without its floating-point warnings; on MKL's VML for float32
    where both arrays are contiguous (``out`` may be ``x``) and large enough to pay for the
    call."""
    f = _EXP if _EXP is not None else _load()["exp"]
    if (not f or type(x) is not np.ndarray or x.dtype != np.float32 or x.size < MIN_EXP
            or not x.flags.c_contiguous):
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(x, out=out)
    if out is None:
        out = np.empty_like(x)
    elif (type(out) is not np.ndarray or out.shape != x.shape or out.dtype != x.dtype
          or not out.flags.c_contiguous or not out.flags.writeable
          or (out is not x and np.may_share_memory(out, x))):
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(x, out=out)
    n, step = x.size, 1 << 30
    for i in range(0, n, step):
        f(min(step, n - i), x.ctypes.data + 4 * i, out.ctypes.data + 4 * i, _VML_MODE)
    return out


def matmul(a, b, out: np.ndarray | None = None, accumulate: bool = False) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, on MKL's GEMM where it applies. ``accumulate``: ``out +=
    a @ b`` instead (``out`` required), in the product itself on MKL (its ``beta = 1``)."""
    gemm = _GEMM if _GEMM is not None else _load()["gemm"]
    if accumulate and out is None:
        raise ValueError("matmul: accumulate=True needs out=")
    if (not accumulate and type(a) is np.ndarray and type(b) is np.ndarray and a.ndim >= 2
            and b.ndim >= 2 and a.shape[-1] == 1 and b.shape[-2] == 1):
        # an inner dimension of 1: outer products, one multiply each (a single-query
        # attention's P^T dO: (64, 20, 1) @ (64, 1, 32) 61 µs as products, 29 as this)
        return np.multiply(a, b, out=out)
    if (not gemm or type(a) is not np.ndarray or type(b) is not np.ndarray
            or a.dtype != b.dtype or a.ndim < 2 or b.ndim < 2 or a.dtype not in gemm):
        return _numpy(a, b, out, accumulate)
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    if k != k2:
        return _numpy(a, b, out, accumulate)            # np.matmul's error
    if _conv._N_THREADS > 1 and _splitter():
        # several threads: every product NumPy's BLAS would run on its threads runs here,
        # split over ours where it is thick enough (outside the kernels' own parallel
        # regions), so that its threads never start
        count = 1
        if a.ndim > 2 or b.ndim > 2:
            try:
                count = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
            except ValueError:
                return _numpy(a, b, out, accumulate)    # np.matmul's error
        if count * m * n * k < min(BLAS_THREADED_FLOPS, MIN_FLOPS):
            return _numpy(a, b, out, accumulate)
        split = (k >= SKINNY_K and count * m * n >= SKINNY_OUT
                 and not _conv.in_parallel_region())
    else:
        if (m * n * k < MIN_FLOPS and not _small_stack(a, b, m * n * k)) or (
                b.ndim > 2 and _conv._N_THREADS > 1 and not _conv.in_parallel_region()) or \
                _threaded_blas_takes(k, (a.size // max(k, 1)) * n):
            return _numpy(a, b, out, accumulate)
        split = False
    beta = 1.0 if accumulate else 0.0
    if a.ndim == 2 and b.ndim == 2:
        res = _matmul2(gemm[a.dtype], a, b, out, beta, split)
        return _numpy(a, b, out, accumulate) if res is None else res
    if b.ndim == 2 and a.flags.c_contiguous and (out is None or out.flags.c_contiguous):
        # a stack of row blocks times one matrix: one product of the stacked rows
        res = _matmul2(gemm[a.dtype], a.reshape(-1, k), b,
                       None if out is None else out.reshape(-1, n), beta, split)
        if res is None:
            return _numpy(a, b, out, accumulate)
        return out if out is not None else res.reshape(a.shape[:-1] + (n,))
    return _batched(_load(), a, b, out, accumulate, split)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
           out: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T + b`` for ``x`` (M, K), ``w`` (N, K), ``b`` (N,) or None, as torch's
    ``addmm``: on MKL the output starts as the bias in every row and one product adds
    ``x w^T`` to it (``beta = 1``), with none of :func:`matmul`'s general checks (a Linear
    layer's operands are row-major; others take :func:`matmul`). That call costs ~2 µs, so
    it pays from :data:`MIN_LINEAR_FLOPS` (an MLP's (128, 256) @ (256, 10) head: 18 µs
    against 22 through :func:`matmul` and ``+=``). Into ``out`` (row-major (M, N)) when
    given."""
    m, k = x.shape
    n = w.shape[0]
    plan = _linear_plan(x, w, b)
    if plan is None or (out is not None and (
            type(out) is not np.ndarray or out.shape != (m, n) or out.dtype != x.dtype
            or not out.flags.c_contiguous or not out.flags.writeable)):
        y = matmul(x, w.T, out=out)
        if b is not None:
            y += b
        return y
    f, split, rows = plan
    y = np.empty((m, n), x.dtype) if out is None else out
    if rows:
        _linear_rows(x, w, b, y, split)
        return y
    if b is not None:
        y[...] = b
    beta = 0.0 if b is None else 1.0
    _call(f, split, x.dtype, _NO_TRANS, _TRANS, m, n, k, _address(x), k, _address(w), k,
          beta, _address(y), n)
    return y


def _linear_plan(x, w, b):
    """How :func:`linear` makes ``x w^T + b`` itself: ``(f, split, rows)`` (the GEMM at
    ``f``, split over the kernel threads or not, by the rows loops or not), or None where
    it leaves the product to :func:`matmul` (operands BLAS does not take as they are, or a
    product under :data:`MIN_LINEAR_FLOPS`)."""
    gemm = _GEMM if _GEMM is not None else _load()["gemm"]
    f = gemm.get(x.dtype) if gemm else None
    m, k = x.shape
    n = w.shape[0]
    split = _threaded_blas_takes(k, m * n)
    if (f is None or type(x) is not np.ndarray or type(w) is not np.ndarray
            or w.dtype != x.dtype or (b is not None and b.dtype != x.dtype)
            or not x.flags.c_contiguous or not w.flags.c_contiguous
            or m * n * k < MIN_LINEAR_FLOPS or m == 0 or n == 0 or k == 0
            or (split and not _splitter())):
        return None
    return f, split, (linear_rows_take(x.dtype, k, n)
                      and (b is None or b.flags.c_contiguous))


def _threaded_blas_takes(k: int, outs: int) -> bool:
    """Whether a product with inner dimension ``k`` and ``outs`` output elements runs on
    several threads: with several kernel threads, outside their parallel region, unless it
    is thin (:data:`SKINNY_K`, :data:`SKINNY_OUT`). It is then split over them in one
    compiled region (:mod:`shendu.functional._regions`) where that region can run, and goes
    to NumPy's threaded BLAS otherwise."""
    return (_conv._N_THREADS > 1 and not _conv.in_parallel_region()
            and k >= SKINNY_K and outs >= SKINNY_OUT)


def _threads_for(k: int, outs: int) -> int:
    """The threads a product with inner dimension ``k`` and ``outs`` output elements is
    split over (:func:`_threaded_blas_takes`): the kernel threads, or 1."""
    if _conv is None:
        _load()
    return _conv._N_THREADS if _threaded_blas_takes(k, outs) else 1


def products_off_blas_threads() -> bool:
    """Whether no product of the kernels starts NumPy's BLAS threads: with several kernel
    threads and the split region (then its threads need not be stopped around the
    kernels' own parallel regions, see ``conv.parallel``)."""
    gemm = _GEMM if _GEMM is not None else _load()["gemm"]
    return bool(gemm) and _conv._N_THREADS > 1 and bool(_splitter())


def _splitter():
    """``_regions.gemm()`` once looked for: ``((split, addresses), (split_stack,
    addresses))``, or False."""
    global _SPLIT
    if _SPLIT is None:
        from shendu.functional import _regions

        _SPLIT = _regions.gemm() or False
    return _SPLIT


def _call(f, split: bool, dt, ta, tb, m, n, k, pa, lda, pb, ldb, beta, pc, ldc) -> None:
    """The row-major ``C = op(A) op(B) + beta C`` by ``f`` (cblas_?gemm), or split over
    the kernel threads (:func:`_split`); OpenBLAS's thread count at one meanwhile where the
    products are its (``_openblas.ONE_THREAD``). ``C = A B`` by the rows loops where they
    take it (:func:`rows_take`)."""
    if split:
        _split(dt, ta, tb, m, n, k, pa, lda, pb, ldb, beta, pc, ldc)
    elif ta == tb == _NO_TRANS and beta == 0.0 and rows_take(dt, k, n, ldb):
        one = dt.type(1.0)
        _ROWS.gemm_at(pa, lda, pb, ldb, pc, ldc, m, n, k, one, 64 // one.itemsize)
    else:
        with ONE_THREAD:
            f(_ROW_MAJOR, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, beta, pc, ldc)


def rows_take(dt, k: int, n: int, ldb: int) -> bool:
    """Whether a product ``C = A B`` of row-major matrices, ``B`` (k, n) with leading
    dimension ``ldb``, is made by the rows loops (``_conv_compiled.gemm_rows``: the direct
    convolution's, which keep a block of ``C`` in vector registers while the rows of ``B``
    stream past) instead of the GEMM: where the products are OpenBLAS's and Numba is
    installed (:data:`ROWS`), for whole vectors of columns and a ``B`` that stays in a
    core's cache (:data:`ROWS_MAX_BYTES`; its rows not a multiple of 4 KiB apart, which
    would map them onto the same few cache sets). There they ran 6-24% faster than
    OpenBLAS's one thread (float32, an LSTM step's (512, 161) @ (161, 64): 111 against 90
    GFLOP/s; a feed-forward's (2048, 384) @ (384, 128): 111 against 100)."""
    isz = dt.itemsize
    return (ROWS and k > 0 and n % (64 // isz) == 0 and k * n * isz <= ROWS_MAX_BYTES
            and (ldb * isz) % 4096 != 0 and _rows_loops() is not False)


def linear_rows_take(dt, k: int, n: int) -> bool:
    """Whether :func:`linear`'s ``x w^T + b`` (``w`` (n, k)) is made by the rows loops
    (``_conv_compiled.linear_rows``): ``w`` taken two vectors of rows at a time, transposed
    into a block of ``B`` rows in registers, every row of ``x`` made against it. As
    :func:`rows_take`, for whole vectors of outputs and a block that stays in a core's
    cache; OpenBLAS transposes ``w`` more slowly for its own product (float32, an MLP's
    (128, 784) @ (256, 784)^T: 110 against 87 GFLOP/s on one thread, 207 against 151 on
    two; a feed-forward's (4096, 512) @ (128, 512)^T: 111 against 94)."""
    isz = dt.itemsize
    return (ROWS and n % (64 // isz) == 0 and 128 * k <= ROWS_MAX_BYTES
            and _rows_loops() is not False)


def heads_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, heads: int, a0: int,
                 a1: int, batch_first: bool) -> np.ndarray | None:
    """Self-attention's packed projection ``x w^T + b`` (``x`` (a0·a1, E), ``w`` (3E, E)) as
    :func:`linear` makes it by the rows loops, written straight into the heads' layout (3,
    N, heads, L, hd) (``_conv_compiled.heads_rows``: no (a0·a1, 3E) product and no pass
    copying it out), split over the kernel threads by heads as :func:`linear` would split
    it; None where :func:`linear` would not take the rows loops or a head is not whole
    vectors."""
    m = x.shape[0]
    n = w.shape[0]
    hd = n // (3 * heads) if heads else 0
    plan = _linear_plan(x, w, b)
    if (plan is None or not plan[2] or hd == 0 or 3 * heads * hd != n
            or hd % (64 // x.itemsize) or m != a0 * a1):
        return None
    split = plan[1]
    N, L = (a0, a1) if batch_first else (a1, a0)
    out = np.empty((3, N, heads, L, hd), x.dtype)
    if b is None:
        b = np.zeros(n, x.dtype)
    lanes = 64 // x.itemsize
    if split:
        _ROWS.heads_rows_split(x, w, b, out, batch_first, lanes, _conv._N_THREADS)
    else:
        _ROWS.heads_rows(x, w, b, out, batch_first, 0, 3 * heads, lanes, 0, N)
    return out


def rows_nt_lanes(dt, k: int, n: int) -> int:
    """The lanes of a vector of ``dt`` where a stack of products ``x[g] w[g]^T`` (``w[g]``
    (n, k)) is made by the rows loops (:func:`rows_nt`), else 0."""
    dt = np.dtype(dt)
    if dt not in (np.float32, np.float64) or not linear_rows_take(dt, k, n):
        return 0
    return 64 // dt.itemsize


def rows_nt(x: np.ndarray, w: np.ndarray, out: np.ndarray | None = None):
    """``x @ swap(w)`` for stacks of C-contiguous matrices with the same leading dims (``x``
    (..., m, k), ``w`` (..., n, k)) by the rows loops (``_conv_compiled.linear_rows_stack``:
    each number summed over ``k`` in order, whatever the thread count), split by whole
    matrices over the kernel threads outside their parallel regions; None where they do
    not take it (:func:`rows_nt_lanes`; dtypes, layouts, shapes), for ``matmul`` to make.
    Attention's short scores ``K Q^T`` (64 x 64 x 32 a head): 128 heads in 0.41 ms against
    OpenBLAS's 0.58 on one thread (its calls one a head, B transposed)."""
    if (type(x) is not np.ndarray or type(w) is not np.ndarray or x.dtype != w.dtype
            or x.ndim < 3 or x.shape[:-2] != w.shape[:-2] or x.shape[-1] != w.shape[-1]
            or not (x.flags.c_contiguous and w.flags.c_contiguous)):
        return None
    m, k = x.shape[-2:]
    n = w.shape[-2]
    lanes = rows_nt_lanes(x.dtype, k, n) if k > 0 else 0
    if not lanes:
        return None
    shape = x.shape[:-2] + (m, n)
    if out is None:
        out = np.empty(shape, x.dtype)
    elif (type(out) is not np.ndarray or out.shape != shape or out.dtype != x.dtype
          or not out.flags.c_contiguous or not out.flags.writeable
          or np.may_share_memory(out, x) or np.may_share_memory(out, w)):
        return None
    G = math.prod(x.shape[:-2])
    if G == 0 or m == 0:
        return out
    x3, w3, o3 = x.reshape(G, m, k), w.reshape(G, n, k), out.reshape(G, m, n)
    t = min(_conv._N_THREADS, G)
    if t > 1 and not _conv.in_parallel_region():
        _ROWS.linear_rows_stack_split(x3, w3, o3, lanes, t)
    else:
        _ROWS.linear_rows_stack(x3, w3, o3, 0, G, lanes)
    return out


def _linear_rows(x, w, b, y, split: bool) -> None:
    """``y = x w^T + b`` by the rows loops (:func:`linear_rows_take`), split over the
    kernel threads by blocks of columns when ``split``."""
    lanes = 64 // x.itemsize
    if b is None:
        b = np.zeros(w.shape[0], x.dtype)
    if split:
        _ROWS.linear_rows_split(x, w, b, y, lanes, _conv._N_THREADS)
    else:
        _ROWS.linear_rows(x, w, b, y, 0, -(-w.shape[0] // (2 * lanes)), lanes)


def _rows_loops():
    """The rows loops' module (:mod:`shendu.functional._conv_compiled`) where the products
    are OpenBLAS's and Numba is installed, else False."""
    global _ROWS
    if _ROWS is None:
        _ROWS = False
        if _load()["name"] == "openblas":
            try:
                from shendu.functional import _conv_compiled
            except ImportError:
                pass
            else:
                _ROWS = _conv_compiled
    return _ROWS


def _split(dt, ta, tb, m, n, k, pa, lda, pb, ldb, beta, pc, ldc) -> None:
    """The row-major ``C = op(A) op(B) + beta C`` split over the kernel threads in one
    compiled region (:func:`_splitter` must have found one): the rows loops' where they
    take it (:func:`rows_take`)."""
    one = dt.type(1.0)
    if ta == tb == _NO_TRANS and beta == 0.0 and rows_take(dt, k, n, ldb):
        _ROWS.gemm_at_split(pa, lda, pb, ldb, pc, ldc, m, n, k, one, 64 // one.itemsize,
                            _conv._N_THREADS)
        return
    drv, addr = _SPLIT[0]
    with ONE_THREAD:
        drv(addr[dt], ta, tb, m, n, k, one, pa, lda, pb, ldb, dt.type(beta), pc, ldc,
            one.itemsize, _conv._N_THREADS)


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s first element: through the buffer protocol where ``a`` (or
    its transpose, which starts at the same element) is C-contiguous and writable (0.4-0.5
    µs; ``a.ctypes.data``, 1.1 µs, builds an object each time), else ``a.ctypes.data``."""
    f = a.flags
    if f.writeable and a.size:
        if f.c_contiguous:
            return ctypes.addressof(_BYTE.from_buffer(a))
        if f.f_contiguous:
            return ctypes.addressof(_BYTE.from_buffer(a.T))
    return a.ctypes.data


def _small_stack(a: np.ndarray, b: np.ndarray, flops: int) -> bool:
    """Whether a stack of products each under :data:`MIN_FLOPS` goes to MKL's batch call
    (whose one call's cost the whole stack shares): when the stack is over it and each
    product is at least :data:`MIN_STACK_FLOPS` (blockwise attention's 4 heads of (256, 256)
    @ (256, 32): NumPy 123 µs, MKL 98), or ``b`` is transposed, which NumPy runs one matrix
    at a time well below its speed on row-major ones (attention's ``K Q^T`` over 128 heads
    of (64, 32): 393 µs, MKL 265). Smaller row-major products stay on NumPy (128 heads of
    (64, 64) @ (64, 32): 227 µs, MKL 243)."""
    if a.ndim < 3 and b.ndim < 3:
        return False
    try:
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        return False                                # np.matmul's own error
    if math.prod(lead) * flops < MIN_FLOPS:
        return False
    return flops >= MIN_STACK_FLOPS or (b.shape[-1] > 1 and b.strides[-1] != b.itemsize)


class Repeated:
    """``out = a @ b`` made again and again with the same ``a``, ``b`` and ``out`` moving
    through their arrays by whole elements with their layouts unchanged (a scan's steps):
    the checks and the operands' addresses are taken once, from the first step's views,
    and each step is the bare foreign call (about 2 µs instead of 7), which pays from
    :data:`MIN_REPEATED_FLOPS` on (an RNN step's (128, 161) @ (161, 64): NumPy 18.7 µs, MKL
    14.4). With several kernel threads a product :func:`matmul` would split over them is
    split the same way. Where MKL does not apply (see :func:`matmul`) each step is
    :func:`matmul` of the views it is given."""

    def __init__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        self.a, self.f = a, None
        gemm = _GEMM if _GEMM is not None else _load()["gemm"]
        if (not gemm or a.ndim != 2 or b.ndim != 2 or out.ndim != 2
                or not (a.dtype == b.dtype == out.dtype) or a.dtype not in gemm
                or a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1])
                or a.shape[0] * b.shape[1] * a.shape[1] < MIN_REPEATED_FLOPS
                or np.may_share_memory(out, a) or np.may_share_memory(out, b)
                or not out.flags.writeable):
            return
        la, lb, lc = _layout(a), _layout(b), _layout(out)
        if la is None or lb is None or lc is None or lc[0] != _NO_TRANS:
            return
        m, k = a.shape
        n = b.shape[1]
        self.split = _threaded_blas_takes(k, m * n)
        if self.split and not _splitter():
            return
        self.f = gemm[a.dtype]
        self.args = (m, n, k, la, lb, lc[1])
        self.pa, self.pb, self.pc = a.ctypes.data, b.ctypes.data, out.ctypes.data
        self.isz = a.itemsize

    def __call__(self, b: np.ndarray, out: np.ndarray, db: int, dc: int) -> None:
        """``out = a @ b``; ``b`` and ``out`` lie ``db`` and ``dc`` elements after the first
        step's ``b`` and ``out``, in the same layouts."""
        if self.f is None:
            matmul(self.a, b, out=out)
            return
        m, n, k, (ta, lda), (tb, ldb), ldc = self.args
        _call(self.f, self.split, self.a.dtype, ta, tb, m, n, k, self.pa, lda,
              self.pb + db * self.isz, ldb, 0.0, self.pc + dc * self.isz, ldc)


def _numpy(a, b, out, accumulate: bool) -> np.ndarray:
    if not accumulate:
        return np.matmul(a, b, out=out)
    out += np.matmul(a, b)
    return out


def _matmul2(f, a, b, out, beta: float = 0.0, split: bool = False):
    """``a @ b`` (+ ``out`` when ``beta`` is 1) of two matrices into ``out`` (new when None)
    by ``f`` (cblas_?gemm), or split over the kernel threads (:func:`_split`), or None
    when ``a``, ``b`` or ``out`` is not laid out as BLAS needs."""
    la, lb = _layout(a), _layout(b)
    if la is None or lb is None:
        return None
    m, k = a.shape
    n = b.shape[1]
    ldc = n
    if out is None:
        out = np.empty((m, n), a.dtype)
    elif (type(out) is not np.ndarray or out.shape != (m, n) or out.dtype != a.dtype
          or not out.flags.writeable
          or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        return None
    elif not out.flags.c_contiguous:        # rows of a wider matrix: a column block of it
        lc = _layout(out)
        if lc is None or lc[0] != _NO_TRANS:
            return None
        ldc = lc[1]
    if m == 0 or n == 0:
        return out
    (ta, lda), (tb, ldb) = la, lb
    _call(f, split, a.dtype, ta, tb, m, n, k, _address(a), lda, _address(b), ldb, beta,
          _address(out), ldc)
    return out


def _batched(st, a, b, out, accumulate: bool = False, split: bool = False):
    """``np.matmul`` of stacks: one strided batch call (a plain one for a single matrix);
    ``split``: the matrices (or the single one) split over the kernel threads."""
    f = st["batch"].get(a.dtype)
    if f is None:
        return _numpy(a, b, out, accumulate)
    lead = a.shape[:-2]
    if b.shape[:-2] != lead:
        try:
            lead = np.broadcast_shapes(lead, b.shape[:-2])
        except ValueError:
            return _numpy(a, b, out, accumulate)     # np.matmul's own error
    m, k = a.shape[-2:]
    n = b.shape[-1]
    la, lb = _layout(a), _layout(b)
    count = math.prod(lead)
    if count == 1:
        sa = sb = 0
    else:
        sa, sb = _batch_stride(a, lead), _batch_stride(b, lead)
    if la is None or lb is None:
        return _numpy(a, b, out, accumulate)
    if sa is None or sb is None:                # no one batch stride: one pointer each
        if st["group"].get(a.dtype) is None:
            return _numpy(a, b, out, accumulate)
        sa = sb = None
    shape = lead + (m, n)
    if out is None:
        out = np.empty(shape, a.dtype)
    elif (type(out) is not np.ndarray or out.shape != shape or out.dtype != a.dtype
          or not out.flags.c_contiguous or not out.flags.writeable
          or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        return _numpy(a, b, out, accumulate)
    if count == 0 or m == 0 or n == 0:
        return out
    (ta, lda), (tb, ldb) = la, lb
    beta = 1.0 if accumulate else 0.0
    if count == 1:                          # one matrix: the plain call is ~10% faster
        _call(st["gemm"][a.dtype], split, a.dtype, ta, tb, m, n, k, _address(a), lda,
              _address(b), ldb, beta, _address(out), n)
        return out
    with ONE_THREAD:
        if split and sa is not None:
            drv, addr = _SPLIT[1]
            one = a.dtype.type(1.0)
            drv(addr[a.dtype], ta, tb, m, n, k, one, _address(a), lda, sa, _address(b), ldb,
                sb, a.dtype.type(beta), _address(out), n, m * n, count, a.itemsize,
                min(_conv._N_THREADS, count))
            return out
        if sa is None:
            _grouped(st["group"][a.dtype], a, b, out, lead, (ta, lda), (tb, ldb), beta)
            return out
        if _conv.in_parallel_region() and _splitter():
            # a kernel thread's piece: a compiled loop of plain calls (MKL's batch call does
            # not run beside itself, see _regions_compiled.stack_serial)
            drv, addr = _SPLIT[2]
            drv(addr[a.dtype], ta, tb, m, n, k, a.dtype.type(1.0), _address(a), lda, sa,
                _address(b), ldb, sb, a.dtype.type(beta), _address(out), n, m * n, count,
                a.itemsize)
            return out
        f(_ROW_MAJOR, ta, tb, m, n, k, 1.0, _address(a), lda, sa, _address(b), ldb, sb,
          beta, _address(out), n, m * n, count)
    return out


def _offsets(a: np.ndarray, lead: tuple) -> np.ndarray:
    """Byte offsets of the matrices of ``a`` broadcast to the batch shape ``lead``, in
    row-major order of ``lead``."""
    pad = len(lead) - (a.ndim - 2)
    off = np.zeros(lead, np.int64)
    for ax, (size, n, st) in enumerate(zip(lead, (1,) * pad + a.shape[:-2],
                                           (0,) * pad + a.strides[:-2])):
        if n != 1 and st:
            off += (np.arange(size, dtype=np.int64) * st).reshape(
                (-1,) + (1,) * (len(lead) - ax - 1))
    return off.ravel()


def _grouped(f, a, b, out, lead: tuple, la: tuple, lb: tuple, beta: float) -> None:
    """A stack whose batch axes have no one stride (a permuted view: heads split out of a
    projection's rows) as one ``cblas_?gemm_batch`` call with a pointer per matrix."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    count = math.prod(lead)
    it = np.int64 if _ilp64() else np.int32
    ints = np.array([la[0], lb[0], m, n, k, la[1], lb[1], n, count], it)
    ab = np.array([1.0, beta], a.dtype)
    pa = _offsets(a, lead) + a.ctypes.data
    pb = _offsets(b, lead) + b.ctypes.data
    pc = np.arange(count, dtype=np.int64) * (m * n * out.itemsize) + out.ctypes.data
    addr = ints.ctypes.data
    size = ints.itemsize
    tr = np.array([la[0], lb[0]], np.int32)           # CBLAS_TRANSPOSE is a C enum
    f(_ROW_MAJOR, tr.ctypes.data, tr.ctypes.data + 4, addr + 2 * size, addr + 3 * size,
      addr + 4 * size, ab.ctypes.data, pa.ctypes.data, addr + 5 * size, pb.ctypes.data,
      addr + 6 * size, ab.ctypes.data + ab.itemsize, pc.ctypes.data, addr + 7 * size, 1,
      addr + 8 * size)
