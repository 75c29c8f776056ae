"""The step-by-step reference LSTM: a second oracle for the fused scan (values and
gradients), and itself checked against torch."""

import numpy as np
import pytest
import torch

import shendu
import shendu.functional as F
from shendu.functional.lstm_reference import lstm_reference


def _args(T, B, I, H, seed, dtype=np.float64, bias=True):
    g = np.random.default_rng(seed)
    arrays = [g.normal(size=(T, B, I)), g.normal(size=(B, H)), g.normal(size=(B, H)),
              g.normal(size=(4 * H, I)) * 0.5, g.normal(size=(4 * H, H)) * 0.5]
    if bias:
        arrays += [g.normal(size=4 * H) * 0.1, g.normal(size=4 * H) * 0.1]
    return [a.astype(dtype) for a in arrays]


def _run(fn, arrays):
    ts = [shendu.tensor(a, requires_grad=True) for a in arrays]
    out, h, c = fn(*ts)
    g = np.random.default_rng(99)
    loss = ((out * shendu.tensor(g.normal(size=out.shape).astype(out.data.dtype))).sum()
            + (h * h).sum() + c.sum())
    loss.backward()
    return [out.data, h.data, c.data], [t.grad.data for t in ts]


@pytest.mark.parametrize("T,B,I,H,bias", [(1, 1, 1, 1, True), (7, 3, 4, 5, True),
                                          (12, 2, 3, 8, False), (30, 4, 2, 3, True)])
def test_fused_lstm_equals_the_reference(T, B, I, H, bias):
    arrays = _args(T, B, I, H, seed=T + H, bias=bias)
    ref_vals, ref_grads = _run(lstm_reference, arrays)
    vals, grads = _run(F.lstm, arrays)
    for a, b in zip(vals + grads, ref_vals + ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_reference_equals_torch():
    T, B, I, H = 9, 3, 4, 6
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _args(T, B, I, H, seed=5)
    m = torch.nn.LSTM(I, H).double()
    with torch.no_grad():
        for name, v in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih),
                        ("bias_hh_l0", b_hh)):
            getattr(m, name).copy_(torch.from_numpy(v))
    out_t, (h_t, c_t) = m(torch.from_numpy(x), (torch.from_numpy(h0)[None],
                                                 torch.from_numpy(c0)[None]))
    out, h, c = lstm_reference(*(shendu.tensor(a) for a in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h.data, h_t[0].detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c.data, c_t[0].detach().numpy(), rtol=1e-12, atol=1e-13)


def test_reference_on_no_steps():
    x, h0, c0, w_ih, w_hh = (shendu.tensor(a) for a in _args(0, 2, 3, 4, 0, bias=False))
    out, h, c = lstm_reference(x, h0, c0, w_ih, w_hh)
    assert out.shape == (0, 2, 4) and h is h0 and c is c0
