"""Transformer layers and stacks: torch's state_dicts load unchanged; outputs and every
gradient match torch (masks of every kind, batch_first and norm_first both ways)."""

import numpy as np
import pytest
import torch
from helpers import check_module, make_inputs

import shendu
import shendu.nn as nn

D, H, FF = 8, 2, 16


def _randomise_vectors(t):
    with torch.no_grad():  # LayerNorm weights and all biases away from 1/0
        for p in t.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5).add_(0.5)
    return t


def _wrap_masks(x, **masks):
    """numpy masks -> torch tensors (float ones in x's dtype) when x is a torch tensor."""
    out = {}
    for k, a in masks.items():
        if a is None or not torch.is_tensor(x):
            out[k] = a
        else:
            out[k] = torch.tensor(a) if a.dtype == bool else torch.tensor(a).to(x.dtype)
    return out


def _causal(n):
    return np.triu(np.full((n, n), -np.inf), 1)


def _kpm(n, s):
    m = np.zeros((n, s), bool)
    m[1, s - 2:] = True
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer(dtype, batch_first, norm_first, activation):
    kw = dict(dim_feedforward=FF, dropout=0.0, activation=activation, batch_first=batch_first,
              norm_first=norm_first)
    torch.manual_seed(0)
    t = _randomise_vectors(torch.nn.TransformerEncoderLayer(D, H, **kw))
    s = nn.TransformerEncoderLayer(D, H, **kw)
    N, T = 2, 5
    shape = (N, T, D) if batch_first else (T, N, D)

    def fn(m, x):
        return m(x, **_wrap_masks(x, src_mask=_causal(T), src_key_padding_mask=_kpm(N, T)))

    check_module(s, t, make_inputs([shape]), dtype=dtype, fn=fn)


@pytest.mark.parametrize("mask", ["none", "bool", "float", "kpm_only"])
def test_encoder_layer_mask_kinds(mask):
    torch.manual_seed(1)
    t = _randomise_vectors(torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0))
    s = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0)
    T, N = 6, 2
    rng = np.random.default_rng(0)
    masks = {}
    if mask == "bool":
        m = rng.random((T, T)) < 0.4
        np.fill_diagonal(m, False)
        masks = dict(src_mask=m, src_key_padding_mask=_kpm(N, T))
    elif mask == "float":
        masks = dict(src_mask=rng.normal(size=(T, T)))
    elif mask == "kpm_only":
        masks = dict(src_key_padding_mask=_kpm(N, T))
    check_module(s, t, make_inputs([(T, N, D)]), dtype=np.float64,
                 fn=lambda m, x: m(x, **_wrap_masks(x, **masks)))


@pytest.mark.parametrize("norm", [False, True])
def test_encoder_stack(norm):
    torch.manual_seed(2)
    layer = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True)
    t = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(D) if norm else None,
                                    enable_nested_tensor=False)
    _randomise_vectors(t)
    s = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, dropout=0.0,
                                                         batch_first=True), 2,
                              norm=nn.LayerNorm(D) if norm else None)

    def fn(m, x):
        return m(x, **_wrap_masks(x, mask=_causal(5), src_key_padding_mask=_kpm(3, 5)))

    check_module(s, t, make_inputs([(3, 5, D)]), dtype=np.float64, fn=fn)
    check_module(s, t, make_inputs([(3, 5, D)]), dtype=np.float32, fn=fn)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer(dtype, batch_first, norm_first):
    kw = dict(dim_feedforward=FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first,
              activation="gelu" if norm_first else "relu")
    torch.manual_seed(3)
    t = _randomise_vectors(torch.nn.TransformerDecoderLayer(D, H, **kw))
    s = nn.TransformerDecoderLayer(D, H, **kw)
    N, T, S = 2, 4, 6
    shapes = [(N, T, D), (N, S, D)] if batch_first else [(T, N, D), (S, N, D)]

    def fn(m, tgt, mem):
        return m(tgt, mem, **_wrap_masks(tgt, tgt_mask=_causal(T),
                                         tgt_key_padding_mask=np.zeros((N, T), bool),
                                         memory_key_padding_mask=_kpm(N, S)))

    check_module(s, t, make_inputs(shapes), dtype=dtype, fn=fn)


def test_decoder_stack_with_memory_mask():
    torch.manual_seed(4)
    t = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, H, FF, dropout=0.0),
                                    2, norm=torch.nn.LayerNorm(D))
    _randomise_vectors(t)
    s = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF, dropout=0.0), 2,
                              norm=nn.LayerNorm(D))
    mm = np.random.default_rng(1).random((4, 6)) < 0.3
    mm[:, 0] = False

    def fn(m, tgt, mem):
        return m(tgt, mem, **_wrap_masks(tgt, tgt_mask=_causal(4), memory_mask=mm))

    check_module(s, t, make_inputs([(4, 2, D), (6, 2, D)]), dtype=np.float64, fn=fn)


@pytest.mark.parametrize("batch_first,norm_first", [(False, False), (True, True)])
def test_transformer_full(batch_first, norm_first):
    kw = dict(d_model=D, nhead=H, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    torch.manual_seed(5)
    t = _randomise_vectors(torch.nn.Transformer(**kw))
    s = nn.Transformer(**kw)
    N, S, T = 2, 6, 4
    shapes = [(N, S, D), (N, T, D)] if batch_first else [(S, N, D), (T, N, D)]

    def fn(m, src, tgt):
        return m(src, tgt, **_wrap_masks(src, tgt_mask=_causal(T),
                                         src_key_padding_mask=_kpm(N, S),
                                         memory_key_padding_mask=_kpm(N, S)))

    check_module(s, t, make_inputs(shapes), dtype=np.float64, fn=fn)
    check_module(s, t, make_inputs(shapes), dtype=np.float32, fn=fn)


def test_generate_square_subsequent_mask():
    a = nn.Transformer.generate_square_subsequent_mask(5)
    b = torch.nn.Transformer.generate_square_subsequent_mask(5)
    np.testing.assert_array_equal(a.data, b.numpy())
    assert a.dtype == np.float32


def test_stacks_are_independent_copies_and_xavier_init():
    shendu.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF), 3)
    w0, w1 = enc.layers[0].linear1.weight, enc.layers[1].linear1.weight
    np.testing.assert_array_equal(w0.data, w1.data)      # same start, as torch's clones
    assert w0 is not w1 and not np.shares_memory(w0.data, w1.data)
    tr = nn.Transformer(D, H, 1, 1, FF)
    w = tr.encoder.layers[0].linear1.weight.data          # (FF, D) xavier-uniform
    bound = np.sqrt(6 / (FF + D))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    keys = list(tr.state_dict())
    tkeys = list(torch.nn.Transformer(D, H, 1, 1, FF).state_dict())
    assert keys == tkeys


def test_dropout_in_train_mode_only():
    shendu.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.3, batch_first=True)
    x = shendu.tensor(make_inputs([(2, 5, D)], np.float32)[0])
    layer.eval()
    e1, e2 = layer(x), layer(x)
    np.testing.assert_array_equal(e1.data, e2.data)
    layer.train()
    t1, t2 = layer(x), layer(x)
    assert not np.allclose(t1.data, t2.data)
    assert not np.allclose(t1.data, e1.data)
    shendu.manual_seed(9)
    r1 = layer(x)
    shendu.manual_seed(9)
    r2 = layer(x)
    np.testing.assert_array_equal(r1.data, r2.data)       # same seed, bit-identical


def test_train_eval_matches_torch_eval():
    torch.manual_seed(6)
    t = _randomise_vectors(torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.5)).eval()
    s = nn.TransformerEncoderLayer(D, H, FF, dropout=0.5).eval()
    s.load_state_dict(t.state_dict())
    x = make_inputs([(5, 2, D)], np.float32)[0]
    with torch.no_grad():
        ref = t(torch.tensor(x)).numpy()
    np.testing.assert_allclose(s(shendu.tensor(x)).data, ref, rtol=1e-5, atol=1e-5)


def test_positional_encoding():
    pe = nn.PositionalEncoding(6, max_len=50)
    assert list(pe.state_dict()) == []                    # derived table, not saved
    x = shendu.zeros(7, 2, 6)
    y = pe(x).data
    pos, i = 3, 1                                         # PE[3, 2] = sin(3 / 10000^(2/6))
    np.testing.assert_allclose(y[pos, 0, 2 * i], np.sin(pos / 10000 ** (2 * i / 6)), rtol=1e-6)
    np.testing.assert_allclose(y[pos, 1, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 6)),
                               rtol=1e-6)
    np.testing.assert_array_equal(y[0, 0], [0, 1, 0, 1, 0, 1])
    bf = nn.PositionalEncoding(5, batch_first=True)        # odd width works too
    np.testing.assert_allclose(bf(shendu.zeros(2, 4, 5)).data[1, 3, 4],
                               np.sin(3 / 10000 ** (4 / 5)), rtol=1e-6)
    xg = shendu.tensor(np.ones((3, 1, 6)), requires_grad=True)
    pe(xg).sum().backward()
    np.testing.assert_array_equal(xg.grad.data, 1)
    with pytest.raises(ValueError, match=r"PositionalEncoding\(d_model=6, max_len=50\) "
                                         r"expected input \(T, N, 6\)"):
        pe(shendu.zeros(51, 1, 6))


def test_errors():
    with pytest.raises(ValueError, match="activation should be 'relu' or 'gelu'"):
        nn.TransformerEncoderLayer(D, H, activation="tanh")
    tr = nn.Transformer(D, H, 1, 1, FF)
    with pytest.raises(ValueError, match="batch number of src and tgt must be equal"):
        tr(shendu.zeros(5, 2, D), shendu.zeros(4, 3, D))
    with pytest.raises(ValueError, match=r"Transformer\(d_model=8\) expected src and tgt"):
        tr(shendu.zeros(5, 2, 4), shendu.zeros(4, 2, 4))


# ------------------------------------------------------------- the fused feed-forward op
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_feed_forward_op_gradcheck(bias, p):
    from shendu.autograd import gradcheck
    from shendu.nn.transformer import _FeedForward

    shapes = [(2, 3, 4), (6, 4), (6,), (4, 6), (4,)] if bias else [(2, 3, 4), (6, 4), (4, 6)]
    inputs = [shendu.tensor(a, dtype="float64", requires_grad=True)
              for a in make_inputs(shapes, seed=3)]

    def fn(*ts):
        shendu.manual_seed(11)   # one dropout mask for every evaluation
        return _FeedForward.apply(*ts, p=p)

    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("decoder", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_feed_forward_op_equals_the_modules_bit_for_bit(decoder, dropout):
    # the fused op and linear2(dropout(relu(linear1(x)))): same values, same gradients,
    # same random stream
    import shendu.functional as F

    def run(fused: bool):
        shendu.manual_seed(0)
        layer = (nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer)(
            8, 2, 16, dropout=dropout, batch_first=True)
        if not fused:
            layer.activation = lambda t: F.relu(t)   # not F.relu itself: module by module
        x = shendu.tensor(make_inputs([(3, 5, 8)], np.float32, seed=1)[0], requires_grad=True)
        args = (x, shendu.tensor(make_inputs([(3, 4, 8)], np.float32, seed=2)[0])) \
            if decoder else (x,)
        out = layer(*args)
        (out * out).sum().backward()
        grads = {n: p.grad.data for n, p in layer.named_parameters()}
        return out.data, x.grad.data, grads, shendu.backend.rng().random()

    a, b = run(True), run(False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for n in a[2]:
        np.testing.assert_array_equal(a[2][n], b[2][n], err_msg=n)
    assert a[3] == b[3]
