"""Convolution (LeCun et al. 1989; LeCun, Bottou, Bengio & Haffner 1998) as one fused op
with a hand-derived backward, and channel-wise dropout for convolutional feature maps.

The API is NCHW, as in torch: input ``(N, C, H, W)``, weight ``(O, C/groups, kh, kw)``.
Inside, the kernel keeps activations *batch-innermost* ("CHWN", the layout of
Krizhevsky's cuda-convnet): a contiguous ``(C, H, W, N)`` block handed to the user as the
transposed *view* ``(N, C, H, W)``. Shapes and values are NCHW; only the strides differ.
With the batch innermost, every spatial window of a feature map is a block of
``Wo * N`` contiguous numbers per row (not ``Wo``), so the memory-bound parts run at full
speed:

* the patch matrix ("im2col", Chellapilla, Puri & Simard 2006) is ``kh * kw`` block copies,
* the forward pass is one matrix product ``Y (O, Ho*Wo*N) = W (O, C*kh*kw) @ X_col``
  whose result already *is* the next activation in the same layout (no transpose),
* groups are a batched product over ``G`` contiguous channel blocks,
* the input gradient is a transposed convolution evaluated as one product
  ``dX_col = W^T @ dY`` followed by ``kh * kw`` slice-adds ("col2im"),
* pooling compares and selects whole rows of a batch at once.

A convolution without groups whose patch matrix outgrows a core's cache (more than
:data:`TILE_ELEMS` numbers) runs *tiled*: a few output rows at a time, the patches of a
tile are made and multiplied at once, while they are still in cache, the tiles split over
the kernel threads, each product on one thread (MKL's where installed). The bias is a
row of ones under the patches in the forward product; the weight gradient makes the
patches again from the input and sums the tiles' products in tile order; the input
gradient gathers, for each tile of input rows, the products of the kernel rows that
reach it (the same multiplications as ``W^T dY``, without its patch-sized result). The
tiles depend on the shapes only, so the result is the same for any thread count.

A wide tiled convolution (:data:`ROWS_MIN_OUT` output channels or more, where Numba is
installed) keeps its output *spatial-outer* instead, ``(H, W, N, C)`` handed out as the
NCHW view: each tile is then the product of a tall patch matrix (one row per output
position) and the transposed weight, the orientation BLAS runs fastest with a few dozen
output channels, and the next such convolution (after pooling, ReLU, ...) copies its
patch rows as runs of ``C`` contiguous numbers (:meth:`Conv2d._forward_rows`).

A stride-1, undilated convolution without groups runs *direct* where Numba is installed
(:meth:`Conv2d._forward_direct`, :mod:`shendu.functional._conv_compiled`): in the
batch-innermost layout each output row is ``Wo * N`` contiguous numbers and each kernel
tap multiplies a run of as many contiguous numbers of the zero-padded input, so a block of
outputs is summed over the taps in vector registers, with no patch matrix at all; the
input gradient is the same loop over the padded output gradient with the flipped,
transposed weight, the weight gradient sums products of the same runs. The loops are
compute-bound (80-110 GFLOP/s a thread in float32 here, against 25-75 for the patch
products of LeNet's thin layers), so they scale over the kernel threads where the
memory-bound passes do not. Strided, dilated and grouped convolutions keep the patch
matrix.

Pooling, batch norm and element-wise ops accept any strides, so the layout flows through a
network without copies; ``reshape``/``flatten`` before a ``Linear`` copies once into NCHW
order, as it must. The patch matrices live in a small reusable workspace (returned to it
when the graph is freed), so a training step does not ask the OS for fresh pages each time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shendu.autograd import Function
from shendu.backend import rng
from shendu.functional import _gemm, _numba
from shendu.functional._gemm import matmul
from shendu.functional._openblas import ONE_THREAD
from shendu.functional.dropout import Dropout
from shendu.tensor import Tensor
from shendu.workspace import workspace  # the library's one scratch pool

__all__ = ["conv2d", "conv1d", "dropout2d", "dropout1d"]


# --------------------------------------------------------------------------- helpers
def _tuple(v, n: int, name: str, op: str) -> tuple[int, ...]:
    """``v`` (an int or a sequence of ``n`` ints) as a tuple of ``n`` ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    t = tuple(v)
    if len(t) == 1:
        t = t * n
    if len(t) != n or not all(isinstance(a, (int, np.integer)) for a in t):
        raise ValueError(f"{op}: {name} must be an int or a tuple of {n} ints, got {v!r}")
    return tuple(int(a) for a in t)


def out_range(offset: int, stride: int, size: int, n_out: int) -> tuple[int, int, int]:
    """Which outputs ``o`` read an input inside ``[0, size)`` at index ``o*stride + offset``.

    Returns ``(o0, o1, i0)``: outputs ``o0 <= o < o1`` do, the first one reads input
    ``i0``. Used for padding without a padded copy: the outputs outside the range see a
    padded element.
    """
    o0 = 0 if offset >= 0 else (-offset + stride - 1) // stride
    last = size - 1 - offset
    o1 = min(n_out, last // stride + 1) if last >= 0 else 0
    o1 = max(o1, o0)
    return o0, o1, o0 * stride + offset


@functools.lru_cache(maxsize=256)
def windows(h: int, w: int, ho: int, wo: int, kh: int, kw: int, stride: tuple, pads: tuple,
            dilation: tuple) -> tuple:
    """For each kernel offset ``(i, j)`` (row-major): ``(out_index, in_index, full, strips)``
    for arrays laid out ``(A, H, W, B)``.

    ``out_index`` selects the outputs whose window element ``(i, j)`` lies inside the
    input, ``in_index`` the input elements they read (a strided slice), ``full`` says whether
    that is every output, ``strips`` index the outputs that read padding instead (at most
    four border strips). ``out_index`` is None when no output reads the input.
    """
    sh, sw = stride
    dh, dw = dilation
    pt, pl = pads
    res = []
    for i in range(kh):
        y0, y1, iy = out_range(i * dh - pt, sh, h, ho)
        for j in range(kw):
            x0, x1, ix = out_range(j * dw - pl, sw, w, wo)
            if y0 >= y1 or x0 >= x1:
                res.append((None, None, False, ((slice(None),),)))
                continue
            out_idx = (slice(None), slice(y0, y1), slice(x0, x1))
            in_idx = (slice(None), slice(iy, iy + (y1 - y0 - 1) * sh + 1, sh),
                      slice(ix, ix + (x1 - x0 - 1) * sw + 1, sw))
            strips = []
            if y0 > 0:
                strips.append((slice(None), slice(0, y0)))
            if y1 < ho:
                strips.append((slice(None), slice(y1, ho)))
            if x0 > 0:
                strips.append((slice(None), slice(y0, y1), slice(0, x0)))
            if x1 < wo:
                strips.append((slice(None), slice(y0, y1), slice(x1, wo)))
            full = y1 - y0 == ho and x1 - x0 == wo
            res.append((out_idx, in_idx, full, tuple(strips)))
    return tuple(res)


def empty_workspace() -> None:
    """Release the scratch arrays the kernels keep for reuse (``shendu.backend.empty_cache``)."""
    workspace.clear()


def usable_cpus() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)      # macOS, Windows


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_N_THREADS = min(usable_cpus(), 4)
PARALLEL_MIN = 1 << 18  # elements below which a memory-bound loop stays on one thread
#: elements from which a memory-bound loop splits even where NumPy's BLAS has several
#: threads: they are stopped for it (``_one_blas_thread``) and its next product starts
#: them again, which only a large loop pays for (cnn32's first ReLU and pooling, 2^21
#: elements: step 6% faster; LeNet's, 2^18: its MNIST test 3x slower)
SPLIT_BESIDE_BLAS = 1 << 21
_COMPILED_MIN = 1 << 12  # patch elements from which col2im runs as one compiled loop


def set_kernel_threads(n: int) -> None:
    """How many threads the memory-bound loops of the conv and pooling kernels, and the head
    groups of blockwise attention, may use (default: the CPUs this process may run on, at
    most 4). ``1`` keeps them on the calling thread, e.g. to compare with a library
    restricted to one thread. The loops' results do not depend on the count; with the
    ``mkl`` extra, a product the kernels make on one thread runs on MKL and on several on
    NumPy's threaded BLAS, so its rounding does (see :mod:`shendu.functional._gemm`)."""
    global _N_THREADS, _executor
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_kernel_threads: expected a positive int, got {n!r}")
    if _executor is not None:
        _executor.shutdown(wait=True)
        _executor = None
    _N_THREADS = int(n)


_blas_libs = None              # threadpoolctl's controllers of NumPy's BLAS, made on first use
_blas_lock = threading.Lock()
_blas_single = [0, ()]         # [callers inside, the BLAS thread counts to restore]


def _blas() -> list:
    """threadpoolctl's controllers of NumPy's own BLAS (empty without threadpoolctl).

    Only NumPy's: another BLAS in the process (SciPy's OpenBLAS, which importing Numba
    loads; MKL) makes none of our products, and switching its thread count, which starts
    its threads again each time, slowed cnn32's step at two threads 2.5x when its
    controllers were found here. Where no BLAS lies in NumPy's own folders (a NumPy built
    against a system BLAS), every BLAS loaded when this is first called."""
    global _blas_libs
    if _blas_libs is None:
        try:
            from threadpoolctl import ThreadpoolController

            libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:      # pragma: no cover - no threadpoolctl, or a BLAS it cannot see
            libs = []
        own = [lib for lib in libs if _in_numpy(lib.filepath)]
        _blas_libs = own or libs
    return _blas_libs


def _in_numpy(path: str) -> bool:
    """Whether ``path`` lies in NumPy's package folder or the one its wheel keeps its
    libraries in (``numpy.libs``; ``numpy/.dylibs`` on macOS)."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    try:
        first = os.path.relpath(os.path.abspath(path), home).split(os.sep)[0]
    except (ValueError, TypeError):   # another drive (Windows), or no path
        return False
    return first in ("numpy", "numpy.libs")


def _no_other_threads() -> bool:
    """Whether this is the only Python thread that could be in a BLAS call (the kernels'
    own pool and tqdm's monitor aside)."""
    me = threading.current_thread()
    return all(t is me or t.name.startswith("shendu-kernel") or type(t).__name__ == "TMonitor"
               for t in threading.enumerate())


@contextlib.contextmanager
def _one_blas_thread():
    """NumPy's BLAS on one thread while the kernels' own threads split the work (the
    calls inside each run as a single thread of a parallel loop do in torch); the thread
    counts come back when the last caller leaves. When no other Python thread could be in
    a BLAS call, OpenBLAS's idle threads are stopped too (``blas_thread_shutdown_``, what
    it runs itself before a fork): they would spin beside ours for a tenth of a second
    after its last product (attention's forward+backward at T=256 measured 93 ms with
    them, 65 ms without); its next parallel product restarts them. Beside another thread
    that might be inside a product they are left alone (stopping them then can hang it)."""
    libs = _blas()
    with _blas_lock:
        if _blas_single[0] == 0:
            _blas_single[1] = tuple(lib.num_threads for lib in libs)
            alone = _no_other_threads()
            for lib in libs:
                lib.set_num_threads(1)
                stop = getattr(getattr(lib, "dynlib", None), "blas_thread_shutdown_", None)
                if alone and stop is not None:
                    stop()
        _blas_single[0] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_single[0] -= 1
            if _blas_single[0] == 0:
                for lib, n in zip(libs, _blas_single[1]):
                    lib.set_num_threads(n)


def parallel(fn, n: int, size: int, calls_blas: bool = False) -> None:
    """Run ``fn(lo, hi)`` over ``range(n)`` split into contiguous chunks, one per CPU (up to
    4), when the work touches at least ``PARALLEL_MIN`` elements (``size``).

    For the memory-bound loops of the kernels (copies, adds, compares of disjoint blocks):
    NumPy releases the GIL inside them, so they scale like the BLAS calls around them.
    Chunks write disjoint memory, so the result does not depend on the split.

    BLAS's own threads, when it has several, keep spinning for a while after each product;
    threads of ours beside them only contend (a (64, 32, 32, 32) convolution step measured
    12% slower), so the chunks then run with BLAS on one thread and its threads stopped
    (:func:`_one_blas_thread`): always for loops that make products (``calls_blas``), for
    the others from :data:`SPLIT_BESIDE_BLAS` elements (below, they stay on the calling
    thread). Where the kernels split their products over their own threads
    (``_gemm.products_off_blas_threads``) OpenBLAS's threads never start and are not
    stopped, but the loops below :data:`SPLIT_BESIDE_BLAS` still stay on the calling thread:
    splitting them from :data:`PARALLEL_MIN` made LeNet's and cnn32's steps slower (cnn32's at
    two threads 31-33 → 20 steps/s).
    """
    t = min(_N_THREADS, n)
    if t <= 1 or size < PARALLEL_MIN:
        fn(0, n)
        return
    many = any(lib.num_threads > 1 for lib in _blas())
    if many and not calls_blas and size < SPLIT_BESIDE_BLAS:
        fn(0, n)
        return
    stop = many and not _gemm.products_off_blas_threads()
    with _one_blas_thread() if stop else contextlib.nullcontext():
        split_threads(fn, n, t)


_region = threading.local()     # .depth: split_threads calls this thread is inside


def split_threads(fn, n: int, t: int) -> None:
    """``fn(lo, hi)`` over ``range(n)`` in ``t`` contiguous chunks, the first on the calling
    thread and the others on the kernels' pool (``t`` ≤ the kernel thread count)."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():   # a forked child needs its own
        _executor = ThreadPoolExecutor(_N_THREADS - 1, thread_name_prefix="shendu-kernel")
        _executor_pid = os.getpid()
    bounds = [n * i // t for i in range(t + 1)]
    with ONE_THREAD:        # OpenBLAS's count at one until every chunk is done
        futs = [_executor.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, t)]
        _region.depth = getattr(_region, "depth", 0) + 1
        try:
            fn(bounds[0], bounds[1])
        finally:
            _region.depth -= 1
            for f in futs:
                f.result()


def in_parallel_region() -> bool:
    """Whether this thread is running a chunk of :func:`split_threads` (work inside one
    must not split again: the pool's threads are all busy)."""
    return (getattr(_region, "depth", 0) > 0
            or threading.current_thread().name.startswith("shendu-kernel"))


#: elements from which :func:`contiguous` copies a transposed view in tiles
PERMUTE_MIN = 1 << 14


def contiguous(t: np.ndarray) -> np.ndarray:
    """``t`` as a C-contiguous array: ``t`` itself when it is one. NumPy's copy walks the
    result in order; when ``t`` is a transposed view of contiguous memory (the layouts the
    kernels move between: NCHW, batch-innermost CHWN, spatial-outer HWNC) of up to 4 dims
    whose last axis steps a page (4 KiB) or more through that memory, each element it
    reads is then on another page. Such a view of :data:`PERMUTE_MIN` elements or more is
    copied in tiles of 16 x 16 instead (``_numba.permute_rows``, split over the kernel
    threads like the other memory-bound loops), one thread, medians of 7: a (64, 32, 32,
    32) NCHW gradient to HWNC 7.4 ms against NumPy's 12; a (64, 3, 32, 32) batch to CHWN
    0.20 against 0.59; cnn32's pooled (8, 8, 64, 64) HWNC to NCHW, to flatten, 0.28
    against 0.78. Where the step is shorter NumPy's copy is as fast or faster ((64, 64, 8,
    8) NCHW to HWNC: 0.22 against 0.35 tiled) and makes it. The same numbers either way (a
    copy)."""
    if t.flags.c_contiguous:
        return t
    kern = _numba.kernels_for(t, min_size=PERMUTE_MIN) if t.ndim <= 4 else None
    if kern is None or any(s % t.itemsize for s in t.strides):
        return np.ascontiguousarray(t)
    shape = [d for d in t.shape if d != 1]
    sst = [s // t.itemsize for d, s in zip(t.shape, t.strides) if d != 1]
    if sst[-1] * t.itemsize < 4096:
        return np.ascontiguousarray(t)
    order = sorted(range(len(shape)), key=lambda k: -sst[k])
    dense = 1
    for k in reversed(order):               # C strides of the memory, innermost first
        if sst[k] != dense:
            return np.ascontiguousarray(t)
        dense *= shape[k]
    pad = 4 - len(shape)
    shape, sst = [1] * pad + shape, [0] * pad + sst
    dst = [1] * 4
    for k in (2, 1, 0):
        dst[k] = dst[k + 1] * shape[k + 1]
    j = sst.index(1)                        # the axis contiguous in memory (not the last)
    outer = sorted((k for k in range(3) if k != j), key=lambda k: -shape[k])
    ax = outer + [j, 3]
    dims, ss, ds = (np.array([v[k] for k in ax], np.int64) for v in (shape, sst, dst))
    # the memory, from t's first element (its lowest address: every stride is positive)
    src = np.lib.stride_tricks.as_strided(t, (t.size,), (t.itemsize,))
    out = np.empty(t.shape, t.dtype)
    flat = out.reshape(-1)
    parallel(lambda lo, hi: kern.permute_rows(src, flat, dims, ss, ds, lo, hi), int(dims[0]),
             t.size)
    return out


def to_chwn(a: np.ndarray) -> np.ndarray:
    """The batch-innermost array ``(C, H, W, N)`` of an ``(N, C, H, W)`` one: a view when
    ``a`` already is a view of such memory, else a copy (:func:`contiguous`)."""
    return contiguous(a.transpose(1, 2, 3, 0))


def from_chwn(t: np.ndarray) -> np.ndarray:
    """The ``(N, C, H, W)`` view of a ``(C, H, W, N)`` array."""
    return t.transpose(3, 0, 1, 2)


def _im2col(xc: np.ndarray, kh: int, kw: int, geo: tuple, out: np.ndarray) -> np.ndarray:
    """Patch matrix ``(C, kh, kw, Ho, Wo, N)`` of the batch-innermost input ``(C, H, W, N)``,
    written into ``out``:
    ``cols[c, i, j, y, x, n] = x[c, y*sh + i*dh - pt, x*sw + j*dw - pl, n]`` (zero outside)."""
    def run(lo: int, hi: int) -> None:     # kernel offsets lo..hi-1: disjoint blocks
        for k in range(lo, hi):
            out_idx, in_idx, _, strips = geo[k]
            dst = out[:, k // kw, k % kw]
            if out_idx is not None:
                dst[out_idx] = xc[in_idx]
            for s in strips:
                dst[s] = 0

    parallel(run, kh * kw, out.size)
    return out


def _col2im(dcols: np.ndarray, geo: tuple, h: int, w: int, unit=None) -> np.ndarray:
    """Adjoint of :func:`_im2col`: add ``(C, kh, kw, Ho, Wo, N)`` back into ``(C, H, W, N)``.
    ``unit``: the top and left padding of a stride-1, dilation-1 convolution, whose taps
    a compiled loop gathers in one pass over ``dx`` where Numba is installed (the same
    adds in the same order: the same bits)."""
    c, kh, kw, ho, wo, n = dcols.shape
    order = list(range(kh * kw))
    first = next((k for k in order if geo[k][2] and geo[k][1][1].step == 1
                  and geo[k][1][2].step == 1 and ho == h and wo == w), None)
    if first is not None:  # a window offset that reads every input once: start from it
        order.remove(first)
    dx = np.empty((c, h, w, n), dcols.dtype)
    kern = None
    if unit is not None and first is not None and dcols.flags.c_contiguous:
        kern = _numba.kernels_for(dcols, min_size=_COMPILED_MIN)
    if kern is not None:
        parallel(lambda lo, hi: kern.col2im_unit(dcols, first, unit[0], unit[1], dx, lo, hi),
                 c, dcols.size)
        return dx

    def run(lo: int, hi: int) -> None:     # channels lo..hi-1: disjoint blocks of dx
        d = dx[lo:hi]
        if first is None:
            d[...] = 0
        else:
            d[...] = dcols[lo:hi, first // kw, first % kw]
        for k in order:
            out_idx, in_idx, _, _ = geo[k]
            if out_idx is not None:
                d[in_idx] += dcols[lo:hi, k // kw, k % kw][out_idx]

    parallel(run, c, dcols.size)
    return dx


#: patch elements of one tile of the tiled convolution (1 MiB of float32: a core's L2
#: holds it while the product reads it)
TILE_ELEMS = 1 << 18


#: multiply-adds of a tiled product below which its tiles stay on the calling thread: a
#: split stops NumPy's BLAS threads (``_one_blas_thread``), which its next product starts
#: again, and that costs more than the split saves on smaller ones (a CNN on 8x8 digits
#: trained 3x slower with every convolution split)
SPLIT_MIN_MACS = 1 << 25


def _run_tiles(run, n_tiles: int, macs: int) -> None:
    """``run(lo, hi)`` over the tiles: split over the kernel threads when the product is
    large enough to pay for it (:data:`SPLIT_MIN_MACS`), else on the calling thread."""
    if macs < SPLIT_MIN_MACS:
        run(0, n_tiles)
    else:
        parallel(run, n_tiles, macs, calls_blas=True)


def _tile_rows(k: int, wo: int, n: int, ho: int) -> int:
    """Output rows per tile: as many as keep a tile's patches within :data:`TILE_ELEMS`
    (at least one). It depends on the shapes only, never on the thread count, so each
    tile's products, and the sum of the weight gradient's partial products, are the same
    whatever the threads."""
    return max(1, min(ho, TILE_ELEMS // max(1, k * wo * n)))


def _padded(xc: np.ndarray, pads: tuple, here: bool = False) -> np.ndarray:
    """``(C, H+pt+pb, W+pl+pr, N)``: the batch-innermost input inside a zero border (from
    the workspace), split over the kernel threads, or on the calling thread when ``here``
    (beside the direct convolution's compiled regions, whose threads are still spinning
    when it runs, a split copy ran 3-9x slower)."""
    pt, pb, pl, pr = pads
    c, h, w, n = xc.shape
    xp = workspace.get((c, h + pt + pb, w + pl + pr, n), xc.dtype)

    def run(lo: int, hi: int) -> None:     # channels lo..hi-1
        d = xp[lo:hi]
        if pt or pb or pl or pr:
            d[:, :pt] = 0
            d[:, pt + h:] = 0
            d[:, pt:pt + h, :pl] = 0
            d[:, pt:pt + h, pl + w:] = 0
        d[:, pt:pt + h, pl:pl + w] = xc[lo:hi]

    if here:
        run(0, c)
    else:
        parallel(run, c, xp.size)
    return xp


def _tile_patches(xs: np.ndarray, r0: int, r1: int, kh: int, kw: int, wo: int, geom: tuple,
                  buf: np.ndarray, ones: bool, kern) -> np.ndarray:
    """The patch matrix ``(C*kh*kw, (r1-r0)*Wo*N)`` of output rows ``r0..r1-1``, in ``buf``,
    with a last row of ones when ``ones`` (the bias's). ``xs`` is the batch-innermost input
    where ``kern`` (the compiled loops) reads it, the zero-padded one where NumPy does;
    ``geom``: (stride, dilation, (top, left) padding)."""
    c, _, _, n = xs.shape
    (sh, sw), (dh, dw), (pt, pl) = geom
    rr = r1 - r0
    size = c * kh * kw * rr * wo * n
    cols = buf[:size].reshape(c, kh, kw, rr, wo, n)
    if kern is not None:
        kern.tile_patches(xs, r0, sh, sw, dh, dw, pt, pl, cols)
    else:
        for i in range(kh):
            y0 = r0 * sh + i * dh
            rows = slice(y0, y0 + (rr - 1) * sh + 1, sh)
            for j in range(kw):
                cols[:, i, j] = xs[:, rows, j * dw:j * dw + (wo - 1) * sw + 1:sw]
    if ones:
        buf[size:size + rr * wo * n] = 1
    return buf[:size + (rr * wo * n if ones else 0)].reshape(-1, rr * wo * n)


def _row_sums(g2: np.ndarray) -> np.ndarray:
    """``g2.sum(axis=1)`` (NumPy's pairwise sums, row by row), the rows split over the
    kernel threads when large: the same bits."""
    out = np.empty(g2.shape[0], g2.dtype)

    def run(lo: int, hi: int) -> None:
        np.sum(g2[lo:hi], axis=1, out=out[lo:hi])

    parallel(run, g2.shape[0], g2.size)
    return out


_direct_lock = threading.Lock()
_direct_loaded: list = []      # [the module of direct convolution loops, or None]


def _direct():
    """:mod:`shendu.functional._conv_compiled` where Numba is installed and on, else None."""
    def build():
        if _numba.kernels() is None:
            return None
        from shendu.functional import _conv_compiled
        return _conv_compiled
    return _numba.once(_direct_loaded, _direct_lock, build)


#: whether stride-1 convolutions run direct where Numba is installed
#: (:meth:`Conv2d._forward_direct`)
DIRECT = True
#: multiply-adds of a direct convolution (or its weight gradient) from which its rows (or
#: blocks) are split over the kernel threads; below, one thread runs them all
DIRECT_SPLIT_MACS = 1 << 21
#: the same on the kernels' thread pool, where Numba's regions do not run on TBB (handing
#: work to a pool thread cost ~50 µs here: it pays on larger loops only)
DIRECT_POOL_MACS = 1 << 24


_taps: dict = {}        # (c, kh, kw, hp, wp, n) -> _direct_taps' array (never written)


def _direct_taps(c: int, kh: int, kw: int, hp: int, wp: int, n: int) -> np.ndarray:
    """Where each tap ``(c, i, j)`` starts reading in a ``(C, Hp, Wp, N)`` array, in
    numbers from the first row's start (kept per shape: a layer asks three times a step)."""
    key = (c, kh, kw, hp, wp, n)
    taps = _taps.get(key)
    if taps is None:
        if len(_taps) >= 256:
            _taps.clear()
        taps = _taps[key] = (np.arange(c)[:, None, None] * (hp * wp * n)
                             + np.arange(kh)[:, None] * (wp * n)
                             + np.arange(kw) * n).astype(np.int64).ravel()
    return taps


def _direct_rows(direct, xp: np.ndarray, kh: int, kw: int, w2: np.ndarray, b: np.ndarray,
                 y: np.ndarray) -> None:
    """``y`` (O, Ho, Wo, N) = the stride-1 correlation of the padded batch-innermost
    ``xp`` (C, Hp, Wp, N) with ``w2`` (O, C*kh*kw) plus ``b``, its rows split over the
    kernel threads when large (each row's numbers are the same whatever the split)."""
    c, hp, wp, n = xp.shape
    o, ho, wo, _ = y.shape
    taps = _direct_taps(c, kh, kw, hp, wp, n)
    w2 = np.ascontiguousarray(w2)
    xf, yf, wf = xp.reshape(-1), y.reshape(-1), w2.reshape(-1)
    lanes = direct.VECTOR_BYTES // xp.itemsize

    _run_direct(direct.conv_rows, direct.conv_rows_split,
                (xf, taps, wp * n, wf, taps.size, b, yf, o, wo * n, ho * wo * n), ho,
                o * taps.size * ho * wo * n, lanes)


def _direct_weight_grad(direct, g4: np.ndarray, xp: np.ndarray, kh: int, kw: int
                        ) -> np.ndarray:
    """``dW`` (O, C*kh*kw) of the direct convolution from ``g4`` (O, Ho, Wo, N) and the
    padded input ``xp`` (C, Hp, Wp, N), in blocks of four channels by four taps split over
    the kernel threads when large."""
    c, hp, wp, n = xp.shape
    o, ho, wo, _ = g4.shape
    taps = _direct_taps(c, kh, kw, hp, wp, n)
    dw = np.empty((o, taps.size), g4.dtype)
    blocks = -(-o // direct.OB) * -(-taps.size // direct.TB)
    gf, xf = g4.reshape(-1), xp.reshape(-1)
    lanes = direct.VECTOR_BYTES // xp.itemsize

    _run_direct(direct.conv_weight_grad, direct.conv_weight_grad_split,
                (gf, xf, taps, wp * n, o, wo * n, ho * wo * n, ho, dw), blocks,
                o * taps.size * ho * wo * n, lanes)
    return dw


def _run_direct(serial, split, args: tuple, n: int, macs: int, lanes: int) -> None:
    """``serial(*args, lo, hi, lanes)`` over ``range(n)`` rows (or blocks) of a direct loop
    of ``macs`` multiply-adds: in one of Numba's parallel regions (``split(*args, n, lanes,
    t)``), on the kernels' pool, or on this thread, as :func:`_direct_threads` says."""
    t = _direct_threads(n, macs)
    if t > 1:
        split(*args, n, lanes, t)
    elif t < -1:
        split_threads(lambda lo, hi: serial(*args, lo, hi, lanes), n, -t)
    else:
        serial(*args, 0, n, lanes)


def _direct_threads(n: int, macs: int) -> int:
    """The threads a direct convolution loop over ``n`` rows (or blocks) of ``macs``
    multiply-adds is split over: the kernel threads from :data:`DIRECT_SPLIT_MACS` (the
    loops are compute-bound: they scale where the memory-bound ones do not), outside
    another parallel region, in one of Numba's regions where they run on TBB; where they
    do not, the kernels' own pool from :data:`DIRECT_POOL_MACS` (a negative count); else 1."""
    from shendu.functional import _regions

    t = min(_N_THREADS, n)
    if t <= 1 or macs < DIRECT_SPLIT_MACS or in_parallel_region():
        return 1
    if _regions.tbb():
        return t
    return -t if macs >= DIRECT_POOL_MACS else 1


#: output channels from which a tiled convolution runs spatial-outer
#: (:meth:`Conv2d._forward_rows`) where Numba is installed: its products, a tall patch
#: matrix times the weight, need a wide weight (LeNet's 6 and 16 channels trained 1.7x
#: slower so, cnn32's 32 and 64 10% faster)
ROWS_MIN_OUT = 32
#: rows of a spatial-outer gradient summed in one block for the bias's gradient
COLUMN_BLOCK = 4096


def _column_sums(g2: np.ndarray, kern) -> np.ndarray:
    """``g2.sum(axis=0)`` of an (M, O) array: float64 running sums over fixed blocks of
    :data:`COLUMN_BLOCK` rows (the blocks split over the kernel threads), then NumPy's
    pairwise sum of the blocks, rounded once to ``g2``'s dtype. The blocks depend on the
    shape only, so the bits do not depend on the thread count; the float64 sums make it
    at least as accurate as float32 pairwise sums down the columns would be."""
    m, o = g2.shape
    parts = np.empty((max(1, -(-m // COLUMN_BLOCK)), o), np.float64)
    parallel(lambda lo, hi: kern.column_sums(g2, parts, lo, hi), parts.shape[0], g2.size)
    return parts.sum(axis=0).astype(g2.dtype)


# --------------------------------------------------------------------------- conv
class Conv2d(Function):
    r"""2-D cross-correlation, the "convolution" of deep learning.

    For input ``x`` (N, C, H, W), weight ``w`` (O, C/G, kh, kw), bias ``b`` (O,), stride
    ``s``, dilation ``d``, zero padding ``p`` and ``G`` groups (channel ``o`` of the output
    sees the input channels of its group ``g = o // (O/G)`` only):

    .. math::
        y_{n,o,u,v} = b_o + \sum_{c,i,j} w_{o,c,i,j}\,
                      x_{n,\,gC/G + c,\; u s_h + i d_h - p_t,\; v s_w + j d_w - p_l}

    With the patch matrix :math:`X_{col}[(c,i,j), (u,v,n)]` this is one product per group,
    :math:`Y = W X_{col}`, and backward is

    * :math:`\partial W = \partial Y X_{col}^\top` (the patches saved in forward),
    * :math:`\partial b_o = \sum_{n,u,v} \partial y_{n,o,u,v}`,
    * :math:`\partial x = \mathrm{col2im}(W^\top \partial Y)`: each patch gradient is added
      back where it was read, i.e. a transposed convolution of ``dy`` with ``w``.
    """

    saved_inputs = (0, 1)

    def forward(self, x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                groups=1):
        n, c, h, wd = x.shape
        o, cg, kh, kw = w.shape
        pt, pb, pl, pr = pads
        sh, sw = stride
        dh, dw = dilation
        ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
        geo = windows(h, wd, ho, wo, kh, kw, stride, (pt, pl), dilation)
        m = ho * wo * n
        kg = cg * kh * kw
        self.w = w
        self.geom = (n, c, h, wd, ho, wo, geo, groups)
        self.unit = (pt, pl) if stride == (1, 1) and dilation == (1, 1) else None
        self.tiled = groups == 1 and kg * m > TILE_ELEMS
        self.rows = None
        self.direct = None
        if (DIRECT and groups == 1 and stride == (1, 1) and dilation == (1, 1)
                and max(pt, pb) < kh and max(pl, pr) < kw):
            direct = _direct()
            if direct is not None and _numba.kernels_for(x, w, b) is not None:
                return self._forward_direct(x, w, b, pads, direct)
        if self.tiled:
            kern = _numba.kernels_for(x, w, b)
            if kern is not None and o >= ROWS_MIN_OUT:
                return self._forward_rows(x, w, b, pads, stride, dilation, kern)
            return self._forward_tiled(x, w, b, pads, stride, dilation)
        cols = workspace.get((c, kh, kw, ho, wo, n), x.dtype)
        _im2col(to_chwn(x), kh, kw, geo, cols)
        if groups == 1:
            y = matmul(w.reshape(o, kg), cols.reshape(kg, m))               # (O, Ho*Wo*N)
        else:
            y = matmul(w.reshape(groups, o // groups, kg),
                          cols.reshape(groups, kg, m)).reshape(o, m)   # (G, O/G, M)
        if b is not None:
            def add_bias(lo: int, hi: int) -> None:
                y[lo:hi] += b[lo:hi, None]
            parallel(add_bias, o, y.size)
        if self.needs_input_grad[1]:
            self.cols = cols
        else:
            workspace.put(cols)
        return from_chwn(y.reshape(o, ho, wo, n))                     # NCHW view of CHWN

    def _forward_direct(self, x, w, b, pads, direct):
        """The direct convolution (:mod:`shendu.functional._conv_compiled`): each output
        row a sum of the taps' scaled runs of the zero-padded batch-innermost input, in
        vector registers, the rows split over the kernel threads; no patch matrix. The
        padded input is kept for the weight gradient."""
        n, c, h, wd, ho, wo, _, _ = self.geom
        o, _, kh, kw = w.shape
        xc = to_chwn(x)
        xp = _padded(xc, pads, here=True) if any(pads) else np.ascontiguousarray(xc)
        y = np.empty((o, ho, wo, n), x.dtype)
        _direct_rows(direct, xp, kh, kw, w.reshape(o, -1),
                     np.zeros(o, x.dtype) if b is None else b, y)
        self.padded = any(pads)
        if self.needs_input_grad[1]:
            self.xs = xp                       # the weight gradient's runs come from it
        elif self.padded:
            workspace.put(xp)
        self.direct, self.tile_pads = direct, pads
        return from_chwn(y)

    def _direct_backward(self, g):
        """Backward of :meth:`_forward_direct`: the weight gradient as sums of products of
        runs (:func:`_direct_weight_grad`), the input gradient as the direct convolution
        of the zero-padded output gradient with the flipped, transposed weight (a "full"
        correlation), the bias gradient as NumPy's row sums."""
        n, c, h, wd, ho, wo, _, _ = self.geom
        w = self.w
        o, _, kh, kw = w.shape
        need = self.needs_input_grad
        g4 = contiguous(g.transpose(1, 2, 3, 0))                     # (O, Ho, Wo, N)
        gx = gw = gb = None
        if need[1]:
            gw = _direct_weight_grad(self.direct, g4, self.xs, kh, kw).reshape(w.shape)
        if need[0]:
            pt, pb, pl, pr = self.tile_pads
            back = (kh - 1 - pt, kh - 1 - pb, kw - 1 - pl, kw - 1 - pr)
            gp = _padded(g4, back, here=True) if any(back) else g4
            wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
            dx = np.empty((c, h, wd, n), g.dtype)
            _direct_rows(self.direct, gp, kh, kw, wt, np.zeros(c, g.dtype), dx)
            if gp is not g4:
                workspace.put(gp)
            gx = from_chwn(dx)
        if len(need) > 2 and need[2]:
            gb = _row_sums(g4.reshape(o, -1))
        return gx, gw, gb

    def _forward_tiled(self, x, w, b, pads, stride, dilation):
        """One product per tile of output rows, each on patches made just before it (they
        are still in the core's cache when the product reads them), the tiles split over
        the kernel threads; the bias rides in the product (a row of ones under the patches,
        a column of biases beside the weights). Backward makes the patches again from the
        input, which it keeps anyway, instead of keeping them."""
        n, c, h, wd, ho, wo, _, _ = self.geom
        o, _, kh, kw = w.shape
        kg = c * kh * kw
        xc = to_chwn(x)
        kern = _numba.kernels_for(xc)
        xs = xc if kern is not None else _padded(xc, pads)
        y = np.empty((o, ho * wo * n), x.dtype)
        w2 = w.reshape(o, kg) if b is None else np.concatenate([w.reshape(o, kg), b[:, None]], 1)
        rows = _tile_rows(kg, wo, n, ho)
        per_row = wo * n
        geom = (stride, dilation, (pads[0], pads[2]))

        def run(lo: int, hi: int) -> None:        # tiles lo..hi-1: disjoint columns of y
            buf = workspace.get(((kg + 1) * rows * per_row,), x.dtype)
            try:
                for t in range(lo, hi):
                    r0, r1 = t * rows, min(ho, (t + 1) * rows)
                    cols = _tile_patches(xs, r0, r1, kh, kw, wo, geom, buf, b is not None,
                                         kern)
                    matmul(w2, cols, out=y[:, r0 * per_row:r1 * per_row])
            finally:
                workspace.put(buf)

        _run_tiles(run, -(-ho // rows), kg * ho * per_row * o)
        if self.needs_input_grad[1]:
            self.xs = xs                       # the weight gradient's patches come from it
        if xs is not xc and not self.needs_input_grad[1]:
            workspace.put(xs)                  # the padded copy, no longer needed
        self.padded = xs is not xc
        self.tile = (rows, geom, kern)
        return from_chwn(y.reshape(o, ho, wo, n))

    def _forward_rows(self, x, w, b, pads, stride, dilation, kern):
        """The tiled convolution with the output *spatial-outer*: ``y`` (Ho, Wo, N, O),
        handed out as the NCHW view, each tile of output rows one product ``Y_t (M_t, O)
        = P_t (M_t, K) W^T`` (BLAS runs this orientation, a tall patch matrix times a
        small weight, faster than ``W X_col``: cnn32's second convolution, (1024, 289) @
        (289, 64) at 0.39-0.44 ms against 0.49-0.59 for the transposed product). The patch
        rows ``P_t`` are copies of ``C`` contiguous numbers per kernel offset when the
        input is spatial-outer itself (the output of another such convolution, or of
        pooling, ReLU, ... on one); from any other input (the data) they are the tile's
        columns of the batch-innermost patch matrix, read transposed. The bias rides in the
        product (a column of ones, a row of biases). Backward makes the patches again."""
        n, c, h, wd, ho, wo, _, _ = self.geom
        o, _, kh, kw = w.shape
        kg = c * kh * kw
        x4 = x.transpose(2, 3, 0, 1)                                   # (H, W, N, C)
        self.rows = x4.flags.c_contiguous
        if self.rows:
            xs, wt = x4, w.transpose(2, 3, 1, 0).reshape(kg, o)        # columns (i, j, c)
        else:
            xs, wt = to_chwn(x), w.reshape(o, kg).T                    # columns (c, i, j)
        if b is not None:
            wt = np.concatenate([wt, b[None]], 0)
        wt = np.ascontiguousarray(wt)
        kp = wt.shape[0]
        rows = _tile_rows(kg, wo, n, ho)
        per_row = wo * n
        geom = (stride, dilation, (pads[0], pads[2]))
        (sh, sw), (dh, dw), (pt, pl) = geom
        y = np.empty((ho, wo, n, o), x.dtype)
        y2 = y.reshape(ho * per_row, o)

        def run(lo: int, hi: int) -> None:        # tiles lo..hi-1: disjoint rows of y
            buf = workspace.get((kp * rows * per_row,), x.dtype)
            try:
                for t in range(lo, hi):
                    r0, r1 = t * rows, min(ho, (t + 1) * rows)
                    if self.rows:
                        p = buf[:kp * (r1 - r0) * per_row].reshape(r1 - r0, wo, n, kp)
                        kern.patch_rows(xs, r0, sh, sw, dh, dw, pt, pl, kh, kw, p,
                                        b is not None)
                        p = p.reshape(-1, kp)
                    else:
                        p = _tile_patches(xs, r0, r1, kh, kw, wo, geom, buf, b is not None,
                                          kern).T
                    matmul(p, wt, out=y2[r0 * per_row:r1 * per_row])
            finally:
                workspace.put(buf)

        _run_tiles(run, -(-ho // rows), kg * ho * per_row * o)
        if self.needs_input_grad[1]:
            self.xs = xs                       # the weight gradient's patches come from it
        self.padded = False
        self.tile = (rows, geom, kern)
        return y.transpose(2, 3, 0, 1)                                 # NCHW view

    def _weight_grad_tiled(self, g2: np.ndarray) -> np.ndarray:
        """``dW = dY X_col^T`` tile by tile (as ``X_col dY^T``, which MKL runs faster), the
        patches made again from the input; the tiles' partial products are summed in tile
        order. ``g2`` is ``dY`` as (O, Ho*Wo*N), or as (Ho*Wo*N, O) after
        :meth:`_forward_rows`, whose tiles' products are ``P_t^T dY_t`` from patch rows or
        ``X_col,t dY_t`` from patch columns. (The batch-innermost kernel's bias gradient
        stays NumPy's pairwise sum over ``dY``: as a row of ones in this product it would be
        a running float32 sum, measured 5x less accurate.)"""
        n, c, h, wd, ho, wo, _, _ = self.geom
        o, _, kh, kw = self.w.shape
        kg = c * kh * kw
        rows, geom, kern = self.tile
        (sh, sw), (dh, dw), (pt, pl) = geom
        per_row = wo * n
        nt = -(-ho // rows)
        parts = np.empty((nt, kg, o), g2.dtype)
        xs = self.xs

        def run(lo: int, hi: int) -> None:
            buf = workspace.get(((kg + 1) * rows * per_row,), g2.dtype)
            try:
                for t in range(lo, hi):
                    r0, r1 = t * rows, min(ho, (t + 1) * rows)
                    if self.rows is None:
                        gt = g2[:, r0 * per_row:r1 * per_row].T
                    else:
                        gt = g2[r0 * per_row:r1 * per_row]
                    if self.rows:
                        p = buf[:kg * (r1 - r0) * per_row].reshape(r1 - r0, wo, n, kg)
                        kern.patch_rows(xs, r0, sh, sw, dh, dw, pt, pl, kh, kw, p, False)
                        matmul(p.reshape(-1, kg).T, gt, out=parts[t])
                    else:
                        cols = _tile_patches(xs, r0, r1, kh, kw, wo, geom, buf, False, kern)
                        matmul(cols, gt, out=parts[t])
            finally:
                workspace.put(buf)

        _run_tiles(run, nt, kg * ho * per_row * o)
        s = np.add.reduce(parts, axis=0)                                # (K, O)
        if self.rows:                                                   # columns (i, j, c)
            return np.ascontiguousarray(s.reshape(kh, kw, c, o).transpose(3, 2, 0, 1))
        return np.ascontiguousarray(s.T).reshape(o, c, kh, kw)

    def _input_grad_tiled(self, g2: np.ndarray) -> np.ndarray:
        """``dX`` (as an NCHW view) by tiles of input rows, each gathering what reaches it:
        for kernel row ``i``, the output rows whose tap ``i`` reads the tile make one
        product ``W_i^T dY_rows`` (``(C*kw, O) @ (O, rows*Wo*N)``, small enough to stay in
        the core's cache), whose ``kw`` column taps are then added into the tile. Every
        (output row, kernel row) pair reaches exactly one tile, so the tiles together make
        exactly the products of ``W^T dY``, without writing its patch-sized result out.
        ``g2`` is ``dY`` as (O, Ho*Wo*N), batch-innermost; after :meth:`_forward_rows` it is
        (Ho, Wo, N, O), each product ``dY_rows W_i`` (``(rows*Wo*N, O) @ (O, kw*C)``) and
        ``dX`` spatial-outer."""
        n, c, h, wd, ho, wo, _, _ = self.geom
        w = self.w
        o, _, kh, kw = w.shape
        (sh, sw), (dh, dw), (pt, pl) = self.tile[1]
        per_row = wo * n
        outer = self.rows is not None
        if outer:                               # w_rows[i][o, (j, c)], dX (H, W, N, C)
            w_rows = np.ascontiguousarray(w.transpose(2, 0, 3, 1)).reshape(kh, o, kw * c)
            kern, dx = self.tile[2], np.empty((h, wd, n, c), g2.dtype)
            g3 = g2.reshape(ho, per_row, o)
        else:                                   # w_rows[i][o, (c, j)], dX (C, H, W, N)
            w_rows = np.ascontiguousarray(w.transpose(2, 0, 1, 3)).reshape(kh, o, c * kw)
            kern, dx = _numba.kernels_for(g2, w), np.empty((c, h, wd, n), g2.dtype)
        xs = np.array([out_range(j * dw - pl, sw, wd, wo) for j in range(kw)], np.int64)
        rows = _tile_rows(c * kh * kw, wd, n, h)
        most = (rows - 1) // sh + 1                 # output rows a kernel row brings a tile

        def run(lo: int, hi: int) -> None:       # tiles lo..hi-1: disjoint rows of dx
            buf = workspace.get((kh, most, wo, n, kw * c) if outer else
                                (kh, c, kw, most, wo, n), g2.dtype)
            try:
                for t in range(lo, hi):
                    q0, q1 = t * rows, min(h, (t + 1) * rows)
                    ys = np.array([out_range(i * dh - pt - q0, sh, q1 - q0, ho)
                                   for i in range(kh)], np.int64)
                    for i, (y0, y1, _) in enumerate(ys):
                        if y1 <= y0:
                            continue
                        if outer:
                            matmul(g3[y0:y1].reshape(-1, o), w_rows[i],
                                   out=buf[i, :y1 - y0].reshape(-1, kw * c))
                        else:
                            out = buf[i].reshape(c * kw, most * per_row)
                            matmul(w_rows[i].T, g2[:, y0 * per_row:y1 * per_row],
                                   out=out[:, :(y1 - y0) * per_row])
                    if outer:
                        kern.gather_rows(buf, ys, xs, sh, sw, dx, q0, q1)
                        continue
                    if kern is not None:
                        kern.gather_taps(buf, ys, xs, sh, sw, dx, q0, q1)
                        continue
                    d = dx[:, q0:q1]
                    d[...] = 0
                    for i, (y0, y1, iy) in enumerate(ys):
                        rows_i = slice(iy, iy + (y1 - y0 - 1) * sh + 1, sh)
                        for j, (x0, x1, ix) in enumerate(xs):
                            if y1 > y0 and x1 > x0:
                                d[:, rows_i, ix:ix + (x1 - x0 - 1) * sw + 1:sw] += \
                                    buf[i, :, j, :y1 - y0, x0:x1]
            finally:
                workspace.put(buf)

        _run_tiles(run, -(-h // rows), c * kh * kw * ho * per_row * o)
        return dx.transpose(2, 3, 0, 1) if outer else from_chwn(dx)

    def backward(self, g):
        n, c, h, wd, ho, wo, geo, groups = self.geom
        w = self.w
        o, cg, kh, kw = w.shape
        m = ho * wo * n
        kg = cg * kh * kw
        need = self.needs_input_grad
        gx = gw = gb = None
        if self.direct is not None:
            return self._direct_backward(g)
        if self.rows is not None:
            g4 = contiguous(g.transpose(2, 3, 0, 1))                   # (Ho, Wo, N, O)
            g2 = g4.reshape(m, o)
            kern = self.tile[2]
            if need[1]:
                gw = self._weight_grad_tiled(g2)
            if need[0]:
                gx = self._input_grad_tiled(g4)
            if len(need) > 2 and need[2]:
                gb = _column_sums(g2, kern)
            return gx, gw, gb
        g2 = to_chwn(g).reshape(o, m)                                  # (O, Ho*Wo*N)
        if self.tiled:
            if need[1]:
                gw = self._weight_grad_tiled(g2)
            if need[0]:
                gx = self._input_grad_tiled(g2)
            if len(need) > 2 and need[2]:
                gb = _row_sums(g2)
            return gx, gw, gb
        if need[1]:
            cols = self.cols
            if groups == 1:
                gw = matmul(g2, cols.reshape(kg, m).T)
            else:
                gw = matmul(g2.reshape(groups, o // groups, m),
                               cols.reshape(groups, kg, m).transpose(0, 2, 1))
            gw = gw.reshape(w.shape)
        if need[0]:
            dcols = workspace.get((c, kh, kw, ho, wo, n), g2.dtype)
            if groups == 1:
                matmul(w.reshape(o, kg).T, g2, out=dcols.reshape(kg, m))
            else:
                wg = w.reshape(groups, o // groups, kg)
                matmul(wg.transpose(0, 2, 1), g2.reshape(groups, o // groups, m),
                          out=dcols.reshape(groups, kg, m))
            gx = from_chwn(_col2im(dcols, geo, h, wd, self.unit))
            workspace.put(dcols)
        if len(need) > 2 and need[2]:
            gb = g2.sum(axis=1)
        return gx, gw, gb

    def _free(self) -> None:
        workspace.put(self.__dict__.get("cols"))   # the graph is done with the patches
        if self.__dict__.get("padded"):
            workspace.put(self.__dict__.get("xs"))
        super()._free()


@functools.lru_cache(maxsize=256)
def taps(length: int, lo: int, k: int, stride: int, pad_left: int, dilation: int) -> tuple:
    """For each kernel tap ``j``: ``(o0, o1, i0)`` -- outputs ``o0 <= o < o1`` read input
    ``i0 + (o - o0) * stride`` (inside the sequence); the others read zero padding."""
    return tuple(out_range(j * dilation - pad_left, stride, length, lo) for j in range(k))


class Conv1d(Function):
    r"""1-D cross-correlation over time, its own kernel (no height-1 image).

    For input ``x`` (N, C, L), weight ``w`` (O, C/G, k), bias ``b`` (O,), stride ``s``,
    dilation ``d``, left zero padding ``p`` and ``G`` groups:

    .. math::
        y_{n,o,t} = b_o + \sum_{c,j} w_{o,c,j}\, x_{n,\,gC/G + c,\; t s + j d - p}

    Inside, time-major and batch-innermost: the input is read as ``(C, L, N)`` (a view when
    it is the output of another convolution), the patch matrix
    :math:`X_{col}[(c, j), (t, n)] = x_{n,c,ts+jd-p}` is ``k`` block copies of
    ``Lo * N`` contiguous numbers per channel, and the forward pass is one product per group
    :math:`Y (O, L_o N) = W (O, C k) X_{col}` whose result is already the next activation
    ``(O, Lo, N)``, handed out as the ``(N, O, Lo)`` view. Backward:

    * :math:`\partial W = \partial Y X_{col}^\top` (the patches saved in forward),
    * :math:`\partial b_o = \sum_{n,t} \partial y_{n,o,t}`,
    * :math:`\partial x`: :math:`\partial X_{col} = W^\top \partial Y`, then the ``k``
      taps are added back where they were read (col2im over time).
    """

    saved_inputs = (0, 1)

    def forward(self, x, w, b=None, stride=1, pads=(0, 0), dilation=1, groups=1):
        n, c, length = x.shape
        o, cg, k = w.shape
        pl, pr = pads
        lo = (length + pl + pr - dilation * (k - 1) - 1) // stride + 1
        geo = taps(length, lo, k, stride, pl, dilation)
        xt = x.transpose(1, 2, 0)                                     # (C, L, N)
        if not xt.flags.c_contiguous:
            xt = np.ascontiguousarray(xt)
        cols = workspace.get((c, k, lo, n), x.dtype)                  # (C, k, Lo, N)
        for j, (o0, o1, i0) in enumerate(geo):
            dst = cols[:, j]
            if o1 > o0:
                dst[:, o0:o1] = xt[:, i0:i0 + (o1 - o0 - 1) * stride + 1:stride]
            dst[:, :o0] = 0
            dst[:, o1:] = 0
        m, kg = lo * n, cg * k
        if groups == 1:
            y = matmul(w.reshape(o, kg), cols.reshape(kg, m))              # (O, Lo*N)
        else:
            y = matmul(w.reshape(groups, o // groups, kg),
                          cols.reshape(groups, kg, m)).reshape(o, m)  # (G, O/G, M)
        if b is not None:
            y += b[:, None]
        if self.needs_input_grad[1]:
            self.cols = cols
        else:
            workspace.put(cols)
        self.w = w
        self.geom = (n, c, length, lo, geo, stride, groups)
        return y.reshape(o, lo, n).transpose(2, 0, 1)                # (N, O, Lo) view

    def backward(self, g):
        n, c, length, lo, geo, stride, groups = self.geom
        w = self.w
        o, cg, k = w.shape
        m, kg = lo * n, cg * k
        g2 = g.transpose(1, 2, 0)                                     # (O, Lo, N)
        if not g2.flags.c_contiguous:
            g2 = np.ascontiguousarray(g2)
        g2 = g2.reshape(o, m)
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[1]:
            cols = self.cols.reshape(groups, kg, m)
            if groups == 1:
                gw = matmul(g2, cols[0].T)
            else:
                gw = matmul(g2.reshape(groups, o // groups, m), cols.transpose(0, 2, 1))
            gw = gw.reshape(w.shape)
        if need[0]:
            dcols = workspace.get((c, k, lo, n), g2.dtype)
            if groups == 1:
                matmul(w.reshape(o, kg).T, g2, out=dcols.reshape(kg, m))
            else:
                wg = w.reshape(groups, o // groups, kg)
                matmul(wg.transpose(0, 2, 1), g2.reshape(groups, o // groups, m),
                          out=dcols.reshape(groups, kg, m))
            dx = np.zeros((c, length, n), g2.dtype)                   # (C, L, N)
            for j, (o0, o1, i0) in enumerate(geo):
                if o1 > o0:
                    dx[:, i0:i0 + (o1 - o0 - 1) * stride + 1:stride] += dcols[:, j, o0:o1]
            workspace.put(dcols)
            gx = dx.transpose(2, 0, 1)                                # (N, C, L) view
        if len(need) > 2 and need[2]:
            gb = g2.sum(axis=1)
        return gx, gw, gb

    def _free(self) -> None:
        workspace.put(self.__dict__.get("cols"))   # the graph is done with the patches
        super()._free()


def _conv_pads(padding, k, dilation, stride, nd: int, op: str) -> tuple[int, int, int, int]:
    """``padding`` (int, tuple, 'valid' or 'same') as (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same', got "
                             f"{padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions, "
                             f"got stride {stride[-nd:] if nd == 1 else stride}")
        # total d*(k-1); torch puts the odd element on the bottom/right
        tot = [d * (kk - 1) for d, kk in zip(dilation, k)]
        return (tot[0] // 2, tot[0] - tot[0] // 2, tot[1] // 2, tot[1] - tot[1] // 2)
    p = _tuple(padding, nd, "padding", op)
    if any(v < 0 for v in p):
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    if nd == 1:
        return (0, 0, p[0], p[0])
    return (p[0], p[0], p[1], p[1])


def _conv(x: Tensor, weight: Tensor, bias, stride, padding, dilation, groups, nd: int
          ) -> Tensor:
    op = f"conv{nd}d"
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{op}: input and weight must be Tensors, got {type(x).__name__} and "
                        f"{type(weight).__name__}")
    ws = weight.data.shape
    if weight.data.ndim != nd + 2:
        dims = "(O, C/groups, kH, kW)" if nd == 2 else "(O, C/groups, k)"
        raise ValueError(f"{op}: weight must be {nd + 2}-D {dims}, got {ws}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    xs = x.data.shape
    unbatched = x.data.ndim == nd + 1
    if x.data.ndim not in (nd + 1, nd + 2):
        spatial = "H, W" if nd == 2 else "L"
        raise ValueError(f"{op}: expected input (N, C, {spatial}) or (C, {spatial}), got {xs}")
    cin = ws[1] * groups
    if xs[-nd - 1] != cin:
        spatial = "H, W" if nd == 2 else "L"
        raise ValueError(f"{op}: expected input (N, {cin}, {spatial}) for weight {ws} with "
                         f"groups={groups}, got {xs}")
    if ws[0] % groups:
        raise ValueError(f"{op}: out_channels {ws[0]} must be divisible by groups={groups}")
    if bias is not None and bias.data.shape != (ws[0],):
        raise ValueError(f"{op}: bias must have shape ({ws[0]},), got {bias.data.shape}")
    if x.data.dtype.kind != "f" or x.data.dtype != weight.data.dtype or (
            bias is not None and bias.data.dtype != weight.data.dtype):
        raise TypeError(f"{op}: expected input, weight and bias of one floating dtype, got "
                        f"{x.data.dtype}, {weight.data.dtype}"
                        + ("" if bias is None else f", {bias.data.dtype}"))
    stride_t = _tuple(stride, nd, "stride", op)
    dil_t = _tuple(dilation, nd, "dilation", op)
    if any(s < 1 for s in stride_t) or any(d < 1 for d in dil_t):
        raise ValueError(f"{op}: stride and dilation must be positive, got stride={stride!r}, "
                         f"dilation={dilation!r}")
    k = ws[2:]
    if nd == 1:
        stride_t, dil_t, k = (1,) + stride_t, (1,) + dil_t, (1,) + k
    pads = _conv_pads(padding, k, dil_t, stride_t, nd, op)
    sp = xs[-nd:] if nd == 2 else (1,) + xs[-1:]
    eff = [d * (kk - 1) + 1 for d, kk in zip(dil_t, k)]
    padded = (sp[0] + pads[0] + pads[1], sp[1] + pads[2] + pads[3])
    if padded[0] < eff[0] or padded[1] < eff[1]:
        shown = padded if nd == 2 else padded[1:]
        ker = tuple(eff) if nd == 2 else tuple(eff[1:])
        raise ValueError(f"{op}: padded input size {shown} is smaller than the (dilated) "
                         f"kernel size {ker}")
    if unbatched:
        x = x.unsqueeze(0)
    args = (x, weight) if bias is None else (x, weight, bias)
    if nd == 1:
        y = Conv1d.apply(*args, stride=stride_t[1], pads=pads[2:], dilation=dil_t[1],
                         groups=int(groups))
    else:
        y = Conv2d.apply(*args, stride=stride_t, pads=pads, dilation=dil_t, groups=int(groups))
    return y.squeeze(0) if unbatched else y


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation) over ``input`` (N, C, H, W) or (C, H, W).

    ``weight`` is (O, C/groups, kH, kW); ``stride``, ``dilation`` an int or a pair;
    ``padding`` an int, a pair, ``'valid'`` (none) or ``'same'`` (output size = input size,
    stride 1 only; an odd total padding puts the extra row/column at the bottom/right, as
    torch). See :class:`Conv2d` for the equations.
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """1-D convolution over ``input`` (N, C, L) or (C, L) with ``weight`` (O, C/groups, k).

    ``stride``, ``dilation`` an int; ``padding`` an int, ``'valid'`` or ``'same'``. See
    :class:`Conv1d` for the equations and the kernel (time-major, batch-innermost, one
    product per group).
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1)


# --------------------------------------------------------------------------- dropout
def _channel_dropout(x: Tensor, p: float, training: bool, nd: int, op: str) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: probability has to be between 0 and 1, got {p}")
    if x.data.ndim not in (nd + 1, nd + 2):
        shape = "(N, C, H, W) or (C, H, W)" if nd == 2 else "(N, C, L) or (C, L)"
        raise ValueError(f"{op}: expected input {shape}, got {x.data.shape}")
    if not training or p == 0.0:
        return x
    dt = x.data.dtype
    # one draw per (sample, channel): a whole feature map is kept or dropped
    mshape = x.data.shape[:-nd] + (1,) * nd
    if p == 1.0:
        mask = np.zeros(mshape, dt)
    else:
        keep = rng().random(mshape, dtype=np.float32 if dt == np.float32 else np.float64)
        mask = (keep >= p).astype(dt) * dt.type(1.0 / (1.0 - p))
    return Dropout.apply(x, mask=mask)   # dropout's op; the mask broadcasts over the maps


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Spatial dropout (Tompson et al. 2015): zero whole channels of (N, C, H, W) with
    probability ``p`` and scale the kept ones by ``1/(1-p)``.

    Neighbouring pixels of a feature map are strongly correlated, so element-wise dropout
    barely regularises a convolutional layer; dropping the entire map does.
    """
    return _channel_dropout(input, p, training, 2, "dropout2d")


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Channel-wise dropout of (N, C, L): the 1-D counterpart of :func:`dropout2d`."""
    return _channel_dropout(input, p, training, 1, "dropout1d")
