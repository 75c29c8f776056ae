"""Scaled dot-product and additive attention: float64 gradcheck and torch parity of outputs,
attention weights and every gradient, for every kind of mask."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import check_gradcheck, check_op, make_inputs

import shendu
import shendu.functional as F


def _torch_weights(q, k, mask=None, is_causal=False, scale=None):
    """Reference attention weights: softmax of the masked scores (safe: dead rows -> 0)."""
    sc = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * sc
    L, S = s.shape[-2:]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    p = torch.softmax(s, -1)
    return torch.nan_to_num(p, nan=0.0)


# ------------------------------------------------------------------ scaled dot-product
@pytest.mark.parametrize("shapes", [
    [(5, 3), (4, 3), (4, 2)],                     # no batch
    [(2, 5, 3), (2, 4, 3), (2, 4, 6)],            # Ev != E
    [(2, 3, 4, 3), (2, 3, 6, 3), (2, 3, 6, 3)],   # (N, H, L, E)
])
def test_sdpa_plain(shapes):
    check_op(F.scaled_dot_product_attention, shapes,
             torch_fn=TF.scaled_dot_product_attention)


def test_sdpa_broadcast_leading_dims():
    # key/value shared over heads: (2, 1, S, E) against queries (2, 3, L, E)
    shapes = [(2, 3, 4, 3), (2, 1, 5, 3), (2, 1, 5, 2)]
    check_op(F.scaled_dot_product_attention, shapes,
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(
                 q, k.expand(2, 3, 5, 3), v.expand(2, 3, 5, 2)))


def test_sdpa_scale():
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.37),
             [(2, 4, 3), (2, 5, 3), (2, 5, 3)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, scale=0.37))


@pytest.mark.parametrize("mshape", [(4, 5), (2, 1, 4, 5), (2, 3, 1, 5)])
def test_sdpa_bool_mask(mshape):
    rng = np.random.default_rng(3)
    m = rng.random(mshape) > 0.3
    m[..., 0] = True  # every row keeps at least one key here
    tm = torch.tensor(m)
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
             [(2, 3, 4, 3), (2, 3, 5, 3), (2, 3, 5, 2)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=tm))


def test_sdpa_float_mask_constant():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(4, 5))
    m[1, 2] = -np.inf
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
             [(2, 4, 3), (2, 5, 3), (2, 5, 2)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(
                 q, k, v, attn_mask=torch.tensor(m, dtype=q.dtype)))


def test_sdpa_float_mask_gets_gradient():
    # a learned additive bias (relative positions, ALiBi-like): its gradient is dS
    check_op(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b),
             [(2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 2), (2, 1, 4, 5)],
             torch_fn=lambda q, k, v, b: TF.scaled_dot_product_attention(q, k, v, attn_mask=b))


@pytest.mark.parametrize("L,S", [(5, 5), (4, 6), (6, 4)])
def test_sdpa_causal(L, S):
    # (6, 4): query rows beyond... all have key 0, so none is fully masked
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
             [(2, L, 3), (2, S, 3), (2, S, 2)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_sdpa_causal_matches_explicit_mask():
    q, k, v = (shendu.tensor(a) for a in make_inputs([(2, 5, 3)] * 3, np.float32))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=np.tril(np.ones((5, 5), bool)))
    np.testing.assert_array_equal(a.data, b.data)


def test_sdpa_key_padding_mask():
    # key padding as a (N, 1, 1, S) keep-mask: batch row 1 has only 3 real keys
    kpm = np.ones((2, 1, 1, 5), bool)
    kpm[1, ..., 3:] = False
    tk = torch.tensor(kpm)
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=kpm),
             [(2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 3)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=tk))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_are_zero_not_nan(kind):
    m = np.ones((2, 4, 5), bool)
    m[0, 1] = False          # one query row sees no key at all
    m[1, :, :] = False       # a whole batch row is padding
    m[1, 2, 0] = True
    mask = m if kind == "bool" else np.where(m, 0.0, -np.inf)
    tmask = torch.tensor(mask)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    tfn = lambda q, k, v: TF.scaled_dot_product_attention(  # noqa: E731
        q, k, v, attn_mask=tmask if kind == "bool" else tmask.to(q.dtype))
    check_op(fn, [(2, 4, 3), (2, 5, 3), (2, 5, 2)], torch_fn=tfn)
    arrs = make_inputs([(2, 4, 3), (2, 5, 3), (2, 5, 2)], np.float32)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
    out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, need_weights=True)
    assert np.isfinite(out.data).all() and np.isfinite(w.data).all()
    np.testing.assert_array_equal(out.data[0, 1], 0)
    np.testing.assert_array_equal(w.data[1, 0], 0)
    (out.sum() + w.sum()).backward()
    np.testing.assert_array_equal(q.grad.data[0, 1], 0)
    np.testing.assert_array_equal(q.grad.data[1, [0, 1, 3]], 0)
    assert all(np.isfinite(t.grad.data).all() for t in (q, k, v))


@pytest.mark.parametrize("mask", [None, "bool", "causal"])
def test_sdpa_weights_output(mask):
    rng = np.random.default_rng(5)
    m = rng.random((4, 5)) > 0.4
    m[:, 1] = True
    tm = torch.tensor(m)

    def fn(q, k, v):
        kw = dict(attn_mask=m) if mask == "bool" else dict(is_causal=mask == "causal")
        return F.scaled_dot_product_attention(q, k, v, need_weights=True, **kw)

    def tfn(q, k, v):
        kw = dict(mask=tm) if mask == "bool" else dict(is_causal=mask == "causal")
        p = _torch_weights(q, k, **kw)
        return p @ v, p

    check_op(fn, [(2, 4, 3), (2, 5, 3), (2, 5, 2)], torch_fn=tfn)


def test_sdpa_dropout_gradcheck_and_rows():
    # same seed, same dropout mask: reseeding inside makes the op a fixed function
    def fn(q, k, v):
        shendu.manual_seed(7)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, need_weights=True)

    arrays = make_inputs([(2, 4, 3), (2, 6, 3), (2, 6, 2)])
    check_gradcheck(fn, arrays)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrays)
    out, w = fn(q, k, v)
    out2, w2 = fn(q, k, v)
    np.testing.assert_array_equal(out.data, out2.data)
    _, p = F.scaled_dot_product_attention(q, k, v, need_weights=True)
    kept = w.data != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(w.data[kept], p.data[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(out.data, w.data @ v.data, rtol=1e-6)


def test_sdpa_float32_stays_float32():
    arrs = make_inputs([(2, 4, 3)] * 3, np.float32)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
    out, w = F.scaled_dot_product_attention(q, k, v, need_weights=True, dropout_p=0.1)
    assert out.dtype == np.float32 and w.dtype == np.float32
    out.sum().backward()
    assert q.grad.dtype == np.float32


def test_sdpa_errors():
    q = shendu.randn(2, 4, 3)
    k = shendu.randn(2, 5, 3)
    v = shendu.randn(2, 5, 2)
    with pytest.raises(ValueError, match=r"query \(\.\.\., L, E\) and key .* \(2, 4, 3\)"):
        F.scaled_dot_product_attention(q, shendu.randn(2, 5, 4), v)
    with pytest.raises(ValueError, match="must share S"):
        F.scaled_dot_product_attention(q, k, shendu.randn(2, 6, 2))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 5\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), bool))
    with pytest.raises(TypeError, match="boolean"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 5), np.int64))
    with pytest.raises(ValueError, match="leading dims"):
        F.scaled_dot_product_attention(q, shendu.randn(3, 5, 3), shendu.randn(3, 5, 2))


# ---------------------------------------------------------------------------- additive
def _torch_additive(qp, kp, w, vals, mask=None):
    single = qp.dim() == kp.dim() - 1
    if single:
        qp = qp.unsqueeze(-2)
    e = torch.tanh(qp.unsqueeze(-2) + kp.unsqueeze(-3)) @ w
    if mask is not None:
        m = mask.unsqueeze(-2) if single else mask
        e = e.masked_fill(~m, float("-inf"))
    p = torch.nan_to_num(torch.softmax(e, -1), nan=0.0)
    out = p @ vals
    if single:
        return out.squeeze(-2), p.squeeze(-2)
    return out, p


@pytest.mark.parametrize("qshape", [(3, 4), (3, 2, 4)])
def test_additive_attention(qshape):
    check_op(F.additive_attention, [qshape, (3, 5, 4), (4,), (3, 5, 2)],
             torch_fn=_torch_additive)


def test_additive_attention_mask_and_dead_row():
    m = np.ones((3, 5), bool)
    m[0, 3:] = False
    m[2] = False               # batch row 2 has no key at all: zero context, zero grad
    tm = torch.tensor(m)
    check_op(lambda a, b, c, d: F.additive_attention(a, b, c, d, mask=m),
             [(3, 4), (3, 5, 4), (4,), (3, 5, 2)],
             torch_fn=lambda a, b, c, d: _torch_additive(a, b, c, d, tm))
