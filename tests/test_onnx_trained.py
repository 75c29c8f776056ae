"""ONNX round trips of trained networks: a LeNet trained briefly on the shared MNIST files,
a CharLM trained on tiny-shakespeare and a 2-layer TransformerClassifier, each exported,
run in ONNX Runtime (CPU) and compared with shendu on held-out inputs of the traced size
and of another batch size (and sequence length)."""

from __future__ import annotations

import io

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import shendu  # noqa: E402
import shendu.nn as nn  # noqa: E402
import shendu.onnx  # noqa: E402
from shendu import functional as F  # noqa: E402
from shendu import optim  # noqa: E402
from shendu.tensor import Tensor  # noqa: E402
from tests.conftest import data_dir  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def _session(model, args, names, dynamic_axes, output_names=None):
    buf = io.BytesIO()
    shendu.onnx.export(model, args, buf, input_names=names, output_names=output_names,
                       dynamic_axes=dynamic_axes)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


def _shared(path: str):
    d = data_dir()
    if d is None or not (d / path).is_file():
        pytest.skip(f"the shared data file {path} (../shared/data or $SHENDU_DATA) is absent")
    return d / path


def lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


@pytest.mark.slow
def test_lenet_trained_on_mnist_same_predictions_in_onnx_runtime():
    root = _shared("mnist/t10k-images-idx3-ubyte.gz").parent
    from shendu.data import mnist_split

    X_tr, X_te, y_tr, y_te = mnist_split(root)
    X_tr = (X_tr[:3072, None] / 255.0).astype(np.float32)       # (N, 1, 28, 28)
    y_tr = np.asarray(y_tr[:3072], np.int64)
    X_te = (X_te[:, None] / 255.0).astype(np.float32)            # the 2,000 held-out images
    y_te = np.asarray(y_te, np.int64)

    net = lenet()
    opt = optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for i in range(0, len(X_tr), 64):                            # one epoch, 48 steps
        loss = F.cross_entropy(net(Tensor(X_tr[i:i + 64])), y_tr[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with shendu.no_grad():
        want = np.concatenate([net(Tensor(X_te[i:i + 500])).data
                               for i in range(0, len(X_te), 500)])
    acc = float(np.mean(want.argmax(1) == y_te))
    assert acc > 0.8, f"the briefly trained LeNet should beat chance clearly, got {acc:.3f}"

    sess = _session(net, (Tensor(X_te[:8]),), ["x"], {"x": {0: "n"}, "logits": {0: "n"}},
                    ["logits"])
    got = np.concatenate([sess.run(None, {"x": X_te[i:i + 500]})[0]
                          for i in range(0, len(X_te), 500)])     # batch 500, traced 8
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert float(np.mean(got.argmax(1) == y_te)) == acc


def test_charlm_trained_same_logits_and_state_in_onnx_runtime():
    path = _shared("text/tinyshakespeare.txt")
    from shendu.data.sequences import CharCorpus
    from shendu.models import CharLM

    text = path.read_text(encoding="utf-8")[:60_000]
    corpus = CharCorpus(text)
    lm = CharLM(corpus.vocab, hidden_size=32, num_layers=2, embedding_dim=16)
    log = lm.fit(corpus, steps=30, batch_size=16, seq_len=32, learning_rate_init=1e-2,
                 eval_every=30, eval_chars=2000)
    assert log[-1]["val_nats"] < np.log(corpus.vocab_size)     # it learned something
    lm.eval()

    x_a, _ = corpus.windows(4, 20, "val", rng=np.random.default_rng(1))
    x_b, _ = corpus.windows(7, 45, "val", rng=np.random.default_rng(2))
    sess = _session(lm, (Tensor(x_a),), ["idx"], {"idx": {0: "n", 1: "t"},
                                                  "logits": {0: "n", 1: "t"}},
                    ["logits", "h", "c"])
    for x in (x_a, x_b):
        with shendu.no_grad():
            logits, (h, c) = lm(Tensor(x))
        got = sess.run(None, {"idx": x})
        for g, w in zip(got, (logits.data, h.data, c.data)):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
        assert np.array_equal(got[0].argmax(-1), logits.data.argmax(-1))


def test_transformer_classifier_trained_same_outputs_in_onnx_runtime():
    from shendu.models import TransformerClassifier

    rng = np.random.default_rng(0)
    n, T, Fd = 96, 6, 4
    X = rng.standard_normal((n, T, Fd)).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(np.int64)
    clf = TransformerClassifier(d_model=16, nhead=2, num_layers=2, dim_feedforward=32,
                                max_iter=4, batch_size=32, learning_rate_init=3e-3, random_state=0)
    clf.fit(X, y)
    net = clf.model_
    assert len(net.encoder.layers) == 2

    X_te = rng.standard_normal((40, T, Fd)).astype(np.float32)
    X_short = rng.standard_normal((9, 3, Fd)).astype(np.float32)  # another batch and length
    sess = _session(net, (Tensor(X_te[:5, :4]),), ["x"], {"x": {0: "n", 1: "t"}}, ["logits"])
    for x in (X_te, X_short):
        with shendu.no_grad():
            want = net(Tensor(x)).data
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    proba = clf.predict_proba(X_te)
    logits = sess.run(None, {"x": X_te})[0]
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), proba, rtol=RTOL, atol=ATOL)
    assert np.array_equal(clf.classes_[logits.argmax(1)], clf.predict(X_te))
