"""ONNX export: each layer and op, and whole networks, exported, checked with onnx.checker,
run in ONNX Runtime (CPU) and compared with shendu, at the traced size and another one."""

from __future__ import annotations

import io

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import shendu  # noqa: E402
import shendu.nn as nn  # noqa: E402
from shendu import functional as F  # noqa: E402
from shendu.tensor import Tensor  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _flat(out):
    if isinstance(out, Tensor):
        return [out.data]
    res = []
    for o in out:
        if o is not None:
            res += _flat(o)
    return res


def check(model, args, names, dynamic_axes=None, others=(), kwargs_names=()):
    """Export ``model`` on ``args``; check the file; run it in ONNX Runtime on ``args`` and
    on every tuple in ``others``; outputs must equal shendu's (rtol 1e-4, atol 1e-5)."""
    from shendu import onnx as sonnx

    model.eval()
    buf = io.BytesIO()
    ex_args = tuple(Tensor(a) for a in args)
    if kwargs_names:
        k = len(args) - len(kwargs_names)
        ex_args = ex_args[:k] + (dict(zip(kwargs_names, ex_args[k:])),)
    sonnx.export(model, ex_args, buf, input_names=names, dynamic_axes=dynamic_axes)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == sonnx.OPSET >= 17
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for inputs in (tuple(args), *others):
        ts = [Tensor(a) for a in inputs]
        k = len(ts) - len(kwargs_names)
        with shendu.no_grad():
            want = _flat(model(*ts[:k], **dict(zip(kwargs_names, ts[k:]))))
        got = sess.run(None, dict(zip(names, inputs)))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    return proto


def _ops(proto):
    return {n.op_type for n in proto.graph.node}


# ------------------------------------------------------------------ layers
ACTS = [nn.ReLU(), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.GELU(), nn.GELU("tanh"), nn.SiLU(),
        nn.Sigmoid(), nn.Tanh(), nn.Softplus(2.0, 1.0), nn.Hardtanh(-0.5, 0.7), nn.ReLU6(),
        nn.Softmax(-1), nn.LogSoftmax(1), nn.SELU(), nn.Mish(), nn.PReLU(3)]


@pytest.mark.parametrize("act", ACTS, ids=lambda m: type(m).__name__)
def test_activations(act):
    x = _rand(4, 3) * 4
    check(act, (x,), ["x"], {"x": {0: "batch"}}, [(_rand(9, 3, seed=1) * 4,)])


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(shape, bias):
    m = nn.Linear(6, 4, bias=bias)
    other = (_rand(7, *shape[1:], seed=3),)
    proto = check(m, (_rand(*shape),), ["x"], {"x": {0: "n"}}, [other])
    assert ("Gemm" in _ops(proto)) == (len(shape) == 2)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same"),
                                dict(dilation=2, groups=2), dict(padding=(1, 2), stride=(2, 1))])
def test_conv2d(kw):
    m = nn.Conv2d(4, 6, 3, **kw)
    check(m, (_rand(2, 4, 9, 8),), ["x"], {"x": {0: "n", 2: "h", 3: "w"}},
          [(_rand(3, 4, 11, 10, seed=1),)])


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=2), dict(padding="same"),
                                dict(dilation=2, groups=3)])
def test_conv1d(kw):
    m = nn.Conv1d(3, 6, 3, **kw)
    check(m, (_rand(2, 3, 10),), ["x"], {"x": {0: "n", 2: "t"}}, [(_rand(4, 3, 13, seed=1),)])


@pytest.mark.parametrize("m", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2,
                                                                                    ceil_mode=True),
                               nn.AvgPool2d(2), nn.AvgPool2d(3, 2, 1),
                               nn.AvgPool2d(3, 2, 1, count_include_pad=False),
                               nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1),
                               nn.AdaptiveAvgPool2d(3)], ids=repr)
def test_pooling(m):
    check(m, (_rand(2, 3, 9, 8),), ["x"], {"x": {0: "n"}}, [(_rand(5, 3, 9, 8, seed=1),)])


@pytest.mark.parametrize("m", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                               nn.AvgPool2d(2), nn.AvgPool2d(3, 2),
                               nn.AvgPool2d(3, 2, 1, count_include_pad=False),
                               nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                               nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d((3, 1))], ids=repr)
def test_pooling_along_dynamic_height_and_width(m):
    """The window is fixed, H and W are free (adaptive bins are built in the graph)."""
    check(m, (_rand(2, 3, 8, 9),), ["x"], {"x": {0: "n", 2: "h", 3: "w"}},
          [(_rand(3, 3, 13, 7, seed=1),), (_rand(1, 3, 16, 16, seed=2),)])


def test_pooling_dynamic_size_with_size_dependent_divisor_is_refused():
    from shendu import onnx as sonnx

    with pytest.raises(sonnx.UnsupportedOperatorError, match="AvgPool2d in module"):
        sonnx.export(nn.AvgPool2d(3, 2, 1, divisor_override=5), (Tensor(_rand(2, 3, 8, 9)),),
                     io.BytesIO(),
                     input_names=["x"], dynamic_axes={"x": {2: "h"}})


def test_pooling_unbatched():
    check(nn.MaxPool2d(2), (_rand(3, 8, 8),), ["x"], None, [])


def _bn(m):
    rng = np.random.default_rng(5)
    m.running_mean.data[...] = rng.standard_normal(m.running_mean.shape)
    m.running_var.data[...] = rng.uniform(0.5, 2, m.running_var.shape)
    m.weight.data[...] = rng.standard_normal(m.weight.shape)
    m.bias.data[...] = rng.standard_normal(m.bias.shape)
    return m


@pytest.mark.parametrize("m, shape", [(_bn(nn.BatchNorm1d(4)), (5, 4)),
                                      (_bn(nn.BatchNorm1d(4)), (5, 4, 7)),
                                      (_bn(nn.BatchNorm2d(3)), (2, 3, 4, 5)),
                                      (nn.LayerNorm(6), (3, 6)), (nn.LayerNorm((4, 6)), (2, 4, 6)),
                                      (nn.LayerNorm(6, elementwise_affine=False), (2, 5, 6)),
                                      (nn.Dropout(0.5), (3, 4))], ids=repr)
def test_normalization_and_dropout(m, shape):
    check(m, (_rand(*shape),), ["x"], {"x": {0: "n"}}, [(_rand(6, *shape[1:], seed=2),)])


def test_embedding():
    m = nn.Embedding(10, 4, padding_idx=0)
    x = np.array([[1, 2, 0], [4, 9, 3]], np.int64)
    other = np.array([[5, 5, 1, 0], [7, 8, 2, 3], [0, 1, 2, 3]], np.int64)
    check(m, (x,), ["tokens"], {"tokens": {0: "n", 1: "t"}}, [(other,)])


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent(cls, bidirectional):
    m = cls(3, 5, num_layers=2, bidirectional=bidirectional)
    proto = check(m, (_rand(6, 2, 3),), ["x"], {"x": {0: "t", 1: "n"}},
                  [(_rand(9, 4, 3, seed=1),), (_rand(2, 1, 3, seed=2),)])
    assert cls.__name__ in _ops(proto)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_batch_first_with_state_and_lengths(cls):
    m = cls(3, 4, batch_first=True, bidirectional=True, nonlinearity="relu") if cls is nn.RNN \
        else cls(3, 4, batch_first=True, bidirectional=True)
    x, h = _rand(3, 5, 3), _rand(2, 3, 4, seed=1)
    lens = np.array([5, 2, 4], np.int64)
    if cls is nn.LSTM:
        class Wrap(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = m

            def forward(self, x, h, c, lengths):
                return self.rnn(x, (h, c), lengths=lengths)

        c = _rand(2, 3, 4, seed=2)
        check(Wrap(), (x, h, c, lens), ["x", "h", "c", "lengths"], None,
              [(_rand(3, 5, 3, seed=3), h * 2, c, np.array([1, 5, 3], np.int64))])
    else:
        check(m, (x, h, lens), ["x", "h", "lengths"], None,
              [(_rand(3, 5, 3, seed=3), h * 2, np.array([3, 5, 1], np.int64))],
              kwargs_names=("lengths",))


def test_multihead_attention_with_weights():
    m = nn.MultiheadAttention(8, 2, batch_first=True)

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = m

        def forward(self, x):
            return self.attn(x, x, x, need_weights=True)

    check(Self(), (_rand(2, 5, 8),), ["x"], {"x": {0: "n", 1: "t"}}, [(_rand(3, 7, 8, seed=1),)])


def test_multihead_attention_cross_and_key_padding_mask():
    m = nn.MultiheadAttention(8, 2, kdim=6, vdim=5)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = m

        def forward(self, q, kv, v, pad):
            return self.attn(q, kv, v, key_padding_mask=pad, need_weights=False)[0]

    pad = np.array([[False, False, True, True], [False, False, False, True]])
    pad2 = np.array([[False, True, True, True, True], [False] * 5, [False, False, True, True,
                                                                     True]])
    check(Cross(), (_rand(3, 2, 8), _rand(4, 2, 6, seed=1), _rand(4, 2, 5, seed=2), pad),
          ["q", "k", "v", "pad"],
          {"q": {0: "l", 1: "n"}, "k": {0: "s", 1: "n"}, "v": {0: "s", 1: "n"},
           "pad": {0: "n", 1: "s"}},
          [(_rand(2, 3, 8), _rand(5, 3, 6, seed=3), _rand(5, 3, 5, seed=4), pad2)])


# ------------------------------------------------------------------ functional ops
class Ops(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):                         # x (N, T, 4)
        n = x.shape[0]
        y = self.lin(x).permute(0, 2, 1)          # (N, 4, T)
        a, b = F.split(y, [1, 3], 1)
        z = F.cat([b, a * 2 - 1], 1).reshape(n, -1)
        s = F.stack([x.sum(1), x.mean(1), x.var(1), x.std(1), x.amax(1), x.max(1)[0],
                     x.logsumexp(1), x.abs().sqrt().sum(1), F.clamp(x, -0.5, 0.5).sum(1),
                     x.amin((1, 2), keepdim=True)[:, 0].expand(n, 4)], 0)
        w = F.where(x > 0, x, F.exp(x) - 1)[:, -1, 1:3]
        p = F.pad(x, (1, 2)).prod(-1)
        g = x[..., None, 0].repeat(1, 1, 3)
        h = (x ** 3 / (x.abs() + 1) + F.log1p(x.abs()) * F.sin(x) - F.cos(x)).flatten(1)
        k = F.gather(x[:1], 2, np.array([[[1, 0, 3, 3]] * 3]))
        k = k + x.transpose(1, 2).unsqueeze(0)[0].mT
        return z, s, w, p, g, h, k, x.norm(dim=-1), F.maximum(x, -x), F.minimum(x, x * 2)


def test_functional_ops():
    check(Ops(), (_rand(2, 3, 4),), ["x"], {"x": {0: "n"}}, [(_rand(5, 3, 4, seed=1),)])


def test_functional_ops_dynamic_length_reshape():
    class M(nn.Module):
        def forward(self, x):                      # (N, T, 6) -> (N, T, 2, 3) -> (N*T, 6)
            n, t = x.shape[:2]
            y = x.reshape(n, t, 2, 3).transpose(2, 3)
            return y.reshape(n * t, 6), F.softmax(x, 1)[:, 0]

    check(M(), (_rand(2, 3, 6),), ["x"], {"x": {0: "n", 1: "t"}}, [(_rand(4, 7, 6, seed=1),)])


# ------------------------------------------------------------------ whole networks
def lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def test_mlp_and_lenet():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 3))
    check(mlp, (_rand(4, 8),), ["x"], {"x": {0: "n"}}, [(_rand(11, 8, seed=1),)])
    check(lenet(), (_rand(2, 1, 28, 28),), ["x"], {"x": {0: "n"}}, [(_rand(5, 1, 28, 28),)])


class TextLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens):
        out, (h, c) = self.rnn(self.emb(tokens))
        return self.head(out[:, -1]), h


def test_embedding_lstm_text_model():
    tok = np.random.default_rng(0).integers(0, 20, (2, 7))
    check(TextLSTM(), (tok,), ["tokens"], {"tokens": {0: "n", 1: "t"}},
          [(np.random.default_rng(1).integers(0, 20, (5, 4)),)])


class EncoderClassifier(nn.Module):
    def __init__(self, causal=True):
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(16, 3)
        self.causal = causal

    def forward(self, x, pad):
        t = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t) if self.causal else None
        h = self.enc(x, mask=mask, src_key_padding_mask=pad)
        return self.head(h.mean(1))


@pytest.mark.parametrize("causal", [True, False])
def test_transformer_encoder_with_masks(causal):
    pad = np.array([[False] * 6, [False, False, False, True, True, True]])
    pad2 = np.zeros((3, 9), bool)
    pad2[1, 5:] = True
    check(EncoderClassifier(causal), (_rand(2, 6, 16), pad), ["x", "pad"],
          {"x": {0: "n", 1: "t"}, "pad": {0: "n", 1: "t"}}, [(_rand(3, 9, 16, seed=1), pad2)])


# ------------------------------------------------------------------ errors
def test_unexportable_op_names_op_and_module():
    from shendu.onnx import UnsupportedOperatorError

    class Head(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=True)          # random: no graph

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 3)
            self.head = Head()

        def forward(self, x):
            return self.head(self.body(x))

    with pytest.raises(UnsupportedOperatorError, match=r"Dropout in module head \(Head\)"):
        shendu.onnx.export(Net(), Tensor(_rand(2, 4)), io.BytesIO())


def test_values_computed_outside_ops_are_refused():
    from shendu.onnx import UnsupportedOperatorError

    class Leak(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) + Tensor(np.sort(x.data, axis=-1))   # NumPy: not traced

    with pytest.raises(UnsupportedOperatorError, match=r"Add in module <model> \(Leak\)"):
        shendu.onnx.export(Leak(), Tensor(_rand(2, 3)), io.BytesIO())


def test_control_flow_over_sizes_is_refused():
    from shendu.onnx import UnsupportedOperatorError

    class Steps(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(3, 4)

        def forward(self, x):
            h = None
            for t in range(x.shape[0]):
                h = self.cell(x[t], h)
            return h

    with pytest.raises(UnsupportedOperatorError, match="other ops"):
        shendu.onnx.export(Steps(), Tensor(_rand(4, 2, 3)), io.BytesIO(),
                           input_names=["x"], dynamic_axes={"x": {0: "t"}})
    # a fixed number of steps exports
    check(Steps(), (_rand(4, 2, 3),), ["x"], {"x": {1: "n"}}, [(_rand(4, 5, 3, seed=1),)])


@pytest.mark.slow
def test_import_shendu_does_not_import_onnx():
    import subprocess
    import sys

    code = "import sys, shendu; print('onnx' in sys.modules, 'shendu.onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_export_to_path_and_training_mode_restored(tmp_path):
    m = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    m.train()
    path = tmp_path / "m.onnx"
    shendu.onnx.export(m, (Tensor(_rand(2, 3)),), path)
    assert m.training and m[1].training
    onnx.checker.check_model(onnx.load(str(path)))


def test_transformer_decoder_layer_causal():
    class Dec(nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = nn.TransformerDecoderLayer(8, 2, 16, batch_first=True)

        def forward(self, tgt, memory):
            mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
            return self.dec(tgt, memory, tgt_mask=mask)

    check(Dec(), (_rand(2, 5, 8), _rand(2, 4, 8, seed=1)), ["tgt", "memory"],
          {"tgt": {0: "n", 1: "t"}, "memory": {0: "n", 1: "s"}},
          [(_rand(3, 7, 8, seed=2), _rand(3, 2, 8, seed=3))])


def test_ready_model_network():
    from shendu.models import MLPClassifier

    X = _rand(40, 5)
    y = (X[:, 0] > 0).astype(np.int64)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    check(clf.model_, (X[:4],), ["x"], {"x": {0: "n"}}, [(X[4:13],)])


# ------------------------------------------------------------------ the rest of shendu.nn
class Cells(nn.Module):
    """One step of each cell, cumsum and einsum, Unflatten/Identity/channel dropout."""

    def __init__(self):
        super().__init__()
        self.rnn, self.lstm, self.gru = nn.RNNCell(4, 5), nn.LSTMCell(4, 5), nn.GRUCell(4, 5)
        self.unflat, self.ident = nn.Unflatten(1, (2, 2)), nn.Identity()
        self.drop1, self.drop2 = nn.Dropout1d(0.5), nn.Dropout2d(0.5)

    def forward(self, x):                          # x (N, 4)
        h = self.rnn(x)
        h2, c2 = self.lstm(x, (h, h))
        g = self.gru(x, h2)
        e = shendu.einsum("nk,nj->nkj", g, c2).sum(1)
        u = self.drop2(self.unflat(self.ident(x)[:, :, None]))      # (N, 2, 2, 1)
        return e, shendu.cumsum(x, 1), self.drop1(u[..., 0]), c2


def test_cells_cumsum_einsum_and_shape_layers():
    check(Cells(), (_rand(3, 4),), ["x"], {"x": {0: "n"}}, [(_rand(6, 4, seed=1),)])


def test_full_transformer_with_masks():
    class T(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Transformer(8, 2, num_encoder_layers=1, num_decoder_layers=1,
                                    dim_feedforward=16, batch_first=True)

        def forward(self, src, tgt):
            mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
            return self.t(src, tgt, tgt_mask=mask)

    check(T(), (_rand(2, 5, 8), _rand(2, 4, 8, seed=1)), ["src", "tgt"],
          {"src": {0: "n", 1: "s"}, "tgt": {0: "n", 1: "t"}},
          [(_rand(3, 3, 8, seed=2), _rand(3, 6, 8, seed=3))])


class Losses(nn.Module):
    """Every loss of shendu.functional, with their options, on the graph's inputs."""

    def forward(self, x, y, t, p, x3, t3):   # x, y (N, C); t (N,) int; p (N, C); x3 (N, C, T)
        w = np.array([0.5, 2.0, 1.0, 1.5], np.float32)
        q, yb = F.sigmoid(y), F.sigmoid(y * 2)
        return (F.mse_loss(x, y), F.l1_loss(x, y, reduction="sum"),
                F.huber_loss(x, y, reduction="none", delta=0.7), F.smooth_l1_loss(x, y, beta=0.5),
                F.smooth_l1_loss(x, y, beta=0.0, reduction="sum"),
                F.binary_cross_entropy(q, yb), F.binary_cross_entropy(q, yb, w, reduction="none"),
                F.binary_cross_entropy_with_logits(x, yb, pos_weight=w),
                F.cross_entropy(x, t),
                F.cross_entropy(x, t, w, ignore_index=1, label_smoothing=0.1),
                F.cross_entropy(x, p, label_smoothing=0.2, reduction="sum"),
                F.cross_entropy(x, p, w, reduction="none"),
                F.cross_entropy(x3, t3, reduction="none"), F.cross_entropy(x3, t3, w),
                F.nll_loss(F.log_softmax(x, 1), t, w, reduction="none"),
                F.nll_loss(F.log_softmax(x3, 1), t3, ignore_index=0))


def test_losses():
    def inputs(n, T, seed):
        rng = np.random.default_rng(seed)
        p = rng.random((n, 4)).astype(np.float32)
        return (_rand(n, 4, seed=seed) * 2, _rand(n, 4, seed=seed + 1),
                rng.integers(0, 4, n), p / p.sum(1, keepdims=True),
                _rand(n, 4, T, seed=seed + 2), rng.integers(0, 4, (n, T)))

    check(Losses(), inputs(5, 3, 0), ["x", "y", "t", "p", "x3", "t3"],
          {"x": {0: "n"}, "y": {0: "n"}, "t": {0: "n"}, "p": {0: "n"}, "x3": {0: "n", 2: "T"},
           "t3": {0: "n", 1: "T"}}, [inputs(8, 6, 10)])


def test_in_place_assignment_is_refused_by_name():
    from shendu.onnx import UnsupportedOperatorError

    class Assign(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            y = self.lin(x)
            y[:, 0] = x[:, 1]
            mask = shendu.zeros(3)          # changing a constant in place folds
            mask[1] = 1.0
            return y * mask

    with pytest.raises(UnsupportedOperatorError,
                       match=r"InPlace in module <model> \(Assign\): the in-place op __setitem__"):
        shendu.onnx.export(Assign(), Tensor(_rand(2, 3)), io.BytesIO())


def test_in_place_change_of_a_constant_folds():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            mask = shendu.zeros(3)
            mask[1] = 1.0
            mask += 0.5
            return self.lin(x) * mask

    check(Masked(), (_rand(2, 3),), ["x"], {"x": {0: "n"}}, [(_rand(5, 3, seed=1),)])


def test_additive_attention_with_padding_mask():
    class Add(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.AdditiveAttention(4, 6, 5)

        def forward(self, q, keys, pad):
            return self.attn(q, keys, key_padding_mask=pad)

    pad = np.array([[False, False, True], [False, False, False]])
    pad2 = np.array([[False, True, True, True, True], [False] * 5, [False, False, True, True,
                                                                     True]])
    check(Add(), (_rand(2, 4), _rand(2, 3, 6, seed=1), pad), ["q", "keys", "pad"],
          {"q": {0: "n"}, "keys": {0: "n", 1: "s"}, "pad": {0: "n", 1: "s"}},
          [(_rand(3, 4, seed=2), _rand(3, 5, 6, seed=3), pad2)])


def test_positional_encoding_and_sync_batch_norm():
    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.PositionalEncoding(6, max_len=20, batch_first=True)
            self.bn = _bn(nn.SyncBatchNorm(6))

        def forward(self, x):                      # (N, T, 6)
            return self.bn(self.pos(x).transpose(1, 2))

    check(P(), (_rand(2, 5, 6),), ["x"], {"x": {0: "n", 1: "t"}}, [(_rand(3, 11, 6, seed=1),)])


def test_every_functional_op_has_a_mapping():
    """The audit: each Function of shendu.functional (and shendu.audio's STFT) has an ONNX
    mapping, but for assignment, which under export's no_grad runs as an in-place change
    (refused by name when it touches the inputs, folded otherwise)."""
    import importlib
    import inspect
    import pkgutil

    import shendu.functional as fpkg
    from shendu.audio.features import PowerSTFT
    from shendu.autograd import Function
    from shendu.onnx import _export  # noqa: F401 - registers every mapping
    from shendu.onnx._ops import MAP

    found = {PowerSTFT}
    for info in pkgutil.iter_modules(fpkg.__path__):
        mod = importlib.import_module(f"shendu.functional.{info.name}")
        found |= {c for _, c in inspect.getmembers(mod, inspect.isclass)
                  if issubclass(c, Function) and c.__module__ == mod.__name__
                  and not c.__name__.startswith("_")}
    unmapped = sorted(c.__name__ for c in found if c not in MAP)
    assert unmapped == ["SetItem"]


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_step_kernel(bias):
    """The one-step GRU kernel (nn.GRUCell takes the scan while an export traces; the
    kernel itself also has its ONNX form)."""
    import importlib

    rc = importlib.import_module("shendu.functional.recurrent")
    if not hasattr(rc, "GRUCellStep"):
        pytest.skip("no one-step GRU kernel in this version")

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(3, 4, bias=bias)

        def forward(self, x, h):
            c = self.cell
            b = (c.bias_ih, c.bias_hh) if bias else ()
            return rc.GRUCellStep.apply(x, h, c.weight_ih, c.weight_hh, *b)

    check(Step(), (_rand(2, 3), _rand(2, 4, seed=1)), ["x", "h"],
          {"x": {0: "n"}, "h": {0: "n"}}, [(_rand(5, 3, seed=2), _rand(5, 4, seed=3))])


def test_graph_the_runtime_cannot_run_is_one_clear_error():
    from shendu import onnx as sonnx

    conv = nn.Conv2d(2, 3, 3, dtype="float64")
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 5)))
    with pytest.raises(sonnx.UnsupportedOperatorError, match="float64 convolutions"):
        sonnx.export(conv, (x,), io.BytesIO())
    proto = sonnx.export(conv, (x,), io.BytesIO(), verify=False)    # valid ONNX all the same
    onnx.checker.check_model(proto, full_check=True)
