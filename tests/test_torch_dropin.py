"""The torch surface a PyTorch script touches (issue #15): dtype names, devices, the CUDA/MPS
queries, generators, factories' torch signatures and the Tensor methods scripts use — each
checked against torch's own answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import check_op, compare_with_torch, make_inputs

import shendu


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("name", ["float32", "float64", "float16", "half", "float", "double",
                                  "long", "int", "int32", "int64", "int16", "short", "int8",
                                  "uint8", "bool", "complex64", "complex128"])
def test_dtype_names_match_torch(name):
    want = torch.zeros(2, dtype=getattr(torch, name)).numpy().dtype
    assert np.dtype(getattr(shendu, name)) == want
    assert shendu.zeros(2, dtype=getattr(shendu, name)).dtype == want
    assert shendu.zeros(2, dtype=getattr(shendu, name)).dtype == getattr(shendu, name)


def test_bfloat16_through_ml_dtypes_or_a_clear_error():
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        with pytest.raises(AttributeError, match="ml_dtypes"):
            shendu.bfloat16  # noqa: B018
        return
    t = shendu.ones(3, dtype=shendu.bfloat16)
    assert str(t.dtype) == "bfloat16"
    assert t.float().dtype == np.float32


@pytest.mark.parametrize("data", [np.zeros(3), np.zeros(3, np.float32), np.float64(2.0),
                                  [1.0, 2.0], [1, 2], 3.5, [True], np.arange(3),
                                  np.zeros(2, np.float16)])
def test_tensor_of_data_keeps_the_dtype_torch_keeps(data):
    assert shendu.tensor(data).dtype == torch.tensor(data).numpy().dtype


def test_tensor_of_a_float64_tensor_stays_float64():
    t = shendu.tensor([1.0], dtype=shendu.double)
    assert shendu.tensor(t).dtype == np.float64


# ------------------------------------------------------------------ devices
def test_device_objects_as_torch():
    for spec in ["cpu", "cuda", "cuda:1", "mps"]:
        s, t = shendu.device(spec), torch.device(spec)
        assert (str(s), repr(s), s.type, s.index) == (str(t), repr(t), t.type, t.index)
    assert shendu.device("cuda", 0) == shendu.device("cuda:0") == "cuda:0"
    assert shendu.device(shendu.device("cpu")) == "cpu"
    with pytest.raises(RuntimeError, match="Expected one of"):
        shendu.device("gpu")
    with pytest.raises(RuntimeError, match="Expected one of"):
        torch.device("gpu")


def test_tensors_and_modules_live_on_the_cpu():
    cpu = shendu.device("cpu")
    x = shendu.randn(2, 3, device=cpu)
    assert x.device == cpu and x.device.type == "cpu" and not x.is_cuda
    assert x.to(cpu) is x and x.to("cpu") is x and x.cpu() is x
    assert x.to(cpu, shendu.double).dtype == np.float64
    assert x.to(device="cpu", dtype=shendu.float64).dtype == np.float64
    m = shendu.nn.Linear(3, 2).to(cpu)
    assert m.to("cpu", shendu.double).weight.dtype == np.float64
    for f in (shendu.zeros, shendu.ones, shendu.empty, shendu.randn, shendu.rand):
        assert f(2, device="cpu").shape == (2,)
    assert shendu.arange(3, device=cpu).device == cpu
    assert shendu.tensor([1.0], device="cpu").device == cpu
    assert shendu.full((2,), 1.0, device=cpu).device == cpu


@pytest.mark.parametrize("make", [
    lambda: shendu.zeros(2, device="cuda"),
    lambda: shendu.tensor([1.0], device=shendu.device("cuda", 0)),
    lambda: shendu.randn(2).to("cuda"),
    lambda: shendu.randn(2).to(shendu.device("mps")),
    lambda: shendu.randn(2).cuda(),
    lambda: shendu.nn.Linear(2, 2).to("cuda"),
    lambda: shendu.nn.Linear(2, 2).cuda(),
    lambda: shendu.set_default_device("cuda"),
    lambda: shendu.arange(3, device="cuda:1"),
])
def test_a_device_that_does_not_exist_is_one_clear_error(make):
    with pytest.raises(RuntimeError, match="is not available: shendu computes with NumPy"):
        make()


def test_cuda_mps_accelerator_queries():
    assert shendu.cuda.is_available() is False and shendu.cuda.device_count() == 0
    shendu.cuda.manual_seed(1)
    shendu.cuda.manual_seed_all(1)
    assert shendu.backends.mps.is_available() is False
    assert shendu.backends.cudnn.is_available() is False
    assert shendu.accelerator.is_available() is False
    assert shendu.accelerator.current_accelerator() is None
    shendu.set_default_device("cpu")
    assert shendu.get_default_device() == shendu.device("cpu")
    assert shendu.utils.data.DataLoader is shendu.data.DataLoader
    import shendu.utils.data as sud

    assert sud.TensorDataset is shendu.data.TensorDataset


# ------------------------------------------------------------------ generators and factories
def test_generator_objects_make_streams_repeatable():
    g = shendu.Generator().manual_seed(7)
    a = shendu.randn(4, generator=g)
    g.manual_seed(7)
    assert np.array_equal(a.data, shendu.randn(4, generator=g).data)
    shendu.manual_seed(0)
    b = shendu.randn(4)
    shendu.manual_seed(0)
    shendu.randn(4, generator=shendu.Generator().manual_seed(3))  # doesn't touch the global
    assert np.array_equal(b.data, shendu.randn(4).data)
    assert g.initial_seed() == 7
    st = g.get_state()
    x = shendu.rand(3, generator=g)
    g.set_state(st)
    assert np.array_equal(x.data, shendu.rand(3, generator=g).data)


def test_generator_passed_to_a_dataloader():
    ds = shendu.data.TensorDataset(shendu.arange(10))
    order = [[int(v) for v in b[0]] for b in shendu.data.DataLoader(
        ds, batch_size=10, shuffle=True, generator=shendu.Generator().manual_seed(5))]
    again = [[int(v) for v in b[0]] for b in shendu.data.DataLoader(
        ds, batch_size=10, shuffle=True, generator=shendu.Generator().manual_seed(5))]
    assert order == again and sorted(order[0]) == list(range(10))


@pytest.mark.parametrize("call", [
    lambda m: m.randint(10, (3,)),
    lambda m: m.randint(2, 10, (3, 2)),
    lambda m: m.randint(0, 10, size=(4,)),
    lambda m: m.randint(10, (2,), dtype=m.int32),
    lambda m: m.full((2, 2), 3),
    lambda m: m.full((2,), 1.5),
    lambda m: m.full((2,), True),
    lambda m: m.arange(5),
    lambda m: m.arange(0, 1, 0.25),
    lambda m: m.arange(m.tensor(4)),
    lambda m: m.zeros_like(m.ones(2, dtype=m.long)),
    lambda m: m.full_like(m.ones(2), 7),
    lambda m: m.randn_like(m.ones(2, dtype=m.double)),
    lambda m: m.rand_like(m.ones(2)),
    lambda m: m.empty_like(m.ones(2, 3)),
    lambda m: m.randperm(5),
    lambda m: m.ones(2, 3).new_zeros(4),
    lambda m: m.ones(2, dtype=m.double).new_ones((2, 2)),
    lambda m: m.ones(2, dtype=m.long).new_full((3,), 2),
    lambda m: m.ones(2).new_tensor([1, 2]),
    lambda m: m.ones(2).new_empty(3),
])
def test_factory_signatures_shapes_and_dtypes_as_torch(call):
    s, t = call(shendu), call(torch)
    assert s.shape == tuple(t.shape) and s.dtype == t.numpy().dtype


def test_randint_draws_in_range():
    r = shendu.randint(3, 7, (1000,))
    assert r.data.min() == 3 and r.data.max() == 6


# ------------------------------------------------------------------ python protocols
def test_index_and_format_as_torch():
    for m in (shendu, torch):
        i = m.tensor(2)
        assert [10, 20, 30, 40][i] == 30
        assert list(range(10))[m.tensor(1):m.tensor(4)] == [1, 2, 3]
        with pytest.raises(TypeError):
            [1, 2][m.tensor(1.0)]
    loss_s, loss_t = shendu.tensor(0.123456), torch.tensor(0.123456)
    for spec in (".4f", ".2e", "8.3f", ""):
        assert f"{loss_s:{spec}}" == f"{loss_t:{spec}}"
    for m in (shendu, torch):  # a tensor with dimensions takes no format spec
        with pytest.raises(TypeError, match="unsupported format string"):
            f"{m.tensor([1.5]):.2f}"
    assert f"{shendu.tensor([1.5])}" == str(shendu.tensor([1.5]))


# ------------------------------------------------------------------ ops and methods
def test_cumsum_gradcheck_and_torch():
    check_op(lambda x: x.cumsum(1), [(3, 4)])
    check_op(lambda x: shendu.cumsum(x, dim=0) if isinstance(x, shendu.Tensor)
             else torch.cumsum(x, dim=0), [(5,)])


def test_cumsum_of_integers_is_int64_like_torch():
    for d in (np.int32, np.bool_):
        s = shendu.tensor(np.ones(3, d)).cumsum(0)
        t = torch.tensor(np.ones(3, d)).cumsum(0)
        assert s.dtype == t.numpy().dtype and s.tolist() == t.tolist()


@pytest.mark.parametrize("largest", [True, False])
def test_topk_values_indices_and_gradient(largest):
    check_op(lambda x: x.topk(3, dim=1, largest=largest), [(4, 6)])
    check_op(lambda x: x.topk(2, dim=0, largest=largest)[0], [(5, 3)])
    (x,) = make_inputs([(4, 6)])
    assert np.array_equal(shendu.tensor(x).topk(3, largest=largest)[1].data,
                          torch.tensor(x).topk(3, largest=largest)[1].numpy())


@pytest.mark.parametrize("descending", [False, True])
def test_sort_and_argsort(descending):
    check_op(lambda x: x.sort(dim=-1, descending=descending), [(3, 5)])
    check_op(lambda x: x.sort(0, descending)[0], [(4, 2)])
    a = np.array([[3, 1, 2, 1, 3], [0, 0, 5, 5, 0]], np.float32)  # ties: stable order
    s = shendu.tensor(a).argsort(dim=1, descending=descending)
    t = torch.tensor(a).argsort(dim=1, descending=descending, stable=True)
    assert np.array_equal(s.data, t.numpy())
    s2 = shendu.sort(shendu.tensor(a), descending=descending)
    t2 = torch.sort(torch.tensor(a), descending=descending, stable=True)
    assert np.array_equal(s2[1].data, t2[1].numpy())


@pytest.mark.parametrize("k", [-1, 0, 1])
def test_tril_triu(k):
    check_op(lambda x: x.tril(k), [(4, 5)])
    check_op(lambda x: x.triu(k), [(2, 4, 3)])
    check_op(lambda x: shendu.tril(x, k) if isinstance(x, shendu.Tensor) else torch.tril(x, k),
             [(3, 3)])
    assert np.array_equal(shendu.tril(shendu.ones(3, 3, dtype=shendu.long)).data,
                          torch.tril(torch.ones(3, 3, dtype=torch.long)).numpy())


def test_narrow_bmm_baddbmm_outer_rsqrt_sin_cos():
    check_op(lambda x: x.narrow(1, 1, 2), [(3, 4)])
    check_op(lambda x: x.narrow(0, -2, 2), [(3, 4)])
    check_op(lambda a, b: a.bmm(b), [(2, 3, 4), (2, 4, 5)])
    check_op(lambda c, a, b: (shendu if isinstance(a, shendu.Tensor) else torch).baddbmm(
        c, a, b, beta=0.5, alpha=2.0), [(2, 3, 5), (2, 3, 4), (2, 4, 5)])
    check_op(lambda a, b: a.outer(b), [(3,), (4,)])
    check_op(lambda x: x.rsqrt(), [(3, 4)], positive=True)
    check_op(lambda x: x.sin() * x.cos(), [(3, 4)])
    check_op(lambda x: x.add(x * 2, alpha=0.5).sub(x, alpha=2).mul(x).div(1.5), [(3,)])
    with pytest.raises(RuntimeError, match="narrow"):
        shendu.ones(3).narrow(0, 2, 2)


@pytest.mark.parametrize("spec,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij->j", [(3, 4)]),
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("ij,k->i", [(3, 4), (2,)]),
    ("ij,jk", [(2, 3), (3, 4)]),
])
def test_einsum(spec, shapes):
    check_op(lambda *xs: (shendu if isinstance(xs[0], shendu.Tensor) else torch).einsum(
        spec, *xs), shapes)


@pytest.mark.parametrize("mode", [None, "floor", "trunc"])
def test_div_rounding_mode(mode):
    a = np.array([-7.5, -3.0, 2.5, 7.0], np.float32)
    b = np.array([2.0, -2.0, 2.0, 3.0], np.float32)
    for x, y in [(a, b), (a.astype(np.int64), b.astype(np.int64))]:
        s = shendu.div(shendu.tensor(x), shendu.tensor(y), rounding_mode=mode)
        t = torch.div(torch.tensor(x), torch.tensor(y), rounding_mode=mode)
        assert s.dtype == t.numpy().dtype
        np.testing.assert_array_equal(s.data, t.numpy())
        assert np.array_equal(shendu.tensor(x).div(shendu.tensor(y), rounding_mode=mode).data,
                              t.numpy())
    if mode is None:
        compare_with_torch(lambda x, y: x.div(y), [a, b])


def test_multinomial_draws_by_weight():
    g = shendu.Generator().manual_seed(0)
    p = shendu.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    d = shendu.multinomial(p, 4000, replacement=True, generator=g)
    assert d.shape == (2, 4000) and d.dtype == np.int64
    assert set(d.data[1].tolist()) == {0}
    assert 0.72 < (d.data[0] == 2).mean() < 0.78 and not np.any(d.data[0] == 0)
    w = p[0].multinomial(2)
    assert sorted(w.data.tolist()) == [1, 2]
    with pytest.raises(RuntimeError, match="multinomial"):  # torch: too few nonzero weights
        p.multinomial(2)
    with pytest.raises(RuntimeError, match="multinomial"):
        shendu.multinomial(shendu.tensor([1.0, 0.0]), 2)
    with pytest.raises(RuntimeError, match="multinomial"):
        shendu.multinomial(shendu.tensor([1.0, -1.0]), 1)


def test_misc_methods():
    x = shendu.tensor([1.0, 2.0])
    assert x.is_floating_point() and not x.long().is_floating_point()
    assert x.type_as(shendu.ones(1, dtype=shendu.double)).dtype == np.float64
    assert x.element_size() == 4


# ------------------------------------------------------------------ optimizers
ADADELTA = [dict(), dict(lr=0.5, rho=0.8), dict(lr=1.0, weight_decay=0.05, eps=1e-4),
            dict(lr=0.3, maximize=True)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", ADADELTA, ids=[str(k) for k in ADADELTA])
def test_adadelta_trajectory_matches_torch(kw, dtype):
    from test_optim import STEPS, Problem, compare_state, run_steps

    prob = Problem(dtype, fixed=True)
    s_opt = shendu.optim.Adadelta(prob.s_params, **kw)
    t_opt = torch.optim.Adadelta(prob.t_params, **kw)
    run_steps(prob, s_opt, t_opt, 0, STEPS)
    compare_state(prob, s_opt, t_opt)
    assert not np.allclose(prob.s_params[0].data, prob.init[0], atol=1e-3)  # it moved
    sd = s_opt.state_dict()
    again = shendu.optim.Adadelta(prob.s_params, **kw)
    again.load_state_dict(sd)
    assert set(again.state[prob.s_params[0]]) == {"step", "square_avg", "acc_delta"}


@pytest.mark.slow
def test_adadelta_rejects_bad_hyperparameters():
    w = shendu.nn.Parameter(shendu.zeros(2))
    for kw in (dict(lr=-1.0), dict(rho=1.5), dict(eps=-1.0), dict(weight_decay=-0.1)):
        with pytest.raises(ValueError):
            shendu.optim.Adadelta([w], **kw)


ADAM_FAMILY = [
    ("Adamax", dict()), ("Adamax", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05)),
    ("Adamax", dict(lr=0.005, eps=1e-3, maximize=True)),
    ("NAdam", dict()), ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), momentum_decay=0.01)),
    ("NAdam", dict(lr=0.005, weight_decay=0.05)),
    ("NAdam", dict(lr=0.005, weight_decay=0.05, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict()), ("RAdam", dict(lr=0.01, betas=(0.8, 0.9))),   # rho_t > 5 from step 3
    ("RAdam", dict(lr=0.005, weight_decay=0.05, eps=1e-4)),
    ("RAdam", dict(lr=0.005, weight_decay=0.05, decoupled_weight_decay=True, maximize=True)),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kw", ADAM_FAMILY, ids=[f"{n}{k}" for n, k in ADAM_FAMILY])
def test_adam_family_trajectory_matches_torch(name, kw, dtype):
    """Adamax, NAdam and RAdam: parameters after each of 100 steps and the final state equal
    torch's (NAdam's ``mu_product`` is a default-dtype scalar in both, as torch keeps it)."""
    from test_optim import STEPS, TOL, Problem, run_steps

    prob = Problem(dtype, fixed=True)
    s_opt = getattr(shendu.optim, name)(prob.s_params, **kw)
    t_opt = getattr(torch.optim, name)(prob.t_params, **kw)
    run_steps(prob, s_opt, t_opt, 0, STEPS)
    tol = TOL[dtype]
    for sp, tp in zip(prob.s_params, prob.t_params):
        s_state, t_state = s_opt.state[sp], t_opt.state[tp]
        assert set(s_state) == set(t_state)
        for key, tv in t_state.items():
            want = tv.numpy()
            if key == "step":
                assert float(s_state[key]) == float(want)
                continue
            assert s_state[key].dtype == (want.dtype if key == "mu_product" else dtype)
            scale = float(np.abs(want).max())
            np.testing.assert_allclose(s_state[key], want, rtol=tol["rtol"],
                                       atol=max(tol["atol"], tol["rtol"] * scale), err_msg=key)
    assert not np.allclose(prob.s_params[0].data, prob.init[0], atol=1e-3)  # it moved
    again = getattr(shendu.optim, name)(prob.s_params, **kw)
    again.load_state_dict(s_opt.state_dict())
    assert set(again.state[prob.s_params[0]]) == set(s_opt.state[prob.s_params[0]])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Adamax", "NAdam", "RAdam"])
def test_adam_family_rejects_bad_hyperparameters(name):
    w = shendu.nn.Parameter(shendu.zeros(2))
    for kw in (dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(eps=-1.0), dict(weight_decay=-0.1)):
        with pytest.raises(ValueError, match=name):
            getattr(shendu.optim, name)([w], **kw)
    if name == "NAdam":
        with pytest.raises(ValueError, match="momentum_decay"):
            shendu.optim.NAdam([w], momentum_decay=-1.0)


# ------------------------------------------------------------------ schedulers
def _decay(e):
    return 0.95 if e % 3 else 0.9


SCHEDULERS = [
    ("MultiplicativeLR", "SGD", {}, lambda lib, o: lib.MultiplicativeLR(o, _decay)),
    ("MultiplicativeLR-per-group", "SGD", {}, lambda lib, o: lib.MultiplicativeLR(
        o, [_decay, lambda e: 0.99])),
    ("SequentialLR", "SGD", {}, lambda lib, o: lib.SequentialLR(
        o, [lib.LinearLR(o, start_factor=0.1, total_iters=5), lib.ExponentialLR(o, 0.97),
            lib.StepLR(o, 7, 0.5)], milestones=[10, 40])),
    ("SequentialLR-cosine", "SGD", {}, lambda lib, o: lib.SequentialLR(
        o, [lib.ConstantLR(o, factor=0.5, total_iters=4), lib.CosineAnnealingLR(o, 30)],
        milestones=[6])),
    ("ChainedScheduler", "SGD", {}, lambda lib, o: lib.ChainedScheduler(
        [lib.LinearLR(o, start_factor=0.2, total_iters=8), lib.ExponentialLR(o, 0.98)])),
    ("CyclicLR-triangular", "SGD", dict(momentum=0.9), lambda lib, o: lib.CyclicLR(
        o, base_lr=0.01, max_lr=[0.1, 0.05], step_size_up=7, step_size_down=4)),
    ("CyclicLR-triangular2", "SGD", dict(momentum=0.9), lambda lib, o: lib.CyclicLR(
        o, 0.001, 0.1, step_size_up=5, mode="triangular2", base_momentum=0.7)),
    ("CyclicLR-exp_range-adam", "Adam", {}, lambda lib, o: lib.CyclicLR(
        o, 0.001, 0.01, step_size_up=6, mode="exp_range", gamma=0.97)),
    ("CyclicLR-scale_fn", "SGD", {}, lambda lib, o: lib.CyclicLR(
        o, 0.01, 0.1, step_size_up=3, scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations",
        cycle_momentum=False)),
]


@pytest.mark.parametrize("case", SCHEDULERS, ids=[c[0] for c in SCHEDULERS])
def test_new_schedulers_match_torch(case):
    """Learning rates (and cycled momenta) after construction and each of 60 steps are
    exactly torch's; a state-dict round trip resumes the same schedule."""
    from test_lr_scheduler import _pair, run_both

    _, opt_name, opt_kw, make = case
    s_opt, t_opt = _pair(opt_name, **opt_kw)
    s_sched = make(shendu.optim.lr_scheduler, s_opt)
    t_sched = make(torch.optim.lr_scheduler, t_opt)
    seen = run_both(s_opt, t_opt, s_sched, t_sched, steps=60)
    assert len(set(seen)) > 5  # the schedule moves
    sd = s_sched.state_dict()
    s_opt2, t_opt2 = _pair(opt_name, **opt_kw)
    again = make(shendu.optim.lr_scheduler, s_opt2)
    again.load_state_dict(sd)
    for g2, g in zip(s_opt2.param_groups, s_opt.param_groups):
        g2.update({k: v for k, v in g.items() if k != "params"})
    for i in range(60):
        again.step()
        s_sched.step()
        assert again.get_last_lr() == s_sched.get_last_lr(), f"resumed step {i}"


def test_new_schedulers_reject_bad_input():
    s_opt, _ = _pair_sgd()
    sched = shendu.optim.lr_scheduler
    with pytest.raises(ValueError, match="milestones"):
        sched.SequentialLR(s_opt, [sched.StepLR(s_opt, 2), sched.StepLR(s_opt, 3)], [])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        sched.ChainedScheduler([sched.ReduceLROnPlateau(s_opt)])
    other, _ = _pair_sgd()
    with pytest.raises(ValueError, match="another optimizer"):
        sched.ChainedScheduler([sched.StepLR(s_opt, 2), sched.StepLR(other, 2)])
    with pytest.raises(ValueError, match="momentum"):
        sched.CyclicLR(shendu.optim.Adagrad(s_opt.param_groups[0]["params"]), 0.01, 0.1)
    with pytest.raises(ValueError, match="mode"):
        sched.CyclicLR(s_opt, 0.01, 0.1, mode="sawtooth")
    with pytest.raises(TypeError, match="callable"):
        sched.MultiplicativeLR(s_opt, 0.5)


def _pair_sgd():
    from test_lr_scheduler import _pair

    return _pair("SGD")


# ------------------------------------------------------------------ layers: device=, RNN
LAYERS = {
    "Linear": lambda lib, **kw: lib.nn.Linear(3, 4, **kw),
    "Conv2d": lambda lib, **kw: lib.nn.Conv2d(2, 4, 3, **kw),
    "Conv1d": lambda lib, **kw: lib.nn.Conv1d(2, 4, 3, **kw),
    "RNN": lambda lib, **kw: lib.nn.RNN(3, 4, **kw),
    "LSTM": lambda lib, **kw: lib.nn.LSTM(3, 4, num_layers=2, **kw),
    "GRU": lambda lib, **kw: lib.nn.GRU(3, 4, bidirectional=True, **kw),
    "RNNCell": lambda lib, **kw: lib.nn.RNNCell(3, 4, **kw),
    "LSTMCell": lambda lib, **kw: lib.nn.LSTMCell(3, 4, **kw),
    "GRUCell": lambda lib, **kw: lib.nn.GRUCell(3, 4, **kw),
    "Embedding": lambda lib, **kw: lib.nn.Embedding(5, 3, **kw),
    "LayerNorm": lambda lib, **kw: lib.nn.LayerNorm(3, **kw),
    "BatchNorm1d": lambda lib, **kw: lib.nn.BatchNorm1d(3, **kw),
    "BatchNorm2d": lambda lib, **kw: lib.nn.BatchNorm2d(3, **kw),
    "MultiheadAttention": lambda lib, **kw: lib.nn.MultiheadAttention(4, 2, **kw),
    "TransformerEncoderLayer": lambda lib, **kw: lib.nn.TransformerEncoderLayer(4, 2, 8, **kw),
    "TransformerDecoderLayer": lambda lib, **kw: lib.nn.TransformerDecoderLayer(4, 2, 8, **kw),
    "Transformer": lambda lib, **kw: lib.nn.Transformer(4, 2, 1, 1, 8, batch_first=True, **kw),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_take_device_and_dtype_as_torch(name):
    """``device=`` ("cpu", a ``shendu.device``) and ``dtype=`` keywords as torch's layers take
    them: the same parameter names, shapes and dtypes as torch; another device is one clear
    error naming the layer."""
    make = LAYERS[name]
    want = {k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in make(torch, device="cpu", dtype=torch.float64).state_dict().items()}
    for dev in ("cpu", shendu.device("cpu"), None):
        m = make(shendu, device=dev, dtype=shendu.float64)
        got = {k: (tuple(v.shape), str(np.asarray(v.numpy() if hasattr(v, "numpy") else v)
                                       .dtype)) for k, v in m.state_dict().items()}
        assert got == want
    with pytest.raises(RuntimeError, match=rf"{name}.*'cuda' is not available"):
        make(shendu, device="cuda")


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_flatten_parameters_is_a_no_op(cls):
    """torch scripts call ``rnn.flatten_parameters()`` (word_language_model); in shendu it
    changes nothing: same parameters (same objects, same values), same output."""
    m = getattr(shendu.nn, cls)(3, 4, num_layers=2)
    x = shendu.randn(5, 2, 3)
    before = [(p, p.data.copy()) for p in m.parameters()]
    out = m(x)[0].detach().numpy().copy()
    assert m.flatten_parameters() is None
    assert [p for p in m.parameters()] == [p for p, _ in before]
    assert all(np.array_equal(p.data, v) for p, v in before)
    np.testing.assert_array_equal(m(x)[0].detach().numpy(), out)


# ------------------------------------------------------------------ docs/torch.md
def test_docs_torch_md_tables_match_shendu_and_torch():
    """Every present/absent mark in docs/torch.md's tables is what shendu has now, and the
    module and functional tables list exactly torch's names."""
    import pathlib
    import re

    import torch.nn.functional as TF

    import shendu.nn.functional as SF

    text = (pathlib.Path(__file__).parent.parent / "docs" / "torch.md").read_text()
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    tables = {}
    for sec in sections:
        title = sec.splitlines()[0]
        tables[title] = dict(re.findall(r"^\| `(\w+)` \| (yes|\*\*no\*\*)", sec, re.M))
    where = {"`torch.nn` modules": shendu.nn, "`torch.nn.functional`": SF,
             "Tensor methods": shendu.Tensor}
    seen = set()
    for title, rows in tables.items():
        for key, obj in where.items():
            if title.startswith(key):
                seen.add(key)
                assert rows, title
                for name, mark in rows.items():
                    assert hasattr(obj, name) == (mark == "yes"), f"{title}: {name} is {mark}"
    assert seen == set(where)
    mods = next(r for t, r in tables.items() if t.startswith("`torch.nn` modules"))
    assert set(mods) == set(torch.nn.modules.__all__)
    fns = next(r for t, r in tables.items() if t.startswith("`torch.nn.functional`"))
    public = {n for n in dir(TF) if not n.startswith("_") and n[0].islower()
              and callable(getattr(TF, n))}
    assert set(fns) <= public and len(public - set(fns)) <= 6  # torch's dispatch helpers


# ------------------------------------------------------------------ LBFGS
LBFGS_CASES = [dict(), dict(lr=0.5, max_iter=5, history_size=2),
               dict(line_search_fn="strong_wolfe"),
               dict(line_search_fn="strong_wolfe", max_iter=7, history_size=3, lr=0.8)]


def _objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray):
    """Loss and gradient, in NumPy, of an L2-regularised logistic regression (weights and
    bias in ``theta``): the same arithmetic for both libraries' closures, so the comparison
    measures the optimizers alone. The problem is well conditioned, so rounding differences
    of one ulp (BLAS dot products) are not amplified from one iteration to the next."""
    w, b = theta[:-1], theta[-1]
    z = X @ w + b
    p = 1 / (1 + np.exp(-z))
    loss = np.mean(np.logaddexp(0, z) - y * z) + 0.05 * np.dot(theta, theta)
    gz = (p - y) / len(y)
    g = np.concatenate([X.T @ gz, [gz.sum()]]) + 0.1 * theta
    return theta.dtype.type(loss), g.astype(theta.dtype)


def _lbfgs_run(lib, dtype, kw, steps):
    """LBFGS with a closure on :func:`_objective`; the parameters after each step, the
    losses and the final state."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(32, 5)).astype(dtype)
    y = (rng.random(32) < 0.5).astype(dtype)
    w = lib.nn.Parameter(lib.tensor((rng.normal(size=(5,)) * 0.5).astype(dtype)))
    b = lib.nn.Parameter(lib.tensor(np.array([1.5], dtype)))
    opt = lib.optim.LBFGS([w, b], **kw)

    def closure():
        opt.zero_grad()
        theta = np.concatenate([w.detach().numpy(), b.detach().numpy()])
        loss, g = _objective(theta, X, y)
        w.grad, b.grad = lib.tensor(g[:-1].copy()), lib.tensor(g[-1:].copy())
        return lib.tensor(loss)

    params, losses = [], []
    for _ in range(steps):
        losses.append(float(opt.step(closure)))
        params.append(np.concatenate([w.detach().numpy().copy(), b.detach().numpy().copy()]))
    return np.array(params), np.array(losses), opt.state[w], float(closure())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", LBFGS_CASES, ids=[str(k) for k in LBFGS_CASES])
def test_lbfgs_trajectory_matches_torch(kw, dtype):
    """LBFGS (fixed step, and the strong-Wolfe line search), both fed the same losses and
    gradients: parameters and losses after each of 6 steps, the closure-evaluation count and
    the curvature history equal torch's."""
    from test_optim import TOL

    # float32: one step (up to max_iter iterations, to the optimum); past the optimum the
    # stopping tests compare changes of the size of one rounding (BLAS dot products round
    # differently by an ulp), so the two libraries may stop an iteration apart
    steps = 6 if dtype is np.float64 else 1
    s_par, s_loss, s_st, s_end = _lbfgs_run(shendu, dtype, kw, steps)
    t_par, t_loss, t_st, t_end = _lbfgs_run(torch, dtype, kw, steps)
    tol = TOL[dtype]
    np.testing.assert_allclose(s_par, t_par, **tol)
    np.testing.assert_allclose(s_loss, t_loss, **tol)
    assert s_st["func_evals"] == t_st["func_evals"] and s_st["n_iter"] == t_st["n_iter"]
    assert len(s_st["old_dirs"]) == len(t_st["old_dirs"]) > 0
    for sd, td in zip(s_st["old_dirs"], t_st["old_dirs"]):
        np.testing.assert_allclose(sd, td.numpy(), rtol=tol["rtol"],
                                   atol=max(tol["atol"], tol["rtol"] * float(abs(td).max())))
    assert s_par.dtype == dtype
    np.testing.assert_allclose(s_end, t_end, **tol)
    assert s_end < 0.5 * s_loss[0]  # it converges


def test_lbfgs_fits_through_autograd_as_torch():
    """End to end, the closure using autograd: a least-squares fit ends where torch's LBFGS
    ends (after the same number of closure calls), next to NumPy's lstsq."""
    rng = np.random.default_rng(0)
    A, t = rng.normal(size=(40, 4)), rng.normal(size=40)
    want = np.linalg.lstsq(A, t, rcond=None)[0]
    ends = {}
    for lib in (shendu, torch):
        x = lib.nn.Parameter(lib.zeros(4, dtype=lib.float64))
        At, tt = lib.tensor(A), lib.tensor(t)
        opt = lib.optim.LBFGS([x], line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                              tolerance_change=1e-14)

        def closure(opt=opt, At=At, x=x, tt=tt):
            opt.zero_grad()
            loss = ((At @ x - tt) ** 2).sum()
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        ends[lib.__name__] = x.detach().numpy().copy(), opt.state[x]["func_evals"]
        np.testing.assert_allclose(ends[lib.__name__][0], want, rtol=1e-6)
    np.testing.assert_allclose(ends["shendu"][0], ends["torch"][0], rtol=1e-10, atol=1e-12)
    assert ends["shendu"][1] == ends["torch"][1]


def test_lbfgs_rejects_bad_use():
    w = shendu.nn.Parameter(shendu.zeros(2))
    with pytest.raises(ValueError, match="learning rate"):
        shendu.optim.LBFGS([w], lr=-1)
    with pytest.raises(ValueError, match="line_search_fn"):
        shendu.optim.LBFGS([w], line_search_fn="backtracking")
    with pytest.raises(ValueError, match="parameter groups"):
        shendu.optim.LBFGS([{"params": [w]}, {"params": [shendu.nn.Parameter(shendu.zeros(1))]}])
    with pytest.raises(RuntimeError, match="closure"):
        shendu.optim.LBFGS([w]).step(None)


def test_set_num_threads_as_torch():
    """``shendu.set_num_threads`` / ``get_num_threads``: torch's names, errors and round
    trip; the count is the kernels' (their products and loops split over it), and NumPy's
    own BLAS count is left alone."""
    import torch
    from threadpoolctl import threadpool_info

    from shendu.functional import conv

    before, torch_before = shendu.get_num_threads(), torch.get_num_threads()
    blas = [lib["num_threads"] for lib in threadpool_info()]
    try:
        for bad in (0, -1, 2.0, "2", True, None):
            with pytest.raises(RuntimeError) as theirs:
                torch.set_num_threads(bad)
            with pytest.raises(RuntimeError) as ours:
                shendu.set_num_threads(bad)
            assert str(ours.value) == str(theirs.value)
        shendu.set_num_threads(3)
        assert shendu.get_num_threads() == 3 == conv._N_THREADS
        assert isinstance(shendu.get_num_threads(), int)
        shendu.set_num_threads(np.int64(1))
        assert shendu.get_num_threads() == 1
        assert [lib["num_threads"] for lib in threadpool_info()] == blas
    finally:
        shendu.set_num_threads(before)
        torch.set_num_threads(torch_before)
