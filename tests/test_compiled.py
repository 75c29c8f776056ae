"""The compiled loops (``shendu.functional._numba``) against the NumPy passes they replace:
the same values and gradients, bit for bit, for any kernel thread count; NaN, ties and
partial tiles included. (The torch-parity tests of the ops run on whichever path is
installed; ``tests/test_gemm.py`` runs them on the NumPy path too.)"""

from __future__ import annotations

import numpy as np
import pytest

import shendu
import shendu.functional as F
from shendu.functional import _numba, conv

needs_numba = pytest.mark.skipif(_numba.kernels() is None,
                                 reason="numba is not installed (or SHENDU_NUMBA=0)")


def _pool_run(x, g, k, chwn):
    xt = shendu.tensor(x.transpose(3, 0, 1, 2) if chwn else x, requires_grad=True)
    y = F.max_pool2d(xt, k)
    y.backward(g)
    return y.data.copy(), xt.grad.data.copy()


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,hw", [(2, 8), (2, 9), (3, 9), (3, 11)])
@pytest.mark.parametrize("chwn", [True, False])
def test_max_pool_tiles_as_numpy(monkeypatch, dtype, k, hw, chwn):
    rng = np.random.default_rng(k * hw)
    shape = (6, hw, hw, 5) if chwn else (5, 6, hw, hw)
    x = rng.integers(-3, 4, shape).astype(dtype)            # many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 7, replace=False)] = np.nan  # and a few NaN windows
    ho = hw // k
    g = rng.standard_normal((5, 6, ho, ho)).astype(dtype)
    before = conv._N_THREADS
    try:
        runs = []
        for threads in (1, 3):
            conv.set_kernel_threads(threads)
            runs.append(_pool_run(x, g, k, chwn))
        with monkeypatch.context() as m:
            m.setattr(_numba, "_loaded", [None])           # NumPy's passes
            numpy = _pool_run(x, g, k, chwn)
    finally:
        conv.set_kernel_threads(before)
    for got in runs:
        for a, b in zip(got, numpy):
            np.testing.assert_array_equal(a, b)
    assert np.isnan(numpy[0]).any()


@needs_numba
def test_max_pool_without_nan_routes_by_code(monkeypatch):
    """Without NaN the backward takes the recorded winners (the other path recomputes)."""
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (4, 8, 8, 3)).astype(np.float32)
    g = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    got = _pool_run(x, g, 2, True)
    monkeypatch.setattr(_numba, "_loaded", [None])
    want = _pool_run(x, g, 2, True)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_switched_off_from_the_environment():
    import os
    import subprocess
    import sys

    code = "from shendu.functional import _numba; print(_numba.kernels() is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, SHENDU_NUMBA="0"), check=True)
    assert out.stdout.strip() == "True"


@needs_numba
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm_compiled_gradcheck_and_torch(monkeypatch, affine):
    """The compiled layer norm (every size here) passes the float64 gradcheck and matches
    torch's values and gradients in float32 and float64."""
    import torch.nn.functional as TF
    from helpers import check_op

    from shendu.functional import normalization

    monkeypatch.setattr(normalization, "_COMPILED_MIN", 0)
    if affine == "both":
        check_op(lambda x, w, b: F.layer_norm(x, 6, w, b), [(3, 4, 6), (6,), (6,)],
                 torch_fn=lambda x, w, b: TF.layer_norm(x, (6,), w, b))
    elif affine == "weight":
        check_op(lambda x, w: F.layer_norm(x, (2, 3), w), [(5, 2, 3), (2, 3)],
                 torch_fn=lambda x, w: TF.layer_norm(x, (2, 3), w))
    else:
        check_op(lambda x: F.layer_norm(x, 6, eps=1e-3), [(7, 6)],
                 torch_fn=lambda x: TF.layer_norm(x, (6,), eps=1e-3))


@needs_numba
def test_layer_norm_compiled_against_numpy_and_float64(monkeypatch):
    """At the transformer's size the compiled rows agree with NumPy's passes to float32
    rounding, and are at least as close to the float64 truth; rows near 1000 with a
    spread of 0.01 stay as accurate (two-pass variance)."""
    from shendu.functional import normalization

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2048, 128)).astype(np.float32)
    x[:4] = x[:4] * 1e-2 + 1e3
    w, b = (rng.standard_normal(128).astype(np.float32) for _ in range(2))
    g = rng.standard_normal((2048, 128)).astype(np.float32)

    def run(dtype):
        xs = shendu.tensor(x.astype(dtype), requires_grad=True)
        ws = shendu.tensor(w.astype(dtype), requires_grad=True)
        bs = shendu.tensor(b.astype(dtype), requires_grad=True)
        y = F.layer_norm(xs, 128, ws, bs)
        y.backward(g.astype(dtype))
        return [y.data, xs.grad.data, ws.grad.data, bs.grad.data]

    assert normalization._compiled(x) is not None
    exact = run(np.float64)
    compiled = run(np.float32)
    monkeypatch.setattr(_numba, "_loaded", [None])
    numpy = run(np.float32)
    for i, (c, n, e) in enumerate(zip(compiled, numpy, exact)):
        if i < 2:                      # the rows float32 can represent well (not the 1000s)
            np.testing.assert_allclose(c[4:], n[4:], rtol=1e-4, atol=1e-4)
        assert np.abs(c - e).max() <= 2 * np.abs(n - e).max() + 1e-6, i


def _lstm_run(x, h0, c0, ws, lengths, reverse):
    xt, ht, ct = (shendu.tensor(a, requires_grad=True) for a in (x, h0, c0))
    wt = [shendu.tensor(w, requires_grad=True) for w in ws]
    from shendu.functional.recurrent import lstm

    out, hn, cn = lstm(xt, ht, ct, *wt, lengths=lengths, reverse=reverse)
    ((out * out).sum() + (hn * cn).sum()).backward()
    return [a.data.copy() for a in (out, hn, cn, xt.grad, ht.grad, ct.grad)] + \
        [w.grad.data.copy() for w in wt]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_lstm_step_loops_as_numpy(monkeypatch, dtype, reverse, padded):
    """The LSTM scan's per-step gate arithmetic and backward step as compiled loops: the
    outputs, states and every gradient equal the NumPy passes' bit for bit (padded
    sequences and the reverse direction included)."""
    rng = np.random.default_rng(11)
    T, B, I, H = 7, 24, 5, 48                                # 6·H·B above the loops' size
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    ws = [rng.standard_normal(s).astype(dtype) * 0.3
          for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    lengths = rng.integers(1, T + 1, B) if padded else None
    got = _lstm_run(x, h0, c0, ws, lengths, reverse)
    with monkeypatch.context() as m:
        m.setattr(_numba, "_loaded", [None])               # NumPy's passes
        want = _lstm_run(x, h0, c0, ws, lengths, reverse)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def _ff_run(x, ws, p, seed):
    from shendu.nn.transformer import _FeedForward

    shendu.manual_seed(seed)
    ts = [shendu.tensor(a, requires_grad=True) for a in (x, *ws)]
    y = _FeedForward.apply(*ts, p=p)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    y.backward(shendu.tensor(g))
    return [y.data] + [t.grad.data for t in ts]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_feed_forward_loops_as_numpy(monkeypatch, dtype, p):
    """The feed-forward's bias + ReLU and its backward's dropout and ReLU masks as compiled
    loops: the output and every gradient equal the NumPy passes' bit for bit, with NaN,
    infinities and signed zeros among the hidden values."""
    rng = np.random.default_rng(5)
    M, d, ff = 40, 16, 128                                   # M·ff above the loops' size
    x = rng.standard_normal((M, d)).astype(dtype)
    x[3, 2] = np.nan                                         # a row of NaN hidden values
    ws = [rng.standard_normal(s).astype(dtype) * 0.3 for s in ((ff, d), (ff,), (d, ff), (d,))]
    ws[0][5] = 0.0
    ws[1][5] = -0.0                                          # a column of exact (signed) zeros
    ws[1][6] = np.inf
    ws[1][7] = -np.inf                                       # and of infinities
    with np.errstate(all="ignore"):
        got = _ff_run(x, ws, p, seed=3)
        with monkeypatch.context() as m:
            m.setattr(_numba, "_loaded", [None])               # NumPy's passes
            want = _ff_run(x, ws, p, seed=3)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    assert np.isnan(got[0]).any() and np.isnan(got[2]).any()   # the NaN reached the output


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_relu_special_values_as_numpy(dtype):
    """``max(h + b, 0)`` in one loop: NaN stays, -0 becomes +0 (as ``np.maximum`` makes it),
    infinities as they come; the same bits as ``np.add`` then ``np.maximum``."""
    v = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1.5, -1.5, -0.0], dtype)
    h = np.tile(v, (3, 1))
    b = np.array([0.0, -0.0, -0.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype)
    want = h + b
    np.maximum(want, 0, out=want)
    got = h.copy()
    _numba.kernels().bias_relu(got, b)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    assert not np.signbit(got[:, 1]).any()


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_loop_as_numpy(monkeypatch, dtype):
    """ReLU's forward as one compiled pass from :data:`activation._COMPILED_MIN` elements:
    ``np.maximum(a, 0)`` bit for bit (NaN kept, -0 made +0, infinities as they come), in
    the input's memory order (a transposed input gives a transposed output, as NumPy's);
    smaller arrays and integer ones take ``np.maximum``."""
    from shendu.functional import activation
    from shendu.functional.activation import ReLU

    calls = []
    kern = _numba.kernels()
    monkeypatch.setattr(kern, "relu_into", lambda a, o, f=kern.relu_into: (calls.append(1),
                                                                           f(a, o)))
    rng = np.random.default_rng(21)
    x = rng.standard_normal((128, 160)).astype(dtype)
    x.flat[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -np.nan]
    assert x.size >= activation._COMPILED_MIN
    for a in (x, x.T, x[:8, :8], (10 * x[1:]).astype(np.int32)):
        y = ReLU.__new__(ReLU).forward(a)
        want = np.maximum(a, 0)
        assert y.dtype == want.dtype and y.strides == want.strides
        bits = np.ascontiguousarray
        np.testing.assert_array_equal(bits(y).view(np.uint8), bits(want).view(np.uint8))
        assert not np.signbit(y[~np.isnan(y)]).any()
    assert len(calls) == 2                      # x and x.T; not the small one, not ints


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_additive_attention_grads_loop_as_numpy(monkeypatch, dtype):
    """Additive attention's backward sums ``dU = (1 - T²) de w`` over keys and queries in
    one compiled pass: the NumPy passes' gradients bit for bit (several queries, one
    query, a masked key, a zero weight); a query broadcast over the batch takes NumPy's."""
    from shendu.functional.attention import AdditiveAttention

    kern, calls = _numba.kernels(), []
    monkeypatch.setattr(kern, "additive_grads",
                        lambda *a, f=kern.additive_grads: calls.append(1) or f(*a))
    rng = np.random.default_rng(17)

    def grads(qp, kp, w, vals, keep):
        fn = AdditiveAttention.__new__(AdditiveAttention)
        fn.needs_input_grad = (True,) * 4
        out, p = fn.forward(qp, kp, w, vals, keep=keep)
        g = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
        return fn.backward(g, np.zeros_like(p))

    for qn, L in ((6, 3), (6, 1), (1, 2)):
        qp = rng.standard_normal((qn, L, 8)).astype(dtype)
        kp = rng.standard_normal((6, 9, 8)).astype(dtype)
        w = rng.standard_normal(8).astype(dtype)
        w[2] = 0.0
        vals = rng.standard_normal((6, 9, 5)).astype(dtype)
        keep = np.ones((6, L, 9), bool)
        keep[1, :, 4] = False
        calls.clear()
        got = grads(qp, kp, w, vals, keep)
        assert len(calls) == (qn == 6)
        with monkeypatch.context() as m:
            m.setattr(_numba, "_loaded", [None])
            want = grads(qp, kp, w, vals, keep)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_column_shift_as_numpy(dtype):
    """Attention's softmax down the columns of (G, S, L) scores: the compiled scale, max and
    shift give NumPy's ``s *= c; s -= max(s, axis=1)`` bit for bit, a fully masked
    (``-inf``) column shifted by 0, a NaN winning its column wherever it lies."""
    rng = np.random.default_rng(2)
    s = (rng.standard_normal((6, 20, 40)) * 4).astype(dtype)
    s[0, :, 3] = -np.inf                                    # every key masked
    s[1, ::2, 5] = -np.inf                                  # some keys masked
    s[2, 0, 7] = np.nan                                     # NaN first ...
    s[2, 11, 8] = np.nan                                    # ... and later in a column
    s[3, 4, 9] = np.inf
    for scale in (1.0, 0.17677669529663687, 3.0):
        want = s.copy()
        want *= scale
        m = want.max(axis=1, keepdims=True)
        m[m == -np.inf] = 0
        with np.errstate(invalid="ignore"):
            want -= m
        got = s.copy()
        _numba.kernels().shift_columns(got, got.dtype.type(scale))
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
        assert np.isnan(got[2, :, 7]).all() and np.isnan(got[2, :, 8]).all()
        assert (got[0, :, 3] == -np.inf).all()


@needs_numba
def test_attention_softmax_with_and_without_compiled_shift(monkeypatch):
    """The fused attention kernel's outputs and gradients with the compiled column shift
    match the NumPy path's (which skips the shift where the scores are bounded) to
    float32 rounding, masked rows included."""
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((3, 4, 32, 8)).astype(np.float32) for _ in range(3))
    keep = rng.random((32, 32)) > 0.3
    keep[2] = False                                         # a query with no key
    kern, calls = _numba.kernels(), []
    shift = kern.shift_columns
    monkeypatch.setattr(kern, "shift_columns",
                        lambda s, c: calls.append(s.shape) or shift(s, c))

    def run():
        ts = [shendu.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = F.scaled_dot_product_attention(*ts, attn_mask=shendu.tensor(keep))
        (out * shendu.tensor(q)).sum().backward()
        return [out.data] + [t.grad.data for t in ts]

    got = run()
    assert calls == [(12, 32, 32)]                          # the compiled shift ran
    with monkeypatch.context() as m:
        m.setattr(_numba, "_loaded", [None])
        want = run()
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (got[0][:, :, 2] == 0).all()


@needs_numba
@pytest.mark.parametrize("affine", [True, False])
def test_add_layer_norm_gradcheck_and_torch(monkeypatch, affine):
    """The residual add and layer norm as one op pass the float64 gradcheck and match
    torch's ``layer_norm(x + q)`` values and gradients in float32 and float64."""
    import torch.nn.functional as TF
    from helpers import check_op

    from shendu.functional import normalization

    monkeypatch.setattr(normalization, "_COMPILED_MIN", 0)
    if affine:
        check_op(lambda x, q, w, b: normalization.add_layer_norm(x, q, (6,), w, b, 1e-5),
                 [(3, 4, 6), (3, 4, 6), (6,), (6,)],
                 torch_fn=lambda x, q, w, b: TF.layer_norm(x + q, (6,), w, b))
    else:
        check_op(lambda x, q: normalization.add_layer_norm(x, q, (2, 3), None, None, 1e-3),
                 [(5, 2, 3), (5, 2, 3)],
                 torch_fn=lambda x, q: TF.layer_norm(x + q, (2, 3), eps=1e-3))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("same", [False, True])
def test_add_layer_norm_as_add_then_norm(dtype, same):
    """The fused residual and norm give the output and every gradient of ``x + q`` then
    ``layer_norm`` bit for bit (with or without a backward; ``q`` may be ``x`` itself)."""
    from shendu.functional import normalization

    rng = np.random.default_rng(9)
    x, q = ((rng.standard_normal((64, 32, 128)) * 2).astype(dtype) for _ in range(2))
    w, b = (rng.standard_normal(128).astype(dtype) for _ in range(2))
    g = rng.standard_normal(x.shape).astype(dtype)

    def run(fused):
        ts = [shendu.tensor(a, requires_grad=True) for a in (x, q, w, b)]
        second = ts[0] if same else ts[1]
        if fused:
            y = normalization.add_layer_norm(ts[0], second, (128,), ts[2], ts[3], 1e-5)
        else:
            y = F.layer_norm(ts[0] + second, 128, ts[2], ts[3])
        y.backward(shendu.tensor(g))
        with shendu.no_grad():
            y0 = (normalization.add_layer_norm(ts[0], second, (128,), ts[2], ts[3], 1e-5)
                  if fused else F.layer_norm(ts[0] + second, 128, ts[2], ts[3]))
        grads = [t.grad.data for t in ts if t.grad is not None]
        return [y.data, y0.data] + grads

    got, want = run(True), run(False)
    assert len(got) == len(want) == (5 if same else 6)
    for a, b_ in zip(got, want):
        np.testing.assert_array_equal(a.view(np.uint8), b_.view(np.uint8))


def test_encoder_layer_fused_norm_against_torch():
    """A post-norm encoder layer (whose residuals and norms run as one op each where the
    compiled loops are) matches torch's with its weights copied in, train mode without
    dropout: output and every parameter gradient."""
    import torch

    torch.manual_seed(0)
    tl = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    sl = shendu.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    sl.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((4, 40, 32)).astype(np.float32)
    tx, sx = torch.tensor(x, requires_grad=True), shendu.tensor(x, requires_grad=True)
    ty, sy = tl(tx), sl(sx)
    np.testing.assert_allclose(sy.data, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    (ty * ty).sum().backward()
    (sy * sy).sum().backward()
    np.testing.assert_allclose(sx.grad.data, tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    tp = dict(tl.named_parameters())
    for name, p in sl.named_parameters():
        np.testing.assert_allclose(p.grad.data, tp[name].grad.numpy(), rtol=1e-3, atol=1e-4,
                                   err_msg=name)


@pytest.mark.parametrize("compiled", [True, False])
def test_relu_split_over_threads_as_numpy(monkeypatch, compiled):
    """A large ReLU splits its forward (``np.maximum`` by ranges of memory) and backward
    over the kernel threads: the bits of the whole-array pass, conv's batch-innermost
    layout kept, NaN and signed zeros included; an array that is not dense takes the
    whole-array pass."""
    from shendu.functional import conv
    from shendu.functional.activation import ReLU

    rng = np.random.default_rng(13)
    x = rng.standard_normal((20, 7, 9, 16)).astype(np.float32)   # over the compiled minimum
    x.flat[:5] = [np.nan, 0.0, -0.0, np.inf, -np.inf]
    x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)   # CHWN view
    g = np.ascontiguousarray(rng.standard_normal((7, 9, 16, 20)).astype(np.float32)
                             ).transpose(3, 0, 1, 2)
    g[0, 0, 0, 1] = np.nan
    if not compiled:
        monkeypatch.setattr(_numba, "_loaded", [None])

    def run():
        fn = ReLU.__new__(ReLU)
        y = fn.forward(x)
        return y, fn.backward(g)

    want_y, want_g = run()
    before = conv._N_THREADS
    split = []
    monkeypatch.setattr(conv, "PARALLEL_MIN", 1)
    monkeypatch.setattr(conv, "SPLIT_BESIDE_BLAS", 0)
    monkeypatch.setattr(conv, "split_threads",
                        lambda *a, f=conv.split_threads: split.append(1) or f(*a))
    try:
        conv.set_kernel_threads(3)
        y, gx = run()
        strided = x[..., ::2]
        fn = ReLU.__new__(ReLU)
        np.testing.assert_array_equal(fn.forward(strided), np.maximum(strided, 0))
    finally:
        conv.set_kernel_threads(before)
    assert len(split) == (2 if compiled else 1)
    assert y.strides == x.strides
    bits = np.ascontiguousarray
    np.testing.assert_array_equal(bits(y).view(np.uint8), bits(want_y).view(np.uint8))
    np.testing.assert_array_equal(bits(y).view(np.uint8),
                                  bits(np.maximum(x, 0)).view(np.uint8))
    np.testing.assert_array_equal(bits(gx).view(np.uint8), bits(want_g).view(np.uint8))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "chwn", "strided"])
def test_relu_backward_loop_as_numpy(monkeypatch, dtype, layout):
    """ReLU's backward as one compiled pass over the memory of its gradient and output
    (in whatever order they lie, conv's batch-innermost one included): NumPy's
    ``g * ~(out <= 0)`` bit for bit, NaN passing the gradient, 0 at 0; a gradient laid
    out otherwise takes NumPy's passes."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 16, 12, 12)).astype(dtype)
    x[0, 0, 0, :4] = [np.nan, 0.0, -0.0, np.inf]
    if layout == "chwn":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    g = rng.standard_normal(x.shape).astype(dtype)
    g[0, 0, 0, 4] = np.nan
    if layout == "chwn":
        g = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    elif layout == "strided":
        g = np.repeat(g, 2, axis=-1)[..., ::2]                 # not dense: NumPy's passes
    kern, calls = _numba.kernels(), []
    into = kern.relu_grad_into
    monkeypatch.setattr(kern, "relu_grad_into", lambda *a: calls.append(1) or into(*a))

    def run():
        if layout == "strided":                # straight to the op (tensors copy their data)
            from shendu.functional.activation import ReLU

            fn = ReLU.__new__(ReLU)
            fn.out = np.maximum(x, 0)
            return fn.backward(g)
        t = shendu.tensor(x, requires_grad=True)
        F.relu(t).backward(shendu.tensor(g))
        return t.grad.data

    got = run()
    assert len(calls) == (0 if layout == "strided" else 1)
    with monkeypatch.context() as m:
        m.setattr(_numba, "_loaded", [None])
        want = run()
    bits = np.ascontiguousarray
    np.testing.assert_array_equal(bits(got).view(np.uint8), bits(want).view(np.uint8))
    assert got[0, 0, 0, 0] == g[0, 0, 0, 0] and got[0, 0, 0, 1] == 0 == got[0, 0, 0, 2]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_column_normalizer_as_numpy(dtype):
    """The softmax's normalisation down the columns of (G, S, L) exponentials: NumPy's
    ``e / e.sum(axis=1)`` bit for bit (the sum in its row-by-row order, then IEEE
    division), a column of zeros (every key masked) summing to 1 so that it stays 0, an
    infinite entry giving NaN in its column as NumPy's does."""
    rng = np.random.default_rng(3)
    e = np.exp(rng.standard_normal((5, 33, 47)) * 3).astype(dtype)
    e[1, :, 4] = 0
    e[2, 7, 9] = np.inf
    e[3, :, 5] = np.finfo(dtype).tiny                   # subnormal quotients' rounding
    z = e.sum(axis=1, keepdims=True)
    z[z == 0] = 1
    want = e / z
    got = e.copy()
    _numba.kernels().normalize_columns(got)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    assert (got[1, :, 4] == 0).all() and np.isnan(got[2, 7, 9])


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_kw", [dict(), dict(betas=(0.3, 0.999)),
                                    dict(weight_decay=0.05, decoupled_weight_decay=True)])
def test_adam_step_loop_as_numpy(monkeypatch, dtype, opt_kw):
    """Adam's and AdamW's step as one compiled pass: parameters and both moments after
    several steps equal the NumPy passes' bit for bit (torch's lerp and its mirrored form
    for β₁ < ½, a NaN, an infinite and a zero gradient included); maximize, AMSGrad and
    the L2 penalty keep NumPy's passes."""
    rng = np.random.default_rng(9)
    w0 = rng.standard_normal((48, 70)).astype(dtype)
    grads = [rng.standard_normal(w0.shape).astype(dtype) * 10.0 ** -i for i in range(5)]
    grads[1][0, :3] = [np.nan, np.inf, 0.0]
    kern, calls = _numba.kernels(), []
    monkeypatch.setattr(kern, "adam_step", lambda *a, f=kern.adam_step: calls.append(1) or f(*a))

    def run(**kw):
        w = shendu.nn.Parameter(w0.copy())
        opt = shendu.optim.Adam([w], lr=0.01, **kw)
        for g in grads:
            w.grad = shendu.tensor(g)
            with np.errstate(invalid="ignore"):          # inf - inf in the NumPy passes
                opt.step()
        st = opt.state[w]
        return w.data.copy(), st["exp_avg"].copy(), st["exp_avg_sq"].copy()

    got = run(**opt_kw)
    assert len(calls) == len(grads)
    with monkeypatch.context() as m:
        m.setattr(_numba, "_loaded", [None])
        want = run(**opt_kw)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    assert np.isnan(got[0][0, 0]) and np.isfinite(got[0][1:]).all()
    calls.clear()
    for kw in (dict(maximize=True), dict(amsgrad=True), dict(weight_decay=0.05)):
        run(**kw)
    assert calls == []


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_loops_as_numpy(monkeypatch, dtype, momentum):
    """SGD's common steps (plain, heavy-ball momentum) as one compiled pass: the parameters
    and momentum buffers after several steps equal the NumPy passes' bit for bit; the
    steps the loops do not take (Nesterov, weight decay) keep NumPy's passes."""
    from shendu.optim import sgd

    rng = np.random.default_rng(6)
    w0 = rng.standard_normal((64, 300)).astype(dtype)
    grads = [rng.standard_normal(w0.shape).astype(dtype) for _ in range(4)]
    kern, calls = _numba.kernels(), []
    for name in ("sgd_plain", "sgd_momentum"):
        f = getattr(kern, name)
        monkeypatch.setattr(kern, name, lambda *a, f=f: calls.append(1) or f(*a))

    def run(**kw):
        w = shendu.nn.Parameter(w0.copy())
        opt = shendu.optim.SGD([w], lr=0.05, momentum=momentum, **kw)
        for g in grads:
            w.grad = shendu.tensor(g)
            opt.step()
        buf = opt.state[w].get("momentum_buffer") if momentum else None
        return w.data.copy(), buf

    got = run()
    assert len(calls) == (4 if momentum == 0 else 3)        # the first momentum step copies
    with monkeypatch.context() as m:
        m.setattr(_numba, "_loaded", [None])
        want = run()
    np.testing.assert_array_equal(got[0].view(np.uint8), want[0].view(np.uint8))
    if momentum:
        np.testing.assert_array_equal(got[1].view(np.uint8), want[1].view(np.uint8))
    calls.clear()
    run(weight_decay=0.01)
    assert calls == []
    assert sgd._COMPILED_MIN <= w0.size


@needs_numba
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05)), ("SGD", dict(lr=0.05, momentum=0.9)),
                                     ("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01))])
def test_optimizer_steps_split_over_threads(monkeypatch, name, kw):
    """A large parameter's compiled optimizer step splits into ranges over the kernel
    threads: the parameter and its state after several steps are the one-thread pass's,
    bit for bit, for a split that does not fall on a vector boundary."""
    from shendu.functional import conv

    rng = np.random.default_rng(8)
    w0 = rng.standard_normal((101, 307)).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(3)]

    def run():
        w = shendu.nn.Parameter(w0.copy())
        opt = getattr(shendu.optim, name)([w], **kw)
        for g in grads:
            w.grad = shendu.tensor(g)
            opt.step()
        return [w.data.copy()] + [np.array(v) for v in opt.state[w].values()
                                  if isinstance(v, np.ndarray) and v.ndim]

    want = run()
    split = []
    before = conv._N_THREADS
    monkeypatch.setattr(conv, "PARALLEL_MIN", 1)
    monkeypatch.setattr(conv, "SPLIT_BESIDE_BLAS", 0)
    monkeypatch.setattr(conv, "split_threads",
                        lambda fn, n, t, f=conv.split_threads: split.append(t) or f(fn, n, t))
    try:
        conv.set_kernel_threads(3)
        got = run()
    finally:
        conv.set_kernel_threads(before)
    assert split and set(split) == {3}
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,pad,same", [(3, 1, True), (5, 2, True), (3, 0, False),
                                        (2, (1, 0), False)])
def test_conv_col2im_loop_as_numpy(monkeypatch, dtype, k, pad, same):
    """A stride-1 convolution whose output keeps the input's size gathers its input
    gradient's taps in one compiled pass: the same adds in the same order as the NumPy
    loop, so the same bits; other paddings and strides keep the NumPy loop."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((8, 6, 11, 11)).astype(dtype)
    w = rng.standard_normal((7, 6, k, k)).astype(dtype)
    kern, calls = _numba.kernels(), []
    monkeypatch.setattr(conv, "DIRECT", False)          # stride 1 would run direct
    loop = kern.col2im_unit
    monkeypatch.setattr(kern, "col2im_unit", lambda *a: calls.append(1) or loop(*a))

    def run(stride=1):
        xs = shendu.tensor(x, requires_grad=True)
        y = F.conv2d(xs, shendu.tensor(w), padding=pad, stride=stride)
        g = np.cos(np.arange(y.data.size)).reshape(y.shape).astype(dtype)
        y.backward(shendu.tensor(g))
        return np.ascontiguousarray(xs.grad.data)

    got = run()
    assert len(calls) == (1 if same else 0)
    with monkeypatch.context() as m:
        m.setattr(_numba, "_loaded", [None])
        want = run()
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    calls.clear()
    run(stride=2)
    assert calls == []


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_heads_split_loop_as_numpy(monkeypatch, dtype, batch_first, bias):
    """Self-attention's packed projection written as contiguous heads with its bias added
    (training, or inference on several kernel threads): the views of ``x W^T + b`` that
    the NumPy path returns, bit for bit, and the same gradients (the heads' gradients
    merged back into the product's layout by the compiled loop); one thread's inference
    keeps the views."""
    from shendu.nn.attention import _HeadsProjection

    kern, calls = _numba.kernels(), []
    for name in ("heads_split", "heads_merge"):
        monkeypatch.setattr(kern, name,
                            lambda *a, f=getattr(kern, name), n=name: calls.append(n) or f(*a))
    rng = np.random.default_rng(3)
    H, E = 4, 20
    for a0, a1 in ((3, 7), (17, 5)):
        x = rng.standard_normal((a0, a1, E)).astype(dtype)
        x[0, 0, :3] = -0.0
        w = rng.standard_normal((3 * E, E)).astype(dtype)
        w[:2] = 0.0                                     # rows of -0 and +0 products
        b = rng.standard_normal(3 * E).astype(dtype) if bias else None
        ins = (x, w) + ((b,) if bias else ())
        g = [rng.standard_normal((a0, H, a1, E // H) if batch_first else
                                 (a1, H, a0, E // H)).astype(dtype) for _ in range(3)]

        def run(train, threads, ins=ins, g=g):
            fn = _HeadsProjection.__new__(_HeadsProjection)
            fn.needs_input_grad = (train,) * len(ins)
            monkeypatch.setattr(conv, "_N_THREADS", threads)
            out = [o.copy() for o in fn.forward(*ins, heads=H, batch_first=batch_first)]
            return out + (list(fn.backward(*g)) if train else [])

        for train, threads in ((True, 1), (True, 2), (False, 2), (False, 1)):
            calls.clear()
            got = run(train, threads)
            assert calls == (["heads_split", "heads_merge"] if train else
                             ["heads_split"] if threads > 1 else [])
            with monkeypatch.context() as m:
                m.setattr(_numba, "_loaded", [None])
                want = run(train, threads)
            for a, c in zip(got, want):
                assert a.shape == c.shape and a.dtype == c.dtype
                np.testing.assert_array_equal(a.view(np.uint8), c.view(np.uint8))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_speed_perturb_loop_as_numpy(monkeypatch, dtype):
    """Speed perturbation's interpolation as one compiled loop: ``np.interp``'s values bit
    for bit (its float64 arithmetic, the last sample at and past the end, an infinite
    sample's NaN fallbacks, exact sample positions), for speeds up and down; int16 input
    and a one-sample signal take ``np.interp`` itself."""
    from shendu.audio import speed_perturb

    kern, calls = _numba.kernels(), []
    monkeypatch.setattr(kern, "speed_interp",
                        lambda *a, f=kern.speed_interp: calls.append(1) or f(*a))
    rng = np.random.default_rng(21)
    cases = []
    for n in (2, 3, 17, 1000, 4801):
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 4)).astype(dtype)
        x[0] = -0.0
        if n > 10:
            x[5], x[6], x[9] = np.inf, np.inf, -np.inf
            x[7] = np.nan
        for f in (0.5, 0.9, 1.0, 1.1, 1.0 + 1e-9, 2.0, float(rng.uniform(0.5, 2.0))):
            cases.append((x, f))
    cases.append((rng.integers(-9, 9, 50).astype(np.int16), 1.1))
    cases.append((np.array([3.0], dtype), 0.7))
    for x, f in cases:
        calls.clear()
        got = speed_perturb(x, f)
        assert len(calls) == (x.dtype == dtype and len(x) > 1)
        with monkeypatch.context() as m:
            m.setattr(_numba, "_loaded", [None])
            want = speed_perturb(x, f)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@needs_numba
@pytest.mark.parametrize("noise_color", [0.0, 6.0])
def test_audio_training_windows_as_numpy(monkeypatch, noise_color):
    """The speech model's training windows (speed perturbation, shift, noise at a random
    SNR) from the same seed: the compiled interpolation and noise add give the NumPy
    passes' windows bit for bit, the random draws in the same order."""
    import shendu
    from shendu.models import AudioClassifier

    rng = np.random.default_rng(4)
    waves = [rng.standard_normal(int(n)).astype(np.float32) * 0.1
             for n in rng.integers(500, 1400, 24)]
    m = AudioClassifier(max_seconds=0.15, noise_color=noise_color)

    def windows():
        shendu.manual_seed(7)
        return np.stack([m._batch(waves[i:i + 8], train=True) for i in range(0, 24, 8)])

    kern, calls = _numba.kernels(), []
    monkeypatch.setattr(kern, "add_scaled", lambda *a, f=kern.add_scaled: calls.append(1) or f(*a))
    got = windows()
    assert len(calls) > 3                         # about half the windows get noise
    with monkeypatch.context() as mp:
        mp.setattr(_numba, "_loaded", [None])
        want = windows()
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
