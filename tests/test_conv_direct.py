"""The direct convolution (stride 1, no dilation, one group, where Numba is installed):
float64 gradcheck and torch parity over shapes that reach every branch of its loops (four
channels at a time and the 3/2/1 left over, two vectors of positions, one, and the numbers
left one by one, tap blocks of four and what is left), the same bits for any thread
count, and the other paths where it does not apply."""

import numpy as np
import pytest
import torch
from helpers import check_op

import shendu
import shendu.functional as F
from shendu.functional import _numba, conv

TF = torch.nn.functional
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
    pytest.mark.skipif(_numba.kernels() is None, reason="the direct convolution needs Numba"),
]


@pytest.fixture
def spied(monkeypatch):
    """The shapes the direct forward ran on (one entry per call)."""
    ran = []
    forward = conv.Conv2d._forward_direct

    def spy(self, x, *a):
        ran.append(x.shape)
        return forward(self, x, *a)

    monkeypatch.setattr(conv.Conv2d, "_forward_direct", spy)
    return ran


# (input, weight, padding): N*Wo runs of 1..a few vectors and ragged ends; 1-7 and 16
# channels; 1x1 to 5x5 kernels; symmetric, asymmetric ("same" with an even kernel) padding
SHAPES = [
    ((2, 3, 7, 6), (5, 3, 3, 2), 1),          # run 12: ends only one by one
    ((3, 2, 6, 9), (7, 2, 3, 3), "same"),     # 7 = 4 + 3 channels
    ((5, 4, 5, 5), (2, 4, 2, 2), "same"),     # even kernel: pads 0/1
    ((17, 1, 6, 5), (6, 1, 5, 5), 2),         # 6 = 4 + 2; runs of 85 (two vectors, one, 5)
    ((4, 6, 8, 8), (1, 6, 1, 1), 0),          # one channel, one tap
    ((16, 3, 5, 6), (16, 3, 3, 3), (1, 0)),   # full blocks of 4 and runs of 16 * 6
    ((3, 2, 1, 20), (4, 2, 1, 5), (0, 2)),    # a height of one, padded along the width
]


def _step(arrays, gy):
    """conv2d (padding 1) of ``arrays`` (input, weight, bias) and its backward from ``gy``:
    copies of the output and the three gradients."""
    x, w, b = (shendu.tensor(a, requires_grad=True) for a in arrays)
    y = F.conv2d(x, w, b, padding=1)
    y.backward(gy)
    return [a.copy() for a in (y.data, x.grad.data, w.grad.data, b.grad.data)]


@pytest.mark.parametrize("xs,ws,pad", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_direct_conv_matches_torch(spied, xs, ws, pad, bias):
    """Values and every gradient against torch (float32 and float64) and the float64
    central difference, on the direct path."""
    if bias:
        check_op(lambda x, w, b: F.conv2d(x, w, b, padding=pad), [xs, ws, (ws[0],)],
                 torch_fn=lambda x, w, b: TF.conv2d(x, w, b, padding=pad))
    else:
        check_op(lambda x, w: F.conv2d(x, w, padding=pad), [xs, ws],
                 torch_fn=lambda x, w: TF.conv2d(x, w, padding=pad))
    assert spied and all(s == xs for s in spied)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_conv_large_against_torch(spied, dtype):
    """LeNet's two convolutions (batch 64: whole vectors), forward and backward through the
    layers, against torch: the same numbers to float rounding."""
    rng = np.random.default_rng(3)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    x = rng.standard_normal((64, 1, 28, 28)).astype(dtype)
    params = [rng.standard_normal(s).astype(dtype) * 0.2
              for s in [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,)]]
    g = rng.standard_normal((64, 16, 10, 10)).astype(dtype)

    def net(f, x, w1, b1, w2, b2):
        return f.conv2d(f.relu(f.conv2d(x, w1, b1, padding=2))[:, :, ::2, ::2], w2, b2)

    sx = shendu.tensor(x, requires_grad=True)
    sp = [shendu.tensor(p, requires_grad=True) for p in params]
    y = net(F, sx, *sp)
    y.backward(shendu.tensor(g))
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    ty = net(TF, tx, *tp)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **tol)
    for s, t in zip([sx] + sp, [tx] + tp):
        scale = np.abs(t.grad.numpy()).max()
        np.testing.assert_allclose(s.grad.data, t.grad.numpy(), rtol=tol["rtol"],
                                   atol=tol["atol"] * scale)
    assert len(spied) == 2


def test_direct_conv_same_bits_for_any_threads(monkeypatch):
    """Each output row, and each block of the weight gradient, is one thread's: float32
    results bit for bit the same on one thread and split over three."""
    from shendu.functional import _regions

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in
              [(20, 5, 9, 8), (7, 5, 3, 3), (7,)]]
    gy = rng.standard_normal((20, 7, 9, 8)).astype(np.float32)

    one = _step(arrays, gy)
    split, pooled = [], []
    direct = conv._direct()
    monkeypatch.setattr(conv, "split_threads",
                        lambda *a, f=conv.split_threads: pooled.append(a[-1]) or f(*a))
    for name in ("conv_rows_split", "conv_weight_grad_split"):
        monkeypatch.setattr(direct, name,
                            lambda *a, f=getattr(direct, name): split.append(a[-1]) or f(*a))
    monkeypatch.setattr(conv, "DIRECT_SPLIT_MACS", 0)
    before = conv._N_THREADS
    try:
        conv.set_kernel_threads(3)
        three = _step(arrays, gy)
    finally:
        conv.set_kernel_threads(before)
    if _regions.tbb():
        assert split == [3, 3, 3]             # forward, weight gradient, input gradient
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    # where Numba's regions do not run on TBB: the kernels' own pool
    monkeypatch.setattr(_regions, "_tbb_loaded", [False])
    monkeypatch.setattr(conv, "DIRECT_POOL_MACS", 0)
    split.clear()
    try:
        conv.set_kernel_threads(3)
        pool = _step(arrays, gy)
    finally:
        conv.set_kernel_threads(before)
    assert split == [] and pooled.count(3) >= 3
    for a, b in zip(one, pool):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_direct_conv_empty_batch(spied):
    """A batch of none: empty output and input gradient, zero weight and bias gradients."""
    x = shendu.tensor(np.zeros((0, 3, 5, 5), np.float32), requires_grad=True)
    w = shendu.tensor(np.ones((4, 3, 3, 3), np.float32), requires_grad=True)
    b = shendu.tensor(np.ones(4, np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 4, 5, 5) and spied
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    assert not w.grad.data.any() and not b.grad.data.any()


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, padding=2),
                                dict(groups=2, padding=1), dict(padding=3)])
def test_other_convolutions_not_direct(spied, kw):
    """Strided, dilated, grouped convolutions and padding as wide as the kernel (the input
    gradient's "full" padding would be negative) keep the patch-matrix paths."""
    check_op(lambda x, w: F.conv2d(x, w, **kw), [(2, 4, 7, 6), (4, 4 // kw.get("groups", 1),
                                                                3, 3)],
             torch_fn=lambda x, w: TF.conv2d(x, w, **kw))
    assert spied == []


def test_direct_conv_as_the_numpy_path(monkeypatch, spied):
    """Without Numba the patch-matrix path computes the same convolution (float64: to
    rounding)."""
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in [(18, 3, 8, 7), (5, 3, 3, 3), (5,)]]
    gy = rng.standard_normal((18, 5, 8, 7))

    direct = _step(arrays, gy)
    assert len(spied) == 1
    monkeypatch.setattr(_numba, "_loaded", [None])
    numpy = _step(arrays, gy)
    assert len(spied) == 1
    for a, b in zip(direct, numpy):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
