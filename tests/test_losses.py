"""Every loss, reduction and option against torch (values and gradients, float32 and
float64) plus a float64 central-difference gradcheck of the fused backward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import TOL, check_gradcheck, compare_with_torch

import shendu
import shendu.functional as F
from shendu import nn

REDUCTIONS = ["mean", "sum", "none"]


def tc(a, like):
    """A torch constant with the dtype of torch tensor ``like``."""
    return None if a is None else torch.tensor(np.asarray(a), dtype=like.dtype)


def check_arrays(fn, arrays, torch_fn, gradcheck=True):
    """check_op on given float64 arrays: gradcheck, then torch parity in float64 and float32."""
    if gradcheck:
        check_gradcheck(fn, arrays)
    compare_with_torch(fn, arrays, torch_fn, np.float64)
    compare_with_torch(fn, arrays, torch_fn, np.float32)


def uniform(shape, low, high, seed):
    return np.random.default_rng(seed).uniform(low, high, shape)


# ------------------------------------------------------------------ regression losses
REGRESSION = [
    ("mse", {}, lambda x, y, r: F.mse_loss(x, y, reduction=r),
     lambda x, y, r: TF.mse_loss(x, y, reduction=r)),
    ("l1", {}, lambda x, y, r: F.l1_loss(x, y, reduction=r),
     lambda x, y, r: TF.l1_loss(x, y, reduction=r)),
] + [
    (f"huber{d}", {}, lambda x, y, r, d=d: F.huber_loss(x, y, reduction=r, delta=d),
     lambda x, y, r, d=d: TF.huber_loss(x, y, reduction=r, delta=d)) for d in (0.3, 1.0, 2.5)
] + [
    (f"smooth_l1_{b}", {}, lambda x, y, r, b=b: F.smooth_l1_loss(x, y, reduction=r, beta=b),
     lambda x, y, r, b=b: TF.smooth_l1_loss(x, y, reduction=r, beta=b))
    for b in (0.0, 0.3, 1.0, 2.5)
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2), (5,), ()])
@pytest.mark.parametrize("name,_,ours,theirs", REGRESSION, ids=[r[0] for r in REGRESSION])
def test_regression_losses(name, _, ours, theirs, shape, reduction):
    # differences spread over [-4, 4] so every branch (|d| < delta and beyond) is hit
    x, y = uniform(shape, -2, 2, 1), uniform(shape, -2, 2, 2)
    check_arrays(lambda a, b: ours(a, b, reduction), [x, y],
                 lambda a, b: theirs(a, b, reduction))


@pytest.mark.parametrize("name,_,ours,theirs", REGRESSION, ids=[r[0] for r in REGRESSION])
def test_regression_losses_at_kinks(name, _, ours, theirs):
    """At d = 0 and d = +-delta (+-beta) the one-sided formulas meet; torch picks a side for
    the gradient (sign(0) = 0, the linear branch at |d| = delta). Match it exactly."""
    d = np.array([0.0, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 1e-9, -1e-9, 7.0])
    y = np.linspace(-1, 1, d.size)
    for dt in (np.float32, np.float64):
        yy = y.astype(dt)
        x = yy + d.astype(dt)  # float32 rounding can move d off the kink: both see the same x
        sx = shendu.tensor(x, dtype=dt, requires_grad=True)
        tx = torch.tensor(x, requires_grad=True)
        so = ours(sx, shendu.tensor(yy, dtype=dt), "sum")
        to = theirs(tx, torch.tensor(yy), "sum")
        so.backward()
        to.backward()
        np.testing.assert_allclose(so.data, to.detach().numpy(), **TOL[dt])
        np.testing.assert_allclose(sx.grad.data, tx.grad.numpy(), **TOL[dt])


@pytest.mark.parametrize("fn", [F.mse_loss, F.l1_loss, F.huber_loss, F.smooth_l1_loss,
                                F.binary_cross_entropy, F.binary_cross_entropy_with_logits])
def test_target_shape_mismatch_is_an_error(fn):
    x = shendu.tensor(np.full((8, 1), 0.5))
    with pytest.raises(ValueError, match=r"target shape \(8,\) differs from input shape "
                                         r"\(8, 1\)"):
        fn(x, np.full(8, 0.5))


def test_bad_arguments():
    x = shendu.tensor(np.zeros(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.mse_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="delta must be positive"):
        F.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="beta must be non-negative"):
        F.smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(TypeError, match="floating"):
        F.mse_loss(shendu.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")


def test_target_of_other_dtype_is_converted_unless_it_needs_grad():
    x = shendu.tensor(np.arange(3.0), dtype="float32", requires_grad=True)
    out = F.mse_loss(x, shendu.tensor(np.ones(3), dtype="float64"))
    assert out.dtype == np.float32
    with pytest.raises(TypeError, match="requires grad and must have the input's dtype"):
        F.mse_loss(x, shendu.tensor(np.ones(3), dtype="float64", requires_grad=True))


# ------------------------------------------------------------------------------- BCE
BCE_WEIGHTS = {"none": None, "row": np.array([0.5, 1.0, 2.0]),
               "full": uniform((4, 3), 0.1, 2.0, 7)}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wname", list(BCE_WEIGHTS))
def test_bce(wname, reduction):
    w = BCE_WEIGHTS[wname]
    p, y = uniform((4, 3), 0.05, 0.95, 3), uniform((4, 3), 0, 1, 4)  # soft targets: grad in y
    check_arrays(lambda a, b: F.binary_cross_entropy(a, b, w, reduction=reduction), [p, y],
                 lambda a, b: TF.binary_cross_entropy(a, b, tc(w, a), reduction=reduction))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_at_zero_and_one_matches_torch_without_nan(dt, reduction):
    """torch clamps each log at -100 and floors p(1-p) at 1e-12 in the backward, so p = 0
    or 1 gives finite values (0 or 100 per element) and finite gradients (0 or +-1e12)."""
    p = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5, 1e-30], dt)
    y = np.array([0.0, 1.0, 0.0, 1.0, 0.3, 0.7, 1.0, 1.0], dt)
    w = np.linspace(0.5, 2.0, p.size).astype(dt)
    sp = shendu.tensor(p, dtype=dt, requires_grad=True)
    tp = torch.tensor(p, requires_grad=True)
    so = F.binary_cross_entropy(sp, y, w, reduction=reduction)
    to = TF.binary_cross_entropy(tp, torch.tensor(y), torch.tensor(w), reduction=reduction)
    g = np.linspace(-1, 1, so.data.size).reshape(so.shape).astype(dt)
    so.backward(g)
    to.backward(torch.tensor(g))
    assert np.isfinite(so.data).all() and np.isfinite(sp.grad.data).all()
    np.testing.assert_allclose(so.data, to.detach().numpy(), rtol=4 * np.finfo(dt).eps, atol=0)
    np.testing.assert_allclose(sp.grad.data, tp.grad.numpy(), rtol=4 * np.finfo(dt).eps, atol=0)
    if reduction == "none":
        assert so.data[1] == 100 * w[1] and so.data[2] == 100 * w[2] and so.data[0] == 0


def test_bce_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match="input should be between 0 and 1.*1.5"):
        F.binary_cross_entropy(shendu.tensor([0.2, 1.5]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="input should be between 0 and 1.*NaN"):
        F.binary_cross_entropy(shendu.tensor([0.2, np.nan]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="target should be between 0 and 1"):
        F.binary_cross_entropy(shendu.tensor([0.2, 0.5]), np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) does not broadcast"):
        F.binary_cross_entropy(shendu.tensor([0.2, 0.5]), np.array([0.0, 1.0]), np.ones(4))


BCEL_OPTS = list(itertools.product([None, "row", "full"], [None, "row", "full"]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wname,qname", BCEL_OPTS)
def test_bce_with_logits(wname, qname, reduction):
    w = None if wname is None else uniform((3,) if wname == "row" else (4, 3), 0.1, 2.0, 5)
    q = None if qname is None else uniform((3,) if qname == "row" else (4, 3), 0.1, 3.0, 6)
    x, y = uniform((4, 3), -4, 4, 8), uniform((4, 3), 0, 1, 9)
    check_arrays(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, w, reduction=reduction,
                                                        pos_weight=q), [x, y],
        lambda a, b: TF.binary_cross_entropy_with_logits(a, b, tc(w, a), reduction=reduction,
                                                         pos_weight=tc(q, a)))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("pos_weight", [None, np.array([3.0])])
def test_bce_with_logits_is_stable_at_1000(dt, pos_weight):
    x = np.array([-1000.0, 1000.0, -1000.0, 1000.0, -1000.0, 1000.0, 0.0], dt)
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 1.0], dt)
    sx = shendu.tensor(x, dtype=dt, requires_grad=True)
    sy = shendu.tensor(y, dtype=dt, requires_grad=True)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    so = F.binary_cross_entropy_with_logits(sx, sy, reduction="none", pos_weight=pos_weight)
    to = TF.binary_cross_entropy_with_logits(tx, ty, reduction="none",
                                             pos_weight=tc(pos_weight, tx))
    g = np.linspace(0.5, 1.5, x.size).astype(dt)
    so.backward(g)
    to.backward(torch.tensor(g))
    for ours, theirs in [(so.data, to.detach()), (sx.grad.data, tx.grad), (sy.grad.data, ty.grad)]:
        assert np.isfinite(ours).all()
        np.testing.assert_allclose(ours, theirs.numpy(), **TOL[dt])
    q = 1.0 if pos_weight is None else 3.0
    np.testing.assert_array_equal(so.data[:4], [0.0, 0.0, 1000.0 * q, 1000.0])


# ---------------------------------------------------------------- cross-entropy, NLL
def _ce_case(shape, probs, ignore_index, seed):
    rng = np.random.default_rng(seed)
    c = shape[1] if len(shape) > 1 else shape[0]
    x = rng.uniform(-3, 3, shape)
    if probs:
        t = rng.uniform(0, 1, shape)
        t /= t.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
        return x, t
    tshape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = rng.integers(0, c, tshape)
    if ignore_index is not None and t.size > 1:
        t.reshape(-1)[:: 3] = ignore_index  # some, never all, targets ignored
    return x, t


CE_SHAPES = [(5, 3), (3, 4, 2, 3), (4,), (2, 3, 5)]
CE_CASES = [(s, p, w, ii, ls) for s in CE_SHAPES[:3] for p in (False, True) for w in (False, True)
            for ii in ((None, 1, -100) if not p else (None,)) for ls in (0.0, 0.25)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,probs,weighted,ignore_index,smoothing", CE_CASES)
def test_cross_entropy(shape, probs, weighted, ignore_index, smoothing, reduction):
    x, t = _ce_case(shape, probs, ignore_index, seed=len(shape) + 10 * probs)
    c = shape[1] if len(shape) > 1 else shape[0]
    w = uniform((c,), 0.2, 2.0, 11) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore_index is not None:
        kw["ignore_index"] = ignore_index
    if probs:  # the probability target is differentiated too
        check_arrays(lambda a, b: F.cross_entropy(a, b, w, **kw), [x, t],
                     lambda a, b: TF.cross_entropy(a, b, tc(w, a), **kw))
    else:
        check_arrays(lambda a: F.cross_entropy(a, t, w, **kw), [x],
                     lambda a: TF.cross_entropy(a, torch.tensor(t), tc(w, a), **kw))


NLL_CASES = [(s, w, ii) for s in CE_SHAPES for w in (False, True) for ii in (None, 2, -100)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,weighted,ignore_index", NLL_CASES)
def test_nll_loss(shape, weighted, ignore_index, reduction):
    x, t = _ce_case(shape, False, ignore_index, seed=3)
    c = shape[1] if len(shape) > 1 else shape[0]
    w = uniform((c,), 0.2, 2.0, 12) if weighted else None
    kw = dict(reduction=reduction)
    if ignore_index is not None:
        kw["ignore_index"] = ignore_index
    check_arrays(lambda a: F.nll_loss(a, t, w, **kw), [x],
                 lambda a: TF.nll_loss(a, torch.tensor(t), tc(w, a), **kw))


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_targets_ignored_gives_nan_loss_but_zero_gradient(op, weighted):
    """As torch: 0/0 in the value, but a batch of padding must not poison the weights."""
    x = uniform((3, 4), -1, 1, 0)
    t = np.full(3, -100)
    w = np.array([1.0, 2.0, 3.0, 4.0]) if weighted else None
    kw = {"label_smoothing": 0.1} if op == "cross_entropy" else {}
    sx = shendu.tensor(x, dtype="float64", requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    so = getattr(F, op)(sx, t, w, **kw)
    to = getattr(TF, op)(tx, torch.tensor(t), tc(w, tx), **kw)
    so.backward()
    to.backward()
    assert np.isnan(so.item()) and np.isnan(to.item())
    np.testing.assert_array_equal(sx.grad.data, tx.grad.numpy())
    np.testing.assert_array_equal(sx.grad.data, 0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dt):
    x = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 1e4], [88.0, 89.0, 90.0]], dt)
    t = np.array([1, 0, 2])
    sx = shendu.tensor(x, dtype=dt, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    so, to = F.cross_entropy(sx, t), TF.cross_entropy(tx, torch.tensor(t))
    so.backward()
    to.backward()
    assert np.isfinite(so.data) and np.isfinite(sx.grad.data).all()
    np.testing.assert_allclose(so.data, to.detach().numpy(), **TOL[dt])
    np.testing.assert_allclose(sx.grad.data, tx.grad.numpy(), **TOL[dt])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(128, 10), (5, 4, 6), (64, 300), (1, 1)])
def test_cross_entropy_plain_targets_give_the_weighted_paths_bits(shape, reduction, dt):
    """Unweighted, unsmoothed class targets, none ignored, take a shorter path; it gives the
    bits of the general one (unit class weights), masked (-inf) and NaN logits included."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 30).astype(dt)
    if x.size > 4:
        x.reshape(-1)[1] = -np.inf
        x.reshape(-1)[-2] = np.nan
    t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    g = rng.standard_normal(t.shape).astype(dt) if reduction == "none" else np.asarray(1.7, dt)
    got = []
    for w in (None, np.ones(shape[1], dt)):
        sx = shendu.tensor(x, dtype=dt, requires_grad=True)
        loss = F.cross_entropy(sx, t, w, reduction=reduction)
        loss.backward(shendu.tensor(g, dtype=dt))
        got.append((loss.data.tobytes(), sx.grad.data.tobytes()))
    assert got[0] == got[1]


def test_cross_entropy_errors_name_the_shapes():
    x = shendu.tensor(np.zeros((4, 3)))
    with pytest.raises(IndexError, match="target 3 is out of bounds for 3 classes"):
        F.cross_entropy(x, np.array([0, 1, 2, 3]))
    with pytest.raises(IndexError, match="target -1 is out of bounds"):
        F.nll_loss(x, np.array([0, 1, 2, -1]))
    with pytest.raises(ValueError, match=r"expected target of shape \(4,\) for input \(4, 3\), "
                                         r"got \(4, 1\)"):
        F.cross_entropy(x, np.zeros((4, 1), np.int64))
    with pytest.raises(ValueError, match=r"probability target must have the input's shape "
                                         r"\(4, 3\), got \(4,\)"):
        F.cross_entropy(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.cross_entropy(x, np.zeros(4, np.int64), np.ones(4))
    with pytest.raises(TypeError, match="class indices"):
        F.nll_loss(x, np.zeros(4))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.zeros(4, np.int64), label_smoothing=1.5)


# ------------------------------------------------------------------------ loss modules
MODULE_CASES = [
    ("MSELoss", {}, "reg"), ("L1Loss", {"reduction": "sum"}, "reg"),
    ("HuberLoss", {"delta": 0.7}, "reg"), ("SmoothL1Loss", {"beta": 0.4}, "reg"),
    ("BCELoss", {"weight": [0.5, 1.0, 2.0]}, "prob"),
    ("BCEWithLogitsLoss", {"weight": [0.5, 1.0, 2.0], "pos_weight": [2.0, 1.0, 0.5]}, "reg"),
    ("CrossEntropyLoss", {"weight": [0.5, 1.0, 2.0], "ignore_index": 1,
                          "label_smoothing": 0.1, "reduction": "sum"}, "cls"),
    ("NLLLoss", {"weight": [0.5, 1.0, 2.0], "reduction": "none"}, "cls"),
]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw,kind", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_loss_modules_match_torch(name, kw, kind, dt):
    x = uniform((4, 3), 0.05, 0.95, 1) if kind == "prob" else uniform((4, 3), -2, 2, 1)
    x = x.astype(dt)
    y = (np.array([0, 1, 2, 1]) if kind == "cls" else uniform((4, 3), 0, 1, 2).astype(dt))
    ours = getattr(nn, name)(**{k: (np.array(v, dt) if isinstance(v, list) else v)
                                for k, v in kw.items()})
    theirs = getattr(torch.nn, name)(**{k: (torch.tensor(v, dtype=torch.float64 if dt ==
                                                         np.float64 else torch.float32)
                                            if isinstance(v, list) else v)
                                        for k, v in kw.items()})
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    sx = shendu.tensor(x, dtype=dt, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    so, to = ours(sx, y), theirs(tx, torch.tensor(y))
    g = np.ones(so.shape, dt)
    so.backward(g)
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(so.data, to.detach().numpy(), **TOL[dt])
    np.testing.assert_allclose(sx.grad.data, tx.grad.numpy(), **TOL[dt])


def test_loss_module_weight_is_a_buffer():
    m = nn.CrossEntropyLoss(weight=np.array([1.0, 2.0]))
    assert [k for k, _ in m.named_buffers()] == ["weight"]
    m.double()
    assert m.weight.dtype == np.float64
    assert list(nn.MSELoss().state_dict()) == []
