"""The engine: iterative backward, accumulation, graph freeing, no_grad, retain_grad,
autograd.grad, multi-output nodes, shared and aliased gradients, gradcheck."""

import math
import sys

import numpy as np
import pytest
import torch

import shendu
import shendu.functional as F
from shendu.autograd import Function, GradcheckError, gradcheck


def leaf(values, dtype="float64"):
    return shendu.tensor(values, dtype=dtype, requires_grad=True)


def tleaf(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# ------------------------------------------------------------------ deep graphs
@pytest.mark.slow
def test_100k_op_chain_backpropagates_without_recursion():
    x = leaf(1.0)
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # a recursive walk would die here at once
    try:
        y.backward()
    finally:
        sys.setrecursionlimit(old)
    assert x.grad.item() == pytest.approx(1.00001 ** 100_000, rel=1e-9)
    assert y.grad_fn.freed


def test_wide_fan_in_and_fan_out():
    x = leaf(np.arange(5.0))
    parts = [x * float(i) for i in range(300)]
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    total.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.full(5, sum(range(300))))


# ------------------------------------------------------------------ accumulation
def test_leaves_accumulate_across_backward_calls_like_torch():
    x, tx = leaf([1.0, -2.0, 3.0]), tleaf([1.0, -2.0, 3.0])
    for _ in range(3):
        (x * x).sum().backward()
        (tx * tx).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


def test_same_tensor_twice_and_diamond():
    x, tx = leaf([0.5, 1.5]), tleaf([0.5, 1.5])

    def f(t, lib):
        a = lib.exp(t)
        b = a * t          # x used twice: directly and through a
        c = a + b          # diamond: a reaches c along two paths
        return (c * c + t).sum()

    f(x, F).backward()
    f(tx, torch).backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12)


def test_explicit_gradient_is_copied_and_never_aliased():
    # regression: the user's array once became a.grad and was then added into in place,
    # which corrupted a pending gradient of the same backward
    a, ta = leaf([1.0, 2.0]), tleaf([1.0, 2.0])
    g = np.ones(2)
    y = F.exp(a)
    ((a * y) + (a + y)).backward(g)
    ty = torch.exp(ta)
    ((ta * ty) + (ta + ty)).backward(torch.ones(2, dtype=torch.float64))
    np.testing.assert_allclose(a.grad.data, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(g, [1.0, 1.0])
    assert not np.shares_memory(a.grad.data, g)


def test_leaf_grads_never_share_memory():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data *= 0.5  # what clip_grad_norm_ does in place
    np.testing.assert_array_equal(b.grad.data, [1.0, 1.0])
    from shendu.nn.utils import clip_grad_value_

    p, q = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (p + q).backward(np.array([2.0, 3.0]))  # Add hands one writeable array to both leaves
    clip_grad_value_([q], 0.25)
    np.testing.assert_array_equal(p.grad.data, [2.0, 3.0])
    np.testing.assert_array_equal(q.grad.data, [0.25, 0.25])
    # same for a seed handed straight through by several nodes
    c, d = leaf([1.0]), leaf([1.0])
    y = (c + d).reshape(1)
    y.backward(np.array([2.0]))
    c.grad.data[0] = 99.0
    assert d.grad.item() == 2.0


def test_leaf_grad_alias_with_pending_gradient():
    # a's first gradient is the array also pending for `y`; a's later gradient must not be
    # added into it in place before `y`'s node consumed it
    a, ta = leaf([1.0, 2.0, 3.0]), tleaf([1.0, 2.0, 3.0])
    for lib, t in ((F, a), (torch, ta)):
        y = lib.tanh(t)
        z = t + y           # Add hands the same gradient array to t and y
        w = (t * 3.0) + (y * t)
        (z.sum() + w.sum()).backward()
    np.testing.assert_allclose(a.grad.data, ta.grad.numpy(), rtol=1e-12)


def test_multiple_roots_and_gradients():
    x, tx = leaf([[1.0, 2.0], [3.0, 4.0]]), tleaf([[1.0, 2.0], [3.0, 4.0]])
    g1, g2 = np.array([1.0, -1.0]), np.array([[0.5, 0.5], [2.0, 0.0]])
    y1, y2 = x.sum(0), x * x
    shendu.autograd.backward([y1, y2], [g1, g2])
    torch.autograd.backward([tx.sum(0), tx * tx], [torch.tensor(g1), torch.tensor(g2)])
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    # a root that is also an ancestor of another root
    x2, tx2 = leaf([1.0, 2.0]), tleaf([1.0, 2.0])
    h, th = x2 * 3.0, tx2 * 3.0
    shendu.autograd.backward([h.sum(), (h * h).sum()])
    torch.autograd.backward([th.sum(), (th * th).sum()])
    np.testing.assert_allclose(x2.grad.data, tx2.grad.numpy())


def test_backward_on_a_leaf_and_on_a_scalar_with_shape():
    x = leaf([2.0])
    x.backward()
    assert x.grad.item() == 1.0
    y = leaf([[3.0]])
    (y * 2).backward()  # one element: implicit gradient allowed, as torch
    assert y.grad.shape == (1, 1) and y.grad.item() == 2.0


# ------------------------------------------------------------------ graph freeing
def test_second_backward_through_freed_graph_raises():
    x = leaf([1.0, 2.0])
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    # torch agrees
    tx = tleaf([1.0, 2.0])
    ty = (tx.exp() * 2).sum()
    ty.backward()
    with pytest.raises(RuntimeError, match="second time"):
        ty.backward()


def test_reusing_a_freed_subgraph_from_a_new_root_raises_before_any_delivery():
    x = leaf([1.0, 2.0])
    h = x.exp()
    h.sum().backward()
    g_before = x.grad.data.copy()
    with pytest.raises(RuntimeError, match="second time"):
        (h * x).sum().backward()  # x would get a gradient from the new Mul first
    np.testing.assert_array_equal(x.grad.data, g_before)


def test_retain_graph_allows_a_second_backward():
    x, tx = leaf([1.0, 2.0]), tleaf([1.0, 2.0])
    y, ty = (x.exp() * x).sum(), (tx.exp() * tx).sum()
    y.backward(retain_graph=True)
    y.backward()
    ty.backward(retain_graph=True)
    ty.backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


def test_freed_nodes_release_saved_arrays():
    x = leaf(np.ones(1000))
    y = x.exp()
    node = y.grad_fn
    assert "out" in node.__dict__
    y.sum().backward()
    assert node.freed and "out" not in node.__dict__ and "parents" not in node.__dict__


# ------------------------------------------------------------------ grad modes
def test_no_grad_records_nothing_and_restores():
    x = leaf([1.0])
    with shendu.no_grad():
        y = x * 2
        assert not shendu.is_grad_enabled()
        with shendu.enable_grad():
            z = x * 2
        assert not shendu.is_grad_enabled()
    assert shendu.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None


def test_grad_mode_decorators_and_reentrancy():
    @shendu.no_grad()
    def f(t, depth):
        assert not shendu.is_grad_enabled()
        return t * 2 if depth == 0 else f(t, depth - 1)  # re-enters the same instance

    x = leaf([1.0])
    assert not f(x, 3).requires_grad
    assert shendu.is_grad_enabled()

    @shendu.set_grad_enabled(False)
    def g(t):
        return t * 2

    assert shendu.is_grad_enabled(), "decorating must not switch the mode"
    assert not g(x).requires_grad
    assert shendu.is_grad_enabled()


def test_set_grad_enabled_as_function_and_context():
    shendu.set_grad_enabled(False)
    try:
        assert not shendu.is_grad_enabled()
    finally:
        shendu.set_grad_enabled(True)
    with shendu.set_grad_enabled(False):
        assert not shendu.is_grad_enabled()
    assert shendu.is_grad_enabled()
    with shendu.no_grad(), shendu.set_grad_enabled(True):
        assert shendu.is_grad_enabled()
    assert shendu.is_grad_enabled()


def test_no_grad_restores_mode_after_an_exception():
    with pytest.raises(ValueError), shendu.no_grad():
        raise ValueError
    assert shendu.is_grad_enabled()


def test_detach_and_requires_grad_false_stop_gradients():
    x = leaf([1.0, 2.0])
    c = shendu.tensor([3.0, 4.0], dtype="float64")
    (x.detach() * x + c * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [4.0, 6.0])
    assert c.grad is None


# ------------------------------------------------------------------ retain_grad
def test_retain_grad_on_intermediates_accumulates_like_torch():
    x, tx = leaf([1.0, 2.0]), tleaf([1.0, 2.0])
    h, th = x * 3, tx * 3
    h.retain_grad()
    th.retain_grad()
    y, ty = (h * h).sum(), (th * th).sum()
    y.backward(retain_graph=True)
    y.backward()
    ty.backward(retain_graph=True)
    ty.backward()
    np.testing.assert_allclose(h.grad.data, th.grad.numpy())
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    assert not h.grad.requires_grad


def test_intermediates_without_retain_grad_have_none():
    x = leaf([1.0])
    h = x * 2
    (h * h).sum().backward()
    assert h.grad is None


# ------------------------------------------------------------------ autograd.grad
def test_grad_function_matches_torch_and_leaves_dot_grad_alone():
    x, tx = leaf([0.3, -1.2, 2.0]), tleaf([0.3, -1.2, 2.0])
    w, tw = leaf([1.5, 0.5, -1.0]), tleaf([1.5, 0.5, -1.0])
    h, th = F.tanh(x * w), torch.tanh(tx * tw)
    y, ty = (h * h).sum(), (th * th).sum()
    gx, gh = shendu.autograd.grad(y, [x, h])
    tgx, tgh = torch.autograd.grad(ty, [tx, th])
    np.testing.assert_allclose(gx.data, tgx.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gh.data, tgh.numpy(), rtol=1e-12)
    assert x.grad is None and w.grad is None and h.grad is None


def test_grad_unused_input_and_single_input():
    x, z = leaf([1.0]), leaf([2.0])
    y = (x * 3).sum()
    with pytest.raises(RuntimeError, match="not used"):
        shendu.autograd.grad(y, [x, z], retain_graph=True)
    gx, gz = shendu.autograd.grad(y, [x, z], allow_unused=True, retain_graph=True)
    assert gx.item() == 3.0 and gz is None
    (g,) = shendu.grad(y, x)
    assert g.item() == 3.0


def test_grad_results_do_not_alias():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    ga, gb = shendu.autograd.grad((a + b).sum(), [a, b])
    ga.data[0] = 42.0
    assert gb.data[0] == 1.0


def test_grad_with_grad_outputs():
    x, tx = leaf([1.0, 2.0]), tleaf([1.0, 2.0])
    v = np.array([0.5, -2.0])
    (g,) = shendu.autograd.grad(x * x, x, grad_outputs=v)
    (tg,) = torch.autograd.grad(tx * tx, tx, grad_outputs=torch.tensor(v))
    np.testing.assert_allclose(g.data, tg.numpy())


# ------------------------------------------------------------------ multi-output nodes
def test_split_with_only_some_outputs_used():
    x, tx = leaf(np.arange(10.0).reshape(5, 2)), tleaf(np.arange(10.0).reshape(5, 2))
    a, b, c = x.split([2, 2, 1])
    ta, tb, tc = tx.split([2, 2, 1])
    b.retain_grad()
    tb.retain_grad()
    (a * 2).sum().backward()
    (ta * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())
    assert b.grad is None and tb.grad is None


def test_chunk_outputs_used_in_different_orders():
    x, tx = leaf(np.linspace(-1, 1, 12).reshape(3, 4)), tleaf(np.linspace(-1, 1, 12).reshape(3, 4))
    for lib, t in ((F, x), (torch, tx)):
        p, q = t.chunk(2, 1)
        (lib.exp(q) * p).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12)


class _TwoOut(Function):
    """A custom multi-output op: (a + b, a * b)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a + b, a * b

    def backward(self, g_sum, g_prod):
        ga = g_sum + g_prod * self.b if self.needs_input_grad[0] else None
        gb = g_sum + g_prod * self.a if self.needs_input_grad[1] else None
        return ga, gb


def test_custom_multi_output_function_and_needs_input_grad():
    a = leaf([1.0, 2.0])
    b = shendu.tensor([3.0, 4.0], dtype="float64")
    s, p = _TwoOut.apply(a, b)
    assert p.grad_fn.needs_input_grad == (True, False)
    (p * 2).sum().backward()  # s unused: its gradient arrives as zeros
    np.testing.assert_array_equal(a.grad.data, [6.0, 8.0])
    assert gradcheck(lambda u, v: _TwoOut.apply(u, v), [leaf([0.5, 1.0]), leaf([2.0, -1.0])])


class _BadShape(Function):
    def forward(self, a):
        return a.sum()

    def backward(self, g):
        return np.ones((1,) + (3,))  # (1, 3) for an input of shape (3,)


def test_engine_rejects_gradient_of_the_wrong_shape():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match=r"_BadShape.backward returned a gradient of shape "
                                           r"\(1, 3\) for an input of shape \(3,\)"):
        _BadShape.apply(x).backward()


# ------------------------------------------------------------------ gradcheck
class _Square(Function):
    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, g):
        return 2 * g * self.a


class _WrongSquare(_Square):
    def backward(self, g):
        return g * self.a  # deliberately missing the factor 2


def test_gradcheck_passes_a_correct_backward():
    x = leaf([[0.5, -1.0], [2.0, 0.25]])
    assert gradcheck(_Square.apply, [x])
    assert x.grad is None, "gradcheck must not touch .grad"


def test_gradcheck_catches_a_wrong_backward_and_names_input_and_index():
    x = leaf([[0.5, -1.0], [2.0, 0.25]])
    c = leaf([1.0, 1.0])
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(2, 2\)\) disagrees at index "
                                             r"\(0, 0\)"):
        gradcheck(lambda a, b: a + _WrongSquare.apply(b), [c, x])
    assert not gradcheck(_WrongSquare.apply, [x], raise_exception=False)


def test_gradcheck_catches_a_wrong_broadcast_reduction():
    class BadBias(Function):  # forgets to sum the bias gradient over the batch
        def forward(self, a, b):
            return a + b

        def backward(self, g):
            return g, g[0]

    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(BadBias.apply, [leaf(np.ones((3, 2))), leaf([0.0, 1.0])])


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64.*float32"):
        gradcheck(F.tanh, [shendu.tensor([1.0], requires_grad=True)])


# ------------------------------------------------------------------ determinism
def test_same_seed_bit_identical_gradients():
    def run():
        shendu.manual_seed(11)
        w = shendu.randn(8, 5, requires_grad=True)
        x = shendu.randn(16, 8)
        h = F.dropout(F.gelu(x @ w), 0.3)
        F.log_softmax(h, 1).sum().backward()
        return w.grad.data.copy()

    assert np.array_equal(run(), run())


def test_gradients_are_float32_for_float32_graphs():
    x = shendu.randn(3, 4, requires_grad=True)
    w = shendu.randn(4, 2, requires_grad=True)
    y = F.softmax(F.tanh(x @ w) * 3.0 + 1, 1).var()
    y.backward()
    assert y.dtype == x.grad.dtype == w.grad.dtype == np.float32
    assert math.isfinite(float(y))


# ------------------------------------------------------------------------- hooks
def _hook_run(lib, remove=False):
    import torch  # noqa: F401  (lib may be torch)

    a = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
    log = []
    h = a.register_hook(lambda g: log.append(("pre", g.tolist())) or g * 2)
    a.register_post_accumulate_grad_hook(lambda t: log.append(("post", t.grad.tolist())))
    if remove:
        h.remove()
    x = a * 3
    x.register_hook(lambda g: log.append(("x", g.tolist())) or g + 1)
    y = (x * a).sum() + a.sum()   # three edges into a: its hooks still run once
    y.backward()
    return log, a.grad.tolist()


@pytest.mark.parametrize("remove", [False, True])
def test_tensor_hooks_match_torch(remove):
    import torch

    assert _hook_run(shendu, remove) == _hook_run(torch, remove)


def test_post_accumulate_hook_only_on_leaves():
    a = shendu.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (a * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        shendu.tensor([1.0]).register_hook(lambda g: g)
