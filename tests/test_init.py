"""nn.init: torch's gains and fan rules, distributions checked statistically on large tensors
(tight enough to catch a wrong bound, std, fan or gain), orthogonality, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import shendu
from shendu.nn import init

SHAPE = (300, 1000)  # 300k samples: the std of a sample std is ~0.13 %; fan_in != fan_out


def fresh(shape=SHAPE, dtype="float64"):
    return shendu.zeros(*shape, dtype=dtype)


def torch_sample(fn, shape=SHAPE, **kw):
    torch.manual_seed(0)
    t = torch.empty(shape, dtype=torch.float64)
    fn(t, **kw)
    return t.numpy()


def test_calculate_gain_table_equals_torch():
    for nl in ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d", "sigmoid", "tanh", "relu", "selu", "leaky_relu"]:
        assert init.calculate_gain(nl) == torch.nn.init.calculate_gain(nl), nl
    for slope in (0, 0.2, 3, math.sqrt(5)):
        assert init.calculate_gain("leaky_relu", slope) == torch.nn.init.calculate_gain(
            "leaky_relu", slope)
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "0.1")


@pytest.mark.parametrize("shape", [(3, 4), (8, 3, 5, 5), (6, 2, 7), (16, 4, 3, 3, 3)])
def test_fans_equal_torch(shape):
    ours = init._calculate_fan_in_and_fan_out(shendu.zeros(*shape))
    assert ours == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(shendu.zeros(5))


def uniform_bound_check(w, bound):
    """Samples lie in [-bound, bound], reach both ends, and have the std of U(-b, b)."""
    assert np.abs(w).max() <= bound
    assert w.max() > bound * (1 - 1e-3) and w.min() < -bound * (1 - 1e-3)
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.01)
    assert abs(w.mean()) < 0.01 * bound


# (our call, torch's call, expected bound, written from the papers' formulas)
FAN_IN, FAN_OUT = SHAPE[1], SHAPE[0]
UNIFORM_CASES = [
    ("uniform", lambda t: init.uniform_(t, -0.3, 0.3),
     lambda t: torch.nn.init.uniform_(t, -0.3, 0.3), 0.3),
    ("xavier", lambda t: init.xavier_uniform_(t), torch.nn.init.xavier_uniform_,
     math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("xavier_gain", lambda t: init.xavier_uniform_(t, gain=5 / 3),
     lambda t: torch.nn.init.xavier_uniform_(t, gain=5 / 3), 5 / 3 * math.sqrt(6 / 1300)),
    ("kaiming_default", init.kaiming_uniform_, torch.nn.init.kaiming_uniform_,
     math.sqrt(2 / (1 + 0.0 ** 2)) * math.sqrt(3 / FAN_IN)),
    ("kaiming_relu_fan_out", lambda t: init.kaiming_uniform_(t, mode="fan_out",
                                                             nonlinearity="relu"),
     lambda t: torch.nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
     math.sqrt(2) * math.sqrt(3 / FAN_OUT)),
    ("kaiming_a_sqrt5", lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)),
     lambda t: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5)), 1 / math.sqrt(FAN_IN)),
]


@pytest.mark.parametrize("name,ours,theirs,bound", UNIFORM_CASES,
                         ids=[c[0] for c in UNIFORM_CASES])
def test_uniform_family_bounds(name, ours, theirs, bound):
    w = ours(fresh()).data
    uniform_bound_check(w, bound)
    uniform_bound_check(torch_sample(theirs), bound)  # the formula is torch's too


NORMAL_CASES = [
    ("normal", lambda t: init.normal_(t, 0.5, 0.2),
     lambda t: torch.nn.init.normal_(t, 0.5, 0.2), 0.5, 0.2),
    ("xavier", init.xavier_normal_, torch.nn.init.xavier_normal_, 0.0,
     math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("kaiming_relu", lambda t: init.kaiming_normal_(t, nonlinearity="relu"),
     lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="relu"), 0.0,
     math.sqrt(2 / FAN_IN)),
    ("kaiming_leaky_fan_out", lambda t: init.kaiming_normal_(t, a=0.3, mode="fan_out"),
     lambda t: torch.nn.init.kaiming_normal_(t, a=0.3, mode="fan_out"), 0.0,
     math.sqrt(2 / 1.09) / math.sqrt(FAN_OUT)),
    ("kaiming_selu", lambda t: init.kaiming_normal_(t, nonlinearity="selu"),
     lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="selu"), 0.0,
     0.75 / math.sqrt(FAN_IN)),
]


@pytest.mark.parametrize("name,ours,theirs,mean,std", NORMAL_CASES,
                         ids=[c[0] for c in NORMAL_CASES])
def test_normal_family_std(name, ours, theirs, mean, std):
    for w in (ours(fresh()).data, torch_sample(theirs)):
        np.testing.assert_allclose(w.std(), std, rtol=0.01)
        assert abs(w.mean() - mean) < 0.01 * std
        # normal, not uniform: the 4th standardised moment is 3 (uniform's is 1.8)
        assert abs(scipy.stats.kurtosis(w.ravel(), fisher=False) - 3) < 0.05


def test_conv_shaped_fans():
    w = init.kaiming_normal_(fresh((64, 32, 3, 3)), nonlinearity="relu").data
    np.testing.assert_allclose(w.std(), math.sqrt(2 / (32 * 9)), rtol=0.02)
    w = init.xavier_uniform_(fresh((64, 32, 3, 3))).data
    assert np.abs(w).max() <= math.sqrt(6 / (96 * 9))


@pytest.mark.parametrize("mean,std,a,b", [(0, 1, -2, 2), (0, 0.02, -0.04, 0.04),
                                          (1, 2, 0, 3), (0, 1, 5, 6), (0, 1, -7, -6.5),
                                          (0, 1, -math.inf, 0.5)])
def test_trunc_normal_matches_truncated_normal_distribution(mean, std, a, b):
    w = init.trunc_normal_(fresh((400, 500)), mean, std, a, b).data
    assert w.min() >= a and w.max() <= b
    ref = scipy.stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    sd = ref.std()
    assert abs(w.mean() - ref.mean()) < 0.01 * sd
    np.testing.assert_allclose(w.std(), sd, rtol=0.01)
    assert scipy.stats.kstest(w.ravel()[:20000], ref.cdf).pvalue > 1e-3
    if (a, b) == (-2, 2):  # torch's default window agrees
        t = torch_sample(torch.nn.init.trunc_normal_, (400, 500))
        np.testing.assert_allclose(t.std(), sd, rtol=0.01)


@pytest.mark.parametrize("shape", [(20, 20), (10, 50), (50, 10), (8, 3, 2, 2)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal(shape, gain):
    w = init.orthogonal_(fresh(shape), gain=gain).data.reshape(shape[0], -1)
    rows, cols = w.shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_is_haar_not_biased():
    """With R's signs folded in, Q is Haar-uniform: the diagonal has mean 0 (without the fix
    the diagonal of Q would be biased towards positive values)."""
    diag = [np.diag(init.orthogonal_(fresh((4, 4))).data) for _ in range(2000)]
    assert abs(np.mean(diag)) < 0.03


def test_constant_zeros_ones_eye():
    t = fresh((3, 4))
    assert (init.constant_(t, 0.25).data == 0.25).all()
    assert (init.ones_(t).data == 1).all()
    assert (init.zeros_(t).data == 0).all()
    np.testing.assert_array_equal(init.eye_(t).data, np.eye(3, 4))
    with pytest.raises(ValueError, match="only 2-D"):
        init.eye_(fresh((2, 2, 2)))


def test_init_keeps_dtype_and_identity_and_skips_empty():
    p = shendu.nn.Parameter(np.zeros((30, 20), np.float32))
    data = p.data
    assert init.kaiming_uniform_(p) is p and p.data is data and p.dtype == np.float32
    empty = fresh((0, 5))
    init.kaiming_uniform_(empty)
    init.orthogonal_(empty)
    init.xavier_normal_(empty)
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(fresh((3, 3)), mode="fan_avg")


def test_same_seed_same_init():
    def draw():
        out = []
        for fn in (init.uniform_, init.normal_, init.xavier_uniform_, init.kaiming_normal_,
                   init.orthogonal_, init.trunc_normal_):
            out.append(fn(fresh((7, 5), "float32")).data.copy())
        out.append(shendu.nn.Linear(6, 4).weight.data.copy())
        return out

    shendu.manual_seed(11)
    a = draw()
    shendu.manual_seed(11)
    b = draw()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    shendu.manual_seed(12)
    assert not np.array_equal(draw()[0], a[0])


def test_generator_argument():
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    before = shendu.get_rng_state()
    a = init.normal_(fresh((4, 4)), generator=g1).data
    b = init.normal_(fresh((4, 4)), generator=g2).data
    np.testing.assert_array_equal(a, b)
    assert shendu.get_rng_state() == before  # the global generator was not touched
