"""nn.RNN / nn.LSTM / nn.GRU against torch: torch's state_dict loads unchanged, outputs, final
states and ALL gradients agree for 1-2 layers, uni/bidirectional, batch_first both ways,
with and without lengths (torch's side packed with pack_padded_sequence); float64
gradcheck; init, errors, dropout, determinism."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import shendu
from shendu import nn
from shendu.autograd import gradcheck
from tests.helpers import check_module

T, B, I, H = 5, 3, 4, 6
LENGTHS = np.array([3, 5, 1])
KINDS = {
    "rnn_tanh": (lambda **k: nn.RNN(I, H, **k), lambda **k: torch.nn.RNN(I, H, **k)),
    "rnn_relu": (lambda **k: nn.RNN(I, H, nonlinearity="relu", **k),
                 lambda **k: torch.nn.RNN(I, H, nonlinearity="relu", **k)),
    "lstm": (lambda **k: nn.LSTM(I, H, **k), lambda **k: torch.nn.LSTM(I, H, **k)),
    "gru": (lambda **k: nn.GRU(I, H, **k), lambda **k: torch.nn.GRU(I, H, **k)),
}


def _flat(res):
    out, st = res
    return (out, *st) if isinstance(st, tuple) else (out, st)


def _run_shendu(lengths, batch_first):
    def fn(mod, x, *hx):
        hx = None if not hx else (tuple(hx) if len(hx) == 2 else hx[0])
        return _flat(mod(x, hx, lengths=lengths))
    return fn


def _run_torch(lengths, batch_first):
    def fn(mod, x, *hx):
        hx = None if not hx else (tuple(hx) if len(hx) == 2 else hx[0])
        if lengths is None:
            return _flat(mod(x, hx))
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        out, st = mod(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        return _flat((out, st))
    return fn


CONFIGS = list(itertools.product(KINDS, [1, 2], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("kind,layers,bidir,batch_first,use_lengths", CONFIGS)
def test_layer_matches_torch(kind, layers, bidir, batch_first, use_lengths):
    mk_s, mk_t = KINDS[kind]
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    torch.manual_seed(0)
    tmod = mk_t(**kw)
    smod = mk_s(**kw)
    D = 2 if bidir else 1
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    states = [rng.standard_normal((layers * D, B, H)) * 0.5
              for _ in range(2 if kind == "lstm" else 1)]
    lengths = LENGTHS if use_lengths else None
    for dtype in (np.float32, np.float64):
        check_module(smod, tmod, [x, *states], dtype=dtype,
                     fn=_run_shendu(lengths, batch_first),
                     torch_fn=_run_torch(lengths, batch_first))
        smod.zero_grad()
        tmod.zero_grad()


@pytest.mark.parametrize("kind", list(KINDS))
def test_default_state_unbatched_and_no_bias(kind):
    mk_s, mk_t = KINDS[kind]
    torch.manual_seed(0)
    tmod, smod = mk_t(bias=False, num_layers=2), mk_s(bias=False, num_layers=2)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    check_module(smod, tmod, [x], fn=lambda m, x: _flat(m(x)))
    # unbatched (T, I) input: torch's shapes
    xu = x[:, 0].astype(np.float32)  # NumPy data keeps its dtype, as torch.tensor
    so, ss = smod(shendu.tensor(xu))[0], _flat(smod(shendu.tensor(xu)))
    to = _flat(tmod(torch.tensor(xu, dtype=torch.float32)))
    assert so.shape == (T, H)
    for a, b in zip(ss, to):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_layer_gradcheck(kind):
    """float64 central differences through a 2-layer bidirectional stack with lengths."""
    shendu.manual_seed(0)
    mk_s, _ = KINDS[kind]
    mod = nn.LSTM(2, 3, num_layers=2, bidirectional=True) if kind == "lstm" else (
        nn.GRU(2, 3, num_layers=2, bidirectional=True) if kind == "gru" else
        nn.RNN(2, 3, num_layers=2, bidirectional=True, batch_first=True))
    mod.double()
    rng = np.random.default_rng(0)
    shape = (2, 4, 2) if kind == "rnn_tanh" else (4, 2, 2)
    x = shendu.tensor(rng.standard_normal(shape), dtype="float64", requires_grad=True)
    h0 = shendu.tensor(rng.standard_normal((4, 2, 3)) * 0.5, dtype="float64",
                       requires_grad=True)
    params = list(mod.parameters())
    lengths = np.array([4, 2])

    def fn(x, h0, *ps):
        hx = (h0, h0 * 0.5) if kind == "lstm" else h0
        return _flat(mod(x, hx, lengths=lengths))

    assert gradcheck(fn, [x, h0, *params])


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_names_shapes_and_order_match_torch(kind):
    mk_s, mk_t = KINDS[kind]
    kw = dict(num_layers=2, bidirectional=True)
    s_sd, t_sd = mk_s(**kw).state_dict(), mk_t(**kw).state_dict()
    assert list(s_sd) == list(t_sd)
    assert [tuple(v.shape) for v in s_sd.values()] == [tuple(v.shape) for v in t_sd.values()]
    assert "weight_hh_l1_reverse" in s_sd
    mod = mk_s(**kw)
    mod.load_state_dict(t_sd)   # unchanged torch state dict
    for k, v in t_sd.items():
        np.testing.assert_array_equal(mod.state_dict()[k], v.numpy())


def test_default_init_is_uniform_in_one_over_sqrt_hidden():
    shendu.manual_seed(0)
    mod = nn.LSTM(64, 256, num_layers=2)
    bound = 1 / math.sqrt(256)
    for name, p in mod.named_parameters():
        v = p.data
        assert v.dtype == np.float32
        assert v.min() >= -bound and v.max() <= bound, name
    w = mod.weight_hh_l0.data
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(w.mean()) < 0.01 * bound


def test_errors_name_op_expected_and_got():
    lstm = nn.LSTM(32, 16, num_layers=2)
    with pytest.raises(ValueError, match="LSTM expected input size 32 at dim -1, got 64"):
        lstm(shendu.zeros(5, 3, 64))
    with pytest.raises(ValueError, match=r"LSTM expected h0 of shape \(2, 3, 16\), got "
                                         r"\(1, 3, 16\)"):
        lstm(shendu.zeros(5, 3, 32), (shendu.zeros(1, 3, 16), shendu.zeros(2, 3, 16)))
    with pytest.raises(TypeError, match=r"LSTM: expected hx to be a tuple \(h0, c0\)"):
        lstm(shendu.zeros(5, 3, 32), shendu.zeros(2, 3, 16))
    with pytest.raises(TypeError, match="expected input of dtype float32"):
        lstm(shendu.zeros(5, 3, 32, dtype="float64"))
    with pytest.raises(ValueError, match="expected input with 2 .* or 3 dimensions"):
        lstm(shendu.zeros(32))
    with pytest.raises(ValueError, match=r"GRU expected h0 of shape \(1, 3, 4\)"):
        nn.GRU(2, 4)(shendu.zeros(5, 3, 2), shendu.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"lengths of shape \(3,\)"):
        nn.GRU(2, 4)(shendu.zeros(5, 3, 2), lengths=[1, 2])
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        nn.RNN(2, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        nn.GRU(2, 0)
    with pytest.raises(ValueError, match="dropout should be a number in"):
        nn.GRU(2, 3, num_layers=2, dropout=1.5)
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.GRU(2, 3, dropout=0.5)


def test_dropout_between_layers_train_vs_eval_and_seeded():
    x = shendu.tensor(np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32))
    shendu.manual_seed(3)
    mod = nn.LSTM(I, H, num_layers=2, dropout=0.5)
    ref = nn.LSTM(I, H, num_layers=2)
    ref.load_state_dict(mod.state_dict())
    mod.eval()
    np.testing.assert_array_equal(mod(x)[0].data, ref(x)[0].data)   # eval: no dropout
    mod.train()
    shendu.manual_seed(5)
    a = mod(x)[0].data.copy()
    shendu.manual_seed(5)
    b = mod(x)[0].data.copy()
    np.testing.assert_array_equal(a, b)                               # same seed, same mask
    assert not np.allclose(a, ref(x)[0].data)
    # the first layer's final state is untouched by dropout (it acts between layers)
    np.testing.assert_array_equal(mod(x)[1][0].data[0], ref(x)[1][0].data[0])


def _train_steps(seed):
    shendu.manual_seed(seed)
    mod = nn.GRU(I, H, num_layers=2, dropout=0.3, bidirectional=True)
    head = nn.Linear(2 * H, 1)
    x = shendu.randn(T, B, I)
    params = list(mod.parameters()) + list(head.parameters())
    for _ in range(3):
        for p in params:
            p.grad = None
        out, _ = mod(x, lengths=[5, 2, 4])
        loss = (head(out[-1]) ** 2).mean()
        loss.backward()
        with shendu.no_grad():
            for p in params:
                p.data -= 0.1 * p.grad.data
    return [p.data.copy() for p in params]


def test_same_seed_bit_identical():
    a, b = _train_steps(11), _train_steps(11)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_retain_graph_twice_and_no_grad_path_agree():
    shendu.manual_seed(0)
    mod = nn.LSTM(I, H, bidirectional=True)
    x = shendu.tensor(np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32),
                      requires_grad=True)
    out, (hn, cn) = mod(x)
    loss = (out ** 2).sum() + (cn ** 2).sum()
    loss.backward(retain_graph=True)
    g1 = x.grad.data.copy()
    x.grad = None
    loss.backward()
    np.testing.assert_array_equal(x.grad.data, g1)   # backward does not eat its saved state
    with shendu.no_grad():
        out2, (hn2, cn2) = mod(x)
    np.testing.assert_array_equal(out2.data, out.data)
    np.testing.assert_array_equal(cn2.data, cn.data)


def test_repr():
    assert repr(nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)) == \
        "LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)"
    assert repr(nn.RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4, nonlinearity='relu')"
    assert repr(nn.GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"
