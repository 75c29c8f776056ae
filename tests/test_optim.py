"""shendu.optim against torch.optim: parameter trajectories over 100 steps for every
optimizer and option combination, param groups, state_dict round trips (ours and
torch's), and the errors bad input gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import shendu
from shendu import nn, optim

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
STEPS = 100


# ------------------------------------------------------------------ the problem
class Problem:
    """Five parameters, the same in shendu and torch, and their gradients at each step.

    ``fixed=False``: a small Linear+tanh+Linear regression, gradients by each library's
    own autograd. ``fixed=True``: every gradient comes from a fixed random sequence that
    does not depend on the parameters, so no feedback loop can amplify last-bit
    differences and the comparison measures the optimizer alone. Either way the fifth
    parameter gets a gradient on even steps only (None on odd steps, which must skip it).
    """

    def __init__(self, dtype=np.float64, seed=0, maximize=False, fixed=False):
        # with maximize the objective is -loss, so the run still descends the loss: gradient
        # ascent on a loss is unstable and would amplify last-bit differences between the
        # two autograd engines, testing the problem rather than the optimizer
        self.sign = -1.0 if maximize else 1.0
        self.fixed = fixed
        rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.x = rng.standard_normal((16, 3)).astype(dtype)
        self.y = rng.standard_normal((16, 2)).astype(dtype)
        w1, b1 = rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, 5)
        w2, b2 = rng.uniform(-1, 1, (2, 5)), rng.uniform(-1, 1, 2)
        extra = rng.uniform(-1, 1, (4,))
        self.init = [a.astype(dtype) for a in (w1, b1, w2, b2, extra)]
        self.grads = [rng.standard_normal((STEPS + 1, *a.shape)).astype(dtype)
                      for a in self.init]
        # shendu side
        self.s_l1, self.s_l2 = nn.Linear(3, 5, dtype=dtype), nn.Linear(5, 2, dtype=dtype)
        self.s_extra = nn.Parameter(shendu.tensor(self.init[4], dtype=dtype))
        for t, a in zip(self.s_params, self.init):
            t.data[...] = a
        # torch side
        self.t_l1 = torch.nn.Linear(3, 5, dtype=_tdt(dtype))
        self.t_l2 = torch.nn.Linear(5, 2, dtype=_tdt(dtype))
        self.t_extra = torch.nn.Parameter(torch.tensor(self.init[4]))
        with torch.no_grad():
            for t, a in zip(self.t_params, self.init):
                t.copy_(torch.from_numpy(a))

    @property
    def s_params(self):
        return [self.s_l1.weight, self.s_l1.bias, self.s_l2.weight, self.s_l2.bias,
                self.s_extra]

    @property
    def t_params(self):
        return [self.t_l1.weight, self.t_l1.bias, self.t_l2.weight, self.t_l2.bias,
                self.t_extra]

    def s_loss(self):
        x = shendu.tensor(self.x, dtype=self.dtype)
        out = self.s_l2(self.s_l1(x).tanh())
        return ((out - shendu.tensor(self.y, dtype=self.dtype)) ** 2).mean()

    def t_loss(self):
        out = self.t_l2(torch.tanh(self.t_l1(torch.from_numpy(self.x))))
        return ((out - torch.from_numpy(self.y)) ** 2).mean()

    def s_backward(self, i):
        if self.fixed:
            for p, g in zip(self.s_params[:4], self.grads):
                p.grad = shendu.tensor(g[i], dtype=self.dtype)
        else:
            (self.s_loss() * self.sign).backward()
        self.s_extra.grad = (shendu.tensor(self.grads[4][i], dtype=self.dtype)
                             if i % 2 == 0 else None)

    def t_backward(self, i):
        if self.fixed:
            for p, g in zip(self.t_params[:4], self.grads):
                p.grad = torch.from_numpy(g[i].copy())
        else:
            (self.t_loss() * self.sign).backward()
        self.t_extra.grad = torch.from_numpy(self.grads[4][i].copy()) if i % 2 == 0 else None

    def compare(self, what="", tol=None):
        tol = tol or TOL[self.dtype]
        for k, (s, t) in enumerate(zip(self.s_params, self.t_params)):
            assert s.data.dtype == self.dtype, f"param {k} became {s.data.dtype}"
            np.testing.assert_allclose(s.data, t.detach().numpy(), **tol,
                                       err_msg=f"param {k} {what}")


def _tdt(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def run_steps(prob, s_opt, t_opt, start, stop, share_grads=False):
    """Step both optimizers; with ``share_grads`` torch is handed copies of the gradients
    shendu's autograd computed, so both optimizers see bit-identical gradients."""
    for i in range(start, stop):
        s_opt.zero_grad()
        t_opt.zero_grad()
        prob.s_backward(i)
        if share_grads:
            for sp, tp in zip(prob.s_params, prob.t_params):
                tp.grad = None if sp.grad is None else torch.from_numpy(sp.grad.data.copy())
        else:
            prob.t_backward(i)
        before = [None if p.grad is None else p.grad.data.copy() for p in prob.s_params]
        s_opt.step()
        t_opt.step()
        for p, b in zip(prob.s_params, before):
            if b is not None:
                assert np.array_equal(p.grad.data, b), "step() modified p.grad"
        prob.compare(f"after step {i + 1}")


def compare_state(prob, s_opt, t_opt, tol=None):
    tol = tol or TOL[prob.dtype]
    for k, (sp, tp) in enumerate(zip(prob.s_params, prob.t_params)):
        s_state, t_state = s_opt.state.get(sp, {}), t_opt.state.get(tp, {})
        assert set(s_state) == set(t_state), f"param {k}: state keys {set(s_state)} vs " \
                                             f"torch {set(t_state)}"
        for key, tv in t_state.items():
            sv = s_state[key]
            if key == "step":
                assert float(sv) == float(tv)
            else:
                assert sv.dtype == prob.dtype
                # state entries are sums with cancellation (momentum, centered averages), so
                # an element's error is measured against the scale of its whole array
                want = tv.numpy()
                scale = float(np.abs(want).max()) if want.size else 0.0
                np.testing.assert_allclose(sv, want, rtol=tol["rtol"],
                                           atol=max(tol["atol"], tol["rtol"] * scale),
                                           err_msg=f"param {k} {key}")


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.5, maximize=True)),
    ("SGD", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True)),
    ("Adam", dict(lr=0.02, betas=(0.0, 0.99), eps=1e-6)),      # lerp's mirrored branch
    ("Adam", dict(lr=0.02, betas=(0.3, 0.9))),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.2, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.005, momentum=0.9)),
    ("RMSprop", dict(lr=0.005, momentum=0.5, centered=True, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True)),         # lerp's mirrored branch
    ("RMSprop", dict(lr=0.01, eps=1e-3, maximize=True, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, initial_accumulator_value=0.5)),
    ("Adagrad", dict(lr=0.05, eps=1e-3, maximize=True)),
]


def _ids(c):
    return c[0] + "(" + ",".join(f"{k}={v}" for k, v in c[1].items()) + ")"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[_ids(c) for c in CONFIGS])
def test_trajectory_matches_torch(cfg, dtype):
    """100 steps on a fixed gradient sequence: the optimizer's arithmetic alone."""
    name, kw = cfg
    prob = Problem(dtype, fixed=True)
    s_opt = getattr(optim, name)(prob.s_params, **kw)
    t_opt = getattr(torch.optim, name)(prob.t_params, **kw)
    run_steps(prob, s_opt, t_opt, 0, STEPS)
    compare_state(prob, s_opt, t_opt)
    assert not np.allclose(prob.s_params[0].data, prob.init[0], atol=1e-2)   # it moved


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[_ids(c) for c in CONFIGS])
def test_regression_trajectory_matches_torch(cfg, dtype):
    """100 steps of Linear+tanh regression, gradients from shendu's autograd.

    Torch's optimizer gets copies of shendu's gradients: letting each library use its own
    autograd makes the comparison measure the problem's dynamics instead (adaptive methods
    near a minimum take sign-like steps that blow last-bit gradient differences up to
    1e-8 in float64), not the optimizer. The autograd itself is checked at step 0.
    """
    name, kw = cfg
    prob = Problem(dtype, maximize=kw.get("maximize", False))
    prob.s_backward(0)
    prob.t_backward(0)
    for sp, tp in zip(prob.s_params, prob.t_params):
        np.testing.assert_allclose(sp.grad.data, tp.grad.numpy(), **TOL[dtype])
    s_opt = getattr(optim, name)(prob.s_params, **kw)
    t_opt = getattr(torch.optim, name)(prob.t_params, **kw)
    run_steps(prob, s_opt, t_opt, 0, STEPS, share_grads=True)
    compare_state(prob, s_opt, t_opt)


def test_learning_actually_happens():
    """Adam on the regression lowers the loss a lot (a test that the sign is right)."""
    prob = Problem(np.float64)
    opt = optim.Adam(prob.s_params[:4], lr=0.05)
    first = prob.s_loss().item()
    for _ in range(200):
        opt.zero_grad()
        prob.s_loss().backward()
        opt.step()
    assert prob.s_loss().item() < 0.5 * first


@pytest.mark.parametrize("name,kw", [("SGD", dict(momentum=0.9)), ("Adam", {}),
                                     ("RMSprop", dict(momentum=0.5, centered=True)),
                                     ("Adagrad", dict(lr_decay=0.01))])
def test_param_groups_with_different_lrs(name, kw):
    prob = Problem(np.float64, fixed=True)
    s_groups = [{"params": prob.s_params[:2], "lr": 0.05},
                {"params": prob.s_params[2:4]},
                {"params": prob.s_params[4:], "lr": 0.001, "weight_decay": 0.1}]
    t_groups = [{"params": prob.t_params[:2], "lr": 0.05},
                {"params": prob.t_params[2:4]},
                {"params": prob.t_params[4:], "lr": 0.001, "weight_decay": 0.1}]
    s_opt = getattr(optim, name)(s_groups, lr=0.01, **kw)
    t_opt = getattr(torch.optim, name)(t_groups, lr=0.01, **kw)
    assert [g["lr"] for g in s_opt.param_groups] == [0.05, 0.01, 0.001]
    run_steps(prob, s_opt, t_opt, 0, STEPS)
    compare_state(prob, s_opt, t_opt)


def test_add_param_group_midway():
    prob = Problem(np.float64, fixed=True)
    s_opt = optim.Adam(prob.s_params[:2], lr=0.01)
    t_opt = torch.optim.Adam(prob.t_params[:2], lr=0.01)
    run_steps(prob, s_opt, t_opt, 0, 10)     # only layer 1 moves
    np.testing.assert_array_equal(prob.s_params[2].data, prob.init[2])
    s_opt.add_param_group({"params": prob.s_params[2:], "lr": 0.02, "amsgrad": True})
    t_opt.add_param_group({"params": prob.t_params[2:], "lr": 0.02, "amsgrad": True})
    run_steps(prob, s_opt, t_opt, 10, 40)
    compare_state(prob, s_opt, t_opt)


def _json_trip(sd):
    """Through JSON, as a checkpoint would travel (arrays as lists, int keys as strings)."""
    return json.loads(json.dumps(sd, default=lambda a: a.tolist()))


OPT_CASES = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
             ("Adam", dict(lr=0.01, amsgrad=True)),
             ("AdamW", dict(lr=0.01)),
             ("RMSprop", dict(lr=0.005, momentum=0.5, centered=True)),
             ("Adagrad", dict(lr=0.1, lr_decay=0.01))]


@pytest.mark.parametrize("via_json", [False, True])
@pytest.mark.parametrize("name,kw", OPT_CASES, ids=[c[0] for c in OPT_CASES])
def test_state_dict_round_trip_mid_training(name, kw, via_json):
    """Stop at step 50, rebuild model and optimizer from the checkpoint, go on: the
    trajectory is bit-identical to the run that never stopped."""
    ref = Problem(np.float64)
    ref_opt = getattr(optim, name)(ref.s_params, **kw)
    prob = Problem(np.float64)
    opt = getattr(optim, name)(prob.s_params, **kw)
    for i in range(50):
        for p, o in ((ref, ref_opt), (prob, opt)):
            o.zero_grad()
            p.s_backward(i)
            o.step()
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3, 4]
    weights = [p.data.copy() for p in prob.s_params]
    if via_json:
        sd = _json_trip(sd)
    # taking the state dict is a snapshot: training on does not change it
    opt.zero_grad()
    prob.s_backward(50)
    opt.step()
    fresh = Problem(np.float64)
    for p, w in zip(fresh.s_params, weights):
        p.data[...] = w
    new_opt = getattr(optim, name)(fresh.s_params, lr=123.0)
    new_opt.load_state_dict(sd)
    assert new_opt.param_groups[0]["lr"] == kw["lr"]
    for i in range(50, 100):
        for p, o in ((ref, ref_opt), (fresh, new_opt)):
            o.zero_grad()
            p.s_backward(i)
            o.step()
    for a, b in zip(ref.s_params, fresh.s_params):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("name,kw", OPT_CASES, ids=[c[0] for c in OPT_CASES])
def test_state_dict_layout_matches_torch_both_ways(name, kw):
    """A torch optimizer's state dict (tensors as arrays) loads into ours and vice versa,
    and training then continues on the same trajectory."""
    prob = Problem(np.float64, fixed=True)
    s_opt = getattr(optim, name)(prob.s_params, **kw)
    t_opt = getattr(torch.optim, name)(prob.t_params, **kw)
    run_steps(prob, s_opt, t_opt, 0, 30)
    s_sd, t_sd = s_opt.state_dict(), t_opt.state_dict()
    assert list(s_sd["state"]) == list(t_sd["state"])
    for sg, tg in zip(s_sd["param_groups"], t_sd["param_groups"]):
        assert sg["params"] == tg["params"]
        for k, v in sg.items():
            assert tg[k] == v, k
    # torch → shendu into a fresh optimizer; shendu → torch into a fresh torch optimizer
    t_as_np = {"state": {k: {n: v.numpy() for n, v in s.items()} for k, s in
                         t_sd["state"].items()},
               "param_groups": t_sd["param_groups"]}
    s_as_t = {"state": {k: {n: torch.from_numpy(np.array(v)) for n, v in s.items()} for k, s in
                        s_sd["state"].items()},
              "param_groups": s_sd["param_groups"]}
    s_opt = getattr(optim, name)(prob.s_params, lr=1.0)
    s_opt.load_state_dict(t_as_np)
    t_opt = getattr(torch.optim, name)(prob.t_params, lr=1.0)
    t_opt.load_state_dict(s_as_t)
    run_steps(prob, s_opt, t_opt, 30, 60)
    compare_state(prob, s_opt, t_opt)


def test_load_state_dict_casts_to_param_dtype_and_copies():
    prob = Problem(np.float32)
    opt = optim.Adam(prob.s_params, lr=0.01)
    for i in range(3):
        opt.zero_grad()
        prob.s_backward(i)
        opt.step()
    sd = opt.state_dict()
    sd64 = {"state": {k: {n: v.astype(np.float64) for n, v in s.items()}
                      for k, s in sd["state"].items()}, "param_groups": sd["param_groups"]}
    opt2 = optim.Adam(prob.s_params)
    opt2.load_state_dict(sd64)
    s = opt2.state[prob.s_params[0]]
    assert s["exp_avg"].dtype == np.float32
    assert s["exp_avg"] is not sd64["state"][0]["exp_avg"]


def test_float32_stays_float32_and_state_dtypes():
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        prob = Problem(np.float32)
        kw = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
        opt = getattr(optim, name)(prob.s_params, lr=0.01, weight_decay=0.01, **kw)
        for i in range(3):
            opt.zero_grad()
            prob.s_backward(i)
            opt.step()
        for p in prob.s_params:
            assert p.data.dtype == np.float32, name
            for k, v in opt.state[p].items():
                if k != "step":
                    assert v.dtype == np.float32, (name, k)


def test_same_seed_bit_identical():
    def run():
        shendu.manual_seed(3)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        opt = optim.Adam(model.parameters(), lr=0.01)
        x = shendu.randn(10, 4)
        for _ in range(20):
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()
        return [p.data.copy() for p in model.parameters()]
    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_grad_none_skips_and_creates_no_state():
    a = nn.Parameter(shendu.tensor([1.0, 2.0]))
    b = nn.Parameter(shendu.tensor([3.0]))
    for cls in (optim.SGD, optim.Adam, optim.RMSprop):
        opt = cls([a, b], lr=0.1, weight_decay=0.5)
        a.grad, b.grad = shendu.tensor([1.0, 1.0]), None
        before = b.data.copy()
        opt.step()
        np.testing.assert_array_equal(b.data, before)
        assert b not in opt.state
    plain = optim.SGD([a], lr=0.1)        # plain SGD keeps no state at all, as torch
    a.grad = shendu.tensor([1.0, 1.0])
    plain.step()
    assert plain.state_dict()["state"] == {} and len(plain.state) == 0


def test_zero_grad_modes_and_closure():
    p = nn.Parameter(shendu.tensor([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.data, [0.8, -1.6], rtol=1e-6)
    arr = p.grad.data
    opt.zero_grad(set_to_none=False)
    assert p.grad.data is arr and not arr.any()
    opt.zero_grad()
    assert p.grad is None


def test_named_parameters_and_repr():
    model = nn.Linear(2, 1)
    opt = optim.SGD(model.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
    text = repr(opt)
    assert text.startswith("SGD (") and "lr: 0.1" in text


# -------------------------------------------------------------------- bad input
def _p():
    return nn.Parameter(shendu.tensor([1.0]))


@pytest.mark.parametrize("make,match", [
    (lambda: optim.SGD([_p()], lr=-0.1), r"SGD: invalid learning rate -0\.1"),
    (lambda: optim.SGD([_p()], lr=0.1, momentum=-1), r"SGD: invalid momentum -1"),
    (lambda: optim.SGD([_p()], lr=0.1, weight_decay=-1), r"SGD: invalid weight_decay"),
    (lambda: optim.SGD([_p()], lr=0.1, nesterov=True), r"SGD: Nesterov momentum needs"),
    (lambda: optim.SGD([_p()], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     r"dampening=0\.1"),
    (lambda: optim.SGD([], lr=0.1), r"SGD: got an empty parameter list"),
    (lambda: optim.Adam([_p()], lr=-1e-3), r"Adam: invalid learning rate -0\.001"),
    (lambda: optim.Adam([_p()], betas=(1.0, 0.999)), r"Adam: invalid beta parameter at index 0"),
    (lambda: optim.Adam([_p()], betas=(0.9, -0.1)), r"index 1: -0\.1"),
    (lambda: optim.Adam([_p()], betas=(0.9,)), r"Adam: betas must be a pair"),
    (lambda: optim.Adam([_p()], eps=-1), r"Adam: invalid epsilon -1"),
    (lambda: optim.AdamW([_p()], weight_decay=-0.1), r"AdamW: invalid weight_decay -0\.1"),
    (lambda: optim.AdamW([]), r"AdamW: got an empty parameter list"),
    (lambda: optim.RMSprop([_p()], alpha=-0.5), r"RMSprop: invalid alpha -0\.5"),
    (lambda: optim.RMSprop([_p()], momentum=-0.5), r"RMSprop: invalid momentum"),
    (lambda: optim.Adagrad([_p()], lr_decay=-1), r"Adagrad: invalid lr_decay -1"),
    (lambda: optim.Adagrad([_p()], initial_accumulator_value=-1),
     r"Adagrad: invalid initial_accumulator_value"),
    (lambda: optim.SGD([{"params": [_p()], "lr": -2.0}], lr=0.1),
     r"SGD: invalid learning rate -2\.0"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_params():
    p = _p()
    with pytest.raises(TypeError, match=r"SGD: params should be an iterable.*single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match=r"Adam can only optimize Tensors, but parameter 1 is "
                                        r"a ndarray"):
        optim.Adam([p, np.zeros(2)])
    with pytest.raises(TypeError, match=r"ordered collection"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match=r"more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    y = p * 2
    with pytest.raises(ValueError, match=r"non-leaf"):
        optim.SGD([y], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD: lr must be a real number, got str 'fast'"):
        optim.SGD([p], lr="fast")
    with pytest.raises(TypeError, match=r"floating-point"):
        optim.SGD([shendu.tensor([1, 2])], lr=0.1)


def test_bad_state_dicts():
    a, b = _p(), _p()
    opt = optim.Adam([a, b])
    a.grad = b.grad = shendu.tensor([1.0])
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: the state dict has 1 parameter "
                                         r"groups, this optimizer has 2"):
        optim.Adam([{"params": [a]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"group 0 holds 2 parameters in the state dict, 1 in"):
        optim.Adam([a]).load_state_dict(sd)
    c = nn.Parameter(shendu.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"state 'exp_avg' has shape \(1,\), its parameter has "
                                         r"shape \(2,\)"):
        optim.Adam([a, c]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"expected a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
