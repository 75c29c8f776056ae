"""The matrix products of the kernels (``shendu.functional._gemm``): on Intel MKL when the
``mkl`` extra is installed, on NumPy otherwise. Every layout BLAS can take (row-major,
transposed, sliced rows, stacks with a batch stride, broadcast stacks) must give
``np.matmul``'s result, ``out=`` included, the same bits for any kernel thread count; and
the NumPy path must pass the op and layer parity tests as the MKL path does."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from shendu.functional import _gemm, _numba, conv

MKL = _gemm.backend() in ("mkl", "openblas")     # the kernels' own single-threaded GEMM
needs_mkl = pytest.mark.skipif(
    not MKL, reason="no GEMM of the kernels' own here: neither the mkl extra nor the OpenBLAS "
                    "adapters (Numba)")


def _array(rng, shape, dtype, layout):
    """An array of ``shape`` whose last two axes are laid out as ``layout`` says."""
    if layout == "c":                                  # row-major
        return rng.standard_normal(shape).astype(dtype)
    if layout == "t":                                  # the transpose of a row-major array
        a = rng.standard_normal(shape[:-2] + shape[-2:][::-1]).astype(dtype)
        return a.swapaxes(-1, -2)
    if layout == "s":                                  # rows cut out of wider rows
        a = rng.standard_normal(shape[:-1] + (shape[-1] + 3,)).astype(dtype)
        return a[..., 1:shape[-1] + 1]
    raise ValueError(layout)


SHAPES = [((70, 90), (90, 50)), ((300, 64), (64, 200)), ((5, 40, 33), (33, 60)),
          ((4, 3, 40, 33), (4, 3, 33, 60)), ((40, 33), (6, 33, 60)),
          ((6, 1, 40, 33), (1, 5, 33, 60)), ((7, 128, 32), (7, 32, 128)),
          ((2, 520, 300), (300, 64)), ((1, 4096), (4096, 700)), ((700, 4096), (4096, 1))]


@pytest.fixture
def every_product(monkeypatch):
    """Every product through the MKL path, however small."""
    monkeypatch.setattr(_gemm, "MIN_FLOPS", 0)
    before = conv._N_THREADS
    yield
    conv.set_kernel_threads(before)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layout_gives_numpys_product(every_product, dtype):
    rng = np.random.default_rng(0)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for (sa, sb), (la, lb) in itertools.product(SHAPES, itertools.product("cts", "cts")):
        a, b = _array(rng, sa, dtype, la), _array(rng, sb, dtype, lb)
        want = np.matmul(a, b)
        got = _gemm.matmul(a, b)
        assert got.shape == want.shape and got.dtype == want.dtype, (sa, sb, la, lb)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10,
                                   err_msg=f"{sa} @ {sb}, layouts {la}{lb}")
        out = np.full(want.shape, np.nan, dtype)
        assert _gemm.matmul(a, b, out=out) is out
        np.testing.assert_array_equal(out, got)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_may_be_a_column_block_of_a_wider_matrix(every_product, monkeypatch, dtype):
    """``out=`` a block of columns of a row-major matrix (the tiled convolution writes each
    tile's product there): MKL writes it in place with the wider rows' stride and leaves
    the columns around it alone, with or without ``accumulate``; an out whose rows are not
    unit-stride goes to NumPy."""
    rng = np.random.default_rng(6)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    conv.set_kernel_threads(1)
    monkeypatch.setattr(_gemm, "ROWS", False)          # the GEMM's calls (the rows loops': below)
    calls = []
    st = _gemm._load()
    f = st["gemm"][np.dtype(dtype)]
    for (sa, sb), (la, lb) in itertools.product(SHAPES[:2], itertools.product("ct", "ct")):
        a, b = _array(rng, sa, dtype, la), _array(rng, sb, dtype, lb)
        want = np.matmul(a, b)
        wide = rng.standard_normal((want.shape[0], want.shape[1] + 9)).astype(dtype)
        before = wide.copy()
        block = wide[:, 4:4 + want.shape[1]]
        calls.clear()
        st["gemm"][np.dtype(dtype)] = lambda *args: (calls.append(1), f(*args))
        try:
            assert _gemm.matmul(a, b, out=block) is block
            n = len(calls)
            _gemm.matmul(a, b, out=block, accumulate=True)
        finally:
            st["gemm"][np.dtype(dtype)] = f
        assert n == 1 and len(calls) == 2
        np.testing.assert_allclose(block, 2 * want, rtol=tol, atol=tol * 10)
        np.testing.assert_array_equal(wide[:, :4], before[:, :4])
        np.testing.assert_array_equal(wide[:, 4 + want.shape[1]:], before[:, 4 + want.shape[1]:])
    a, b = rng.standard_normal((30, 20)).astype(dtype), rng.standard_normal((20, 40)).astype(dtype)
    out = np.zeros((40, 30), dtype).T                     # column-major: NumPy's
    np.testing.assert_allclose(_gemm.matmul(a, b, out=out), a @ b, rtol=tol, atol=tol * 10)


@needs_mkl
def test_products_are_taken_by_mkl(every_product, monkeypatch):
    """The fuzz above would pass with every product on NumPy: count the foreign calls."""
    calls = []
    st = _gemm._load()
    f32 = st["gemm"][np.dtype(np.float32)]
    b32 = st["batch"][np.dtype(np.float32)]
    monkeypatch.setitem(st["gemm"], np.dtype(np.float32),
                        lambda *a: (calls.append("gemm"), f32(*a)))
    monkeypatch.setitem(st["batch"], np.dtype(np.float32),
                        lambda *a: (calls.append("batch"), b32(*a)))
    conv.set_kernel_threads(1)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 40, 30)).astype(np.float32)
    b = rng.standard_normal((30, 20)).astype(np.float32)
    _gemm.matmul(a, b)                                   # stacked rows: one product
    _gemm.matmul(a[0].T, a[1])                           # transposed operand
    _gemm.matmul(a, a.swapaxes(-1, -2))                  # a stack: one batch call
    assert calls == ["gemm", "gemm", "batch"]
    with _gemm.numpy_products():
        np.testing.assert_array_equal(_gemm.matmul(a, b), np.matmul(a, b))
    assert calls == ["gemm", "gemm", "batch"]
    _gemm.matmul(a, b)
    assert calls[-1] == "gemm"
    conv.set_kernel_threads(2)             # several threads: split (test_regions.py) or
    wide = rng.standard_normal((40, 50)).astype(np.float32)
    _gemm.matmul(a.swapaxes(-1, -2).copy(), wide)        # NumPy's BLAS, not one call
    assert len(calls) == 4
    _gemm.matmul(a, b)                                   # but a thin one (k = 30) MKL's,
    assert calls[4:] == ["gemm"]
    conv.split_threads(lambda lo, hi: _gemm.matmul(a[lo:hi], b), 3, 2)  # as are a region's
    assert calls[5:] == ["gemm", "gemm"]                                # pieces


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_an_inner_dimension_of_one_is_an_outer_product(dtype):
    """``matmul`` with an inner dimension of 1 (outer products, batched and broadcast) is
    one multiply: ``np.matmul``'s values, shape and dtype, ``out=`` filled in place."""
    rng = np.random.default_rng(4)
    for sa, sb in (((7, 1), (1, 5)), ((6, 9, 1), (6, 1, 4)), ((9, 1), (3, 1, 4)),
                   ((2, 1, 5, 1), (3, 1, 6))):
        a = (rng.standard_normal(sa) * 5).astype(dtype)
        b = (rng.standard_normal(sb) * 5).astype(dtype)
        want = np.matmul(a, b)
        got = _gemm.matmul(a, b)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        out = np.empty_like(want)
        assert _gemm.matmul(a, b, out=out) is out
        np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError):
        _gemm.matmul(np.ones((2, 3, 1)), np.ones((4, 1, 2)))      # np.matmul's error too


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_is_a_product_added_to_the_bias(monkeypatch, dtype):
    """``_gemm.linear(x, w, b)`` = ``x @ w.T + b`` (torch's addmm): one MKL call onto the
    bias from :data:`MIN_LINEAR_FLOPS` multiply-adds, with or without a bias; below it, or
    with an operand BLAS does not take as it is (a strided ``x``, mixed dtypes), or with
    several threads outside a parallel region for a product that is not thin, the split
    over them (``test_regions.py``) or :func:`matmul` and ``+=``."""
    calls = []
    monkeypatch.setattr(_gemm, "ROWS", False)      # the GEMM's calls (the rows loops': below)
    st = _gemm._load()
    f = st["gemm"][np.dtype(dtype)]
    monkeypatch.setitem(st["gemm"], np.dtype(dtype), lambda *a: (calls.append(a[11]), f(*a)))
    before = conv._N_THREADS
    conv.set_kernel_threads(1)
    rng = np.random.default_rng(8)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    try:
        w = rng.standard_normal((96, 200)).astype(dtype)
        b = rng.standard_normal(96).astype(dtype)
        x = rng.standard_normal((70, 200)).astype(dtype)
        assert 70 * 96 * 200 >= _gemm.MIN_LINEAR_FLOPS
        for bias, beta in ((b, 1.0), (None, 0.0)):
            got = _gemm.linear(x, w, bias)
            want = x @ w.T + (0 if bias is None else bias)
            assert got.shape == (70, 96) and got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)
            assert calls[-1] == beta
        frozen = x.copy()
        frozen.flags.writeable = False                      # its address found otherwise
        np.testing.assert_array_equal(_gemm.linear(frozen, w, b), _gemm.linear(x, w, b))
        n = len(calls)
        small = x[:4, :10].copy(), w[:5, :10].copy(), b[:5]
        np.testing.assert_allclose(_gemm.linear(*small), small[0] @ small[1].T + small[2],
                                   rtol=tol, atol=tol)
        strided = rng.standard_normal((70, 400)).astype(dtype)[:, ::2]
        np.testing.assert_allclose(_gemm.linear(strided, w, b), strided @ w.T + b,
                                   rtol=tol, atol=tol * 10)
        mixed = _gemm.linear(x.astype(np.float16), w, b)
        assert mixed.dtype == dtype
        assert calls[n:] == []                   # matmul's: under its own MIN_FLOPS
        conv.set_kernel_threads(2)
        np.testing.assert_allclose(_gemm.linear(x, w, b), want + b, rtol=tol, atol=tol * 10)
        assert len(calls) == n                   # not one MKL call
        conv.split_threads(lambda lo, hi: _gemm.linear(x[lo * 35:hi * 35], w, b), 2, 2)
        assert calls[n:] == [1.0, 1.0]           # a region's pieces: MKL's
    finally:
        conv.set_kernel_threads(before)


@needs_mkl
def test_small_stacks_with_a_transposed_operand_go_to_mkl(monkeypatch):
    """Under the size threshold per matrix, a stack goes to MKL's batch call when the whole
    stack is over it and either its right operand is transposed (the attention scores'
    ``K Q^T``) or each product is over ``MIN_STACK_FLOPS``; smaller row-major products and
    small wholes stay on NumPy."""
    calls = []
    st = _gemm._load()
    b32 = st["batch"][np.dtype(np.float32)]
    monkeypatch.setitem(st["batch"], np.dtype(np.float32),
                        lambda *a: (calls.append(a[-1]), b32(*a)))
    before = conv._N_THREADS
    conv.set_kernel_threads(1)
    try:
        rng = np.random.default_rng(7)
        k = rng.standard_normal((128, 64, 32)).astype(np.float32)
        q = rng.standard_normal((128, 64, 32)).astype(np.float32)
        got = _gemm.matmul(k, q.swapaxes(-1, -2))
        np.testing.assert_allclose(got, np.matmul(k, q.swapaxes(-1, -2)), rtol=1e-4,
                                   atol=1e-4)
        assert calls == [128]
        _gemm.matmul(k, np.ascontiguousarray(q.swapaxes(-1, -2)))   # row-major: NumPy
        _gemm.matmul(k[:2], q[:2].swapaxes(-1, -2))                 # small whole: NumPy
        assert calls == [128]
        s = rng.standard_normal((4, 256, 256)).astype(np.float32)   # 2^21 each: MKL
        v = rng.standard_normal((4, 256, 32)).astype(np.float32)
        np.testing.assert_allclose(_gemm.matmul(s, v), np.matmul(s, v), rtol=1e-4,
                                   atol=1e-3)
        assert calls == [128, 4]
        with pytest.raises(ValueError):
            _gemm.matmul(k[:3], q[:2].swapaxes(-1, -2))             # NumPy's own error
    finally:
        conv.set_kernel_threads(before)


@needs_mkl
def test_what_blas_cannot_take_goes_to_numpy(every_product):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((50, 40)).astype(np.float32)
    b = rng.standard_normal((40, 30)).astype(np.float32)
    cases = [
        (a, b.astype(np.float64)),                       # mixed dtypes: NumPy's promotion
        (a.astype(np.int64), b.astype(np.int64)),        # integers
        (a[::2, ::3], b[::3]),                           # strided both ways
        (a, b[:, :, None][:, :, 0]),                     # a view of a view
    ]
    for x, y in cases:
        got = _gemm.matmul(x, y)
        want = np.matmul(x, y)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    out = np.empty((50, 30), np.float32)
    out_f = np.asfortranarray(out)
    _gemm.matmul(a, b, out=out_f)                        # an out= BLAS cannot write
    np.testing.assert_allclose(out_f, a @ b, rtol=1e-5, atol=1e-4)
    sq = rng.standard_normal((40, 40)).astype(np.float32)
    want = sq @ sq
    _gemm.matmul(sq, sq.copy(), out=sq)                  # out overlapping an operand
    np.testing.assert_allclose(sq, want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="matmul"):
        _gemm.matmul(a, a)                               # NumPy's own error


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulate_adds_the_product_to_out(every_product, dtype):
    """``accumulate=True`` is ``out += a @ b``: on MKL inside the product (its beta = 1),
    for every layout and for stacks; on NumPy as the sum of the two."""
    rng = np.random.default_rng(4)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    conv.set_kernel_threads(1)
    for (sa, sb), (la, lb) in itertools.product(SHAPES, itertools.product("cts", "cts")):
        a, b = _array(rng, sa, dtype, la), _array(rng, sb, dtype, lb)
        want = np.matmul(a, b)
        start = rng.standard_normal(want.shape).astype(dtype)
        out = start.copy()
        assert _gemm.matmul(a, b, out=out, accumulate=True) is out
        np.testing.assert_allclose(out, start + want, rtol=tol, atol=tol * 10,
                                   err_msg=f"{sa} @ {sb}, layouts {la}{lb}")
        with _gemm.numpy_products():
            out = start.copy()
            _gemm.matmul(a, b, out=out, accumulate=True)
            np.testing.assert_array_equal(out, start + want)
    a = rng.standard_normal((2, 5, 4)).astype(dtype)
    with pytest.raises(ValueError, match="accumulate=True needs out="):
        _gemm.matmul(a, a.swapaxes(-1, -2), accumulate=True)


@pytest.mark.skipif(_gemm.backend() != "mkl", reason="MKL's grouped batch call only")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacks_without_one_batch_stride(every_product, monkeypatch, dtype):
    """Heads split out of a projection's rows, (B, H, T, E) views of (B, T, H, E) memory,
    have no one batch stride: one grouped call with a pointer per matrix, broadcast stacks
    and ``accumulate`` included, gives NumPy's product."""
    calls = []
    st = _gemm._load()
    g = st["group"][np.dtype(dtype)]
    monkeypatch.setitem(st["group"], np.dtype(dtype), lambda *a: (calls.append(1), g(*a)))
    conv.set_kernel_threads(1)
    rng = np.random.default_rng(8)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    proj = rng.standard_normal((5, 9, 3, 4, 6)).astype(dtype)      # (B, T, 3, H, E)
    q, k, v = (proj[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    cases = [(q, k.swapaxes(-1, -2)), (k, q.swapaxes(-1, -2)),
             (np.ascontiguousarray(q @ k.swapaxes(-1, -2)), v), (q[:, :1], k.swapaxes(-1, -2)),
             (q[0], k.swapaxes(-1, -2))]
    for a, b in cases:
        want = np.matmul(a, b)
        np.testing.assert_allclose(_gemm.matmul(a, b), want, rtol=tol, atol=tol)
        out = rng.standard_normal(want.shape).astype(dtype)
        start = out.copy()
        _gemm.matmul(a, b, out=out, accumulate=True)
        np.testing.assert_allclose(out, start + want, rtol=tol, atol=tol)
    assert len(calls) == 2 * len(cases)


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_repeated_products_over_a_scans_steps(every_product, monkeypatch, threads, rows):
    """``Repeated`` checks a product once and then moves ``b`` and ``out`` by element
    offsets: every step equals ``np.matmul`` of the step's views, with ``b`` rows cut out of
    wider rows (a backward's column of a (G, C, B) block); on MKL each step is one foreign
    call (these products are thin, so several kernel threads do not split them), and where
    the rows loops take these products, one call of theirs."""
    calls = []
    monkeypatch.setattr(_gemm, "ROWS", rows)
    if rows:
        loops = _gemm._rows_loops()
        if not MKL or not loops:
            pytest.skip("no rows loops here: they need Numba and OpenBLAS's products")
        monkeypatch.setattr(_gemm, "_ROWS", _CountedLoops(loops, calls))
    elif MKL:
        st = _gemm._load()
        f32 = st["gemm"][np.dtype(np.float32)]
        monkeypatch.setitem(st["gemm"], np.dtype(np.float32),
                            lambda *a: (calls.append(1), f32(*a)))
    conv.set_kernel_threads(threads)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 33)).astype(np.float32)
    z = rng.standard_normal((6, 33, 16)).astype(np.float32)          # steps' columns
    d = rng.standard_normal((33, 5, 16)).astype(np.float32)          # (G, C, B) block
    s = np.zeros((4, 50, 16), np.float32)                            # slabs, 40 rows used
    prod = _gemm.Repeated(w, z[0], s[0, :40])
    for p, j in [(0, 0), (3, 1), (5, 3), (1, 2)]:
        prod(z[p], s[j, :40], p * z[0].size, j * s[0].size)
        np.testing.assert_allclose(s[j, :40], w @ z[p], rtol=1e-5, atol=1e-4)
        assert not s[j, 40:].any()
    wt = rng.standard_normal((20, 33)).astype(np.float32)
    out = np.empty((20, 16), np.float32)
    back = _gemm.Repeated(wt, d[:, 0], out)
    for j in (0, 4, 2):
        back(d[:, j], out, j * 16, 0)
        np.testing.assert_allclose(out, wt @ d[:, j], rtol=1e-5, atol=1e-4)
    if MKL:
        assert len(calls) == 7


def test_accumulate_on_the_numpy_path():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 6, 4))
    b = rng.standard_normal((4, 5))
    out = rng.standard_normal((3, 6, 5))
    want = out + a @ b
    with _gemm.numpy_products():
        _gemm.matmul(a, b, out=out, accumulate=True)
    np.testing.assert_array_equal(out, want)


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Errors of float32 ``got`` against exp(x) in float64, in units of the last place of
    the true value (normal results only)."""
    true = np.exp(x.astype(np.float64))
    ok = (true > np.finfo(np.float32).tiny) & (true < np.finfo(np.float32).max)
    return np.abs(got[ok] - true[ok]) / np.spacing(true[ok].astype(np.float32))


def test_exp_is_numpys_exp():
    """``_gemm.exp`` is ``np.exp``: within an ulp of the truth on VML (NumPy's float32 exp
    is within 2.5), the same special values, subnormals within one unit, ``out=`` in place,
    no warnings; float64 and what VML cannot take give NumPy's very bits."""
    import warnings

    rng = np.random.default_rng(6)
    x = (rng.standard_normal(100_000) * 30).astype(np.float32)
    x[:12] = [0, -0.0, 1, -1, 88.7, 89, -87, -100, -104, np.inf, -np.inf, np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _gemm.exp(x)
        with np.errstate(over="ignore", under="ignore"):
            want = np.exp(x)
        assert got.dtype == np.float32 and got.shape == x.shape
        specials = ~np.isfinite(want) | (want == 0)
        np.testing.assert_array_equal(got[specials], want[specials])
        sub = ~specials & (want < np.finfo(np.float32).tiny)         # subnormal results
        true = np.exp(x[sub].astype(np.float64))
        smallest = float(np.finfo(np.float32).smallest_subnormal)
        assert np.abs(got[sub] - true).max() <= smallest
        assert np.abs(want[sub] - true).max() <= smallest
        assert _ulps(got, x).max() <= (1.0 if _gemm._load()["exp"] else 2.5)   # VML's or NumPy's
        assert _ulps(want, x).max() <= 2.5
        y = x.copy()
        assert _gemm.exp(y, out=y) is y
        np.testing.assert_array_equal(y, got)
        x64 = x.astype(np.float64)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(_gemm.exp(x64), np.exp(x64))
            strided = x[::3]
            np.testing.assert_array_equal(_gemm.exp(strided), np.exp(strided))
            half = x[:4096].copy()
            np.testing.assert_array_equal(_gemm.exp(half, out=np.empty(4096, np.float64)),
                                          np.exp(half, out=np.empty(4096, np.float64)))


@needs_mkl
def test_exp_is_taken_by_vml(monkeypatch):
    calls = []
    f = _gemm._load()["exp"]
    if not f:
        pytest.skip("MKL's vector math is not used on this processor (see vml_pays)")
    monkeypatch.setattr(_gemm, "_EXP", lambda *a: (calls.append(a[0]), f(*a)))
    x = np.linspace(-5, 5, 10_000, dtype=np.float32)
    _gemm.exp(x)
    _gemm.exp(x[:100])                                   # too small: NumPy
    _gemm.exp(x[::2])                                    # strided: NumPy
    _gemm.exp(x.astype(np.float64))                      # float64: NumPy
    assert calls == [10_000]


@needs_mkl
def test_vector_math_only_where_it_pays():
    # MKL's exp on Intel's processors, or as SHENDU_VML says; NumPy's exp elsewhere
    code = ("from shendu.functional import _gemm; "
            "print(bool(_gemm._load()['exp']), _gemm.vml_pays())")
    intel = _gemm._cpu_vendor() == "GenuineIntel"
    for env, want in (("", intel), ("0", False), ("1", True)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, SHENDU_VML=env), timeout=120)
        assert r.stdout.split() == [str(want)] * 2, (env, r.stdout, r.stderr)


@needs_mkl
def test_pieces_of_a_parallel_region_give_the_bits_of_one_thread():
    """Attention's groups of heads run their products inside the kernels' parallel region:
    there on MKL, one thread each, the same bits as the whole stack on one thread."""
    before = conv._N_THREADS
    rng = np.random.default_rng(3)
    c = rng.standard_normal((64, 128, 32)).astype(np.float32)
    d = rng.standard_normal((64, 32, 128)).astype(np.float32)
    c[:5] *= 1e3                                     # sums of mixed scales
    try:
        conv.set_kernel_threads(1)
        whole = _gemm.matmul(c, d)
        for t in (2, 3, 4):
            conv.set_kernel_threads(t)
            out = np.empty_like(whole)

            def piece(lo, hi, out=out):
                _gemm.matmul(c[lo:hi], d[lo:hi], out=out[lo:hi])

            conv.split_threads(piece, len(c), t)
            np.testing.assert_array_equal(out, whole)
    finally:
        conv.set_kernel_threads(before)


def test_backend_choice_from_the_environment():
    code = "from shendu.functional import _gemm; print(_gemm.backend())"
    env = dict(os.environ, SHENDU_GEMM="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "numpy"
    env["SHENDU_GEMM"] = "blas"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and ("SHENDU_GEMM should be 'auto', 'mkl', 'openblas' or 'numpy'"
                                  in r.stderr)


#: the op and layer parity tests, in two groups of about the same time on NumPy alone
PARITY = [["tests/test_conv.py", "tests/test_cnn_model.py"],
          ["tests/test_attention.py", "tests/test_ops.py", "tests/test_recurrent_layers.py",
           "tests/test_transformer.py", "tests/test_nn.py", "tests/test_determinism.py",
           "tests/test_pooling.py", "tests/test_layernorm.py"]]


@pytest.mark.skipif(not MKL and _numba.kernels() is None,
                    reason="neither the mkl extra nor numba is installed: all is NumPy already")
@pytest.mark.slow
def test_numpy_path_passes_the_parity_tests():
    """The suite runs on MKL's products and the compiled loops where they are installed;
    the op and layer parity tests (torch values and gradients, float64 gradchecks,
    determinism) must pass on NumPy alone too. The two groups run side by side."""
    from processes import run_side_by_side

    env = dict(os.environ, SHENDU_GEMM="numpy", SHENDU_NUMBA="0")
    runs = run_side_by_side([[sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider",
                              *group] for group in PARITY], env=env)
    assert [r.returncode for r in runs] == [0] * len(PARITY), "\n".join(
        r.stdout[-3000:] + r.stderr[-2000:] for r in runs if r.returncode)
    for r in runs:      # every file ran, none skipped whole
        assert " passed" in r.stdout.splitlines()[-1], r.stdout[-1000:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_as_matrix_vector_product(dtype):
    """Bias gradients' column sums as ``1^T a``: NumPy's sums to rounding (float64 exact on
    integers), NaN and infinities propagating, an empty batch summing to zeros."""
    from shendu.functional._util import column_sums

    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 17)).astype(dtype)
    np.testing.assert_allclose(column_sums(a), a.sum(axis=0), rtol=1e-5, atol=1e-5)
    ints = rng.integers(-50, 50, (64, 5)).astype(dtype)
    np.testing.assert_array_equal(column_sums(ints), ints.sum(axis=0))
    a[3, 2], a[7, 4], a[9, 5], a[11, 5] = np.nan, np.inf, np.inf, -np.inf
    s = column_sums(a)
    assert np.isnan(s[2]) and s[4] == np.inf and np.isnan(s[5]) and np.isfinite(s[0])
    z = column_sums(np.empty((0, 4), dtype))
    assert z.shape == (4,) and z.dtype == dtype and not z.any()


def _openblas_here() -> bool:
    from shendu.functional import _openblas

    return _openblas.load() is not None


def test_gemm_library_by_processor():
    """``auto``: MKL's GEMM on Intel's processors, NumPy's OpenBLAS through the adapters on
    others (where both can be loaded); ``SHENDU_GEMM=openblas`` asks for the adapters on
    any processor."""
    code = "from shendu.functional import _gemm; print(_gemm.backend())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, SHENDU_GEMM="auto"), timeout=120, check=True)
    got = r.stdout.strip()
    has_mkl = _gemm._find_mkl_rt() is not None
    if has_mkl and _openblas_here():
        assert got == ("mkl" if _gemm._cpu_vendor() == "GenuineIntel" else "openblas")
    elif _openblas_here():
        assert got == "openblas"
    if not _openblas_here():
        pytest.skip("NumPy's BLAS is not an OpenBLAS the adapters can call here")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, SHENDU_GEMM="openblas"), timeout=120, check=True)
    assert r.stdout.strip() == "openblas"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_openblas_adapters_one_thread_per_call(dtype):
    """The adapters compute ``C = alpha op(A) op(B) + beta C`` as NumPy does (to rounding),
    transposed operands, leading dimensions and beta included: called from four Python
    threads at once, each inside the guard, each gets its own right product, and NumPy's
    thread count (process-wide in OpenBLAS) is the one found before, two here."""
    from threadpoolctl import threadpool_limits

    from shendu.functional import _openblas

    found = _openblas.load()
    if found is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS the adapters can call here")
    f = found[np.dtype(dtype)][0]
    tol = 1e-4 if dtype == np.float32 else 1e-12

    def one(seed, out):
        r = np.random.default_rng(seed)
        a = r.standard_normal((70, 50)).astype(dtype)           # used transposed: (50, 70)
        b = r.standard_normal((70, 90)).astype(dtype)[:, :40]   # ldb 90
        c = r.standard_normal((50, 40)).astype(dtype)
        want = 0.5 * a.T @ b + c
        with _openblas.ONE_THREAD:
            f(101, 112, 111, 50, 40, 70, 0.5, a.ctypes.data, 50, b.ctypes.data, 90, 1.0,
              c.ctypes.data, 40)
        out.append(np.abs(c - want).max() / np.abs(want).max())

    with threadpool_limits(2, user_api="blas"):
        before = [lib.num_threads for lib in conv._blas()]
        outs = []
        threads = [threading.Thread(target=one, args=(s, outs)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = [lib.num_threads for lib in conv._blas()]
    assert len(outs) == 4 and max(outs) < tol, outs
    assert 2 in before and after == before


def test_numpy_blas_threads_left_as_found():
    """OpenBLAS's thread count is the process's, so the products the kernels make on it
    (which set it to one) must give NumPy's back: after a tour of every caller of the
    adapters at two kernel threads — a split Linear, a strided stack, an LSTM trained and
    run (on two threads and on one), a wide tiled convolution, a transformer layer (its
    feed-forward's and attention heads' regions) — NumPy's BLAS runs on the two threads it
    was given, not on one."""
    from threadpoolctl import threadpool_limits

    import shendu
    import shendu.nn as nn
    import shendu.nn.functional as F
    from shendu.functional import _openblas

    if _gemm.backend() != "openblas":
        pytest.skip("the products are not on NumPy's OpenBLAS here")
    before = conv._N_THREADS
    r = np.random.default_rng(0)

    def tour():
        lin = nn.Linear(256, 256)
        x = shendu.tensor(r.standard_normal((128, 256)).astype(np.float32), requires_grad=True)
        lin(x).sum().backward()
        a = r.standard_normal((8, 96, 96)).astype(np.float32)
        shendu.matmul(shendu.tensor(a), shendu.tensor(a))
        lstm = nn.LSTM(32, 128)
        xs = shendu.tensor(r.standard_normal((6, 64, 32)).astype(np.float32))
        lstm(xs)[0].sum().backward()
        with shendu.no_grad():
            lstm(xs)
            conv.set_kernel_threads(1)          # the scan on the calling thread
            lstm(xs)
            conv.set_kernel_threads(2)
        net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 32, 3, padding=1))
        net(shendu.tensor(r.standard_normal((16, 3, 32, 32)).astype(np.float32))).sum().backward()
        layer = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0)
        h = shendu.tensor(r.standard_normal((64, 8, 64)).astype(np.float32), requires_grad=True)
        layer(h).sum().backward()
        q = shendu.tensor(r.standard_normal((8, 4, 128, 32)).astype(np.float32))
        F.scaled_dot_product_attention(q, q, q)

    try:
        conv.set_kernel_threads(2)
        with threadpool_limits(2, user_api="blas"):
            tour()
            after = [lib.num_threads for lib in conv._blas()]
    finally:
        conv.set_kernel_threads(before)
    assert 2 in after and after == [2] * len(after), after
    assert _openblas.ONE_THREAD._inside == 0


def test_openblas_adapters_import_alone():
    """Importing the adapters' module first (a documentation tool, a test collector) tells
    LLVM the names they call before they load: LLVM aborts the process on a name it cannot
    resolve. Where there is no such OpenBLAS the import fails with ImportError instead."""
    code = ("import shendu.functional._openblas_compiled as m; print(m.sgemm.address > 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if _openblas_here():
        assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr[-2000:]
    else:
        assert r.returncode == 1 and "ImportError" in r.stderr, r.stderr[-2000:]


@pytest.fixture
def rows_calls(every_product, monkeypatch):
    """The rows loops' calls (one thread's, split), by kind; skipped where they do not run."""
    loops = _gemm._rows_loops()
    if not MKL or not loops:
        pytest.skip("no rows loops here: they need Numba and OpenBLAS's products")
    calls = []
    monkeypatch.setattr(_gemm, "_ROWS", _CountedLoops(loops, calls))
    return calls


class _CountedLoops:
    """The rows loops' module as ``_gemm`` calls it, each call's name noted in ``calls``
    (the module's own functions, which call each other, left alone)."""

    def __init__(self, loops, calls):
        self.loops, self.calls = loops, calls

    def __getattr__(self, name):
        real = getattr(self.loops, name)
        return lambda *a: (self.calls.append(name), real(*a))[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_loops_make_row_major_products(rows_calls, dtype):
    """``C = A B`` of row-major operands (rows cut out of wider ones included, ``out`` a
    block of columns of a wider matrix included) with whole vectors of columns is made by
    the rows loops: within rounding of the float64 product, the same bits at one, two and
    three threads (split by blocks of rows, each number summed in one order), the columns
    around a block of ``out`` left alone. Every width of the last block of rows (1-8)
    is reached."""
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(11)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    # rows: whole blocks of eight and not (one to seven left), fewer than a block; columns:
    # one vector, two, and three (two at a time, then one)
    for (m, k, n), la, lb in itertools.product(
            [(70, 90, 2 * lanes), (300, 64, lanes), (3, 161, 3 * lanes), (257, 2, 4 * lanes),
             (13, 33, 2 * lanes), (23, 40, lanes), (10, 17, lanes)], "cs", "cs"):
        a, b = _array(rng, (m, k), dtype, la), _array(rng, (k, n), dtype, lb)
        want = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        got = []
        for threads in (1, 2, 3):
            conv.set_kernel_threads(threads)
            rows_calls.clear()
            got.append(_gemm.matmul(a, b))
            assert rows_calls == ["gemm_at" if threads == 1 or m * n < _gemm.SKINNY_OUT
                                  or k < _gemm.SKINNY_K else "gemm_at_split"]
            wide = rng.standard_normal((m, n + 9)).astype(dtype)
            edge = wide.copy()
            _gemm.matmul(a, b, out=wide[:, 4:4 + n])
            np.testing.assert_array_equal(wide[:, 4:4 + n], got[-1])
            np.testing.assert_array_equal(wide[:, :4], edge[:, :4])
            np.testing.assert_array_equal(wide[:, 4 + n:], edge[:, 4 + n:])
        assert got[0].dtype == dtype
        assert np.all(np.abs(got[0] - want) <= tol * scale), (m, k, n, la, lb)
        np.testing.assert_array_equal(got[1], got[0])
        np.testing.assert_array_equal(got[2], got[0])


def test_rows_loops_leave_other_products_to_the_gemm(rows_calls, monkeypatch):
    """A transposed operand, ``accumulate``, columns that are not whole vectors, a ``B``
    over :data:`ROWS_MAX_BYTES`, rows of ``B`` a multiple of 4 KiB apart, and ``ROWS`` off:
    the GEMM's (NumPy's result within rounding)."""
    rng = np.random.default_rng(12)
    conv.set_kernel_threads(1)
    a = rng.standard_normal((64, 96)).astype(np.float32)
    b = rng.standard_normal((96, 64)).astype(np.float32)
    cases = [(a, b.T.copy().T, None), (a.T.copy().T, b, None), (a, b[:, :40], None),
             (rng.standard_normal((8, 1024)).astype(np.float32),
              rng.standard_normal((1024, 320)).astype(np.float32), None),       # B of 1.25 MiB
             (a, rng.standard_normal((96, 1024)).astype(np.float32), None),     # 4 KiB rows
             (a, b, np.zeros((64, 64), np.float32))]                            # accumulate
    for x, y, acc in cases:
        want = x @ y
        got = (_gemm.matmul(x, y) if acc is None
               else _gemm.matmul(x, y, out=acc, accumulate=True))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert rows_calls == []
    _gemm.matmul(a, b)
    assert rows_calls == ["gemm_at"]
    monkeypatch.setattr(_gemm, "ROWS", False)
    _gemm.matmul(a, b)
    assert rows_calls == ["gemm_at"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_by_the_rows_loops(every_product, monkeypatch, dtype):
    """``_gemm.linear`` by the rows loops (whole vectors of outputs): ``x @ w.T + b``
    within rounding of the float64 product, with and without a bias, for rows not a
    multiple of the eight-row blocks (and fewer than one), inner sizes not a multiple of
    the transposed tiles, and a last panel of one vector; the same bits at one, two and
    three threads (split by panels of columns); a bias that is not contiguous, outputs
    that are not whole vectors, and ``ROWS`` off: the GEMM's."""
    loops = _gemm._rows_loops()
    if not MKL or not loops:
        pytest.skip("no rows loops here: they need Numba and OpenBLAS's products")
    monkeypatch.setattr(_gemm, "MIN_LINEAR_FLOPS", 0)
    calls = []
    monkeypatch.setattr(_gemm, "_ROWS", _CountedLoops(loops, calls))
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(13)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for m, k, n in [(70, 200, 6 * lanes), (3, 37, 3 * lanes), (130, 2 * lanes, lanes),
                    (512, 129, 8 * lanes), (15, 64, 2 * lanes), (5, 100, lanes)]:
        x = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        for bias in (b, None):
            want = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if bias is None else bias)
            scale = np.abs(x).astype(np.float64) @ np.abs(w.T) + (0 if bias is None
                                                                   else np.abs(bias))
            got = []
            for threads in (1, 2, 3):
                conv.set_kernel_threads(threads)
                calls.clear()
                got.append(_gemm.linear(x, w, bias))
                split = (threads > 1 and k >= _gemm.SKINNY_K and m * n >= _gemm.SKINNY_OUT)
                assert calls == ["linear_rows_split" if split else "linear_rows"], (m, k, n)
            assert got[0].dtype == dtype and got[0].shape == (m, n)
            assert np.all(np.abs(got[0] - want) <= tol * scale), (m, k, n)
            np.testing.assert_array_equal(got[1], got[0])
            np.testing.assert_array_equal(got[2], got[0])
    conv.set_kernel_threads(1)
    x = rng.standard_normal((64, 96)).astype(dtype)
    w = rng.standard_normal((2 * lanes, 96)).astype(dtype)
    calls.clear()
    strided_bias = rng.standard_normal(4 * lanes).astype(dtype)[::2]
    np.testing.assert_allclose(_gemm.linear(x, w, strided_bias), x @ w.T + strided_bias,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_gemm.linear(x, w[:lanes + 1]), x @ w[:lanes + 1].T,
                               rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(_gemm, "ROWS", False)
    np.testing.assert_allclose(_gemm.linear(x, w), x @ w.T, rtol=1e-4, atol=1e-4)
    assert calls == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacks_times_transposed_stacks_by_the_rows_loops(monkeypatch, dtype):
    """``_gemm.rows_nt``: a stack ``x[g] @ w[g].T`` by the rows loops (attention's short
    scores and their gradient): within rounding of the float64 products, for rows not a
    multiple of the eight-row blocks and inner sizes not a multiple of the transposed
    tiles; the same bits at one, two and three threads (by whole matrices) and inside a
    kernel thread's piece, and the bits of each matrix made alone by ``_gemm.linear``'s
    rows loops; ``out`` used where it fits. None (for ``matmul`` to make) where the
    outputs are not whole vectors, the leading dims differ, an operand is not contiguous,
    the dtypes differ, or the rows loops are off."""
    loops = _gemm._rows_loops()
    if not MKL or not loops:
        pytest.skip("no rows loops here: they need Numba and OpenBLAS's products")
    monkeypatch.setattr(_gemm, "MIN_LINEAR_FLOPS", 0)
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(21)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    before = conv._N_THREADS
    try:
        for lead, m, k, n in [((3, 4), 64, 32, 4 * lanes), ((5,), 13, 37, 2 * lanes),
                              ((2, 1, 3), 9, 2 * lanes, lanes)]:
            x = rng.standard_normal(lead + (m, k)).astype(dtype)
            w = rng.standard_normal(lead + (n, k)).astype(dtype)
            want = x.astype(np.float64) @ w.astype(np.float64).swapaxes(-1, -2)
            scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).swapaxes(-1, -2)
            got = []
            for threads in (1, 2, 3):
                conv.set_kernel_threads(threads)
                got.append(_gemm.rows_nt(x, w))
            conv.set_kernel_threads(1)
            assert got[0].shape == lead + (m, n) and got[0].dtype == dtype
            assert np.all(np.abs(got[0] - want) <= tol * scale), (lead, m, k, n)
            for other in got[1:]:
                np.testing.assert_array_equal(other, got[0])
            alone = [_gemm.linear(a, b) for a, b in zip(x.reshape(-1, m, k), w.reshape(-1, n, k))]
            np.testing.assert_array_equal(got[0].reshape(-1, m, n), np.stack(alone))
            out = np.full(lead + (m, n), np.nan, dtype)
            assert _gemm.rows_nt(x, w, out) is out
            np.testing.assert_array_equal(out, got[0])
            conv.set_kernel_threads(2)
            pieces = []
            conv.split_threads(lambda lo, hi, x=x, w=w, pieces=pieces:
                               pieces.append(_gemm.rows_nt(x, w)), 2, 2)
            np.testing.assert_array_equal(pieces[0], got[0])
            conv.set_kernel_threads(1)
    finally:
        conv.set_kernel_threads(before)
    x = rng.standard_normal((4, 16, 32)).astype(dtype)
    w = rng.standard_normal((4, 2 * lanes, 32)).astype(dtype)
    assert _gemm.rows_nt(x, w[:, :lanes + 1]) is None              # not whole vectors
    assert _gemm.rows_nt(x, w[:1]) is None                         # broadcast leading dims
    assert _gemm.rows_nt(x[:, :, :16], w[:, :, :16]) is None       # not contiguous
    assert _gemm.rows_nt(x, w.astype(np.float16)) is None
    assert _gemm.rows_nt(x[0], w[0]) is None                       # not a stack
    assert _gemm.rows_nt(x, w, np.empty((4, 16, 2 * lanes), np.float16)) is None
    monkeypatch.setattr(_gemm, "ROWS", False)
    assert _gemm.rows_nt(x, w) is None
