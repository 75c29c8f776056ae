"""Speech in ONNX: the feature layers (STFT, mel, decibels, MFCC) at any batch size and
length, and ``AudioClassifier.to_onnx`` from raw FSDD waveforms: the file takes the
recordings padded to one length with their lengths, and ONNX Runtime gives ``predict``'s
labels and ``predict_proba``'s probabilities (rtol 1e-4, atol 1e-5) for batches of other
sizes and lengths, recordings shorter and longer than the model's window included."""

from __future__ import annotations

import io

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("librosa")

from conftest import data_dir  # noqa: E402

import shendu  # noqa: E402
import shendu.onnx  # noqa: E402
from shendu.audio import MFCC, AmplitudeToDB, MelSpectrogram, Spectrogram, load  # noqa: E402
from shendu.models import AudioClassifier  # noqa: E402
from shendu.nn import Sequential  # noqa: E402
from shendu.tensor import Tensor  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
SR = 8000


def _fsdd(speakers=("george", "jackson"), takes=range(5, 11)):
    d = data_dir()
    if d is None or not (d / "fsdd").is_dir():
        pytest.skip("the shared FSDD recordings (../shared/data/fsdd or $SHENDU_DATA) are absent")
    waves, labels = [], []
    for s in speakers:
        for digit in range(10):
            for t in takes:
                waves.append(load(d / "fsdd" / f"{digit}_{s}_{t}.wav", SR)[0])
                labels.append(str(digit))
    return waves, np.array(labels)


def _batch(waves):
    lens = np.array([len(w) for w in waves], np.int64)
    X = np.zeros((len(waves), lens.max()), np.float32)
    for i, w in enumerate(waves):
        X[i, :len(w)] = w
    return X, lens


def _session(clf):
    buf = io.BytesIO()
    proto = clf.to_onnx(buf)
    assert proto.opset_import[0].version == shendu.onnx.OPSET
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["X", "lengths"]
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    return sess


def _check(clf, sess, batches):
    for waves in batches:
        X, lens = _batch(waves)
        label, proba = sess.run(None, {"X": X, "lengths": lens})
        want = clf.predict_proba(waves)
        assert proba.shape == want.shape
        np.testing.assert_allclose(proba, want, rtol=RTOL, atol=ATOL)
        assert np.array_equal(label, clf.predict(waves))


# --------------------------------------------------------------- feature layers
@pytest.mark.parametrize("layer", [
    lambda: Sequential(MelSpectrogram(SR, n_fft=256, hop_length=80, n_mels=40),
                       AmplitudeToDB("power", top_db=80.0)),
    lambda: MFCC(SR, n_mfcc=13, melkwargs={"n_fft": 200, "hop_length": 64, "n_mels": 32}),
    lambda: Spectrogram(n_fft=128, win_length=100, hop_length=50, power=1.0),
    lambda: Spectrogram(n_fft=64, hop_length=16, power=0.5, center=False),
], ids=["logmel", "mfcc", "magnitude", "uncentred"])
def test_feature_layers_any_batch_and_length(layer):
    waves, _ = _fsdd(("george",), range(5, 6))
    m = layer()
    audio = np.concatenate(waves).astype(np.float32)       # cut into rows of two lengths
    a = audio[:3 * 2400].reshape(3, 2400)
    b = audio[-5 * 3911:].reshape(5, 3911)
    buf = io.BytesIO()
    shendu.onnx.export(m, (Tensor(a),), buf, input_names=["wave"],
                       dynamic_axes={"wave": {0: "N", 1: "L"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for x in (a, b):
        got, = sess.run(None, {"wave": x})
        with shendu.no_grad():
            want = m(Tensor(x)).data
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1, np.abs(want).max()))


# ------------------------------------------------------------ AudioClassifier
@pytest.fixture(scope="module")
def fsdd_small():
    return _fsdd()


def test_audio_classifier_from_raw_waveforms(fsdd_small):
    waves, y = fsdd_small
    shendu.manual_seed(0)
    clf = AudioClassifier(max_iter=2, channels=(16, 16), batch_size=32,
                          random_state=0).fit(waves, y)
    sess = _session(clf)
    too_long = np.concatenate([waves[3], waves[40], waves[77]])       # > the 1 s window
    assert len(too_long) > clf.max_seconds * SR
    _check(clf, sess, [waves[:5], waves[60:67], [too_long, waves[9], waves[100]]])
    X, lens = _batch(waves)              # the whole set: the same accuracy as predict
    label, _ = sess.run(None, {"X": X, "lengths": lens})
    assert np.mean(label == y) == clf.score(waves, y)


@pytest.mark.slow
def test_audio_classifier_active_frames_and_test_speeds(fsdd_small):
    """UtteranceNorm over the active frames (its mask from the features' values) and the
    average over playback speeds are in the graph too."""
    waves, y = fsdd_small
    clf = AudioClassifier(max_iter=1, channels=(8,), active_db=40.0, test_speeds=(0.9, 1.0, 1.15),
                          random_state=0).fit(waves, y)
    sess = _session(clf)
    _check(clf, sess, [waves[10:13], [np.concatenate(waves[20:23])] + waves[50:55]])


def test_audio_classifier_not_fitted():
    with pytest.raises(ValueError, match="not fitted"):
        AudioClassifier().to_onnx(io.BytesIO())


@pytest.mark.parametrize("active_db", [None, 50.0])
def test_audio_net_any_batch_and_length(active_db):
    """The network itself (shendu.onnx.export) from waveforms of any length: frames,
    pooled frames and the utterance statistics follow the length."""
    from shendu.models.audio import AudioNet

    shendu.manual_seed(0)
    net = AudioNet(10, channels=(8, 8), active_db=active_db)
    net.eval()
    waves, _ = _fsdd(("jackson",), range(5, 6))
    audio = np.concatenate(waves).astype(np.float32)
    buf = io.BytesIO()
    shendu.onnx.export(net, (Tensor(audio[:2 * 4000].reshape(2, 4000)),), buf,
                       input_names=["wave"], dynamic_axes={"wave": {0: "N", 1: "L"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n, length in ((3, 6001), (1, 2950)):
        x = audio[:n * length].reshape(n, length)
        got, = sess.run(None, {"wave": x})
        with shendu.no_grad():
            want = net(Tensor(x)).data
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
