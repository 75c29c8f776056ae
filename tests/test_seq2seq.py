"""AttentionMechanism: the RNN encoder-decoder with Bahdanau attention.

The network is checked against a torch re-implementation sharing its weights (logits,
loss and every parameter gradient, float64); the estimator on digit-sequence reversal,
where attention must beat the fixed-summary encoder-decoder by a wide margin within the
same budget and its attention maps must come out anti-diagonal.
"""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import shendu
from shendu.data.tasks import sequence_task
from shendu.models import AttentionMechanism, NotFittedError
from shendu.models.seq2seq import Seq2SeqNet


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def mirrored_fraction(weights: np.ndarray, lengths: np.ndarray) -> float:
    """Fraction of output steps ``i < L`` whose most-attended source position is the
    mirrored one, ``L - 1 - i`` (the anti-diagonal of a reversal)."""
    hits = total = 0
    for w, L in zip(weights, lengths):
        hits += int((w[:L].argmax(1) == L - 1 - np.arange(L)).sum())
        total += int(L)
    return hits / total


# ------------------------------------------------------------------ torch parity
def _torch_seq2seq(sd, src, lengths, dec_in, cell, bidirectional, attention,
                   values="embeddings", location=True):
    """The network of the module docstring, written out in torch (float64)."""
    tsd = {k: torch.tensor(np.array(v)) for k, v in sd.items()}
    for v in tsd.values():
        v.requires_grad_(True)
    E = tsd["src_embed.weight"].shape[1]
    H = tsd["bridge.weight"].shape[0]
    rnn = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(
        E, H, batch_first=True, bidirectional=bidirectional, dtype=torch.float64)
    enc = {k[len("encoder."):]: v for k, v in tsd.items() if k.startswith("encoder.")}
    N, S = src.shape
    x = tsd["src_embed.weight"][torch.tensor(src)]
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    out, hn = torch.func.functional_call(rnn, enc, (packed,))
    keys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=S)
    hn = hn[0] if cell == "lstm" else hn
    final = torch.cat([hn[0], hn[1]], 1) if bidirectional else hn[0]
    s = torch.tanh(final @ tsd["bridge.weight"].T + tsd["bridge.bias"])
    c = torch.zeros_like(s)
    pad = torch.tensor(np.arange(S)[None, :] >= lengths[:, None])
    if attention:
        kp = keys @ tsd["attention.key_proj.weight"].T
        vals = keys if values == "annotations" else x
        a_prev = torch.zeros(N, S + 2, dtype=torch.float64)
    wih, whh = tsd["decoder.weight_ih"], tsd["decoder.weight_hh"]
    bih, bhh = tsd["decoder.bias_ih"], tsd["decoder.bias_hh"]
    logits, weights = [], []
    for t in range(dec_in.shape[1]):
        if attention:
            q = s @ tsd["attention.query_proj.weight"].T
            u = q[:, None, :] + kp
            if location:   # a width-3 convolution of the previous weights, then U
                f = torch.stack([a_prev[:, :-2], a_prev[:, 1:-1], a_prev[:, 2:]], 2)
                u = u + f @ tsd["location.weight"].T
            e = torch.tanh(u) @ tsd["attention.v"]
            a = torch.softmax(e.masked_fill(pad, -torch.inf), 1)
            ctx = (a[:, :, None] * vals).sum(1)
            weights.append(a)
            a_prev = torch.nn.functional.pad(a.detach(), (1, 1))
        else:
            ctx = final
        inp = torch.cat([tsd["tgt_embed.weight"][torch.tensor(dec_in[:, t])], ctx], 1)
        if cell == "gru":
            s = torch._VF.gru_cell(inp, s, wih, whh, bih, bhh)
        else:
            s, c = torch._VF.lstm_cell(inp, (s, c), wih, whh, bih, bhh)
        logits.append(torch.cat([s, ctx], 1) @ tsd["out.weight"].T + tsd["out.bias"])
    return tsd, torch.stack(logits, 1), weights


@pytest.mark.parametrize("cell,bidirectional,attention,values,location", [
    ("gru", True, True, "embeddings", True), ("gru", True, True, "annotations", False),
    ("lstm", False, True, "annotations", True), ("lstm", True, True, "embeddings", False),
    ("gru", True, False, "embeddings", True), ("lstm", False, False, "annotations", False)])
def test_network_matches_torch(cell, bidirectional, attention, values, location):
    V, N, S, T = 5, 4, 7, 6
    shendu.manual_seed(3)
    net = Seq2SeqNet(V, embed_dim=6, hidden_size=5, cell=cell, bidirectional=bidirectional,
                     attention=attention, attention_dim=4, values=values,
                     location_aware=location, dtype=np.float64)
    rng = np.random.default_rng(0)
    lengths = np.array([7, 3, 5, 1])
    src = rng.integers(0, V, (N, S))
    src[np.arange(S)[None, :] >= lengths[:, None]] = net.end_id           # padding
    dec_in = rng.integers(0, V + 2, (N, T))
    target = rng.integers(0, V + 1, (N, T))
    target[1, 4:] = -100                                                 # ignored steps
    logits = net(src, lengths, dec_in)
    loss = shendu.functional.cross_entropy(logits.reshape(-1, V + 1), target.reshape(-1))
    loss.backward()
    tsd, tlogits, _ = _torch_seq2seq(net.state_dict(), src, lengths, dec_in, cell,
                                     bidirectional, attention, values, location)
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, V + 1),
                                              torch.tensor(target.reshape(-1)))
    tloss.backward()
    np.testing.assert_allclose(logits.data, tlogits.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    params = dict(net.named_parameters())
    assert set(params) == set(tsd)
    for name, p in params.items():
        assert p.grad is not None, name
        np.testing.assert_allclose(p.grad.data, tsd[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    assert not np.any(params["src_embed.weight"].grad.data[net.end_id])  # padding row


def test_greedy_decoding_matches_torch_attention_weights():
    V, S = 4, 6
    shendu.manual_seed(1)
    net = Seq2SeqNet(V, embed_dim=5, hidden_size=4, dtype=np.float64)
    net.eval()
    src = np.array([[0, 1, 2, 3, 1, 2], [3, 3, 0, V, V, V]])
    lengths = np.array([6, 3])
    tokens, w = net.greedy(src, lengths, steps=5)
    assert tokens.shape[0] == 2 and w.shape == (2, tokens.shape[1], S)
    # replaying the greedy tokens under teacher forcing gives the same attention weights
    dec_in = np.concatenate([np.full((2, 1), net.bos_id), tokens[:, :-1]], 1)
    _, _, tw = _torch_seq2seq(net.state_dict(), src, lengths, dec_in, "gru", True, True)
    np.testing.assert_allclose(w, torch.stack(tw, 1).detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(w.sum(2), 1, rtol=1e-12)
    assert not w[1, :, 3:].any()                                         # padding: no weight


# ------------------------------------------------------------------ learning
@pytest.mark.slow
def test_reversal_attention_beats_the_bottleneck_and_is_anti_diagonal():
    """CI-sized: lengths 8-14, 3,000 training sequences, 5 epochs (the full-size run,
    lengths 10-20, is examples/seq2seq_reversal.py)."""
    train = sequence_task("reverse", 3000, (8, 14), vocab=10, seed=0)
    test = sequence_task("reverse", 300, (8, 14), vocab=10, seed=1)
    kw = dict(vocab_size=10, pad_id=train.pad_id, embed_dim=16, hidden_size=32, max_iter=5,
              batch_size=32, learning_rate_init=1e-2, random_state=0)
    att = AttentionMechanism(attention=True, **kw).fit(train.src, train.tgt)
    plain = AttentionMechanism(attention=False, **kw).fit(train.src, train.tgt)
    acc_att, acc_plain = att.score(test.src, test.tgt), plain.score(test.src, test.tgt)
    assert acc_att >= 0.9, acc_att
    assert acc_plain <= 0.5, acc_plain             # the same budget through one vector
    pred, w = att.predict(test.src, return_attention=True)
    assert pred.shape == test.tgt.shape and w.shape == test.src.shape + (test.src.shape[1],)
    np.testing.assert_array_equal(acc_att, np.mean((pred == test.tgt).all(1)))
    assert mirrored_fraction(w, test.lengths) >= 0.95


@pytest.mark.slow
def test_ragged_lists_single_sequences_lstm_and_scheduled_sampling():
    rng = np.random.default_rng(0)
    X = [rng.integers(0, 4, rng.integers(2, 5)) for _ in range(400)]
    y = [x[::-1].copy() for x in X]
    m = AttentionMechanism(cell="lstm", bidirectional=False, embed_dim=8, hidden_size=24,
                           teacher_forcing_ratio=0.5, max_iter=10, batch_size=16,
                           learning_rate_init=1e-2,
                           random_state=0).fit(X, y)
    assert m.vocab_size_ == 4 and m.max_target_len_ == 4
    pred = m.predict(X[:20])
    assert isinstance(pred, list) and all(p.ndim == 1 for p in pred)
    assert m.score(X, y) >= 0.95
    one, w = m.predict(X[0], return_attention=True)
    np.testing.assert_array_equal(one, pred[0])
    assert w.shape == (len(one), len(X[0]))
    mats = m.attention_weights(X[:3])
    assert [a.shape for a in mats] == [(len(p), len(x)) for p, x in zip(pred[:3], X[:3])]


def test_padded_arrays_round_trip_and_same_seed_same_model():
    t = sequence_task("copy", 120, (2, 5), vocab=3, seed=0)
    kw = dict(vocab_size=3, pad_id=t.pad_id, embed_dim=4, hidden_size=6, max_iter=2,
              random_state=7)
    a = AttentionMechanism(**kw).fit(t.src, t.tgt)
    b = AttentionMechanism(**kw).fit(t.src, t.tgt)
    pa, wa = a.predict(t.src, return_attention=True)
    pb, wb = b.predict(t.src, return_attention=True)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(wa, wb)
    for pa_, pb_ in zip(a.model_.parameters(), b.model_.parameters()):
        np.testing.assert_array_equal(pa_.data, pb_.data)
    assert pa.shape == t.tgt.shape and set(np.unique(pa)) <= {0, 1, 2, t.pad_id}
    # a prediction is padded after its first pad; weights vanish past each output's end
    out_len = np.where((pa == t.pad_id).any(1), (pa == t.pad_id).argmax(1), pa.shape[1])
    after = np.arange(pa.shape[1])[None, :] >= out_len[:, None]
    assert (pa[after] == t.pad_id).all() and not wa[after].any()
    np.testing.assert_allclose(wa.sum(2)[~after], 1, rtol=1e-5)
    c = AttentionMechanism(**{**kw, "random_state": 8}).fit(t.src, t.tgt)
    assert not np.array_equal(c.model_.out.weight.data, a.model_.out.weight.data)
    assert len(a.history_["loss"]) == 2 and "lr" in a.history_


def test_errors_name_the_model_and_what_came():
    m = AttentionMechanism(vocab_size=3, max_iter=1)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        m.predict([[0, 1]])
    with pytest.raises(ValueError, match=r"token 3 .*outside 0..2 \(vocab_size=3\); pass "
                                         r"pad_id=3"):
        m.fit(np.array([[0, 1, 3]]), np.array([[1, 0, 3]]))
    with pytest.raises(ValueError, match="X has 2 sequences but y has 1"):
        m.fit([[0], [1]], [[0]])
    with pytest.raises(ValueError, match=r"X\[1\] is empty"):
        m.fit([[0], []], [[0], [1]])
    with pytest.raises(ValueError, match="integer token ids, got dtype float"):
        m.fit(np.zeros((2, 3)), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="wrap it in a list"):
        m.fit(np.array([0, 1]), np.array([1, 0]))
    with pytest.raises(ValueError, match="cell must be 'gru' or 'lstm', got 'rnn'"):
        AttentionMechanism(cell="rnn", max_iter=1).fit([[0, 1]], [[1, 0]])
    with pytest.raises(ValueError, match=r"learning_rate \(the schedule\) must be"):
        AttentionMechanism(learning_rate="step", max_iter=1).fit([[0, 1]], [[1, 0]])
    with pytest.warns(FutureWarning, match="lr_schedule"), \
            pytest.raises(ValueError, match=r"learning_rate \(the schedule\) must be"):
        AttentionMechanism(lr_schedule="step", max_iter=1).fit([[0, 1]], [[1, 0]])
    plain = AttentionMechanism(attention=False, max_iter=1, hidden_size=4,
                               embed_dim=4).fit([[0, 1]], [[1, 0]])
    with pytest.raises(ValueError, match=r"attention=False\) has no attention weights"):
        plain.attention_weights([[0, 1]])
    assert "attention=False" in repr(plain)
