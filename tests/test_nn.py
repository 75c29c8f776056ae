"""nn basics against torch: Module bookkeeping (names, order, state_dict, repr), Linear,
containers, activations and Dropout."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import TOL, check_gradcheck, check_module

import shendu
from shendu import nn

DTYPES = [np.float32, np.float64]


def t_dtype(dt):
    return torch.float32 if dt == np.float32 else torch.float64


def to_numpy_sd(t_mod):
    """torch state_dict as plain NumPy arrays (what a user would save and hand over)."""
    return {k: v.detach().numpy().copy() for k, v in t_mod.state_dict().items()}


def compare_grads(s_mod, t_mod, dt):
    t_params = dict(t_mod.named_parameters())
    s_params = dict(s_mod.named_parameters())
    assert list(s_params) == list(t_params)
    for name, tp in t_params.items():
        assert s_params[name].grad is not None, name
        np.testing.assert_allclose(s_params[name].grad.data, tp.grad.numpy(), **TOL[dt],
                                   err_msg=f"gradient of {name}")


# --------------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_shape", [(7, 5), (2, 3, 5), (5,)])
def test_linear_matches_torch(dt, bias, in_shape):
    torch.manual_seed(0)
    t_lin = torch.nn.Linear(5, 4, bias=bias).to(t_dtype(dt))
    s_lin = nn.Linear(5, 4, bias=bias, dtype=dt)
    s_lin.load_state_dict(to_numpy_sd(t_lin))
    x = np.random.default_rng(1).standard_normal(in_shape).astype(dt)
    sx = shendu.tensor(x, dtype=dt, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    so, to = s_lin(sx), t_lin(tx)
    assert so.dtype == dt and so.shape == tuple(to.shape)
    np.testing.assert_allclose(so.data, to.detach().numpy(), **TOL[dt])
    g = np.random.default_rng(2).standard_normal(so.shape).astype(dt)
    so.backward(g)
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(sx.grad.data, tx.grad.numpy(), **TOL[dt])
    compare_grads(s_lin, t_lin, dt)


def test_linear_gradcheck():
    lin = nn.Linear(3, 2, dtype="float64")
    check_gradcheck(lambda x: lin(x), [np.random.default_rng(0).standard_normal((4, 3))])
    check_gradcheck(lambda w, b: shendu.functional.linear(
        shendu.tensor(np.ones((2, 3)), dtype="float64"), w, b), [lin.weight.data,
                                                                 lin.bias.data])


def test_linear_names_shapes_dtype_and_errors():
    lin = nn.Linear(784, 256)
    assert [(k, v.shape) for k, v in lin.state_dict().items()] == [
        ("weight", (256, 784)), ("bias", (256,))]
    assert lin.weight.dtype == np.float32 and lin.weight.requires_grad
    assert nn.Linear(3, 2, bias=False).bias is None
    assert list(nn.Linear(3, 2, bias=False).state_dict()) == ["weight"]
    with pytest.raises(ValueError, match=r"Linear\(784→256\) expected input \(\.\.\., 784\), "
                                         r"got \(32, 28, 28\)"):
        lin(shendu.zeros(32, 28, 28))
    with pytest.raises(ValueError, match="must be positive"):
        nn.Linear(0, 3)


@pytest.mark.parametrize("fan_in", [3, 100])
def test_linear_default_init_is_torchs_distribution(fan_in):
    """torch: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    shendu.manual_seed(0)
    lin = nn.Linear(fan_in, 4000, dtype="float64")
    bound = 1 / np.sqrt(fan_in)
    for p in (lin.weight.data, lin.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > bound * (1 - 2e-3)  # the bound is reached, not a smaller one
        np.testing.assert_allclose(p.std(), bound / np.sqrt(3), rtol=0.03)
    t = torch.nn.Linear(fan_in, 4000).weight.detach().numpy()
    np.testing.assert_allclose(np.abs(t).max(), np.abs(lin.weight.data).max(), rtol=2e-3)


# ------------------------------------------------------------------------- a torch MLP
def build_mlp(lib):
    return lib.Sequential(lib.Linear(12, 16), lib.ReLU(), lib.Linear(16, 16), lib.Tanh(),
                          lib.Dropout(0.2), lib.Linear(16, 5))


@pytest.mark.parametrize("dt", DTYPES)
def test_torch_mlp_state_dict_gives_same_outputs_and_grads(dt):
    torch.manual_seed(0)
    t_mlp = build_mlp(torch.nn).to(t_dtype(dt)).eval()
    s_mlp = build_mlp(nn).to(dt).eval()
    s_mlp.load_state_dict(to_numpy_sd(t_mlp))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 12)).astype(dt)
    y = rng.integers(0, 5, 9)
    sx, tx = shendu.tensor(x, dtype=dt, requires_grad=True), torch.tensor(x, requires_grad=True)
    s_out, t_out = s_mlp(sx), t_mlp(tx)
    np.testing.assert_allclose(s_out.data, t_out.detach().numpy(), **TOL[dt])
    s_loss = nn.CrossEntropyLoss()(s_out, y)
    t_loss = torch.nn.CrossEntropyLoss()(t_out, torch.tensor(y))
    np.testing.assert_allclose(s_loss.data, t_loss.detach().numpy(), **TOL[dt])
    s_loss.backward()
    t_loss.backward()
    np.testing.assert_allclose(sx.grad.data, tx.grad.numpy(), **TOL[dt])
    compare_grads(s_mlp, t_mlp, dt)


def test_state_dict_round_trip():
    shendu.manual_seed(1)
    a = build_mlp(nn).eval()
    shendu.manual_seed(2)
    b = build_mlp(nn).eval()
    x = shendu.randn(3, 12)
    assert not np.allclose(a(x).data, b(x).data)
    weight_before = b[0].weight
    result = b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert b[0].weight is weight_before  # loaded in place: optimizers keep their parameters
    # and back into torch
    t = build_mlp(torch.nn).eval()
    t.load_state_dict({k: torch.tensor(v) for k, v in b.state_dict().items()})
    np.testing.assert_allclose(t(torch.tensor(x.data)).detach().numpy(), b(x).data,
                               **TOL[np.float32])


def test_load_state_dict_errors_name_keys_and_shapes():
    lin = nn.Linear(4, 3)
    before = lin.weight.data.copy()
    with pytest.raises(RuntimeError) as e:
        lin.load_state_dict({"weight": np.zeros((3, 5)), "foo": np.zeros(1)})
    msg = str(e.value)
    assert "Error(s) in loading state_dict for Linear" in msg
    assert 'Missing key(s) in state_dict: "bias".' in msg
    assert 'Unexpected key(s) in state_dict: "foo".' in msg
    assert ("size mismatch for weight: copying a param with shape (3, 5) from checkpoint, "
            "the shape in current model is (3, 4)") in msg
    assert isinstance(e.value, ValueError)  # also a ValueError: the argument is wrong
    np.testing.assert_array_equal(lin.weight.data, before)  # nothing was copied
    keys = lin.load_state_dict({"weight": np.ones((3, 4)), "foo": np.zeros(1)}, strict=False)
    assert keys.missing_keys == ["bias"] and keys.unexpected_keys == ["foo"]
    np.testing.assert_array_equal(lin.weight.data, 1)
    assert lin.weight.dtype == np.float32  # float64 source cast to the model's dtype
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        lin.load_state_dict({"weight": np.ones((4, 3))}, strict=False)


# ---------------------------------------------------------- names, order, repr vs torch
def build_net(lib, ones):
    class Block(lib.Module):
        def __init__(self):
            super().__init__()
            self.scale = lib.Parameter(ones(3))
            self.proj = lib.Linear(3, 3)
            self.register_buffer("count", ones(1))
            self.register_buffer("cache", ones(2), persistent=False)

        def forward(self, x):
            return self.proj(x) * self.scale

    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.enc = lib.Sequential(lib.Linear(4, 8), lib.ReLU(), lib.Dropout(0.1),
                                      lib.Linear(8, 3))
            self.heads = lib.ModuleList([lib.Linear(3, 3) for _ in range(3)]
                                        + [lib.Linear(3, 2), lib.Identity()])
            self.extra = lib.ModuleDict({"z": Block(), "a": lib.Tanh()})
            self.gain = lib.Parameter(ones(1))
            self.act = lib.GELU(approximate="tanh")
            self.empty = lib.Sequential()

    return Net()


def test_names_order_state_dict_and_repr_equal_torch():
    s = build_net(nn, lambda n: np.ones(n, np.float32))
    t = build_net(torch.nn, torch.ones)
    shapes = lambda it: [(k, tuple(v.shape)) for k, v in it]  # noqa: E731
    assert shapes(s.named_parameters()) == shapes(t.named_parameters())
    assert shapes(s.named_buffers()) == shapes(t.named_buffers())
    assert shapes(s.state_dict().items()) == shapes(t.state_dict().items())
    assert [k for k, _ in s.named_modules()] == [k for k, _ in t.named_modules()]
    assert [k for k, _ in s.named_children()] == [k for k, _ in t.named_children()]
    assert len(list(s.modules())) == len(list(t.modules()))
    assert len(list(s.parameters())) == len(list(t.parameters()))
    assert repr(s) == repr(t)
    assert "(0-2): 3 x Linear(in_features=3, out_features=3, bias=True)" in repr(s)
    # torch's weights load and everything lines up
    s.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(s.extra["z"].proj.weight.data,
                                  t.extra["z"].proj.weight.detach().numpy())


def test_shared_module_appears_like_in_torch():
    def build(lib):
        shared = lib.Linear(3, 3)
        return lib.Sequential(shared, lib.ReLU(), shared)

    s, t = build(nn), build(torch.nn)
    assert list(s.state_dict()) == list(t.state_dict())  # both names
    assert [k for k, _ in s.named_parameters()] == [k for k, _ in t.named_parameters()]  # once
    assert [k for k, _ in s.named_modules()] == [k for k, _ in t.named_modules()]
    assert len(list(s.parameters())) == 2
    s.load_state_dict(t.state_dict())


def test_apply_visits_children_before_parents_like_torch():
    def order(lib):
        seen = []
        m = lib.Sequential(lib.Sequential(lib.Linear(2, 2), lib.ReLU()), lib.Tanh())
        m.apply(lambda mod: seen.append(type(mod).__name__))
        return seen

    assert order(nn) == order(torch.nn)


REPR_ZOO = [
    lambda L: L.Linear(4, 3), lambda L: L.Linear(2, 2, bias=False), lambda L: L.ReLU(),
    lambda L: L.ReLU(inplace=True), lambda L: L.Dropout(0.1), lambda L: L.Dropout(inplace=True),
    lambda L: L.Flatten(), lambda L: L.Flatten(0, 2), lambda L: L.Unflatten(1, (2, 3)),
    lambda L: L.Identity(), lambda L: L.LeakyReLU(), lambda L: L.LeakyReLU(0.2, True),
    lambda L: L.GELU(), lambda L: L.Softplus(2.0, 10.0), lambda L: L.ELU(),
    lambda L: L.ELU(0.5, True), lambda L: L.SiLU(), lambda L: L.Mish(), lambda L: L.SELU(),
    lambda L: L.Softmax(dim=1), lambda L: L.LogSoftmax(dim=-1), lambda L: L.Softmax(),
    lambda L: L.Tanh(), lambda L: L.Sigmoid(), lambda L: L.Hardtanh(),
    lambda L: L.Hardtanh(-2.0, 3.0), lambda L: L.ReLU6(), lambda L: L.PReLU(),
    lambda L: L.PReLU(4), lambda L: L.CrossEntropyLoss(), lambda L: L.MSELoss(),
    lambda L: L.BCELoss(), lambda L: L.ModuleList(), lambda L: L.ModuleDict(),
    lambda L: L.ModuleList([L.ReLU(), L.ReLU(), L.Tanh(), L.ReLU(), L.ReLU()]),
    lambda L: L.Sequential(L.Linear(2, 2), L.Sequential(L.ReLU(), L.Linear(2, 1))),
]


def test_repr_zoo_equals_torch():
    assert repr(nn.Sequential(*[f(nn) for f in REPR_ZOO])) == repr(
        torch.nn.Sequential(*[f(torch.nn) for f in REPR_ZOO]))


# ------------------------------------------------------------------------- Module API
def test_train_eval_children_modules_zero_grad():
    m = build_mlp(nn)
    assert m.training and all(c.training for c in m.modules())
    assert m.eval() is m and not any(c.training for c in m.modules())
    m.train()
    assert all(c.training for c in m.modules())
    with pytest.raises(ValueError, match="bool"):
        m.train("no")
    assert [type(c).__name__ for c in m.children()] == [
        "Linear", "ReLU", "Linear", "Tanh", "Dropout", "Linear"]
    m(shendu.randn(2, 12)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(not p.grad.data.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_registration_rules():
    m = nn.Module()
    m.w = nn.Parameter(np.zeros(2, np.float32))
    m.register_buffer("b", np.zeros(1))
    m.register_buffer("tmp", np.zeros(1), persistent=False)
    m.child = nn.Linear(1, 1)
    assert list(m.state_dict()) == ["w", "b", "child.weight", "child.bias"]
    for bad, err in [("a.b", 'contain "."'), ("", "be empty string")]:
        with pytest.raises(KeyError, match=err):
            m.register_buffer(bad, np.zeros(1))
        with pytest.raises(KeyError, match=err):
            m.add_module(bad, nn.ReLU())
    with pytest.raises(KeyError, match="attribute 'w' already exists"):
        m.register_buffer("w", np.zeros(1))
    with pytest.raises(KeyError, match="attribute 'train' already exists"):
        m.register_parameter("train", None)
    with pytest.raises(TypeError, match="cannot assign ndarray as parameter 'w'"):
        m.w = np.zeros(2)
    with pytest.raises(AttributeError, match="before Module.__init__"):
        class Bad(nn.Module):
            def __init__(self):
                self.lin = nn.Linear(1, 1)

        Bad()
    del m.child
    assert list(m.state_dict()) == ["w", "b"]
    assert m.get_submodule("") is m
    outer = nn.Sequential(nn.Sequential(nn.ReLU(), nn.Tanh()))
    assert isinstance(outer.get_submodule("0.1"), nn.Tanh)
    with pytest.raises(AttributeError, match="has no submodule '5'"):
        outer.get_submodule("0.5")


def test_parameter():
    p = nn.Parameter([1.0, 2.0])
    assert p.dtype == np.float32 and p.requires_grad  # lists take the default dtype
    assert nn.Parameter(np.zeros(2)).dtype == np.float64  # arrays keep theirs
    t = shendu.zeros(3)
    assert nn.Parameter(t).data is t.data
    assert repr(p).startswith("Parameter containing:\ntensor(")
    assert not nn.Parameter(np.zeros(1), requires_grad=False).requires_grad


def test_double_and_float_cast_parameters_and_buffers():
    m = nn.CrossEntropyLoss(weight=np.ones(3, np.float32))
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, m).double()
    assert lin.weight.dtype == np.float64 and m.weight.dtype == np.float64
    seq.float()
    assert lin.weight.dtype == np.float32
    assert seq.to("cpu") is seq


# -------------------------------------------------------------------------- containers
def test_sequential_and_module_list_edits_keep_torchs_keys():
    def edit(lib):
        s = lib.Sequential(lib.Linear(1, 2), lib.Linear(2, 3), lib.Linear(3, 4))
        s.append(lib.Linear(4, 5))
        del s[1]
        s.insert(1, lib.Linear(2, 7))
        s[-1] = lib.Linear(4, 6)
        ml = lib.ModuleList([lib.Linear(1, 1), lib.Linear(2, 2)])
        ml += [lib.Linear(3, 3)]
        ml.insert(0, lib.Linear(4, 4))
        del ml[1]
        ml.append(lib.Linear(5, 5))
        popped = ml.pop(0)
        md = lib.ModuleDict({"b": lib.Linear(1, 1)})
        md["a"] = lib.Linear(2, 2)
        md.update([("c", lib.Linear(3, 3))])
        md.pop("b")
        return lib.ModuleDict({"s": s, "ml": ml, "md": md, "sl": s[1:3]}), popped

    (s, sp), (t, tp) = edit(nn), edit(torch.nn)
    assert [(k, v.shape) for k, v in s.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in t.state_dict().items()]
    assert repr(s) == repr(t) and repr(sp) == repr(tp)
    assert len(s["s"]) == 4 and len(s["ml"]) == 3 and "a" in s["md"] and "b" not in s["md"]
    assert isinstance(s["s"][-1], nn.Linear) and s["s"][-1].out_features == 6
    with pytest.raises(IndexError, match="index 9 is out of range for 4 modules"):
        s["s"][9]


def test_sequential_forward_and_names():
    from collections import OrderedDict

    seq = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 3)), ("act", nn.ReLU())]))
    assert list(seq.state_dict()) == ["fc.weight", "fc.bias"]
    x = shendu.randn(4, 2)
    np.testing.assert_array_equal(seq(x).data, np.maximum(seq.fc(x).data, 0))
    assert nn.Sequential()(x) is x
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU"]


# ------------------------------------------------------------------------- activations
ACTS = [("ReLU", {}), ("ReLU6", {}), ("LeakyReLU", {"negative_slope": 0.2}), ("ELU", {}),
        ("ELU", {"alpha": 0.5}), ("SELU", {}), ("GELU", {}), ("GELU", {"approximate": "tanh"}),
        ("SiLU", {}), ("Mish", {}), ("Sigmoid", {}), ("Tanh", {}),
        ("Hardtanh", {"min_val": -0.5, "max_val": 2.0}), ("Softplus", {"beta": 2.0}),
        ("Softmax", {"dim": 1}), ("LogSoftmax", {"dim": -1}), ("Flatten", {}),
        ("Identity", {})]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name,kw", ACTS, ids=[f"{a}{b}" for a, b in ACTS])
def test_activation_modules_match_torch(name, kw, dt):
    x = np.random.default_rng(3).uniform(-7, 7, (4, 3, 5))  # reaches ReLU6's cap
    check_module(getattr(nn, name)(**kw), getattr(torch.nn, name)(**kw), [x], dtype=dt)


SMOOTH_ACTS = [a for a in ACTS if a[0] not in ("Flatten", "Identity")]


@pytest.mark.parametrize("name,kw", SMOOTH_ACTS, ids=[f"{a}{b}" for a, b in SMOOTH_ACTS])
def test_activation_modules_gradcheck(name, kw):
    m = getattr(nn, name)(**kw)
    check_gradcheck(lambda x: m(x), [np.random.default_rng(4).uniform(-3, 3, (2, 5))])


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n,shape", [(1, (4, 3, 5)), (3, (4, 3, 5)), (3, (2, 3)), (1, (5,))])
def test_prelu_matches_torch(n, shape, dt):
    s, t = nn.PReLU(n), torch.nn.PReLU(n)
    with torch.no_grad():
        t.weight.copy_(torch.linspace(-0.5, 0.7, n))
    x = np.random.default_rng(5).uniform(-2, 2, shape)
    check_module(s, t, [x], dtype=dt)


def test_prelu_channel_errors():
    with pytest.raises(ValueError, match=r"PReLU\(3\) expected 3 channels at dim 1, got input "
                                         r"\(2, 4\)"):
        nn.PReLU(3)(shendu.zeros(2, 4))
    with pytest.raises(ValueError, match="no channel dim"):
        nn.PReLU(3)(shendu.zeros(3))  # torch: a 1-D input has one channel


def test_softmax_without_dim_follows_torchs_legacy_rule():
    for shape in [(5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)]:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        with pytest.warns(UserWarning, match="Implicit dimension"):
            ours = nn.Softmax()(shendu.tensor(x)).data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = torch.nn.Softmax()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(ours, theirs, **TOL[np.float32])


# ----------------------------------------------------------------------------- Dropout
def test_dropout_train_eval_scaling_and_gradient():
    d = nn.Dropout(0.25)
    x = shendu.tensor(np.random.default_rng(0).uniform(1, 2, (200, 100)), requires_grad=True)
    y = d(x)
    kept = y.data != 0
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.75, rtol=1e-6)
    y.backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(x.grad.data, kept / np.float32(0.75), rtol=1e-6)
    d.eval()
    np.testing.assert_array_equal(d(x).data, x.data)
    assert repr(d) == "Dropout(p=0.25, inplace=False)"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_expectation_and_drop_rate(p):
    n = 1_000_000
    y = nn.Dropout(p)(shendu.ones(n, dtype="float64")).data
    sd_rate = np.sqrt(p * (1 - p) / n)  # binomial standard error of the drop fraction
    assert abs((y == 0).mean() - p) < 5 * sd_rate
    assert abs(y.mean() - 1.0) < 5 * sd_rate / (1 - p)  # E[y] = 1: inverted scaling


def test_dropout_p0_p1_and_seed():
    x = shendu.randn(50, 20, requires_grad=True)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).data, x.data)
    y = nn.Dropout(1.0)(x)
    assert not y.data.any() and np.isfinite(y.data).all()
    y.sum().backward()
    assert not x.grad.data.any()
    shendu.manual_seed(7)
    a = nn.Dropout(0.5)(x).data
    shendu.manual_seed(7)
    b = nn.Dropout(0.5)(x).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Dropout(0.5)(x).data)
    with pytest.raises(ValueError, match="between 0 and 1, got 1.5"):
        nn.Dropout(1.5)
