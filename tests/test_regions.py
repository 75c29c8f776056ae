"""Products split over the kernel threads in one compiled region
(``shendu.functional._regions``): each thread runs MKL's one-threaded GEMM on a block of the
result's rows or columns. Every layout and both dtypes must give the product, the same bits
every time; the region must run only on Numba's TBB layer, and stay usable in a forked
child."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from shendu.functional import _gemm, _numba, _regions, conv

SPLIT = _gemm.backend() in ("mkl", "openblas") and _regions.gemm() is not None
needs_split = pytest.mark.skipif(
    not SPLIT, reason="no split region here: it needs the mkl extra, Numba and TBB")


@pytest.fixture
def counted(monkeypatch):
    """The split calls made, as (m, n, k, beta); the kernel threads restored after."""
    calls = []
    real = _gemm._split

    def spy(dt, ta, tb, m, n, k, pa, lda, pb, ldb, beta, pc, ldc):
        calls.append((m, n, k, beta))
        real(dt, ta, tb, m, n, k, pa, lda, pb, ldb, beta, pc, ldc)

    monkeypatch.setattr(_gemm, "_split", spy)
    before = conv._N_THREADS
    yield calls
    conv.set_kernel_threads(before)


def _operand(rng, shape, dtype, transposed):
    if transposed:
        return rng.standard_normal(shape[::-1]).astype(dtype).T
    return rng.standard_normal(shape).astype(dtype)


@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_products_in_every_layout(counted, monkeypatch, dtype):
    """Row splits (m >= n) and column splits (m < n), each operand transposed or not, into a
    fresh result, into a column block of a wider one, and added to ``out``: the product
    within rounding, the same bits on a second run, and each made by the split region."""
    monkeypatch.setattr(_gemm, "MIN_FLOPS", 0)
    rng = np.random.default_rng(0)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    shapes = [(300, 64, 200), (97, 50, 301), (5, 700, 1000), (1000, 40, 7)]
    for threads, (m, k, n), ta, tb in itertools.product((2, 3, 4), shapes, (0, 1), (0, 1)):
        conv.set_kernel_threads(threads)
        a = _operand(rng, (m, k), dtype, ta)
        b = _operand(rng, (k, n), dtype, tb)
        want = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        got = _gemm.matmul(a, b)
        assert got.shape == (m, n) and got.dtype == dtype
        assert np.all(np.abs(got - want) <= tol * scale), (threads, m, k, n, ta, tb)
        np.testing.assert_array_equal(_gemm.matmul(a, b), got)
        wide = rng.standard_normal((m, n + 9)).astype(dtype)
        edge = wide.copy()
        _gemm.matmul(a, b, out=wide[:, 4:4 + n])
        np.testing.assert_array_equal(wide[:, 4:4 + n], got)
        np.testing.assert_array_equal(wide[:, :4], edge[:, :4])
        np.testing.assert_array_equal(wide[:, 4 + n:], edge[:, 4 + n:])
        out = rng.standard_normal((m, n)).astype(dtype)
        start = out.astype(np.float64)
        _gemm.matmul(a, b, out=out, accumulate=True)
        assert np.all(np.abs(out - (start + want)) <= tol * (scale + np.abs(start)) + tol)
    made = [(m, n, k, beta) for _ in range(3) for m, k, n in shapes for _ in range(4)
            for beta in (0.0, 0.0, 0.0, 1.0)]
    assert counted == made


@needs_split
def test_split_only_outside_parallel_regions_and_for_thick_products(counted):
    """One kernel thread: MKL's one call. A thin product (inner dimension under
    ``SKINNY_K``, or few outputs) and the pieces of the kernels' own parallel region: MKL's
    one call too. Several threads and a thick product: the split."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 64)).astype(np.float32)
    b = rng.standard_normal((64, 256)).astype(np.float32)
    thin = rng.standard_normal((256, _gemm.SKINNY_K - 1)).astype(np.float32)
    conv.set_kernel_threads(1)
    one = _gemm.matmul(a, b)
    assert counted == []
    conv.set_kernel_threads(2)
    two = _gemm.matmul(a, b)
    assert len(counted) == 1
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-4)
    _gemm.matmul(thin, thin.T)
    assert len(counted) == 1
    out = np.empty_like(one)
    conv.split_threads(lambda lo, hi: _gemm.matmul(a[lo * 128:hi * 128], b,
                                                   out=out[lo * 128:hi * 128]), 2, 2)
    assert len(counted) == 1
    np.testing.assert_array_equal(out, one)       # MKL on one thread per half: its bits


@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_and_repeated_products_split(counted, monkeypatch, dtype):
    """``linear`` (the bias added by the product itself) and a scan's ``Repeated`` product
    split too, with the values of one thread's (the GEMM's split: the rows loops' is
    ``test_gemm.py``'s)."""
    monkeypatch.setattr(_gemm, "ROWS", False)
    rng = np.random.default_rng(2)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    x = rng.standard_normal((128, 300)).astype(dtype)
    w = rng.standard_normal((200, 300)).astype(dtype)
    bias = rng.standard_normal(200).astype(dtype)
    conv.set_kernel_threads(2)
    y = _gemm.linear(x, w, bias)
    np.testing.assert_allclose(y, x @ w.T + bias, rtol=tol, atol=tol * 10)
    assert counted == [(128, 200, 300, 1.0)]
    z = rng.standard_normal((5, 300, 64)).astype(dtype)
    s = np.zeros((5, 200, 64), dtype)
    prod = _gemm.Repeated(w, z[0], s[0])
    for j in (0, 3, 1):
        prod(z[j], s[j], j * z[0].size, j * s[0].size)
        np.testing.assert_allclose(s[j], w @ z[j], rtol=tol, atol=tol * 10)
    assert not s[2].any() and not s[4].any()
    assert counted[1:] == [(200, 64, 300, 0.0)] * 3


_CHILD = r"""
import os, sys, numpy as np
from shendu.functional import _gemm, _regions, conv
conv.set_kernel_threads(2)
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 100)).astype(np.float32)
b = rng.standard_normal((100, 200)).astype(np.float32)
want = a.astype(np.float64) @ b
found = _regions.gemm() is not None
assert abs(_gemm.matmul(a, b) - want).max() < 1e-3
if "fork" in sys.argv:
    pid = os.fork()
    if pid == 0:
        ok = abs(_gemm.matmul(a, b) - want).max() < 1e-3
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
print("found" if found else "none")
"""


def _child(*args, **env):
    return subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **env))


@needs_split
def test_the_region_runs_on_tbb_only():
    """Where Numba is asked for another threading layer, the region is not used (GNU
    OpenMP's threads kill a forked child that enters a region; the workqueue aborts on
    concurrent entry) and the products go to NumPy, with the same values."""
    for layer, want in (("omp", "none"), ("workqueue", "none"), ("tbb", "found")):
        r = _child(NUMBA_THREADING_LAYER=layer)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split()[-1] == want, (layer, r.stdout)


@needs_split
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_split_products():
    """A child forked after the parent ran split products runs them too (a DataLoader's
    workers, the tour's)."""
    r = _child("fork")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "found"


@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacks_split_by_whole_matrices(monkeypatch, dtype):
    """A stack of products (batched, broadcast, transposed operands) is split over the
    threads by whole matrices: ``np.matmul``'s values, the same bits as on one thread per
    matrix, made by one call of the stack region (where its matrices lie one stride apart;
    else by MKL's grouped call, the same bits too)."""
    calls = []
    (one, addr), (stack, _), serial = _gemm._splitter()

    def spy(*args):
        calls.append((args[-3], args[-1]))                        # (count, threads)
        stack(*args)

    monkeypatch.setattr(_gemm, "_SPLIT", ((one, addr), (spy, addr), serial))
    before = conv._N_THREADS
    rng = np.random.default_rng(5)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    cases = [((128, 64, 32), (128, 32, 64)), ((6, 1, 40, 33), (1, 5, 33, 60)),
             ((40, 33), (6, 33, 60)), ((7, 128, 32), (7, 64, 32))]
    try:
        for threads, (sa, sb) in itertools.product((2, 3), cases):
            conv.set_kernel_threads(threads)
            a = rng.standard_normal(sa).astype(dtype)
            b = rng.standard_normal(sb).astype(dtype)
            if sb == (7, 64, 32):
                b = b.swapaxes(-1, -2)                  # (7, 32, 64) with transposed rows
            want = np.matmul(a.astype(np.float64), b.astype(np.float64))
            scale = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
            n = len(calls)
            monkeypatch.setattr(_gemm, "MIN_FLOPS", 1 << 22)
            got = _gemm.matmul(a, b)
            assert got.shape == want.shape and np.all(np.abs(got - want) <= tol * scale)
            count = int(np.prod(want.shape[:-2]))
            # both broadcast over different axes: no one batch stride, MKL's grouped call
            strided = sa != (6, 1, 40, 33)
            assert calls[n:] == ([(count, threads)] if strided else [])
            conv.set_kernel_threads(1)
            monkeypatch.setattr(_gemm, "MIN_FLOPS", 0)          # each matrix on MKL too
            each = np.stack([_gemm.matmul(x, y) for x, y in zip(
                np.broadcast_to(a, want.shape[:-2] + a.shape[-2:]).reshape(-1, *a.shape[-2:]),
                np.broadcast_to(b, want.shape[:-2] + b.shape[-2:]).reshape(-1, *b.shape[-2:]))])
            np.testing.assert_array_equal(got.reshape(each.shape), each)
    finally:
        conv.set_kernel_threads(before)


@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacks_inside_parallel_regions_one_call_per_matrix(monkeypatch, dtype):
    """Inside a kernel thread's piece of work, a strided stack is a compiled loop of plain
    GEMM calls (MKL's batch call, entered from two threads at once, ran 11 times slower):
    the batch call's bits, and its values."""
    calls = []
    split, stack, (serial, addr) = _gemm._splitter()

    def spy(*args):
        calls.append(args[-2])                                     # the count
        serial(*args)

    monkeypatch.setattr(_gemm, "_SPLIT", (split, stack, (spy, addr)))
    rng = np.random.default_rng(9)
    a = rng.standard_normal((64, 64, 32)).astype(dtype)
    b = rng.standard_normal((64, 48, 32)).astype(dtype).swapaxes(-1, -2)   # transposed rows
    before = conv._N_THREADS
    try:
        conv.set_kernel_threads(2)
        conv._region.depth = getattr(conv._region, "depth", 0) + 1       # as in a piece
        got = _gemm.matmul(a, b)
    finally:
        conv._region.depth -= 1
        conv.set_kernel_threads(before)
    assert calls == [64]
    st = _gemm._load()
    want = np.empty_like(got)
    st["batch"][np.dtype(dtype)](101, 111, 112, 64, 48, 32, 1.0, _gemm._address(a), 32,
                                 64 * 32, _gemm._address(b), 32, 48 * 32, 0.0,
                                 _gemm._address(want), 48, 64 * 48, 64)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, np.matmul(a.astype(np.float64), b.astype(np.float64)),
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)


# ----------------------------------------------------------------- the LSTM's compiled steps
def _lstm_case(dtype, reverse, h0_zero, seed=0, B=64):
    """An LSTM layer's inputs at sizes where the compiled steps split over two threads
    (H B >= SKINNY_OUT, K = 1 + I + H >= SKINNY_K)."""
    rng = np.random.default_rng(seed)
    T, I, H = 6, 8, 64
    arrays = dict(x=rng.standard_normal((T, B, I)),
                  h0=np.zeros((B, H)) if h0_zero else rng.standard_normal((B, H)) * 0.5,
                  c0=rng.standard_normal((B, H)) * 0.5,
                  w_ih=rng.standard_normal((4 * H, I)) * 0.3,
                  w_hh=rng.standard_normal((4 * H, H)) * 0.3,
                  b_ih=rng.standard_normal(4 * H) * 0.1, b_hh=rng.standard_normal(4 * H) * 0.1,
                  g=rng.standard_normal((T, B, H)))
    return {k: v.astype(dtype) for k, v in arrays.items()}, reverse


def _lstm_run(case, x_grad=True):
    """Outputs, final states and every gradient of ``functional.lstm`` on ``case`` (the
    input's only with ``x_grad``)."""
    import shendu
    from shendu.functional.recurrent import lstm

    arrays, reverse = case
    ts = {k: shendu.tensor(v, requires_grad=k != "g" and (x_grad or k != "x"))
          for k, v in arrays.items()}
    out, hn, cn = lstm(ts["x"], ts["h0"], ts["c0"], ts["w_ih"], ts["w_hh"], ts["b_ih"],
                       ts["b_hh"], reverse=reverse)
    ((out * ts["g"]).sum() + (hn * cn).sum()).backward()
    names = ("x",) * x_grad + ("h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
    return [out.data, hn.data, cn.data] + [ts[k].grad.data for k in names]


@pytest.fixture
def lstm_spy(monkeypatch):
    """Which of the LSTM's compiled step functions ran, by name; the threads restored."""
    ran = []
    real = _regions.lstm()
    if real is None:
        pytest.skip("no compiled LSTM steps here: they need the mkl extra and Numba")

    def spy(name, fn):
        if fn is None:
            return None

        def call(*args):
            ran.append(name)
            return fn(*args)
        return call

    scan, serial, back, gemms, tanhs, scan_parts, back_parts = real
    monkeypatch.setattr(_regions, "_lstm_loaded", [(spy("scan", scan), spy("serial", serial),
                                                    spy("back", back), gemms, tanhs,
                                                    spy("scan_parts", scan_parts),
                                                    spy("back_parts", back_parts))])
    before = conv._N_THREADS
    yield ran
    conv.set_kernel_threads(before)


@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("h0_zero", [False, True])
@pytest.mark.parametrize("B", [64, 72])
@pytest.mark.parametrize("x_grad", [True, False])
def test_lstm_steps_split_over_threads(lstm_spy, monkeypatch, dtype, reverse, h0_zero, B,
                                       x_grad):
    """The LSTM's steps in compiled code, split over two threads by sequences where the
    batch is whole vectors a thread and the rows loops make the products (each thread the
    whole scan and backward of its part and its part's share of the weight gradient; the
    whole backward one region where the input's gradient is not wanted), else by hidden
    units (forward and backward), or on one (forward): the values and gradients of the
    NumPy steps within rounding, against float64 references, their bits at the same thread
    count where the rows loops make the products (the GEMM's numbers for a column can
    depend on how the NumPy steps' products split the columns), and the same bits on a
    second run."""
    from shendu.functional import recurrent

    case = _lstm_case(dtype, reverse, h0_zero, B=B)
    exact = _lstm_case(np.float64, reverse, h0_zero, B=B)
    with monkeypatch.context() as m:
        m.setattr(_regions, "_lstm_loaded", [None])              # the NumPy steps
        want = _lstm_run(exact, x_grad)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    by_parts = recurrent._batch_parts(np.dtype(dtype), 6, 64, B, 2, True) > 1
    rows = _gemm.rows_take(np.dtype(dtype), 73, B, B)
    assert by_parts == (B == 64 and rows)
    split = ["back_parts", "scan_parts"] if by_parts else ["back", "scan"]
    for threads, expect in ((2, split), (1, ["serial"])):
        conv.set_kernel_threads(threads)
        with monkeypatch.context() as m:        # at the same thread count: the same products
            m.setattr(_regions, "_lstm_loaded", [None])
            numpy_steps = _lstm_run(case, x_grad)
        lstm_spy.clear()
        got = _lstm_run(case, x_grad)
        assert sorted(set(lstm_spy)) == expect
        for a, b, n in zip(got, want, numpy_steps):
            scale = np.abs(b).max()
            np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)
            if rows or threads == 1:
                # the same product calls (or the rows loops, whose numbers do not depend on
                # the split) and NumPy's own tanh: the NumPy steps' bits
                np.testing.assert_array_equal(a, n)
        again = _lstm_run(case, x_grad)
        assert all(np.array_equal(a, b) for a, b in zip(got, again))


@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_inference_steps_as_numpy(lstm_spy, monkeypatch, dtype, reverse):
    """Inference (no gradient): the compiled steps keep only ``c_t`` and ``h_t`` (the gates
    activated and combined in two passes, not written back), split over two threads (by
    sequences where the rows loops make the products) or on one, with the slabs reused in a
    ring (fewer of them than steps; each part of the batch its own ring): the NumPy steps'
    bits, at two thread counts, forward and reversed."""
    import shendu
    from shendu.functional import recurrent
    from shendu.functional.recurrent import lstm

    arrays, _ = _lstm_case(dtype, reverse, False)

    def run():
        ts = {k: shendu.tensor(v) for k, v in arrays.items()}
        with shendu.no_grad():
            out, hn, cn = lstm(ts["x"], ts["h0"], ts["c0"], ts["w_ih"], ts["w_hh"], ts["b_ih"],
                               ts["b_hh"], reverse=reverse)
        return [out.data.copy(), hn.data, cn.data]

    H, B = arrays["w_hh"].shape[1], arrays["x"].shape[1]
    # a ring of 4 slabs for the 6 steps: c_t carried back to the first slab on the wrap
    monkeypatch.setattr(recurrent, "_CHUNK_BYTES", 4 * 3 * H * B * np.dtype(dtype).itemsize)
    by_parts = recurrent._batch_parts(np.dtype(dtype), 6, H, B, 2, False) > 1
    assert by_parts == _gemm.rows_take(np.dtype(dtype), 1 + 8 + H, B, B)
    for threads, expect in ((2, ["scan_parts" if by_parts else "scan"]), (1, ["serial"])):
        conv.set_kernel_threads(threads)
        with monkeypatch.context() as m:
            m.setattr(_regions, "_lstm_loaded", [None])              # the NumPy steps
            want = run()
        lstm_spy.clear()
        got = run()
        assert sorted(set(lstm_spy)) == expect
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ the feed-forward's row blocks
@needs_split
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [False, True])
def test_feed_forward_in_row_blocks(monkeypatch, dtype, train):
    """The transformer's feed-forward as one region of whole row blocks, one per thread:
    the output (and in training every gradient) of the split products and the separate
    bias-and-ReLU pass, bit for bit, where it runs; the separate passes where it does not
    (one thread)."""
    import shendu
    import shendu.nn.transformer as tr

    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 40, 64)).astype(dtype)
    g = rng.standard_normal((8, 40, 64)).astype(dtype)
    shendu.manual_seed(0)
    ff = shendu.nn.Sequential(shendu.nn.Linear(64, 256), shendu.nn.ReLU(),
                              shendu.nn.Linear(256, 64))
    ws = [p.data.astype(dtype) for p in ff.parameters()]          # w1, b1, w2, b2
    taken = []
    real = tr._FeedForward._whole_rows

    def spy(self, *args):
        y = real(self, *args)
        taken.append(y is not None)
        return y

    monkeypatch.setattr(tr._FeedForward, "_whole_rows", spy)

    def run():
        xs = shendu.tensor(x, requires_grad=train)
        ps = [shendu.tensor(w, requires_grad=train) for w in ws]
        y = tr._FeedForward.apply(xs, ps[0], ps[1], ps[2], ps[3], p=0.0)
        if not train:
            return [y.data]
        (y * shendu.tensor(g)).sum().backward()
        return [y.data, xs.grad.data] + [p.grad.data for p in ps]

    before = conv._N_THREADS
    try:
        conv.set_kernel_threads(2)
        got = run()
        assert taken and all(taken)
        taken.clear()
        with monkeypatch.context() as m:
            m.setattr(_regions, "feed_forward", lambda: None)
            want = run()
        conv.set_kernel_threads(1)
        taken.clear()
        run()
        assert taken and not any(taken)
    finally:
        conv.set_kernel_threads(before)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    exact = np.maximum(x.reshape(-1, 64).astype(np.float64) @ ws[0].T.astype(np.float64)
                       + ws[1], 0) @ ws[2].T.astype(np.float64) + ws[3]
    np.testing.assert_allclose(got[0].reshape(-1, 64), exact, rtol=0,
                               atol=(1e-4 if dtype == np.float32 else 1e-11) * np.abs(exact).max())


@needs_split
def test_attention_heads_in_one_region(monkeypatch):
    """Unmasked float32 attention split by heads: every head's scores, softmax and output
    in one compiled region, the bits of the same heads split over the kernels' Python
    threads (forward, and the backward that uses the kept probabilities), values against
    float64; not where a mask is given. Its ``exp`` is the fused kernel's: MKL's where
    ``_gemm.exp`` takes MKL's, NumPy's own loop elsewhere."""
    import shendu
    import shendu.functional as F
    from shendu.functional import attention as A

    found = _regions.attention()
    assert found is not None
    monkeypatch.setattr(A, "BY_HEADS_MIN_SCORES", 0)
    calls = []
    fn, *rest = found

    def spy(*args):
        calls.append(args[4].shape)
        return fn(*args)

    rng = np.random.default_rng(4)
    arrs = [rng.standard_normal((3, 4, 64, 32)).astype(np.float32) for _ in range(3)]
    g = rng.standard_normal((3, 4, 64, 32)).astype(np.float32)

    def run(mask=None):
        q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        (out * shendu.tensor(g)).sum().backward()
        return [out.data, q.grad.data, k.grad.data, v.grad.data]

    heads = [a.reshape(12, 64, 32) for a in arrs]
    assert A._heads_region(*heads) is not None
    assert A._heads_region(*(a.astype(np.float64) for a in heads)) is None
    assert A._heads_region(*(a[:, :32] for a in heads)) is None     # scores under MIN_EXP
    before = conv._N_THREADS
    try:
        conv.set_kernel_threads(2)
        monkeypatch.setattr(A, "_heads_region", lambda *a: None)
        want = run()
        monkeypatch.setattr(A, "_heads_region", lambda *a: (spy, *rest))
        got = run()
        assert calls == [(12, 64, 32)]
        run(np.ones((64, 64), bool))
        assert len(calls) == 1                          # a mask: the Python threads' path
    finally:
        conv.set_kernel_threads(before)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    q, k, v = (a.astype(np.float64) for a in arrs)
    s = q @ k.swapaxes(-1, -2) / np.sqrt(32)
    p = np.exp(s - s.max(-1, keepdims=True))
    exact = (p / p.sum(-1, keepdims=True)) @ v
    np.testing.assert_allclose(got[0], exact, rtol=0, atol=1e-5)


def test_numpy_loops_are_numpys_own():
    """NumPy's inner loops taken from the ufunc objects: called as compiled code calls them,
    the ufunc's very bits (infinities, NaN and subnormals included); a ufunc of two inputs
    or a type it has no loop for gives None."""
    import ctypes

    for ufunc in (np.tanh, np.exp):
        for dt in (np.float32, np.float64):
            f, data = _regions.numpy_loop(ufunc, dt)
            x = np.random.default_rng(1).standard_normal(10_001).astype(dt) * 40
            x[:6] = [np.inf, -np.inf, np.nan, 0.0, -0.0, np.finfo(dt).smallest_subnormal]
            y = np.empty_like(x)
            args = np.array([x.ctypes.data, y.ctypes.data], np.int64)
            dims, steps = np.array([x.size], np.int64), np.array([x.itemsize] * 2, np.int64)
            ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4)(f)(
                args.ctypes.data, dims.ctypes.data, steps.ctypes.data, data)
            with np.errstate(all="ignore"):
                np.testing.assert_array_equal(y, ufunc(x))
    assert _regions.numpy_loop(np.add, np.float32) is None
    assert _regions.numpy_loop(np.tanh, np.int8) is None


@needs_split
@pytest.mark.parametrize("add", [False, True])
def test_layer_norm_rows_in_one_region(monkeypatch, add):
    """Layer norm's compiled rows (and the residual sum before them, and the backward's
    rows) over the kernel threads in one TBB region: the bits of the rows split over the
    kernels' Python threads, or of one thread. (The weight and bias gradients are column
    sums, products whose library depends on the thread count: on one thread NumPy's,
    beside its threads the kernels' own; equal to float32 rounding.)"""
    import shendu
    from shendu.functional import normalization as N

    rng = np.random.default_rng(7)
    x, q, g = (rng.standard_normal((48, 50, 128)).astype(np.float32) for _ in range(3))
    w, b = (rng.standard_normal(128).astype(np.float32) for _ in range(2))
    used = []
    kern = _numba.kernels()
    for name in ("layer_norm_split", "add_layer_norm_split", "layer_norm_grad_split"):
        def spy(*args, _real=getattr(kern, name)):
            used.append(args[-1])                       # the threads of the region
            return _real(*args)
        monkeypatch.setattr(kern, name, spy)

    def run():
        ts = [shendu.tensor(a, requires_grad=True) for a in (x, q, w, b)]
        if add:
            y = N.add_layer_norm(ts[0], ts[1], (128,), ts[2], ts[3], 1e-5)
        else:
            y = N.layer_norm(ts[0], (128,), ts[2], ts[3], 1e-5)
        (y * shendu.tensor(g)).sum().backward()
        return [y.data] + [t.grad.data for t in ts if t.grad is not None]

    before = conv._N_THREADS
    try:
        conv.set_kernel_threads(2)
        got = run()
        assert used and all(t == 2 for t in used)
        monkeypatch.setattr(_regions, "tbb", lambda: False)      # the Python threads
        used.clear()
        want = run()
        assert not used
        conv.set_kernel_threads(1)
        alone = run()
    finally:
        conv.set_kernel_threads(before)
    for i, (a, c, d) in enumerate(zip(got, want, alone)):
        np.testing.assert_array_equal(a, c)
        if i < len(got) - 2:                    # the output and the inputs' gradients
            np.testing.assert_array_equal(a, d)
        else:                                   # the weight's and the bias's
            np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-5 * np.abs(d).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [(0, 40), (16, 32), (3, 40)])
def test_lstm_weight_grad_rows(dtype, cols):
    """``lstm_weight_grad``: a part's share of the weight gradient added to ``dW`` — the
    columns of ``m`` steps transposed (whole tiles and the ragged edges; the padding
    columns of ``dW`` untouched), ``δa`` read from rows ``lda`` apart — against NumPy's
    product; from zero, the bits of the rows loops' ``C = A B``."""
    compiled = pytest.importorskip("shendu.functional._regions_compiled")
    from shendu.functional import _conv_compiled

    rng = np.random.default_rng(0)
    lanes = 64 // np.dtype(dtype).itemsize
    T, K, B, G, C, m, z0, a0 = 7, 37, 40, 24, 3, 2, 4, 5
    Kp = -(-K // lanes) * lanes
    b0, b1 = cols
    w = b1 - b0
    Z = rng.standard_normal((T + 1, K, B)).astype(dtype)
    flat = np.concatenate([np.zeros(a0, dtype), rng.standard_normal(G * C * B).astype(dtype)])
    A = np.stack([flat[a0 + g * C * B:a0 + g * C * B + m * w] for g in range(G)])
    Zt = np.full((C * B, Kp), np.nan, dtype)
    dW = rng.standard_normal((G, Kp)).astype(dtype)
    before = dW.copy()
    compiled.lstm_weight_grad(flat, a0, C * B, Z, z0, m, b0, b1, Zt, dW, lanes)
    cols_t = np.concatenate([Z[z0 + j][:, b0:b1].T for j in range(m)])     # (m w, K)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(dW[:, :K], before[:, :K] + A @ cols_t, rtol=0, atol=tol * 10)
    np.testing.assert_array_equal(dW[:, K:], before[:, K:])
    np.testing.assert_array_equal(Zt[:m * w, K:], 0)
    zero = np.zeros((G, Kp), dtype)
    compiled.lstm_weight_grad(flat, a0, C * B, Z, z0, m, b0, b1, Zt, zero, lanes)
    direct = np.empty((G, Kp), dtype)
    _conv_compiled.gemm_rows(np.ascontiguousarray(A).reshape(-1), m * w, Zt.reshape(-1), Kp,
                             direct.reshape(-1), Kp, Kp, m * w, 0, G, lanes)
    np.testing.assert_array_equal(zero, direct)


@needs_split
def test_lstm_backward_at_other_threads_than_forward(lstm_spy):
    """The thread count changed between the forward (split by sequences at two threads)
    and the backward (one): the backward keeps the forward's parts (their slabs, their
    shares of the weight gradient) and every gradient matches the float64 NumPy steps'."""
    import shendu
    from shendu.functional import recurrent
    from shendu.functional.recurrent import lstm

    if recurrent._batch_parts(np.dtype(np.float32), 6, 64, 64, 2, True, 73) < 2:
        pytest.skip("no split by sequences here: it needs the rows loops")
    arrays, reverse = _lstm_case(np.float32, False, False, B=64)
    exact = _lstm_case(np.float64, False, False, B=64)
    conv.set_kernel_threads(1)
    want = _lstm_run(exact)
    conv.set_kernel_threads(2)
    ts = {k: shendu.tensor(v, requires_grad=k != "g") for k, v in arrays.items()}
    out, hn, cn = lstm(ts["x"], ts["h0"], ts["c0"], ts["w_ih"], ts["w_hh"], ts["b_ih"],
                       ts["b_hh"], reverse=reverse)
    conv.set_kernel_threads(1)
    ((out * ts["g"]).sum() + (hn * cn).sum()).backward()
    got = [out.data, hn.data, cn.data] + [ts[k].grad.data for k in
                                          ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    assert "scan_parts" in lstm_spy and "back_parts" in lstm_spy
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * np.abs(b).max())
