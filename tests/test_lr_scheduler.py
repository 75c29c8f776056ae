"""shendu.optim.lr_scheduler against torch.optim.lr_scheduler: every schedule's learning
rates (and OneCycleLR's momentum) over 100+ steps, state_dict round trips, bad input.

The schedules use torch's formulas operation for operation (on Python floats), so the
values are compared for exact equality, not merely to 1e-12."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import shendu
from shendu import nn, optim
from shendu.optim import lr_scheduler as S

T = torch.optim.lr_scheduler
STEPS = 120
LRS = (0.1, 0.03)        # two param groups with different learning rates


def _pair(opt_name="SGD", **opt_kw):
    """The same two-group optimizer in shendu and torch."""
    s_groups = [{"params": [nn.Parameter(shendu.zeros(2))], "lr": LRS[0]},
                {"params": [nn.Parameter(shendu.zeros(3))], "lr": LRS[1]}]
    t_groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": LRS[0]},
                {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": LRS[1]}]
    return (getattr(optim, opt_name)(s_groups, **opt_kw),
            getattr(torch.optim, opt_name)(t_groups, **opt_kw))


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


def _assert_same(s_opt, t_opt, s_sched, t_sched, where):
    s_lr, t_lr = s_sched.get_last_lr(), t_sched.get_last_lr()
    np.testing.assert_allclose(s_lr, t_lr, rtol=0, atol=0, err_msg=where)
    np.testing.assert_allclose([g["lr"] for g in s_opt.param_groups],
                               [g["lr"] for g in t_opt.param_groups], rtol=0, atol=0,
                               err_msg=where)
    s_m, t_m = _momenta(s_opt), _momenta(t_opt)
    if s_m[0] is not None:
        np.testing.assert_allclose(s_m, t_m, rtol=0, atol=0, err_msg=f"momentum {where}")


def run_both(s_opt, t_opt, s_sched, t_sched, steps=STEPS, metrics=None):
    _assert_same(s_opt, t_opt, s_sched, t_sched, "after construction")
    seen = []
    for i in range(steps):
        s_opt.step()
        t_opt.step()
        if metrics is None:
            s_sched.step()
            t_sched.step()
        else:
            s_sched.step(metrics[i])
            t_sched.step(metrics[i])
        _assert_same(s_opt, t_opt, s_sched, t_sched, f"step {i + 1}")
        seen.append(s_sched.get_last_lr()[0])
    return seen


CASES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.97)),
    ("MultiStepLR", dict(milestones=[10, 30, 30, 80], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.95)),
    ("CosineAnnealingLR", dict(T_max=40)),                # goes past T_max: rises again
    ("CosineAnnealingLR", dict(T_max=25, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=1000, eta_min=1e-5)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.01, end_factor=1.0, total_iters=50)),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=90)),
    ("LambdaLR", dict(lr_lambda=lambda e: 0.5 ** (e // 9) / (1 + 0.01 * e))),
    ("LambdaLR", dict(lr_lambda=[lambda e: 0.99 ** e, lambda e: min(1.0, (e + 1) / 20)])),
    ("ConstantLR", dict(factor=0.25, total_iters=30)),
    ("PolynomialLR", dict(total_iters=80, power=2.0)),
    ("PolynomialLR", dict(total_iters=100, power=0.5)),
    ("CosineAnnealingWarmRestarts", dict(T_0=10, T_mult=2, eta_min=0.001)),
    ("CosineAnnealingWarmRestarts", dict(T_0=7)),
]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}{kw}" for n, kw in CASES])
def test_schedule_matches_torch(name, kw):
    s_opt, t_opt = _pair("SGD", momentum=0.9)
    s_sched = getattr(S, name)(s_opt, **kw)
    t_sched = getattr(T, name)(t_opt, **kw)
    seen = run_both(s_opt, t_opt, s_sched, t_sched)
    assert len(set(seen)) > 1            # the schedule did something
    assert [g["initial_lr"] for g in s_opt.param_groups] == list(LRS)


ONECYCLE = [
    ("SGD", dict(momentum=0.9), dict(max_lr=1.0, total_steps=STEPS)),
    ("SGD", dict(momentum=0.9), dict(max_lr=[0.5, 2.0], total_steps=STEPS,
                                     anneal_strategy="linear")),
    ("SGD", dict(momentum=0.9), dict(max_lr=1.0, epochs=10, steps_per_epoch=12,
                                     three_phase=True, pct_start=0.25)),
    ("SGD", dict(momentum=0.9), dict(max_lr=1.0, total_steps=STEPS, three_phase=True,
                                     anneal_strategy="linear", base_momentum=[0.8, 0.7],
                                     max_momentum=0.99, div_factor=10.0,
                                     final_div_factor=100.0)),
    ("SGD", dict(), dict(max_lr=0.3, total_steps=STEPS, cycle_momentum=False)),
    ("Adam", dict(), dict(max_lr=0.01, total_steps=STEPS)),                     # beta1 cycles
    ("AdamW", dict(), dict(max_lr=0.01, total_steps=STEPS, anneal_strategy="linear",
                           three_phase=True)),
]


@pytest.mark.parametrize("opt_name,opt_kw,kw", ONECYCLE,
                         ids=[f"{o}-{kw}" for o, _, kw in ONECYCLE])
def test_onecycle_matches_torch_lr_and_momentum(opt_name, opt_kw, kw):
    s_opt, t_opt = _pair(opt_name, **opt_kw)
    s_sched = S.OneCycleLR(s_opt, **kw)
    t_sched = T.OneCycleLR(t_opt, **kw)
    run_both(s_opt, t_opt, s_sched, t_sched, steps=STEPS - 1)
    if kw.get("cycle_momentum", True):
        assert s_opt.param_groups[0]["max_momentum"] == t_opt.param_groups[0]["max_momentum"]
    with pytest.raises(ValueError, match=r"OneCycleLR: tried to step 121 times, but "
                                         r"total_steps is 120"):
        s_sched.step()
        s_sched.step()


@pytest.mark.slow
def test_onecycle_drives_sgd_momentum_in_the_update():
    """The momentum OneCycleLR sets is the one SGD's next step uses."""
    p = nn.Parameter(shendu.tensor([1.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    assert opt.param_groups[0]["momentum"] == 0.95
    sched_m = []
    for _ in range(5):
        p.grad = shendu.tensor([1.0])
        opt.step()
        sched.step()
        sched_m.append(opt.param_groups[0]["momentum"])
    assert sched_m[0] < 0.95 and min(sched_m) == pytest.approx(0.85)


PLATEAU = [
    dict(),
    dict(patience=3, factor=0.5),
    dict(mode="max", patience=2, factor=0.5, threshold=0.01),
    dict(mode="min", threshold_mode="abs", threshold=0.05, patience=2, cooldown=3),
    dict(mode="max", threshold_mode="abs", threshold=0.0, patience=0, factor=0.7),
    dict(patience=1, factor=0.1, min_lr=[0.005, 0.0001]),
    dict(patience=1, factor=0.9, min_lr=0.02, eps=1e-3),
    dict(patience=4, cooldown=2, factor=0.2, threshold=0.1),
]


def _metrics(n=150):
    """A fixed, deterministic metric sequence with improvements, plateaus and noise."""
    rng = np.random.default_rng(0)
    base = np.concatenate([np.linspace(1.0, 0.5, 30), np.full(30, 0.5),
                           np.linspace(0.5, 0.3, 20), np.full(40, 0.31), np.linspace(0.3, 0.6, 30)])
    return [float(v) for v in base[:n] + 0.01 * rng.standard_normal(n)]


@pytest.mark.parametrize("kw", PLATEAU, ids=[str(k) for k in PLATEAU])
def test_reduce_on_plateau_matches_torch(kw):
    s_opt, t_opt = _pair("SGD")
    s_sched = S.ReduceLROnPlateau(s_opt, **kw)
    t_sched = T.ReduceLROnPlateau(t_opt, **kw)
    metrics = _metrics()
    run_both(s_opt, t_opt, s_sched, t_sched, steps=len(metrics), metrics=metrics)
    assert s_opt.param_groups[0]["lr"] < LRS[0] or kw.get("mode") == "max"
    for attr in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
        assert getattr(s_sched, attr) == getattr(t_sched, attr), attr


def test_chained_schedulers_match_torch():
    """Two schedulers on one optimizer (warm-up times decay): the chainable forms compose."""
    s_opt, t_opt = _pair("SGD", momentum=0.9)
    s1, t1 = S.LinearLR(s_opt, start_factor=0.1, total_iters=10), \
        T.LinearLR(t_opt, start_factor=0.1, total_iters=10)
    s2, t2 = S.ExponentialLR(s_opt, gamma=0.97), T.ExponentialLR(t_opt, gamma=0.97)
    for i in range(STEPS):
        s_opt.step()
        t_opt.step()
        for s, t in ((s1, t1), (s2, t2)):
            s.step()
            t.step()
        np.testing.assert_allclose(s2.get_last_lr(), t2.get_last_lr(), rtol=0, atol=0,
                                   err_msg=f"step {i}")


@pytest.mark.parametrize("name,kw", [("StepLR", dict(step_size=5, gamma=0.5)),
                                     ("MultiStepLR", dict(milestones=[3, 7, 7], gamma=0.5)),
                                     ("ExponentialLR", dict(gamma=0.9)),
                                     ("CosineAnnealingLR", dict(T_max=20, eta_min=0.01)),
                                     ("LinearLR", dict(start_factor=0.2, total_iters=8)),
                                     ("ConstantLR", dict(factor=0.5, total_iters=4)),
                                     ("PolynomialLR", dict(total_iters=12, power=3.0)),
                                     ("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2)),
                                     ("CosineAnnealingWarmRestarts", dict(T_0=4))])
def test_step_with_epoch_uses_closed_form_as_torch(name, kw):
    s_opt, t_opt = _pair("SGD")
    s_sched, t_sched = getattr(S, name)(s_opt, **kw), getattr(T, name)(t_opt, **kw)
    epochs = (3, 4, 10, 2, 15)
    if name == "CosineAnnealingWarmRestarts":       # fractional epochs, as its docs suggest
        epochs = (0.5, 1.25, 3.0, 7.75, 2.5, 30.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in epochs:
            s_opt.step()
            t_opt.step()
            s_sched.step(epoch)
            t_sched.step(epoch)
            np.testing.assert_allclose(s_sched.get_last_lr(), t_sched.get_last_lr(),
                                       rtol=0, atol=0, err_msg=f"epoch {epoch}")


SD_CASES = [("StepLR", dict(step_size=7, gamma=0.5), "SGD"),
            ("MultiStepLR", dict(milestones=[10, 30, 30, 55], gamma=0.3), "SGD"),
            ("ExponentialLR", dict(gamma=0.95), "SGD"),
            ("CosineAnnealingLR", dict(T_max=30, eta_min=0.001), "SGD"),
            ("LinearLR", dict(start_factor=0.1, total_iters=50), "SGD"),
            ("OneCycleLR", dict(max_lr=1.0, total_steps=100, three_phase=True), "SGD"),
            ("OneCycleLR", dict(max_lr=0.01, total_steps=100), "Adam"),
            ("ReduceLROnPlateau", dict(patience=2, cooldown=1, factor=0.5), "SGD"),
            ("LambdaLR", dict(lr_lambda=lambda e: 0.97 ** e), "SGD"),
            ("PolynomialLR", dict(total_iters=70, power=2.0), "SGD"),
            ("CosineAnnealingWarmRestarts", dict(T_0=7, T_mult=2), "SGD")]


@pytest.mark.parametrize("name,kw,opt_name", SD_CASES, ids=[c[0] for c in SD_CASES])
def test_state_dict_round_trip(name, kw, opt_name):
    """Checkpoint at step 40 (through JSON), rebuild optimizer and scheduler, go on: the
    learning rates (and momenta) equal those of the run that never stopped."""
    metrics = _metrics(100)
    opt_kw = dict(momentum=0.9) if opt_name == "SGD" else {}

    def make():
        opt = getattr(optim, opt_name)([nn.Parameter(shendu.zeros(2))], lr=0.1, **opt_kw)
        return opt, getattr(S, name)(opt, **kw)

    def advance(opt, sched, i):
        opt.step()
        if name == "ReduceLROnPlateau":
            sched.step(metrics[i])
        else:
            sched.step()

    ref_opt, ref = make()
    opt, sched = make()
    for i in range(40):
        advance(ref_opt, ref, i)
        advance(opt, sched, i)
    opt_sd = json.loads(json.dumps(opt.state_dict()))
    sched_sd = json.loads(json.dumps(sched.state_dict()))
    new_opt, new_sched = make()          # created fresh: first the scheduler, then load both
    new_opt.load_state_dict(opt_sd)
    new_sched.load_state_dict(sched_sd)
    for i in range(40, 99):
        advance(ref_opt, ref, i)
        advance(new_opt, new_sched, i)
        assert new_sched.get_last_lr() == ref.get_last_lr(), f"step {i}"
        assert _momenta(new_opt) == _momenta(ref_opt), f"step {i}"
        assert new_sched.last_epoch == ref.last_epoch


def test_state_dict_keys_match_torch():
    s_opt, t_opt = _pair("SGD", momentum=0.9)
    for name, kw in CASES[:1] + CASES[3:5]:
        s, t = getattr(S, name)(s_opt, **kw), getattr(T, name)(t_opt, **kw)
        assert set(s.state_dict()) <= set(t.state_dict()), name
        assert {"base_lrs", "last_epoch", "_last_lr"} <= set(s.state_dict())


def test_resume_with_last_epoch():
    """A scheduler made with last_epoch=k continues as torch's does."""
    s_opt, t_opt = _pair("SGD")
    for opt in (s_opt, t_opt):
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    s = S.CosineAnnealingLR(s_opt, T_max=50, last_epoch=9)
    t = T.CosineAnnealingLR(t_opt, T_max=50, last_epoch=9)
    run_both(s_opt, t_opt, s, t, steps=60)


def test_warns_when_scheduler_steps_before_optimizer():
    opt, _ = _pair("SGD")
    sched = S.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match=r"before optimizer.step\(\)"):
        sched.step()
    opt2, _ = _pair("SGD")
    sched2 = S.StepLR(opt2, step_size=2)
    opt2.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched2.step()


@pytest.mark.parametrize("make,err,match", [
    (lambda o: S.StepLR(o, step_size=0), ValueError, r"StepLR: step_size must be a positive int"),
    (lambda o: S.StepLR(object(), step_size=2), TypeError, r"StepLR expected a shendu.optim "
                                                            r"Optimizer, got object"),
    (lambda o: S.MultiStepLR(o, milestones=[1.5]), ValueError, r"milestones must be ints"),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), ValueError, r"T_max must be a positive int"),
    (lambda o: S.LinearLR(o, start_factor=0.0), ValueError, r"start_factor must be in \(0, 1\]"),
    (lambda o: S.LinearLR(o, end_factor=1.5), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0), ValueError, r"give either total_steps or both"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=0), ValueError,
     r"positive int total_steps, got 0"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=1.5), ValueError,
     r"pct_start must be a float in \[0, 1\], got 1.5"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=10, anneal_strategy="exp"), ValueError,
     r"anneal_strategy must be 'cos' or 'linear', got 'exp'"),
    (lambda o: S.OneCycleLR(o, max_lr=[1.0, 2.0, 3.0], total_steps=10), ValueError,
     r"max_lr has 3 values, but the optimizer has 2 parameter groups"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, r"factor must be in \[0, 1\)"),
    (lambda o: S.ReduceLROnPlateau(o, mode="up"), ValueError, r"mode must be 'min' or 'max'"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, r"threshold_mode must be"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, r"min_lr has 1 values"),
    (lambda o: S.ExponentialLR(o, gamma=0.9, last_epoch=5), KeyError, r"has no 'initial_lr'"),
    (lambda o: S.LambdaLR(o, lr_lambda=[abs]), ValueError, r"lr_lambda has 1 values"),
    (lambda o: S.LambdaLR(o, lr_lambda=0.5), TypeError, r"lr_lambda must be callable"),
    (lambda o: S.ConstantLR(o, factor=2.0), ValueError, r"ConstantLR: factor must be in"),
    (lambda o: S.PolynomialLR(o, total_iters=0), ValueError, r"total_iters must be a positive"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, r"T_0 must be a positive"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), ValueError,
     r"T_mult must be an int >= 1, got 0"),
])
def test_bad_input(make, err, match):
    opt, _ = _pair("SGD")
    with pytest.raises(err, match=match):
        make(opt)


def test_onecycle_needs_momentum():
    opt = optim.Adagrad([nn.Parameter(shendu.zeros(2))])
    with pytest.raises(ValueError, match=r"cycle_momentum needs an optimizer with momentum or "
                                         r"betas, and Adagrad has neither"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    S.OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=False)
