"""The Tensor type: construction and dtypes, memory sharing with NumPy, conversions,
factories, in-place rules, operators."""

import numpy as np
import pytest
import torch

import shendu


def test_default_dtype_is_float32_and_float64_on_request():
    assert shendu.tensor([1.0, 2.0]).dtype == np.float32
    # NumPy data keeps its dtype, as torch.tensor(float64 array) stays float64
    assert shendu.tensor(np.array([1.0, 2.0])).dtype == np.float64
    assert shendu.tensor(np.array([1.0], np.float32)).dtype == np.float32
    assert shendu.tensor([1.0], dtype="float64").dtype == np.float64
    assert shendu.tensor([1.0], dtype=np.float64).dtype == np.float64
    assert shendu.tensor([1.0], dtype=shendu.float64).dtype == np.float64
    assert shendu.tensor([1, 2]).dtype == np.int64
    assert shendu.tensor([True]).dtype == np.bool_
    shendu.set_default_dtype("float64")
    assert shendu.tensor([1.0]).dtype == np.float64
    assert shendu.zeros(2).dtype == np.float64 and shendu.randn(2).dtype == np.float64
    assert shendu.get_default_dtype() == np.float64
    shendu.set_default_dtype(np.float32)
    assert shendu.tensor([1.0]).dtype == np.float32


def test_tensor_copies_and_from_numpy_shares_memory():
    arr = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    t = shendu.tensor(arr)
    arr[0] = 9.0
    assert t.data[0] == 1.0
    f = shendu.from_numpy(arr)
    arr[1] = 7.0
    assert f.data[1] == 7.0 and np.shares_memory(f.data, arr)
    f.data[2] = -1.0
    assert arr[2] == -1.0
    assert shendu.from_numpy(np.zeros(2)).dtype == np.float64  # dtype kept, as torch
    with pytest.raises(TypeError, match="from_numpy: expected np.ndarray, got list"):
        shendu.from_numpy([1.0])


def test_numpy_interop():
    t = shendu.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = np.asarray(t)
    assert a.dtype == np.float32 and np.shares_memory(a, t.data)
    b = np.array(t)
    assert not np.shares_memory(b, t.data)
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert t.numpy() is t.data
    r = shendu.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\).numpy\(\)"):
        r.numpy()
    assert np.shares_memory(r.detach().numpy(), r.data)
    # numpy defers to Tensor operators (no silent conversion to ndarray)
    out = np.array([1.0, 2.0], dtype=np.float32) * shendu.tensor([3.0, 4.0])
    assert isinstance(out, shendu.Tensor)
    np.testing.assert_array_equal(out.data, [3.0, 8.0])


def test_grad_attributes_item_and_conversions():
    x = shendu.tensor([2.5], requires_grad=True)
    assert x.grad is None and x.requires_grad and x.is_leaf and x.grad_fn is None
    y = x * 2
    assert y.requires_grad and not y.is_leaf and y.grad_fn is not None
    assert y.item() == 5.0 and isinstance(y.item(), float)
    assert float(y) == 5.0 and int(shendu.tensor(3)) == 3
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and np.shares_memory(d.data, y.data)
    assert y.double().dtype == np.float64 and y.to("float64").dtype == np.float64
    assert y.to("cpu") is y and y.to("cpu", "float64").dtype == np.float64
    assert y.long().dtype == np.int64 and y.bool().dtype == np.bool_
    assert y.to(shendu.tensor([1.0], dtype="float64")).dtype == np.float64
    with pytest.raises(RuntimeError, match="device 'cuda'"):
        y.to("cuda")
    assert x.tolist() == [2.5]


def test_requires_grad_rules():
    with pytest.raises(RuntimeError, match="only floating point tensors can require gradients, "
                                           "got int64"):
        shendu.tensor([1, 2], requires_grad=True)
    x = shendu.tensor([1.0])
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        shendu.tensor([1.0]).retain_grad()


def test_inplace_ops_on_leaves_need_no_grad():
    w = shendu.tensor([1.0, 2.0], requires_grad=True)
    for op in (lambda: w.add_(1.0), lambda: w.mul_(2.0), lambda: w.zero_(),
               lambda: w.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match="in-place"):
            op()
    with shendu.no_grad():
        w.sub_(shendu.tensor([1.0, 1.0]), alpha=0.5)
        w.mul_(2.0)
        w[0] = 10.0
        w.clamp_(max=5.0)
    np.testing.assert_array_equal(w.data, [5.0, 3.0])
    g = shendu.zeros(2)
    g.copy_(shendu.tensor([1.0, 2.0]))
    g.fill_(3.0)
    g.div_(2.0)
    np.testing.assert_array_equal(g.data, [1.5, 1.5])


def test_factories_and_seeded_random():
    assert shendu.zeros(2, 3).shape == (2, 3) and shendu.ones((2, 3)).shape == (2, 3)
    assert shendu.full((2,), 7.0).data.tolist() == [7.0, 7.0]
    assert shendu.arange(5).dtype == np.int64 and shendu.arange(0.0, 1.0, 0.5).dtype == np.float32
    assert shendu.linspace(0, 1, 5).dtype == np.float32
    assert shendu.eye(3).data.trace() == 3.0
    x = shendu.tensor([[1.0, 2.0]], dtype="float64")
    assert shendu.zeros_like(x).dtype == np.float64 and shendu.ones_like(x).shape == (1, 2)
    shendu.manual_seed(5)
    a = shendu.randn(4, 4).data.copy()
    r = shendu.rand(3).data.copy()
    i = shendu.randint(0, 10, (5,)).data.copy()
    shendu.manual_seed(5)
    assert np.array_equal(a, shendu.randn(4, 4).data)
    assert np.array_equal(r, shendu.rand(3).data)
    assert np.array_equal(i, shendu.randint(0, 10, (5,)).data)
    state = shendu.get_rng_state()
    b = shendu.randn(3).data.copy()
    shendu.set_rng_state(state)
    assert np.array_equal(b, shendu.randn(3).data)


def test_shape_attributes_len_iter_repr():
    x = shendu.tensor(np.arange(6.0).reshape(2, 3))
    assert x.shape == (2, 3) and x.ndim == 2 and x.dim() == 2 and x.numel() == 6
    assert x.size() == (2, 3) and x.size(1) == 3 and len(x) == 2
    rows = list(x)
    assert len(rows) == 2 and rows[1].data.tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(TypeError, match="0-d"):
        list(shendu.tensor(1.0))
    assert repr(shendu.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "dtype=float64" in repr(shendu.tensor([1.0], dtype="float64"))
    assert "requires_grad=True" in repr(shendu.tensor([1.0], requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(shendu.tensor([1.0], requires_grad=True) * 2)


def test_comparisons_are_bool_tensors_without_grad():
    x = shendu.tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = x > 1.5
    assert m.dtype == np.bool_ and not m.requires_grad
    assert (x == 2.0).data.tolist() == [False, True, False]
    assert ((x >= 2) & ~(x == 3)).data.tolist() == [False, True, False]
    assert x.equal(shendu.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(m)


def test_reflected_operators_match_torch():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    s, t = shendu.tensor(a, dtype="float64"), torch.tensor(a)
    for f in (lambda x: 1 + x, lambda x: 1 - x, lambda x: 2 * x, lambda x: 2 / x,
              lambda x: 2 ** x, lambda x: x ** 2, lambda x: -x, lambda x: abs(-x),
              lambda x: +x, lambda x: x @ x, lambda x: x.T, lambda x: x.t(), lambda x: x.mT):
        np.testing.assert_allclose(f(s).data, f(t).numpy())
    m = np.array([1.0, -1.0])
    np.testing.assert_allclose((m @ s).data, m @ a)
    np.testing.assert_allclose((s @ m).data, a @ m)


def test_unpickled_from_mapped_memory_is_an_array_of_its_own(tmp_path):
    # scikit-learn's check_estimators_pickle maps the estimator's arrays read-only (joblib);
    # a tensor must come back as NumPy's unpickling gives it: a plain, writable array, so
    # that the same kernels (the same bits) take it and training can go on
    joblib = pytest.importorskip("joblib")
    from shendu import nn

    m = nn.Linear(64, 8)
    x = shendu.tensor(np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32))
    joblib.dump(m, tmp_path / "m.pkl")
    back = joblib.load(tmp_path / "m.pkl", mmap_mode="r")
    for p, q in zip(m.parameters(), back.parameters()):
        assert type(q.data) is np.ndarray and q.data.flags.writeable
        np.testing.assert_array_equal(p.data, q.data)
    np.testing.assert_array_equal(m(x).data, back(x).data)
    back.weight.data += 1                                  # in place, as optimizers do


def test_contiguous_copies_only_other_layouts():
    """``contiguous()`` as torch's: the tensor itself when row-major, else a row-major copy
    whose gradient flows back."""
    x = shendu.randn(2, 3, 4, requires_grad=True)
    assert x.contiguous() is x and x.is_contiguous()
    t = x.permute(2, 0, 1)
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c.is_contiguous() and c.data.flags.c_contiguous
    np.testing.assert_array_equal(c.data, t.data)
    (c * shendu.arange(24.0).reshape(4, 2, 3)).sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.arange(24.0).reshape(4, 2, 3).transpose(1, 2, 0))
