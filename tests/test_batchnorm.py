"""batch_norm and BatchNorm1d/2d: gradcheck, torch parity of values, gradients and running
buffers in train and eval mode, over several steps."""

import numpy as np
import pytest
import torch
from helpers import check_module, check_op

import shendu
import shendu.functional as F
import shendu.nn as nn

TF = torch.nn.functional
SHAPES = [(5, 3), (4, 3, 6), (3, 3, 4, 5), (1, 3, 2, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional(shape, training):
    c = shape[1]
    rm = np.linspace(-0.5, 0.5, c)
    rv = np.linspace(0.5, 2.0, c)

    def f(x, w, b):
        return F.batch_norm(x, shendu.tensor(rm, dtype=x.dtype), shendu.tensor(rv, dtype=x.dtype),
                            w, b, training=training, momentum=0.2, eps=1e-3)

    def tf(x, w, b):
        return TF.batch_norm(x, torch.tensor(rm, dtype=x.dtype), torch.tensor(rv, dtype=x.dtype),
                             w, b, training=training, momentum=0.2, eps=1e-3)
    check_op(f, [shape, (c,), (c,)], torch_fn=tf)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_without_affine(training):
    rm, rv = np.zeros(4), np.ones(4)
    check_op(lambda x: F.batch_norm(x, shendu.tensor(rm, dtype=x.dtype),
                                    shendu.tensor(rv, dtype=x.dtype), training=training),
             [(6, 4, 3)],
             torch_fn=lambda x: TF.batch_norm(x, torch.tensor(rm, dtype=x.dtype),
                                              torch.tensor(rv, dtype=x.dtype),
                                              training=training))


def test_batch_norm_running_stats_update_in_place():
    x = np.random.default_rng(0).standard_normal((8, 3, 5)) * 3 + 2
    for dt, tdt in ((np.float64, torch.float64), (np.float32, torch.float32)):
        rm, rv = shendu.zeros(3, dtype=dt), shendu.ones(3, dtype=dt)
        rm_arr = rm.data
        trm, trv = torch.zeros(3, dtype=tdt), torch.ones(3, dtype=tdt)
        for _ in range(3):
            F.batch_norm(shendu.tensor(x, dtype=dt), rm, rv, training=True, momentum=0.3)
            TF.batch_norm(torch.tensor(x, dtype=tdt), trm, trv, training=True, momentum=0.3)
        assert rm.data is rm_arr    # in place
        tol = 1e-12 if dt == np.float64 else 1e-6
        np.testing.assert_allclose(rm.data, trm.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(rv.data, trv.numpy(), rtol=tol, atol=tol)
    # the running variance is the unbiased one: m/(m-1) times the batch's
    m = 8 * 5
    rv = shendu.zeros(3, dtype="float64")
    F.batch_norm(shendu.tensor(x, dtype="float64"), None, rv, training=True, momentum=1.0)
    np.testing.assert_allclose(rv.data, x.transpose(1, 0, 2).reshape(3, -1).var(axis=1) * m
                               / (m - 1), rtol=1e-12)


def test_batch_norm_channel_major_input():
    """After a conv the input is a batch-innermost view; output and gradient follow it."""
    def f(x, w, g, b):
        h = F.conv2d(x, w, padding=1)
        return F.batch_norm(h, None, None, g, b, training=True)

    def tf(x, w, g, b):
        return TF.batch_norm(TF.conv2d(x, w, padding=1), None, None, g, b, training=True)
    check_op(f, [(3, 2, 5, 5), (4, 2, 3, 3), (4,), (4,)], torch_fn=tf)
    y = f(shendu.randn(3, 2, 5, 5), shendu.randn(4, 2, 3, 3), None, None)
    assert y.data.transpose(1, 2, 3, 0).flags.c_contiguous


def test_batch_norm_errors():
    x = shendu.randn(4, 3, 5)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\)"):
        F.batch_norm(x, shendu.zeros(4), shendu.ones(3))
    with pytest.raises(ValueError, match="must be given when training=False"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(shendu.randn(1, 3), None, None, training=True)


# ----------------------------------------------------------------------------- layers
def _run_steps(s, t, shape, steps, dtype, train=True, seed=0):
    """Run a few train steps through both and compare outputs, all gradients (via
    check_module on the first step) and the buffers after every step."""
    rng = np.random.default_rng(seed)
    s.train(train)
    t.train(train)
    for k in range(steps):
        x = rng.standard_normal(shape) * 2 + 0.5
        if k == 0:
            check_module(s, t, [x], dtype=dtype)   # loads t's state into s first
        else:
            ys = s(shendu.tensor(x, dtype=dtype))
            yt = t(torch.tensor(x, dtype=t.weight.dtype if t.weight is not None
                                else torch.float32 if dtype == np.float32 else torch.float64))
            tol = 1e-5 if dtype == np.float32 else 1e-10
            np.testing.assert_allclose(ys.data, yt.detach().numpy(), rtol=tol, atol=tol)
        ss, ts = s.state_dict(), t.state_dict()
        assert list(ss) == list(ts)
        for key in ts:
            np.testing.assert_allclose(np.asarray(ss[key]), ts[key].numpy(), rtol=1e-6,
                                       atol=1e-6, err_msg=key)
            if key.endswith("num_batches_tracked"):
                assert ss[key].dtype == np.int64 and ss[key].shape == ()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(), dict(momentum=None), dict(momentum=0.5, eps=1e-3),
                                dict(affine=False), dict(bias=False),
                                dict(track_running_stats=False)])
def test_batchnorm2d_matches_torch(kw, dtype):
    s, t = nn.BatchNorm2d(3, **kw), torch.nn.BatchNorm2d(3, **kw)
    with torch.no_grad():
        if t.weight is not None:
            t.weight.uniform_(0.5, 1.5)
        if t.bias is not None:
            t.bias.uniform_(-1, 1)
    _run_steps(s, t, (4, 3, 5, 6), 3, dtype)
    _run_steps(s, t, (2, 3, 5, 6), 2, dtype, train=False)    # eval: running statistics


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 7)])
@pytest.mark.parametrize("kw", [dict(), dict(momentum=None)])
def test_batchnorm1d_matches_torch(shape, kw):
    for dtype in (np.float64, np.float32):
        s, t = nn.BatchNorm1d(4, **kw), torch.nn.BatchNorm1d(4, **kw)
        _run_steps(s, t, shape, 3, dtype)
        _run_steps(s, t, shape, 1, dtype, train=False)


def test_batchnorm_buffers_names_and_errors():
    s, t = nn.BatchNorm2d(8), torch.nn.BatchNorm2d(8)
    assert {k: tuple(v.shape) for k, v in s.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert [k for k, _ in s.named_buffers()] == [k for k, _ in t.named_buffers()]
    assert repr(s) == repr(t)
    assert s.num_batches_tracked.dtype == np.int64
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(N, C, H, W\), got "
                                         r"3D input \(2, 8, 5\)"):
        s(shendu.randn(2, 8, 5))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(8\) expected 8 channels at dim 1"):
        nn.BatchNorm1d(8)(shendu.randn(2, 6))
    s(shendu.randn(4, 8, 2, 2))
    assert int(s.num_batches_tracked.item()) == 1
    s.eval()
    s(shendu.randn(4, 8, 2, 2))
    assert int(s.num_batches_tracked.item()) == 1
    s.reset_running_stats()
    assert int(s.num_batches_tracked.item()) == 0 and np.all(s.running_var.data == 1)
