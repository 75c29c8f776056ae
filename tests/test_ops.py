"""Every differentiable op through ``check_op``: a float64 central-difference gradcheck and
torch parity (values, dtype and gradients) in float32 and float64.

Also: values at ±1000 for the ops that must be stable there, torch's tie-breaking rules
for max/min/maximum/minimum/amax/amin, dtype preservation with Python scalars, and
dropout's same-seed determinism.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import check_op, compare_with_torch

import shendu
import shendu.functional as F

T = torch

# (id, fn, input shapes, torch_fn or None when fn works on torch tensors as well, options)
ELEMENTWISE = [
    ("add", lambda a, b: a + b, [(3, 1, 4), (5, 4)], None, {}),
    ("add_scalar", lambda a: 2.5 + a + 1, [(3, 4)], None, {}),
    ("sub", lambda a, b: a - b, [(2, 3), (3,)], None, {}),
    ("rsub", lambda a: 1.5 - a, [(4,)], None, {}),
    ("mul", lambda a, b: a * b, [(4, 1), (1, 5)], None, {}),
    ("mul_same", lambda a: a * a, [(6,)], None, {}),
    ("div", lambda a, b: a / b, [(2, 3), (2, 1)], None, dict(positive=True)),
    ("rdiv", lambda a: 2.0 / a, [(5,)], None, dict(positive=True)),
    ("neg", lambda a: -a, [(2, 3)], None, {}),
    ("pow_scalar3", lambda a: a ** 3, [(2, 3)], None, {}),
    ("pow_scalar_frac", lambda a: a ** 2.5, [(5,)], None, dict(positive=True)),
    ("pow_scalar_neg", lambda a: a ** -1.5, [(5,)], None, dict(positive=True)),
    ("pow_scalar_0", lambda a: a ** 0, [(5,)], None, {}),
    ("pow_scalar_1", lambda a: a ** 1, [(5,)], None, {}),
    ("pow_tensor", lambda a, b: a ** b, [(3, 4), (4,)], None, dict(positive=True)),
    ("rpow", lambda a: 2.0 ** a, [(5,)], None, {}),
    ("square", lambda a: F.square(a), [(5,)], T.square, {}),
    ("exp", lambda a: a.exp(), [(2, 3)], None, {}),
    ("log", lambda a: a.log(), [(2, 3)], None, dict(positive=True)),
    ("log1p", lambda a: F.log1p(a), [(2, 3)], T.log1p, dict(positive=True)),
    ("sqrt", lambda a: a.sqrt(), [(2, 3)], None, dict(positive=True)),
    ("abs", lambda a: a.abs(), [(2, 3)], None, {}),
    ("sin", lambda a: F.sin(a), [(4,)], T.sin, {}),
    ("cos", lambda a: F.cos(a), [(4,)], T.cos, {}),
    ("clamp", lambda a: a.clamp(-0.5, 0.7), [(3, 4)], None, {}),
    ("clamp_min", lambda a: a.clamp(min=0.2), [(3, 4)], None, {}),
    ("clamp_max", lambda a: F.clip(a, max=0.2), [(3, 4)], lambda a: a.clamp(max=0.2), {}),
    ("clamp_tensor", lambda a, lo, hi: F.clamp(a, lo, hi), [(3, 4), (4,), (3, 1)],
     T.clamp, {}),
    ("clamp_tensor_min", lambda a, lo: F.clamp(a, min=lo), [(3, 4), (4,)],
     lambda a, lo: T.clamp(a, min=lo), {}),
    ("maximum", lambda a, b: F.maximum(a, b), [(3, 1), (4,)], T.maximum, {}),
    ("minimum", lambda a, b: F.minimum(a, b), [(2, 3, 1), (3, 4)], T.minimum, {}),
    ("maximum_scalar", lambda a: F.maximum(a, 0.3), [(5,)],
     lambda a: T.maximum(a, T.tensor(0.3, dtype=a.dtype)), {}),
    ("max_two_tensors", lambda a, b: F.max(a, b), [(3,), (3,)], T.max, {}),
    ("where", lambda a, b: F.where(np.array([[True], [False]]), a, b), [(2, 3), (3,)],
     lambda a, b: T.where(T.tensor([[True], [False]]), a, b), {}),
    ("masked_fill", lambda a: a.masked_fill(np.array([True, False, True]), -1.5), [(2, 3)],
     lambda a: a.masked_fill(T.tensor([True, False, True]), -1.5), {}),
    ("clone", lambda a: a.clone() * 2, [(3,)], None, {}),
    ("cast", lambda a: a.double() * 2, [(3,)], None, {}),
    ("sign", lambda a: F.sign(a) + a, [(4,)], lambda a: T.sign(a) + a, {}),
]

MATMUL = [
    ("2d_2d", [(3, 4), (4, 5)]),
    ("batched", [(2, 1, 3, 4), (5, 4, 2)]),
    ("batched_2d", [(2, 3, 4), (4, 2)]),
    ("2d_batched", [(3, 4), (2, 4, 2)]),
    ("1d_1d", [(4,), (4,)]),
    ("1d_2d", [(4,), (4, 3)]),
    ("2d_1d", [(3, 4), (4,)]),
    ("3d_1d", [(2, 3, 4), (4,)]),
    ("1d_3d", [(4,), (2, 4, 3)]),
]

ACTIVATIONS = [
    ("tanh", F.tanh, T.tanh, {}),
    ("sigmoid", F.sigmoid, T.sigmoid, {}),
    ("relu", F.relu, T.relu, {}),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1), {}),
    ("gelu", F.gelu, TF.gelu, {}),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda x: TF.gelu(x, approximate="tanh"), {}),
    ("gelu_wide", F.gelu, TF.gelu, dict(low=-9.0, high=9.0)),
    ("softplus", F.softplus, TF.softplus, {}),
    ("softplus_beta", lambda x: F.softplus(x, beta=3.0, threshold=4.0),
     lambda x: TF.softplus(x, beta=3.0, threshold=4.0), dict(low=-3.0, high=3.0)),
    ("elu", lambda x: F.elu(x, 0.7), lambda x: TF.elu(x, 0.7), {}),
    ("silu", F.silu, TF.silu, {}),
    ("softmax_last", lambda x: F.softmax(x, -1), lambda x: T.softmax(x, -1), {}),
    ("softmax_dim0", lambda x: F.softmax(x, 0), lambda x: T.softmax(x, 0), {}),
    ("log_softmax", lambda x: F.log_softmax(x, 1), lambda x: T.log_softmax(x, 1), {}),
    ("log_softmax_dim0", lambda x: x.log_softmax(0), lambda x: x.log_softmax(0), {}),
]

REDUCTIONS = [
    ("sum_all", lambda x: x.sum(), None),
    ("sum_dim", lambda x: x.sum(1), None),
    ("sum_dims_keep", lambda x: x.sum((0, 2), keepdim=True), None),
    ("sum_neg_dim", lambda x: F.sum(x, -1), lambda x: x.sum(-1)),
    ("sum_axis_np", lambda x: F.sum(x, axis=(0, 1), keepdims=True),
     lambda x: x.sum((0, 1), keepdim=True)),
    ("mean_all", lambda x: x.mean(), None),
    ("mean_dim", lambda x: x.mean(2, keepdim=True), None),
    ("mean_axis_np", lambda x: x.mean(axis=1), lambda x: x.mean(1)),
    ("var_all", lambda x: x.var(), None),
    ("var_dim", lambda x: x.var(1), None),
    ("var_biased", lambda x: x.var((0, 2), keepdim=True, unbiased=False),
     lambda x: x.var((0, 2), keepdim=True, unbiased=False)),
    ("var_correction2", lambda x: x.var(2, correction=2), None),
    ("std_all", lambda x: x.std(), None),
    ("std_dim", lambda x: x.std(0, keepdim=True), None),
    ("std_biased", lambda x: x.std(1, correction=0), None),
    ("max_all", lambda x: x.max(), None),
    ("min_all", lambda x: x.min(), None),
    ("max_dim", lambda x: x.max(1), None),
    ("max_dim_keep", lambda x: x.max(dim=-1, keepdim=True), None),
    ("min_dim", lambda x: x.min(0), None),
    ("amax", lambda x: x.amax((0, 2)), None),
    ("amin_keep", lambda x: x.amin(1, keepdim=True), None),
    ("logsumexp_all", lambda x: F.logsumexp(x), lambda x: T.logsumexp(x, (0, 1, 2))),
    ("logsumexp_dim", lambda x: x.logsumexp(1), None),
    ("logsumexp_keep", lambda x: x.logsumexp((0, 2), keepdim=True), None),
    ("prod_all", lambda x: x.prod(), lambda x: x.prod()),
    ("prod_dim", lambda x: x.prod(1), None),
    ("prod_keep", lambda x: F.prod(x, 2, keepdim=True), lambda x: x.prod(2, keepdim=True)),
    ("norm2", lambda x: F.norm(x), lambda x: T.linalg.vector_norm(x)),
    ("norm2_dim", lambda x: x.norm(dim=1), lambda x: T.linalg.vector_norm(x, dim=1)),
    ("norm1", lambda x: x.norm(1, dim=(0, 2), keepdim=True),
     lambda x: T.linalg.vector_norm(x, 1, dim=(0, 2), keepdim=True)),
    ("norm3", lambda x: x.norm(3), lambda x: T.linalg.vector_norm(x, 3)),
    ("norm_inf", lambda x: x.norm(float("inf"), dim=2),
     lambda x: T.linalg.vector_norm(x, float("inf"), dim=2)),
]

SHAPE = [
    ("reshape", lambda x: x.reshape(4, -1), [(2, 3, 2)], None),
    ("reshape_tuple", lambda x: F.reshape(x, (3, 4)), [(2, 3, 2)], lambda x: x.reshape(3, 4)),
    ("view", lambda x: x.view(-1), [(2, 3, 2)], None),
    ("flatten", lambda x: x.flatten(1), [(2, 3, 2)], None),
    ("flatten_mid", lambda x: x.flatten(0, 1), [(2, 3, 2)], None),
    ("transpose", lambda x: x.transpose(0, 2), [(2, 3, 4)], None),
    ("permute", lambda x: x.permute(2, 0, 1), [(2, 3, 4)], None),
    ("T", lambda x: x.T, [(2, 3)], None),
    ("mT", lambda x: x.mT, [(2, 3, 4)], None),
    ("expand", lambda x: x.expand(2, 3, 4), [(3, 1)], None),
    ("expand_minus1", lambda x: x.expand(5, -1), [(1, 4)], None),
    ("squeeze", lambda x: x.squeeze(), [(1, 3, 1)], None),
    ("squeeze_dim", lambda x: x.squeeze(2), [(1, 3, 1)], None),
    ("unsqueeze", lambda x: x.unsqueeze(1), [(2, 3)], None),
    ("unsqueeze_neg", lambda x: x.unsqueeze(-1), [(2, 3)], None),
    ("cat", lambda a, b: F.cat([a, b], 1), [(2, 3), (2, 2)], lambda a, b: T.cat([a, b], 1)),
    ("concat_neg", lambda a, b: F.concat([a, b], -1), [(2, 3), (2, 1)],
     lambda a, b: T.cat([a, b], -1)),
    ("stack", lambda a, b: F.stack([a, b], 1), [(2, 3), (2, 3)],
     lambda a, b: T.stack([a, b], 1)),
    ("split", lambda x: x.split(2, 1), [(2, 5)], None),
    ("split_sizes", lambda x: x.split([1, 3, 1], 1), [(2, 5)], None),
    ("split_partial", lambda x: x.split([1, 3, 1], 1)[1] * 2, [(2, 5)], None),
    ("chunk", lambda x: x.chunk(3, 0), [(7, 2)], None),
    ("getitem_basic", lambda x: x[1:, ::2, None, 0], [(3, 5, 2)], None),
    ("getitem_ellipsis", lambda x: x[..., -1], [(3, 5, 2)], None),
    ("getitem_int_repeat", lambda x: F.getitem(x, np.array([0, 2, 0, 0])),
     [(3, 4)], lambda x: x[T.tensor([0, 2, 0, 0])]),
    ("getitem_list", lambda x: x[[1, 1, 0]], [(3, 4)], None),
    ("getitem_2d_index", lambda x: x[np.array([[0, 1], [1, 1]]), np.array([[2, 2], [0, 2]])],
     [(3, 4)], lambda x: x[T.tensor([[0, 1], [1, 1]]), T.tensor([[2, 2], [0, 2]])]),
    ("getitem_mixed", lambda x: x[:, np.array([2, 0, 2])], [(3, 4)],
     lambda x: x[:, T.tensor([2, 0, 2])]),
    ("getitem_bool", lambda x: x[np.array([True, False, True])], [(3, 4)],
     lambda x: x[T.tensor([True, False, True])]),
    ("getitem_bool_full", lambda x: x[np.arange(12).reshape(3, 4) % 3 == 0], [(3, 4)],
     lambda x: x[T.arange(12).reshape(3, 4) % 3 == 0]),
    ("pad", lambda x: F.pad(x, (1, 2)), [(2, 3)], lambda x: TF.pad(x, (1, 2))),
    ("pad_2d_value", lambda x: F.pad(x, (1, 0, 2, 1), value=-1.5), [(2, 3, 3)],
     lambda x: TF.pad(x, (1, 0, 2, 1), value=-1.5)),
    ("pad_crop", lambda x: F.pad(x, (-1, 2, 0, -1)), [(3, 4)],
     lambda x: TF.pad(x, (-1, 2, 0, -1))),
    ("gather", lambda x: F.gather(x, 1, np.array([[0, 0, 2], [1, 0, 1]])), [(2, 3)],
     lambda x: T.gather(x, 1, T.tensor([[0, 0, 2], [1, 0, 1]]))),
    ("gather_dim0", lambda x: x.gather(0, np.array([[1, 1, 0]])), [(2, 3)],
     lambda x: x.gather(0, T.tensor([[1, 1, 0]]))),
    ("repeat", lambda x: x.repeat(2, 1, 3), [(2, 3)], None),
    ("index_select", lambda x: F.index_select(x, 1, np.array([2, 2, 0])), [(2, 3)],
     lambda x: T.index_select(x, 1, T.tensor([2, 2, 0]))),
    ("movedim", lambda x: F.movedim(x, 0, 2), [(2, 3, 4)], lambda x: T.movedim(x, 0, 2)),
]


@pytest.mark.parametrize("name,fn,shapes,torch_fn,kw", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise(name, fn, shapes, torch_fn, kw):
    check_op(fn, shapes, torch_fn, **kw)


@pytest.mark.parametrize("name,shapes", MATMUL, ids=[c[0] for c in MATMUL])
def test_matmul(name, shapes):
    check_op(lambda a, b: a @ b, shapes)
    check_op(F.matmul, shapes, T.matmul)


@pytest.mark.parametrize("name,fn,torch_fn,kw", ACTIVATIONS, ids=[c[0] for c in ACTIVATIONS])
def test_activation(name, fn, torch_fn, kw):
    check_op(fn, [(3, 5)], torch_fn, **kw)


@pytest.mark.parametrize("name,fn,torch_fn", REDUCTIONS, ids=[c[0] for c in REDUCTIONS])
def test_reduction(name, fn, torch_fn):
    check_op(fn, [(2, 3, 4)], torch_fn)


@pytest.mark.parametrize("name,fn,shapes,torch_fn", SHAPE, ids=[c[0] for c in SHAPE])
def test_shape_op(name, fn, shapes, torch_fn):
    check_op(fn, shapes, torch_fn)


def test_prod_with_zeros():
    # one zero in a row and two zeros in a row: the "product of the others" path
    x = np.array([[1.5, 0.0, -2.0, 3.0], [0.0, 2.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    for fn in (lambda t: t.prod(1), lambda t: t.prod(0), lambda t: t.prod()):
        compare_with_torch(fn, [x], dtype=np.float64)
        compare_with_torch(fn, [x], dtype=np.float32)


def test_linear_and_cross_entropy():
    check_op(F.linear, [(4, 3, 5), (6, 5), (6,)], torch_fn=TF.linear)
    y = np.array([0, 2, 1, -100, 2])
    w = np.array([0.3, 1.0, 2.0])
    check_op(lambda x: F.cross_entropy(x, y, weight=w, label_smoothing=0.1), [(5, 3)],
             torch_fn=lambda x: TF.cross_entropy(x, T.tensor(y), weight=T.tensor(w, dtype=x.dtype),
                                                 label_smoothing=0.1))


def test_dropout_gradient_is_the_mask():
    def f(x):
        shendu.manual_seed(3)  # the same mask at every call, so gradcheck sees a fixed function
        return F.dropout(x, 0.4)

    from helpers import check_gradcheck

    check_gradcheck(f, [np.random.default_rng(0).normal(size=(4, 5))])
    x = shendu.ones(200, 50, requires_grad=True)
    y = f(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, y.data)  # d(sum)/dx = mask / (1 - p) = y
    kept = (y.data != 0).mean()
    assert abs(kept - 0.6) < 0.02
    np.testing.assert_allclose(np.unique(y.data), [0.0, 1 / 0.6], rtol=1e-6)
    assert y.dtype == np.float32


def test_dropout_same_seed_same_mask():
    x = shendu.randn(64, 32)
    shendu.manual_seed(7)
    a = F.dropout(x, 0.3).data.copy()
    b = F.dropout(x, 0.3).data.copy()
    shendu.manual_seed(7)
    c = F.dropout(x, 0.3).data
    assert np.array_equal(a, c)
    assert not np.array_equal(a, b)
    x64 = shendu.randn(8, 8, dtype="float64")
    shendu.manual_seed(1)
    d = F.dropout(x64, 0.5).data
    shendu.manual_seed(1)
    assert np.array_equal(d, F.dropout(x64, 0.5).data) and d.dtype == np.float64


def test_dropout_identity_cases():
    x = shendu.randn(3, 4, requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    z = F.dropout(x, 1.0)
    assert not np.any(z.data)


# ----------------------------------------------------------------- extreme values
EXTREME = np.array([-1000.0, -200.0, -30.0, -1.0, 0.0, 1.0, 30.0, 200.0, 1000.0])

STABLE = [
    ("sigmoid", F.sigmoid, T.sigmoid),
    ("tanh", F.tanh, T.tanh),
    ("softplus", F.softplus, TF.softplus),
    ("softplus_beta", lambda x: F.softplus(x, beta=0.5), lambda x: TF.softplus(x, beta=0.5)),
    ("silu", F.silu, TF.silu),
    ("elu", F.elu, TF.elu),
    ("gelu", F.gelu, TF.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda x: TF.gelu(x, approximate="tanh")),
    ("softmax", lambda x: F.softmax(x, 0), lambda x: T.softmax(x, 0)),
    ("log_softmax", lambda x: F.log_softmax(x, 0), lambda x: T.log_softmax(x, 0)),
    ("logsumexp", lambda x: F.logsumexp(x, 0), lambda x: T.logsumexp(x, 0)),
]


@pytest.mark.parametrize("name,fn,torch_fn", STABLE, ids=[c[0] for c in STABLE])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_values_are_finite_and_match_torch(name, fn, torch_fn, dtype):
    x = shendu.tensor(EXTREME, dtype=dtype, requires_grad=True)
    y = fn(x)
    assert np.all(np.isfinite(y.data)), y
    y.backward(np.linspace(-1, 1, y.data.size).reshape(y.shape))
    assert np.all(np.isfinite(x.grad.data)), x.grad
    compare_with_torch(fn, [EXTREME], torch_fn, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_rows_at_plus_minus_1000(dtype):
    x = np.array([[1000.0, 1000.0, -1000.0], [-1000.0, -1000.0, -999.0]])
    for fn in (lambda t: t.logsumexp(1), lambda t: t.log_softmax(1), lambda t: t.softmax(1)):
        compare_with_torch(fn, [x], dtype=dtype)


def test_sigmoid_saturates_exactly():
    y = F.sigmoid(shendu.tensor([-1000.0, 1000.0], dtype="float64"))
    assert y.data[0] == 0.0 and y.data[1] == 1.0


# ----------------------------------------------------------------- tie-breaking
TIES = np.array([[1.0, 3.0, 3.0, -2.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -5.0, 0.5, -5.0]])
TIE_CASES = [
    ("max_all", lambda x: x.max()),
    ("min_all", lambda x: x.min()),
    ("max_dim", lambda x: x.max(1)),
    ("min_dim", lambda x: x.min(1)),
    ("max_dim0", lambda x: x.max(0)),
    ("amax_dim", lambda x: x.amax(1)),
    ("amin_dims", lambda x: x.amin((0, 1))),
    ("amax_keep", lambda x: x.amax(0, keepdim=True)),
    ("argmax", lambda x: (x.argmax(1), x.argmin(1), x.argmax(), x * 1)),
]


@pytest.mark.parametrize("name,fn", TIE_CASES, ids=[c[0] for c in TIE_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_match_torch(name, fn, dtype):
    compare_with_torch(fn, [TIES], dtype=dtype)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_ties_split_half(op):
    a = np.array([1.0, 2.0, 3.0, 2.0])
    b = np.array([1.0, 1.0, 3.0, 5.0])
    f = getattr(F, op)
    compare_with_torch(lambda x, y: f(x, y), [a, b], getattr(T, op), dtype=np.float64)
    compare_with_torch(lambda x, y: f(x, y), [a, b], getattr(T, op), dtype=np.float32)
    # and broadcast: one scalar-like tensor against a vector with a tie
    compare_with_torch(lambda x, y: f(x, y), [a, np.array([2.0])], getattr(T, op),
                       dtype=np.float64)


def test_clamp_and_relu_and_abs_at_the_kinks():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    compare_with_torch(lambda t: t.clamp(0.0, 1.0), [x], dtype=np.float64)
    compare_with_torch(lambda t: t.clamp(min=0.5), [x], dtype=np.float64)
    compare_with_torch(lambda t: t.abs(), [x], dtype=np.float64)
    compare_with_torch(F.relu, [x], T.relu, dtype=np.float64)
    compare_with_torch(lambda t: F.leaky_relu(t, 0.2), [x], lambda t: TF.leaky_relu(t, 0.2),
                       dtype=np.float64)
    compare_with_torch(F.elu, [x], TF.elu, dtype=np.float64)
    compare_with_torch(lambda t: t.clamp(1.5, 0.5), [x], dtype=np.float64)  # min > max
    lo, hi = np.array([0.0, 0.0, 0.0, 1.0, 3.0]), np.array([1.0, 0.0, 0.5, 0.5, 2.0])
    compare_with_torch(lambda t, a, b: F.clamp(t, a, b), [x, lo, hi], T.clamp,
                       dtype=np.float64)
    compare_with_torch(lambda t: t ** 0.5 + t ** 2, [np.array([0.0, 1.0])], dtype=np.float64)
    compare_with_torch(lambda t, e: t ** e, [np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 0.0])],
                       dtype=np.float64)


def test_std_and_norm_at_zero_match_torch():
    z = np.zeros((2, 3))
    compare_with_torch(lambda t: t.std(1), [z], dtype=np.float64)
    compare_with_torch(lambda t: t.std(), [np.full((3,), 2.0)], dtype=np.float64)
    compare_with_torch(lambda t: F.norm(t, dim=1), [z], lambda t: T.linalg.vector_norm(t, dim=1),
                       dtype=np.float64)


def test_var_of_one_element_is_nan_like_torch():
    x = shendu.tensor([1.5], requires_grad=True)
    v = x.var()
    v.backward()
    assert np.isnan(v.item()) and np.isnan(x.grad.data).all()
    tx = T.tensor([1.5], requires_grad=True)
    tx.var().backward()
    assert T.isnan(tx.grad).all()


# ----------------------------------------------------------------- dtypes
SCALAR_CASES = [
    lambda x: x * 2.0, lambda x: 2.0 * x, lambda x: x + 1, lambda x: 1.5 - x,
    lambda x: x / 3, lambda x: 3 / (x * x + 1), lambda x: x ** 2.0, lambda x: 2 ** x,
    lambda x: x * np.float64(0.5), lambda x: F.maximum(x, 0.5), lambda x: x.clamp(0.1, 0.9),
    lambda x: F.where(np.array([True, False, True]), x, 0.0), lambda x: x.masked_fill(
        np.array([True, False, False]), 7.0), lambda x: F.pad(x, (1, 1), value=2.0),
    lambda x: F.softplus(x, beta=2.0), lambda x: F.leaky_relu(x, 0.3), lambda x: x.var(),
    lambda x: F.cat([x, x], 0), lambda x: F.stack([x, x]),
]


@pytest.mark.parametrize("i", range(len(SCALAR_CASES)))
def test_python_scalars_do_not_upcast(i):
    fn = SCALAR_CASES[i]
    x = shendu.tensor([0.5, 1.0, 2.0], requires_grad=True)
    y = fn(x)
    assert y.dtype == np.float32, y.dtype
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_float64_stays_float64_and_int_promotion_like_torch():
    x = shendu.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    assert (x * 2.0).dtype == np.float64 and (x * np.float32(2)).dtype == np.float64
    i = shendu.tensor([1, 2])
    assert i.dtype == np.int64
    for s_out, t_out in [(i * 0.5, T.tensor([1, 2]) * 0.5), (i / 2, T.tensor([1, 2]) / 2),
                         (i + shendu.tensor([0.5, 1.0]), T.tensor([1, 2]) + T.tensor([0.5, 1.0])),
                         (i + 1, T.tensor([1, 2]) + 1),
                         (i * x, T.tensor([1, 2]) * T.tensor([1.0, 2.0], dtype=T.float64))]:
        assert s_out.dtype == t_out.numpy().dtype, (s_out.dtype, t_out.dtype)
        np.testing.assert_allclose(s_out.data, t_out.numpy())
    (i * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 2.0])


def test_mixed_precision_grads_take_each_inputs_dtype():
    a = shendu.tensor([1.0, 2.0], requires_grad=True)
    b = shendu.tensor([3.0, 4.0], dtype="float64", requires_grad=True)
    y = a * b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


# ----------------------------------------------------------------- edge shapes
def test_zero_dim_and_empty_dim_reductions_follow_torch():
    s, t = shendu.tensor(5.0, dtype="float64"), torch.tensor(5.0, dtype=torch.float64)
    for f in (lambda x: x.sum(0), lambda x: x.sum(-1), lambda x: x.mean(0),
              lambda x: x.max(0).values, lambda x: x.softmax(0), lambda x: x.logsumexp(0)):
        np.testing.assert_allclose(f(s).data, f(t).numpy())
    x = np.arange(6.0).reshape(2, 3)
    # torch: an empty dim list means every dim; NumPy: an empty axis tuple means none
    compare_with_torch(lambda a: a.sum(dim=()), [x], dtype=np.float64)
    y = F.sum(shendu.tensor(x), axis=())
    np.testing.assert_array_equal(y.data, np.sum(x, axis=()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_and_mean_over_one_axis_as_numpy(monkeypatch, dtype):
    """``sum`` and ``mean`` over one axis (a middle one runs as an einsum, see
    ``reduction._sum``) give NumPy's ``sum``/``mean`` bit for bit: every axis, with and
    without keepdim, -0, NaN and infinities, short and long trailing blocks, float16 and a
    non-contiguous input on NumPy's own path."""
    rng = np.random.default_rng(12)
    shapes = [(32, 64, 128), (5, 3, 17), (7, 16), (2, 9, 1, 16), (3, 1, 20), (40, 2), (4,),
              (37, 1), (10, 9, 1)]
    for k, shape in enumerate(shapes):
        a = (rng.standard_normal(shape) * 10.0 ** (k - 3)).astype(dtype)
        flat = a.reshape(-1)
        flat[::5] = -0.0
        flat[3] = np.inf if k % 2 else np.nan
        for x in (a, a.swapaxes(0, -1)):
            t = shendu.tensor(x)
            for ax in range(-x.ndim, x.ndim):
                for kd in (False, True):
                    for got, want in ((t.sum(ax, keepdim=kd).data, x.sum(ax, keepdims=kd)),
                                      (t.mean(ax, keepdim=kd).data, x.mean(ax, keepdims=kd))):
                        want = np.asarray(want)
                        assert got.shape == want.shape and got.dtype == want.dtype
                        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8),
                                                      want.reshape(-1).view(np.uint8))
    calls = []
    monkeypatch.setattr(np, "einsum", lambda *a, f=np.einsum: calls.append(a[0]) or f(*a))
    shendu.tensor(np.ones((4, 8, 16), dtype)).mean(1)
    shendu.tensor(np.ones((4, 8, 15), dtype)).mean(1)     # 15 < MIDDLE_MIN_INNER
    assert shendu.tensor(np.ones((4, 8, 16), np.float16)).mean(1).data.dtype == np.float16
    assert calls == ["abc->ac"]


def test_scalar_only_operands():
    out = F.where(np.array([True, False]), 1.0, 2.0)
    assert out.dtype == np.float32 and out.data.tolist() == [1.0, 2.0]
    assert F.maximum(1.0, shendu.tensor([0.5, 2.0])).data.tolist() == [1.0, 2.0]


def test_tensor_from_list_of_tensors():
    t = shendu.tensor([shendu.tensor([1.0, 2.0]), shendu.tensor([3.0, 4.0])])
    assert t.shape == (2, 2) and t.dtype == np.float32
