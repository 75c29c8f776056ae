"""The fused recurrent scans (functional): float64 gradcheck and torch parity of outputs,
final states and every gradient; variable lengths; cells; truncated BPTT; the BPTT
diagnostic."""

import numpy as np
import pytest
import torch

import shendu
import shendu.functional as F
from shendu import nn
from shendu.autograd import gradcheck
from tests.helpers import TOL

T, B, I, H = 5, 3, 4, 6
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
TORCH_MOD = {"rnn_tanh": lambda: torch.nn.RNN(I, H, bidirectional=True),
             "rnn_relu": lambda: torch.nn.RNN(I, H, nonlinearity="relu", bidirectional=True),
             "lstm": lambda: torch.nn.LSTM(I, H, bidirectional=True),
             "gru": lambda: torch.nn.GRU(I, H, bidirectional=True)}
LENGTHS = np.array([5, 2, 4])


def _arrays(kind, dtype, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    G = GATES[kind]
    u = lambda *s: rng.uniform(-0.8, 0.8, s).astype(dtype)  # noqa: E731
    a = dict(x=u(T, B, I), h0=u(B, H), c0=u(B, H), w_ih=u(G * H, I), w_hh=u(G * H, H))
    if bias:
        a.update(b_ih=u(G * H), b_hh=u(G * H))
    return a


def _scan(kind, t, lengths=None, reverse=False):
    b = (t["b_ih"], t["b_hh"]) if "b_ih" in t else (None, None)
    if kind == "lstm":
        return F.lstm(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], *b, lengths=lengths,
                      reverse=reverse)
    if kind == "gru":
        return F.gru(t["x"], t["h0"], t["w_ih"], t["w_hh"], *b, lengths=lengths,
                     reverse=reverse)
    return F.rnn(t["x"], t["h0"], t["w_ih"], t["w_hh"], *b, nonlinearity=kind[4:],
                 lengths=lengths, reverse=reverse)


def _torch_scan(kind, a, dtype, lengths=None, reverse=False):
    """The same scan in torch: one direction of a (bidirectional) torch layer."""
    mod = TORCH_MOD[kind]().to(torch.float64 if dtype == np.float64 else torch.float32)
    sfx = "_reverse" if reverse else ""
    t = {k: torch.tensor(v, requires_grad=True) for k, v in a.items() if k in ("x", "h0", "c0")}
    names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
    with torch.no_grad():
        for n, tn in names.items():
            p = getattr(mod, tn + "_l0" + sfx)
            p.copy_(torch.tensor(a[n]))
            t[n] = p
    d = 1 if reverse else 0
    z = torch.zeros(1, B, H, dtype=t["x"].dtype)
    def both(s):  # the other direction starts from zeros
        return torch.cat([z, t[s][None]] if reverse else [t[s][None], z])

    x = t["x"]
    if lengths is not None:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                    enforce_sorted=False)
    if kind == "lstm":
        out, (hn, cn) = mod(x, (both("h0"), both("c0")))
    else:
        out, hn = mod(x, both("h0"))
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    outs = [out[..., d * H:(d + 1) * H], hn[d]]
    if kind == "lstm":
        outs.append(cn[d])
    return outs, t


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scan_matches_torch(kind, reverse, lengths, dtype):
    a = _arrays(kind, dtype)
    if kind != "lstm":
        a.pop("c0")
    s = {k: shendu.tensor(v, dtype=dtype, requires_grad=True) for k, v in a.items()}
    s_out = list(_scan(kind, s, lengths, reverse))
    t_out, t = _torch_scan(kind, a, dtype, lengths, reverse)
    tol = TOL[dtype]
    for i, (so, to) in enumerate(zip(s_out, t_out)):
        assert so.dtype == dtype and so.shape == tuple(to.shape)
        np.testing.assert_allclose(so.data, to.detach().numpy(), **tol, err_msg=f"output {i}")
    rng = np.random.default_rng(7)
    projs = [rng.standard_normal(o.shape).astype(dtype) for o in s_out]
    shendu.autograd.backward(s_out, projs)
    torch.autograd.backward(t_out, [torch.tensor(p) for p in projs])
    for k in a:
        assert s[k].grad is not None, k
        np.testing.assert_allclose(s[k].grad.data, t[k].grad.numpy(), **tol,
                                   err_msg=f"gradient of {k}")
    if lengths is not None:  # padded inputs get no gradient; padded outputs are zero
        for b, n in enumerate(lengths):
            assert not np.any(s["x"].grad.data[n:, b])
            assert not np.any(s_out[0].data[n:, b])


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_chunked_backward_matches_torch(monkeypatch, chunk, reverse, lengths, dtype):
    """The LSTM makes its backward factors (forward pass) and adds its weight gradients
    (backward pass) a few steps at a time; with T=5, chunks of 1 to 4 steps (the last one
    partial) must give torch's values and gradients."""
    monkeypatch.setattr(F.recurrent, "_CHUNK_BYTES",
                        chunk * 4 * H * B * np.dtype(dtype).itemsize)
    test_scan_matches_torch("lstm", reverse, lengths, dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_weight_grads_without_state_grads(monkeypatch, kind, reverse):
    """Initial states (and input) that need no gradient: the scan may skip the last step's
    recurrent product; the weight gradients must still be torch's."""
    monkeypatch.setattr(F.recurrent, "_CHUNK_BYTES", 2 * 4 * H * B * 4)
    a = _arrays(kind, np.float32, seed=3)
    if kind != "lstm":
        a.pop("c0")
    s = {k: shendu.tensor(v, requires_grad=k.startswith(("w_", "b_"))) for k, v in a.items()}
    s_out = list(_scan(kind, s, LENGTHS, reverse))
    t_out, t = _torch_scan(kind, a, np.float32, LENGTHS, reverse)
    rng = np.random.default_rng(8)
    projs = [rng.standard_normal(o.shape).astype(np.float32) for o in s_out]
    shendu.autograd.backward(s_out, projs)
    torch.autograd.backward(t_out, [torch.tensor(p) for p in projs])
    for k in a:
        if k.startswith(("w_", "b_")):
            np.testing.assert_allclose(s[k].grad.data, t[k].grad.numpy(), **TOL[np.float32],
                                       err_msg=f"gradient of {k}")
        else:
            assert s[k].grad is None, k


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_scan_gradcheck(kind, reverse, bias):
    a = _arrays(kind, np.float64, seed=1, bias=bias)
    if kind != "lstm":
        a.pop("c0")
    names = list(a)
    inputs = [shendu.tensor(a[k], dtype="float64", requires_grad=True) for k in names]
    lengths = np.array([5, 3, 1])

    def fn(*ts):
        return _scan(kind, dict(zip(names, ts)), lengths if reverse else None, reverse)

    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_gradcheck_with_lengths_forward(kind):
    a = _arrays(kind, np.float64, seed=2)
    if kind != "lstm":
        a.pop("c0")
    names = list(a)
    inputs = [shendu.tensor(a[k], dtype="float64", requires_grad=True) for k in names]
    assert gradcheck(lambda *ts: _scan(kind, dict(zip(names, ts)), np.array([2, 5, 0])),
                     inputs)


def test_relu_rnn_gradcheck_away_from_kink():
    # relu is not differentiable at 0; with these inputs no pre-activation is near 0
    a = _arrays("rnn_relu", np.float64, seed=3)
    a.pop("c0")
    names = list(a)
    inputs = [shendu.tensor(a[k], dtype="float64", requires_grad=True) for k in names]
    assert gradcheck(lambda *ts: _scan("rnn_relu", dict(zip(names, ts))), inputs)


def test_lengths_freeze_state_and_zero_outputs():
    a = _arrays("lstm", np.float64)
    s = {k: shendu.tensor(v, dtype="float64") for k, v in a.items()}
    out, hn, cn = _scan("lstm", s, lengths=np.array([5, 2, 0]))
    full, _, _ = _scan("lstm", s)
    np.testing.assert_allclose(hn.data[1], full.data[1, 1])  # state after the 2nd step
    np.testing.assert_allclose(hn.data[2], a["h0"][2])       # empty sequence: h0
    np.testing.assert_allclose(cn.data[2], a["c0"][2])
    assert not np.any(out.data[2:, 1]) and not np.any(out.data[:, 2])
    np.testing.assert_allclose(out.data[:2, 1], full.data[:2, 1])


def test_lengths_errors():
    s = {k: shendu.tensor(v) for k, v in _arrays("gru", np.float32).items()}
    with pytest.raises(ValueError, match=r"gru: expected lengths of shape \(3,\)"):
        _scan("gru", s, lengths=[1, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        _scan("gru", s, lengths=[1, 2, 6])
    with pytest.raises(ValueError, match="lengths must be integers"):
        _scan("gru", s, lengths=[1.5, 2, 3])


def test_shape_and_dtype_errors():
    s = {k: shendu.tensor(v) for k, v in _arrays("lstm", np.float32).items()}
    with pytest.raises(ValueError, match=r"lstm: expected weight_ih of shape \(24, 4\)"):
        F.lstm(s["x"], s["h0"], s["c0"], s["w_hh"], s["w_hh"])
    with pytest.raises(ValueError, match=r"lstm: expected c0 of shape \(3, 6\), got \(6,\)"):
        F.lstm(s["x"], s["h0"], s["c0"][0], s["w_ih"], s["w_hh"])
    with pytest.raises(ValueError, match="time-major input"):
        F.lstm(s["x"][0], s["h0"], s["c0"], s["w_ih"], s["w_hh"])
    with pytest.raises(TypeError, match="expected input of dtype float32"):
        F.lstm(s["x"].double(), s["h0"], s["c0"], s["w_ih"], s["w_hh"])
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        F.rnn(s["x"], s["h0"], s["w_ih"][:H], s["w_hh"][:H], nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cells_match_torch(kind, dtype):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    tmod = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](
        I, H).to(torch.float64 if dtype == np.float64 else torch.float32)
    smod = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind](I, H)
    smod.to(dtype)
    smod.load_state_dict(tmod.state_dict())
    assert smod.weight_ih.shape == (G * H, I)
    rng = np.random.default_rng(0)
    x, h, c = (rng.uniform(-1, 1, s).astype(dtype) for s in ((B, I), (B, H), (B, H)))
    sx, sh, sc = (shendu.tensor(v, dtype=dtype, requires_grad=True) for v in (x, h, c))
    tx, th, tc = (torch.tensor(v, requires_grad=True) for v in (x, h, c))
    s_out = smod(sx, (sh, sc)) if kind == "lstm" else (smod(sx, sh),)
    t_out = tmod(tx, (th, tc)) if kind == "lstm" else (tmod(tx, th),)
    tol = TOL[dtype]
    projs = [rng.standard_normal((B, H)).astype(dtype) for _ in s_out]
    for so, to in zip(s_out, t_out):
        np.testing.assert_allclose(so.data, to.detach().numpy(), **tol)
    shendu.autograd.backward(list(s_out), projs)
    torch.autograd.backward(list(t_out), [torch.tensor(p) for p in projs])
    pairs = [(sx, tx), (sh, th)] + ([(sc, tc)] if kind == "lstm" else [])
    for s_t, t_t in pairs:
        np.testing.assert_allclose(s_t.grad.data, t_t.grad.numpy(), **tol)
    tp = dict(tmod.named_parameters())
    for name, p in smod.named_parameters():
        np.testing.assert_allclose(p.grad.data, tp[name].grad.numpy(), **tol, err_msg=name)
    # unbatched input and the default zero state
    one = smod(shendu.tensor(x[0], dtype=dtype))
    ref = tmod(torch.tensor(x[0]))
    for so, to in zip(one if kind == "lstm" else (one,), ref if kind == "lstm" else (ref,)):
        np.testing.assert_allclose(so.data, to.detach().numpy(), **tol)


def test_cell_gradcheck():
    rng = np.random.default_rng(4)
    arrs = [rng.uniform(-1, 1, s) for s in ((2, 3), (2, 4), (2, 4), (16, 3), (16, 4), (16,),
                                             (16,))]
    inputs = [shendu.tensor(a, dtype="float64", requires_grad=True) for a in arrs]
    assert gradcheck(lambda x, h, c, wi, wh, bi, bh: F.lstm_cell(x, h, c, wi, wh, bi, bh),
                     inputs)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_step_gradcheck_and_scan(bias):
    # the GRU cell's own one-step kernel: float64 gradcheck, and the same values and
    # gradients as one step of the scan
    rng = np.random.default_rng(5)
    shapes = [(3, 4), (3, 5), (15, 4), (15, 5)] + ([(15,), (15,)] if bias else [])
    arrs = [rng.uniform(-1, 1, s) for s in shapes]
    inputs = [shendu.tensor(a, dtype="float64", requires_grad=True) for a in arrs]
    assert gradcheck(F.gru_cell, inputs)
    out = F.gru_cell(*inputs)
    g = rng.standard_normal(out.shape)
    out.backward(shendu.tensor(g))
    cell = [t.grad.data.copy() for t in inputs]
    for t in inputs:
        t.grad = None
    x, h, *w = inputs
    ref = F.gru(x.reshape(1, 3, 4), h, *w)[1]
    ref.backward(shendu.tensor(g))
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-13, atol=1e-13)
    for a, t in zip(cell, inputs):
        np.testing.assert_allclose(a, t.grad.data, rtol=1e-12, atol=1e-12)


def test_gru_cell_errors():
    w_ih, w_hh = shendu.zeros(15, 4), shendu.zeros(15, 5)
    with pytest.raises(ValueError, match=r"gru_cell: expected input \(B, input_size\)"):
        F.gru_cell(shendu.zeros(4), shendu.zeros(1, 5), w_ih, w_hh)
    with pytest.raises(ValueError, match=r"gru_cell: expected h of shape \(3, 5\)"):
        F.gru_cell(shendu.zeros(3, 4), shendu.zeros(2, 5), w_ih, w_hh)


def test_cell_errors():
    cell = nn.LSTMCell(4, 6)
    with pytest.raises(ValueError, match="LSTMCell expected input size 4 at dim -1, got 5"):
        cell(shendu.zeros(2, 5))
    with pytest.raises(ValueError, match=r"LSTMCell expected state c of shape \(2, 6\)"):
        cell(shendu.zeros(2, 4), (shendu.zeros(2, 6), shendu.zeros(3, 6)))


def test_truncated_bptt_stops_gradient_at_detached_state():
    shendu.manual_seed(0)
    lstm = nn.LSTM(I, H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * T, B, I)).astype(np.float32)
    x1 = shendu.tensor(x[:T], requires_grad=True)
    x2 = shendu.tensor(x[T:], requires_grad=True)
    # chunked forward == whole forward: the state carries the history
    out_full, _ = lstm(shendu.tensor(x))
    out1, state = lstm(x1)
    out2, _ = lstm(x2, tuple(s.detach() for s in state))
    np.testing.assert_allclose(out2.data, out_full.data[T:], rtol=1e-6, atol=1e-6)
    out2.sum().backward()
    assert x1.grad is None and x2.grad is not None          # stopped at the boundary
    # without the detach the gradient reaches the first chunk
    out1, state = lstm(x1)
    out2, _ = lstm(x2, state)
    out2.sum().backward()
    assert x1.grad is not None and np.abs(x1.grad.data).sum() > 0


def _torch_unrolled_norms(tmod, x, loss_fn, cell_cls):
    cell = cell_cls(I, H)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(tmod, n + "_l0"))
    h = torch.zeros(B, H)
    state = (h, torch.zeros(B, H)) if cell_cls is torch.nn.LSTMCell else h
    hs = []
    for t in range(x.shape[0]):
        state = cell(x[t], state)
        hcur = state[0] if isinstance(state, tuple) else state
        hcur.retain_grad()
        hs.append(hcur)
    loss_fn(torch.stack(hs)).backward()
    return np.array([float(h.grad.norm()) for h in hs])


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_bptt_gradient_norms_match_torch(kind):
    shendu.manual_seed(1)
    smod = nn.RNN(I, H) if kind == "rnn" else nn.LSTM(I, H)
    tmod = torch.nn.RNN(I, H) if kind == "rnn" else torch.nn.LSTM(I, H)
    smod.load_state_dict(tmod.state_dict())
    x = np.random.default_rng(0).standard_normal((12, B, I)).astype(np.float32)
    norms = nn.bptt_gradient_norms(smod, shendu.tensor(x), lambda out: (out[-1] ** 2).sum())
    ref = _torch_unrolled_norms(tmod, torch.tensor(x), lambda out: (out[-1] ** 2).sum(),
                                torch.nn.RNNCell if kind == "rnn" else torch.nn.LSTMCell)
    np.testing.assert_allclose(norms, ref, rtol=1e-4, atol=1e-7)
    assert norms.shape == (12,) and norms[-1] > 0
    # parameters' .grad untouched
    assert all(p.grad is None for p in smod.parameters())


def test_bptt_norms_vanish_faster_for_rnn_than_lstm():
    """Loss on the last step only: a tanh RNN's ∂L/∂h_t shrinks geometrically going back,
    an LSTM with its forget gate biased open keeps a far larger share."""
    shendu.manual_seed(0)
    Tlong = 40
    x = shendu.tensor(np.random.default_rng(0).standard_normal((Tlong, 8, I)).astype(np.float32))
    rnn = nn.RNN(I, H)
    lstm = nn.LSTM(I, H)
    with shendu.no_grad():
        lstm.bias_ih_l0.data[H:2 * H] = 2.0  # forget gate open, as is common practice
    loss = lambda out: out[-1].sum()  # noqa: E731
    r = nn.bptt_gradient_norms(rnn, x, loss)
    m = nn.bptt_gradient_norms(lstm, x, loss)
    assert r[0] / r[-1] < 1e-3 * (m[0] / m[-1])


def test_rnn_backward_flushes_subnormal_gradients():
    """A float32 tanh RNN whose carried gradient underflows (small W_hh, a long sequence,
    the loss on the last step): the gradient reaching the early steps passes through the
    subnormal range on its way to 0, where it is flushed to 0 (products of subnormals cost
    tens of times more): the steps whose exact input gradient lies deep in that range get
    exactly 0, and what a normal number would notice is unchanged: the gradients match
    float64 torch."""
    rng = np.random.default_rng(0)
    Tl = 80
    a = dict(x=rng.uniform(-1, 1, (Tl, B, I)), h0=rng.uniform(-1, 1, (B, H)),
             w_ih=rng.uniform(-1, 1, (H, I)), w_hh=rng.uniform(-0.05, 0.05, (H, H)),
             b_ih=rng.uniform(-1, 1, H), b_hh=rng.uniform(-1, 1, H))
    t = {k: shendu.tensor(v.astype(np.float32), requires_grad=True) for k, v in a.items()}
    out, _ = F.rnn(t["x"], t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])
    out[-1].sum().backward()
    tt = {k: torch.tensor(v, requires_grad=True) for k, v in a.items()}
    h = tt["h0"]
    for s in range(Tl):
        h = torch.tanh(tt["x"][s] @ tt["w_ih"].T + tt["b_ih"] + h @ tt["w_hh"].T + tt["b_hh"])
    h.sum().backward()
    tiny = np.finfo(np.float32).tiny
    exact = np.abs(tt["x"].grad.numpy()).max(axis=(1, 2))          # per step
    deep = (exact < tiny * 2.0 ** -10) & (exact > 0)
    assert deep.sum() >= 2                          # the test reaches the subnormal range
    assert (t["x"].grad.data[deep] == 0).all()
    for k in a:
        np.testing.assert_allclose(t[k].grad.data, tt[k].grad.numpy(), rtol=1e-5, atol=1e-6)


def test_lent_buffers_come_back_only_when_every_view_is_gone():
    ws = F.recurrent._Workspace()
    a = ws.lend((4, 3), np.float32)
    assert a.dtype == np.float32 and a.shape == (4, 3) and a.ctypes.data % 64 == 0
    view = a[1:].T
    addr = view.__array_interface__["data"][0] - 3 * 4
    del a
    b = ws.lend((4, 3), np.float32)             # `view` still holds the first buffer
    assert not np.shares_memory(b, view)
    del view
    c = ws.lend((4, 3), np.float32)             # now it is free again: reused
    assert c.ctypes.data == addr
    del b, c


def test_scan_outputs_survive_later_scans():
    """A scan's outputs are views of its state buffer; later scans of the same shape must
    not write into a buffer that an earlier output still refers to."""
    for kind in ("lstm", "gru", "rnn_tanh"):
        a = _arrays(kind, np.float32)
        if kind != "lstm":
            a.pop("c0")
        s = {k: shendu.tensor(v, requires_grad=True) for k, v in a.items()}
        first = _scan(kind, s)
        kept = [o.data.copy() for o in first]
        del s["x"]
        for seed in range(3):
            s["x"] = shendu.tensor(_arrays(kind, np.float32, seed=seed + 10)["x"])
            outs = _scan(kind, s)
            shendu.autograd.backward(list(outs), [np.ones(o.shape, np.float32) for o in outs])
        for o, k in zip(first, kept):
            np.testing.assert_array_equal(o.data, k)
