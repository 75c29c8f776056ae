"""Property tests: random broadcastable shape pairs for the binary ops and random shapes,
axes and keepdim for the reductions, values and gradients against torch."""

import numpy as np
import pytest
import torch
from helpers import compare_with_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import shendu
import shendu.functional as F

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(SETTINGS, max_examples=80)  # for the tests that sample one op of several

BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, False),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, False),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, False),
    "div": (lambda a, b: a / b, lambda a, b: a / b, True),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, True),
    "maximum": (F.maximum, torch.maximum, False),
    "minimum": (F.minimum, torch.minimum, False),
    "where": (lambda a, b: F.where(a > 0.3, a, b), lambda a, b: torch.where(a > 0.3, a, b),
              False),
}


def _arrays(shapes, seed, positive):
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        a = rng.uniform(-2.0, 2.0, s)
        out.append(np.abs(a) + 0.25 if positive else a)
    return out


pairs = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)


@pytest.mark.slow
@MANY
@given(op=st.sampled_from(sorted(BINARY)), shapes=pairs, seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_torch(op, shapes, seed):
    fn, tfn, positive = BINARY[op]
    arrays = _arrays(shapes.input_shapes, seed, positive)
    compare_with_torch(fn, arrays, tfn, dtype=np.float64)
    compare_with_torch(fn, arrays, tfn, dtype=np.float32)


@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3, max_side=3,
                                            base_shape=()),
       k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_matmul_batch_broadcast_like_torch(shapes, k, seed):
    # batch dims from the strategy, matrix dims appended: (..., m, k) @ (..., k, n)
    sa, sb = shapes.input_shapes
    arrays = _arrays([sa + (2, k), sb + (k, 3)], seed, False)
    compare_with_torch(lambda a, b: a @ b, arrays, dtype=np.float64)
    compare_with_torch(lambda a, b: a @ b, arrays, dtype=np.float32)


REDUCE = {
    "sum": lambda t, d, k: t.sum(d, keepdim=k),
    "mean": lambda t, d, k: t.mean(d, keepdim=k),
    "var": lambda t, d, k: t.var(d, keepdim=k),
    "std": lambda t, d, k: t.std(d, keepdim=k, unbiased=False),
    "amax": lambda t, d, k: t.amax(d, keepdim=k),
    "amin": lambda t, d, k: t.amin(d, keepdim=k),
    "logsumexp": lambda t, d, k: t.logsumexp(d, keepdim=k),
    "prod": None,  # one dim only in torch: handled below
}


@st.composite
def shape_and_dims(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    dims = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                         unique=True))
    neg = draw(st.booleans())
    return shape, tuple(d - len(shape) if neg else d for d in dims)


@MANY
@given(op=st.sampled_from(sorted(REDUCE)), sd=shape_and_dims(), keep=st.booleans(),
       seed=st.integers(0, 2**16))
def test_reductions_over_random_axes_like_torch(op, sd, keep, seed):
    shape, dims = sd
    if op == "var" and np.prod([shape[d] for d in dims]) < 2:
        dims = tuple(range(len(shape)))  # Bessel's correction needs two elements
        if np.prod(shape) < 2:
            return
    if op == "prod":
        d = dims[0]

        def fn(t):
            return t.prod(d, keepdim=keep)
    else:
        def fn(t):
            return REDUCE[op](t, dims, keep)
    arrays = _arrays([shape], seed, False)
    compare_with_torch(fn, arrays, dtype=np.float64)
    compare_with_torch(fn, arrays, dtype=np.float32,
                       tol=dict(rtol=2e-5, atol=2e-5) if op in ("var", "std", "prod") else None)


@SETTINGS
@given(sd=shape_and_dims(), keep=st.booleans(), seed=st.integers(0, 2**16))
def test_numpy_axis_keywords_equal_torch_dim_keywords(sd, keep, seed):
    shape, dims = sd
    x = shendu.tensor(_arrays([shape], seed, False)[0], dtype="float64")
    for name in ("sum", "mean", "amax", "logsumexp"):
        a = getattr(F, name)(x, axis=dims, keepdims=keep)
        b = getattr(F, name)(x, dim=dims, keepdim=keep)
        assert a.shape == b.shape and np.array_equal(a.data, b.data)
