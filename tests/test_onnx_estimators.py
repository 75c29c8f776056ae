"""Ready models (``shendu.models``) exported with their preprocessing (``est.to_onnx`` /
``shendu.onnx.export_estimator``): the file takes what ``predict`` takes, and ONNX Runtime
gives ``predict``'s labels and ``predict_proba``'s probabilities (or ``predict``'s values)
at the traced size and at another batch size and sequence length."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import shendu.onnx  # noqa: E402
from shendu.models import (  # noqa: E402
    AttentionMechanism,
    AudioClassifier,
    CharLM,
    CharTransformerLM,
    ConvolutionalNeuralNetwork,
    GatedRecurrentUnit,
    LongShortTermMemory,
    MLPClassifier,
    MLPRegressor,
    MultiLayerPerceptron,
    NeuralNetwork,
    Perceptron,
    RecurrentNeuralNetwork,
    TransformerClassifier,
)

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ConvergenceWarning of the short fits
        yield


def _session(est):
    buf = io.BytesIO()
    proto = est.to_onnx(buf)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    assert proto.opset_import[0].version == shendu.onnx.OPSET
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


def check_classifier(est, inputs):
    sess = _session(est)
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    for X in inputs:
        label, proba = sess.run(None, {"X": X})
        want = est.predict_proba(X)
        assert proba.shape == want.shape
        np.testing.assert_allclose(proba, want, rtol=RTOL, atol=ATOL)
        assert np.array_equal(label, est.predict(X))
    return sess


def check_regressor(est, inputs):
    sess = _session(est)
    assert [o.name for o in sess.get_outputs()] == ["predictions"]
    for X in inputs:
        got, = sess.run(None, {"X": X})
        want = est.predict(X)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def _tab(n, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.arange(1, d + 1) * 10 + 50   # far from standard


@pytest.mark.parametrize("standardize", [True, False])
def test_mlp_classifier_binary_string_labels(standardize):
    X = _tab(80)
    y = np.where(X[:, 0] - 50 + (X[:, 1] - 50) / 2 > 0, "yes", "no")
    clf = MLPClassifier((8,), max_iter=30, standardize=standardize, random_state=0).fit(X, y)
    assert clf.model_[-1].out_features == 1       # one logistic output for two classes
    check_classifier(clf, [X[:10], _tab(23, seed=1)])


def test_mlp_classifier_multiclass_standardised_in_graph():
    X = _tab(90)
    y = (X[:, 0] > 50).astype(int) + 2 * (X[:, 2] > 50) + 7
    clf = MLPClassifier((16,), max_iter=40, standardize=True, random_state=0).fit(X, y)
    sess = check_classifier(clf, [X, _tab(3, seed=2)])
    assert {"Sub", "Div"} <= {n.op_type for n in onnx.load_from_string(
        clf.to_onnx(io.BytesIO()).SerializeToString()).graph.node}
    label, _ = sess.run(None, {"X": X})
    assert np.mean(label == y) == clf.score(X, y)


@pytest.mark.parametrize("two_d", [False, True])
def test_mlp_regressor(two_d):
    X = _tab(70)
    y = np.stack([X[:, 0] / 10, X[:, 1] - X[:, 2]], 1) if two_d else X[:, 0] * 0.1
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, standardize=True,
                       random_state=0).fit(X, y)
    check_regressor(reg, [X[:4], _tab(17, seed=3)])


def test_cnn_with_channel_standardisation():
    rng = np.random.default_rng(0)
    X = rng.random((48, 1, 10, 10)) * 255
    y = (X[:, 0, :5].mean((1, 2)) > X[:, 0, 5:].mean((1, 2))).astype(int)
    clf = ConvolutionalNeuralNetwork(conv_channels=(3, 4), kernel_size=3,
                                     hidden_layer_sizes=(8,), max_iter=3,
                                     random_state=0).fit(X, y)
    assert clf.mean_ is not None
    check_classifier(clf, [X[:5], rng.random((13, 1, 10, 10)) * 255])


@pytest.mark.parametrize("cls", [RecurrentNeuralNetwork, LongShortTermMemory,
                                 GatedRecurrentUnit])
def test_recurrent_classifier_last_step(cls):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3))
    y = np.where(X[:, :, 0].sum(1) > 0, 5, -1)
    est = cls(hidden_size=8, num_layers=2, bidirectional=True, epochs=2,
              random_state=0).fit(X, y)
    check_classifier(est, [X[:4], rng.standard_normal((9, 11, 3)),
                           rng.standard_normal((2, 1, 3))])


def test_recurrent_sequence_outputs_and_regression():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 7, 2))
    y_seq = (np.cumsum(X[:, :, 0], 1) > 0).astype(int)
    est = GatedRecurrentUnit(hidden_size=6, output="sequence", epochs=2,
                             random_state=0).fit(X, y_seq)
    check_classifier(est, [X[:3], rng.standard_normal((5, 12, 2))])
    reg = LongShortTermMemory(hidden_size=6, task="regression", epochs=2,
                              random_state=0).fit(X, X[:, :, 1].sum(1))
    check_regressor(reg, [X[:3], rng.standard_normal((6, 4, 2))])
    reg2 = RecurrentNeuralNetwork(hidden_size=6, task="regression", output="sequence",
                                  epochs=2, random_state=0).fit(X, X[..., None] * 2)
    check_regressor(reg2, [X[:3], rng.standard_normal((6, 9, 2))])


def test_transformer_classifier_features_and_tokens():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 8, 3))
    y = (X[:, :, 0].mean(1) > 0).astype(int)
    clf = TransformerClassifier(d_model=8, nhead=2, num_layers=2, dim_feedforward=16,
                                epochs=2, random_state=0).fit(X, y)
    check_classifier(clf, [X[:4], rng.standard_normal((7, 5, 3))])
    tok = rng.integers(0, 12, (40, 8))
    yt = np.array(["a", "b", "c"])[tok[:, 0] % 3]
    clf_t = TransformerClassifier(d_model=8, nhead=2, num_layers=1, dim_feedforward=16,
                                  epochs=2, random_state=0).fit(tok, yt)
    check_classifier(clf_t, [tok[:5], rng.integers(0, 12, (3, 6))])


def test_transformer_classifier_pad_id_mask_built_in_graph():
    """With pad_id, the key padding mask and the mean over real tokens come from
    ``tokens == pad_id`` in the graph: other batch sizes, lengths and paddings match."""
    rng = np.random.default_rng(3)
    tok = rng.integers(1, 12, (40, 8))
    tok[np.arange(8)[None] >= rng.integers(2, 9, 40)[:, None]] = 0
    clf = TransformerClassifier(d_model=8, nhead=2, num_layers=2, dim_feedforward=16,
                                pad_id=0, max_iter=2, random_state=0).fit(tok, tok[:, 0] % 3)
    ragged = np.where(rng.random((6, 5)) < 0.4, 0, rng.integers(1, 12, (6, 5)))
    ragged[0] = 0                                     # a row of padding only
    sess = check_classifier(clf, [tok[:5], tok[5:16, :6], ragged])
    first, again = clf.to_onnx(io.BytesIO()), clf.to_onnx(io.BytesIO())
    assert first.SerializeToString() == again.SerializeToString()      # deterministic
    assert "Equal" in {n.op_type for n in first.graph.node}   # the mask follows the tokens
    unpadded = tok[:4].copy()
    unpadded[unpadded == 0] = 5                        # no padding: another answer
    assert not np.allclose(sess.run(None, {"X": unpadded})[1], clf.predict_proba(tok[:4]))


@pytest.mark.parametrize("labels", [np.array(["no", "yes"]), np.array([3, 5, 8])])
def test_perceptron_fitted_labels_and_scores(labels):
    X = _tab(60)
    k = (X[:, 0] > 50).astype(int) + (X[:, 1] > 50)
    y = labels[np.minimum(k, len(labels) - 1)]
    clf = Perceptron(max_iter=20).fit(X, y)
    sess = _session(clf)
    assert [o.name for o in sess.get_outputs()] == ["label", "scores"]
    for Xo in (X[:5], _tab(13, seed=4)):
        label, scores = sess.run(None, {"X": Xo})
        assert np.array_equal(label, clf.predict(Xo))
        np.testing.assert_allclose(scores, clf.decision_function(Xo), rtol=RTOL, atol=ATOL)


def _seed_outputs(est, inputs):
    sess = _session(est)
    assert [o.name for o in sess.get_outputs()] == ["output"]
    for X in inputs:
        got, = sess.run(None, {"X": X})
        want = est.forward(X)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_perceptron_seed_api_after_train():
    X = _tab(40, d=3) - 50
    p = Perceptron(3, 2)
    p.train(X, np.where(X[:, :2] > 0, 1.0, -1.0), epochs=5)
    assert np.abs(p.W).sum() > 0
    _seed_outputs(p, [X[:4], _tab(9, d=3, seed=5) - 50])


@pytest.mark.parametrize("cls", [NeuralNetwork, MultiLayerPerceptron])
def test_seed_mlp_after_train_and_after_fit(cls):
    X = _tab(30, d=4) / 50 - 1
    m = cls(4, 6, 2, random_state=0)
    m.train(X, X[:, :2] ** 2, epochs=10)
    _seed_outputs(m, [X[:3], X[5:16]])
    reg = cls(max_iter=15, random_state=0).fit(X, X[:, 0] ** 2)
    check_regressor(reg, [X[:4], X[10:27]])


@pytest.mark.parametrize("cls", [RecurrentNeuralNetwork, LongShortTermMemory,
                                 GatedRecurrentUnit, AttentionMechanism])
def test_seed_sequence_models_after_train(cls):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((10, 6, 3))
    m = cls(3, 5, 2, random_state=0)
    m.train(X, X[:, :, :2], epochs=3)
    _seed_outputs(m, [X[:4], rng.standard_normal((7, 9, 3))])


def test_seed_cnn_after_train_any_image_size():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((6, 2, 9, 10))
    m = ConvolutionalNeuralNetwork(2, 4, 3, random_state=0)
    m.train(X, rng.standard_normal((6, 3)), epochs=3)
    _seed_outputs(m, [X, rng.standard_normal((2, 2, 13, 7))])


@pytest.mark.parametrize("kw", [dict(pad_id=9), dict(pad_id=None, cell="lstm",
                                                    location_aware=False)],
                         ids=["gru-location-pad", "lstm-full-rows"])
def test_attention_mechanism_greedy_decoding_as_loop(kw):
    """A fitted AttentionMechanism's predict (encode, then greedy steps until every
    sequence has ended) as an ONNX Loop: the same tokens at other batch sizes, widths and
    padding."""
    rng = np.random.default_rng(8)
    X = rng.integers(0, 6, (120, 5))
    if kw["pad_id"] is not None:
        X[np.arange(5)[None] >= rng.integers(1, 6, 120)[:, None]] = kw["pad_id"]
    y = X[:, ::-1] if kw["pad_id"] is None else [r[r != 9][::-1] for r in X]
    est = AttentionMechanism(vocab_size=6, max_iter=12, hidden_size=16, embed_dim=8,
                             random_state=0, **kw).fit(X, y)
    sess = _session(est)
    assert [o.name for o in sess.get_outputs()] == ["tokens"]
    assert "Loop" in {n.op_type for n in onnx.load_from_string(
        est.to_onnx(io.BytesIO()).SerializeToString()).graph.node}
    wide = rng.integers(0, 6, (6, 8))
    if kw["pad_id"] is not None:
        wide[np.arange(8)[None] >= np.array([8, 1, 3, 6, 2, 7])[:, None]] = kw["pad_id"]
    for Xo in (X[:7], X[7:10, :3], wide):
        got, = sess.run(None, {"X": Xo.astype(np.int64)})
        want = est.predict(Xo)
        assert got.shape == want.shape and np.array_equal(got, want)
    assert len(np.unique(est.predict(X[:20]))) > 3          # the decoder says something


@pytest.mark.parametrize("make", [
    lambda: CharLM("abcdefgh", hidden_size=8, num_layers=2, embedding_dim=4),
    lambda: CharTransformerLM(8, d_model=8, nhead=2, num_layers=1, dim_feedforward=16,
                              block_size=16)], ids=["CharLM", "CharTransformerLM"])
def test_language_models_to_onnx(make):
    """The language models (modules and estimators) export their forward on token ids:
    logits (and an LSTM's final state) at other batch sizes and lengths."""
    import shendu

    lm = make()
    sess = _session(lm)
    assert lm.training                                    # the mode is given back
    lm.eval()
    for seed, shape in ((1, (3, 11)), (2, (1, 16))):
        x = np.random.default_rng(seed).integers(0, 8, shape)
        got = sess.run(None, {"X": x})
        with shendu.no_grad():
            out = lm(shendu.Tensor(x))
        want = [out[0].data, *(s.data for s in out[1])] if isinstance(out, tuple) \
            else [out.data]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_export_to_path_and_refusals(tmp_path):
    X = _tab(30)
    clf = MLPClassifier((4,), max_iter=3, random_state=0).fit(X, X[:, 0] > 50)
    path = tmp_path / "clf.onnx"
    shendu.onnx.export_estimator(clf, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(sess.run(["label"], {"X": X})[0], clf.predict(X))
    with pytest.raises(ValueError, match="not fitted"):
        MLPClassifier().to_onnx(io.BytesIO())
    with pytest.raises(ValueError, match="AudioClassifier is not fitted"):
        AudioClassifier().to_onnx(io.BytesIO())
    with pytest.raises(TypeError, match="ready model"):
        shendu.onnx.export_estimator(object(), io.BytesIO())
