"""shendu.nn.utils.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import shendu
from shendu import nn
from shendu.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

TOL = {np.float32: dict(rtol=1e-5, atol=1e-7), np.float64: dict(rtol=1e-10, atol=1e-14)}
SHAPES = [(4, 3), (5,), (2, 2, 2), (1,)]


def _make(dtype, scale=1.0, none_at=(), seed=0):
    """The same parameters with the same gradients in shendu and torch (some grads None)."""
    rng = np.random.default_rng(seed)
    s_params, t_params = [], []
    for i, shape in enumerate(SHAPES):
        w = rng.standard_normal(shape).astype(dtype)
        g = (scale * rng.standard_normal(shape)).astype(dtype)
        sp = nn.Parameter(shendu.tensor(w, dtype=dtype))
        tp = torch.nn.Parameter(torch.from_numpy(w.copy()))
        if i not in none_at:
            sp.grad = shendu.tensor(g.copy(), dtype=dtype)
            tp.grad = torch.from_numpy(g.copy())
        s_params.append(sp)
        t_params.append(tp)
    return s_params, t_params


def _compare_grads(s_params, t_params, dtype):
    for sp, tp in zip(s_params, t_params):
        if tp.grad is None:
            assert sp.grad is None
            continue
        assert sp.grad.data.dtype == dtype
        np.testing.assert_allclose(sp.grad.data, tp.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5, 0.0, -math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])           # clips / leaves alone
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    s_params, t_params = _make(dtype, none_at=(1,))
    total_s = clip_grad_norm_(s_params, max_norm, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(t_params, max_norm, norm_type=norm_type)
    assert total_s.data.shape == () and total_s.data.dtype == dtype
    np.testing.assert_allclose(total_s.data, total_t.numpy(), **TOL[dtype])
    _compare_grads(s_params, t_params, dtype)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clipped_norm_equals_max_norm(norm_type):
    s_params, _ = _make(np.float64, scale=10.0)
    before = clip_grad_norm_(s_params, 1.0, norm_type=norm_type).item()
    assert before > 1.0
    after = get_total_norm([p.grad for p in s_params], norm_type).item()
    assert after == pytest.approx(1.0 * before / (before + 1e-6), rel=1e-12)


def test_single_tensor_generator_and_empty():
    s_params, t_params = _make(np.float64, scale=5.0)
    total = clip_grad_norm_(s_params[0], 1.0)
    ref = torch.nn.utils.clip_grad_norm_(t_params[0], 1.0)
    np.testing.assert_allclose(total.data, ref.numpy(), rtol=1e-12)
    total = clip_grad_norm_((p for p in s_params[1:]), 1.0)
    ref = torch.nn.utils.clip_grad_norm_([p for p in t_params[1:]], 1.0)
    np.testing.assert_allclose(total.data, ref.numpy(), rtol=1e-12)
    _compare_grads(s_params, t_params, np.float64)
    empty = clip_grad_norm_([], 1.0)
    assert empty.item() == 0.0 and empty.data.dtype == np.float32
    no_grads = [nn.Parameter(shendu.zeros(3))]
    assert clip_grad_norm_(no_grads, 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_nonfinite_norm(bad):
    s_params, t_params = _make(np.float64)
    s_params[0].grad.data[0, 0] = bad
    t_params[0].grad[0, 0] = bad
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2.0 of "
                                           r"the gradients is non-finite"):
        clip_grad_norm_(s_params, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(t_params, 1.0, error_if_nonfinite=True)
    # without the check both scale by the non-finite norm (zeros / NaNs as torch)
    total_s = clip_grad_norm_(s_params, 1.0)
    total_t = torch.nn.utils.clip_grad_norm_(t_params, 1.0)
    np.testing.assert_equal(total_s.data, total_t.numpy())
    for sp, tp in zip(s_params, t_params):
        np.testing.assert_equal(sp.grad.data, tp.grad.numpy())


def test_clip_grads_with_norm_and_get_total_norm_match_torch():
    s_params, t_params = _make(np.float32, scale=3.0)
    s_total = get_total_norm([p.grad for p in s_params], 2.0)
    t_total = torch.nn.utils.get_total_norm([p.grad for p in t_params], 2.0)
    np.testing.assert_allclose(s_total.data, t_total.numpy(), rtol=1e-6)
    clip_grads_with_norm_(s_params, 2.0, s_total)
    torch.nn.utils.clip_grads_with_norm_(t_params, 2.0, t_total)
    _compare_grads(s_params, t_params, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_value", [0.1, 0.7, 10.0])
def test_clip_grad_value_matches_torch(clip_value, dtype):
    s_params, t_params = _make(dtype, none_at=(2,))
    assert clip_grad_value_(s_params, clip_value) is None
    torch.nn.utils.clip_grad_value_(t_params, clip_value)
    _compare_grads(s_params, t_params, dtype)
    for p in s_params:
        if p.grad is not None:
            assert np.abs(p.grad.data).max() <= dtype(clip_value)


def test_clip_grad_norm_inside_training_with_optimizer():
    """Clip between backward and step: same trajectory as torch."""
    from shendu import optim
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    w = rng.standard_normal((1, 3))
    sp = nn.Parameter(shendu.tensor(w, dtype=np.float64))
    tp = torch.nn.Parameter(torch.from_numpy(w.copy()))
    so, to = optim.SGD([sp], lr=0.1, momentum=0.9), torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    for _ in range(30):
        so.zero_grad()
        to.zero_grad()
        ((shendu.tensor(x, dtype=np.float64) @ sp.T - shendu.tensor(y, dtype=np.float64)) ** 2
         ).sum().backward()
        ((torch.from_numpy(x) @ tp.T - torch.from_numpy(y)) ** 2).sum().backward()
        ns = clip_grad_norm_([sp], 0.5)
        nt = torch.nn.utils.clip_grad_norm_([tp], 0.5)
        np.testing.assert_allclose(ns.data, nt.numpy(), rtol=1e-10)
        so.step()
        to.step()
        np.testing.assert_allclose(sp.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)
