"""max_pool2d / avg_pool2d / adaptive_avg_pool2d and their layers: float64 gradcheck and torch
parity of values and gradients, including ties, NaN, padding, ceil_mode and batch-innermost
(conv output) inputs."""

import numpy as np
import pytest
import torch
from helpers import check_module, check_op, compare_with_torch

import shendu
import shendu.functional as F
import shendu.nn as nn

TF = torch.nn.functional

POOL_GRID = [
    dict(kernel_size=2),                                        # the LeNet case
    dict(kernel_size=2, stride=1),                              # overlapping
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=3),                              # 7x9 does not tile: edges unused
]


@pytest.mark.parametrize("kw", POOL_GRID + [dict(kernel_size=3, stride=1, padding=1, dilation=2),
                                            dict(kernel_size=2, stride=3, dilation=2)])
def test_max_pool2d_grid(kw):
    # distinct values: the max is unique, so central differences are well defined
    check_op(lambda x: F.max_pool2d(x, **kw), [(2, 3, 7, 9)],
             torch_fn=lambda x: TF.max_pool2d(x, **kw))


@pytest.mark.parametrize("kw", POOL_GRID + [
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, divisor_override=5),
])
def test_avg_pool2d_grid(kw):
    check_op(lambda x: F.avg_pool2d(x, **kw), [(2, 3, 7, 9)],
             torch_fn=lambda x: TF.avg_pool2d(x, **kw))


@pytest.mark.parametrize("kw", POOL_GRID)
def test_max_pool2d_ties_go_to_the_first_maximum(kw):
    """Integers and a block of zeros (as after a ReLU) make many tied windows; torch gives
    the gradient to the first maximum in row-major order, and so must we."""
    x = np.round(np.random.default_rng(0).uniform(-2, 2, (2, 3, 7, 9)))
    x[:, :, :4, :4] = 0
    for dt in (np.float64, np.float32):
        compare_with_torch(lambda t: F.max_pool2d(t, **kw), [x],
                           lambda t: TF.max_pool2d(t, **kw), dt)


def test_max_pool2d_nan_propagates_like_torch():
    x = np.arange(32, dtype=np.float64).reshape(1, 2, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan    # two NaNs in one window
    x[0, 1, 3, 3] = np.nan
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
        s = shendu.tensor(x, dtype="float64", requires_grad=True)
        t = torch.tensor(x, requires_grad=True)
        ys, yt = F.max_pool2d(s, **kw), TF.max_pool2d(t, **kw)
        np.testing.assert_array_equal(ys.data, yt.detach().numpy())
        ys.sum().backward()
        yt.sum().backward()
        np.testing.assert_array_equal(s.grad.data, t.grad.numpy())


@pytest.mark.parametrize("size", [1, (2, 3), (3, None), (4, 5), (7, 9), (5, 2)])
def test_adaptive_avg_pool2d(size):
    check_op(lambda x: F.adaptive_avg_pool2d(x, size), [(2, 3, 7, 9)],
             torch_fn=lambda x: TF.adaptive_avg_pool2d(x, size))


@pytest.mark.parametrize("op,top", [
    (lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2)),
    (lambda x: F.avg_pool2d(x, 3, 1, 1), lambda x: TF.avg_pool2d(x, 3, 1, 1)),
    (lambda x: F.adaptive_avg_pool2d(x, 3), lambda x: TF.adaptive_avg_pool2d(x, 3)),
])
def test_pooling_unbatched_and_batch_one(op, top):
    check_op(op, [(3, 6, 6)], torch_fn=top)
    check_op(op, [(1, 2, 5, 7)], torch_fn=top)


def test_pooling_reads_and_writes_channel_major_layout():
    """conv -> relu -> pool: the pool gets a batch-innermost view; its output and input
    gradient stay batch-innermost (no copies) and are correct."""
    def f(x, w):
        return F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2).reshape(x.shape[0], -1)

    def tf(x, w):
        return TF.max_pool2d(TF.conv2d(x, w, padding=1).relu(), 2).reshape(x.shape[0], -1)
    check_op(f, [(3, 2, 6, 6), (4, 2, 3, 3)], torch_fn=tf)
    y = F.max_pool2d(F.conv2d(shendu.randn(3, 2, 6, 6), shendu.randn(4, 2, 3, 3)), 2)
    assert y.data.transpose(1, 2, 3, 0).flags.c_contiguous


def _spatial_outer(x):
    """``x`` (N, C, H, W) as a view of (H, W, N, C) memory (a wide tiled convolution's
    output layout)."""
    return x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)


@pytest.mark.parametrize("kw", POOL_GRID)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_pooling_reads_and_writes_spatial_outer_layout(kw, op):
    """A spatial-outer input (H, W, N, C) is pooled in its layout: values and gradients as
    torch's, the output and the input gradient spatial-outer too (no copies)."""
    fn, tfn = (F.max_pool2d, TF.max_pool2d) if op == "max" else (F.avg_pool2d, TF.avg_pool2d)
    check_op(lambda x: fn(_spatial_outer(x), **kw), [(3, 4, 7, 9)],
             torch_fn=lambda x: tfn(x, **kw))
    x = shendu.randn(3, 4, 7, 9, requires_grad=True)
    xs = _spatial_outer(x)
    y = fn(xs, **kw)
    assert y.data.transpose(2, 3, 0, 1).flags.c_contiguous
    grads = []
    xs.register_hook(lambda g: grads.append(g))
    y.backward(shendu.tensor(np.ascontiguousarray(
        np.ones(y.shape, np.float32).transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)))
    assert grads and grads[0].data.transpose(2, 3, 0, 1).flags.c_contiguous


def test_max_pool_spatial_outer_rows_split_same_bits(monkeypatch):
    """The compiled max pooling of a spatial-outer input splits over output rows; the
    split changes no bit of the output or the gradient."""
    from shendu.functional import conv as conv_mod

    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((5, 6, 12, 10)).astype(np.float32)
    g0 = rng.standard_normal((5, 6, 6, 5)).astype(np.float32)

    def run():
        x = shendu.tensor(x0, requires_grad=True)
        y = F.max_pool2d(_spatial_outer(x), 2)
        y.backward(shendu.tensor(g0))
        return y.data.copy(), x.grad.data.copy()

    one = run()
    monkeypatch.setattr(conv_mod, "PARALLEL_MIN", 1)
    monkeypatch.setattr(conv_mod, "SPLIT_BESIDE_BLAS", 1)
    before = conv_mod._N_THREADS
    try:
        conv_mod.set_kernel_threads(3)
        split = run()
    finally:
        conv_mod.set_kernel_threads(before)
    for a, b in zip(one, split):
        np.testing.assert_array_equal(a, b)
    ref = torch.nn.functional.max_pool2d(torch.tensor(x0), 2)
    np.testing.assert_array_equal(one[0], ref.numpy())


@pytest.mark.parametrize("fn,kw,msg", [
    (F.max_pool2d, dict(kernel_size=2, padding=2), "at most half of kernel size"),
    (F.max_pool2d, dict(kernel_size=9), "too small"),
    (F.avg_pool2d, dict(kernel_size=0), "must be positive"),
    (F.max_pool2d, dict(kernel_size=2, return_indices=True), "return_indices"),
])
def test_pool_errors(fn, kw, msg):
    with pytest.raises((ValueError, NotImplementedError), match=msg):
        fn(shendu.randn(1, 2, 6, 6), **kw)
    with pytest.raises(ValueError, match=r"expected input \(N, C, H, W\) or \(C, H, W\)"):
        F.max_pool2d(shendu.randn(6, 6), 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_layers_match_torch(dtype):
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 8))
    pairs = [
        (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
         torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)),
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
         torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
        (nn.AdaptiveAvgPool2d((4, 3)), torch.nn.AdaptiveAvgPool2d((4, 3))),
        (nn.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1)),
    ]
    for s, t in pairs:
        check_module(s, t, [x], dtype=dtype)
    assert repr(nn.MaxPool2d(2)) == repr(torch.nn.MaxPool2d(2))
    assert repr(nn.AdaptiveAvgPool2d(1)) == repr(torch.nn.AdaptiveAvgPool2d(1))
