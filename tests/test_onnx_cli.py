"""``shendu export MODEL OUT.onnx`` (logic in shendu.onnx.cli): saved networks and ready
models written as ONNX files that ONNX Runtime runs with shendu's outputs."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import shendu  # noqa: E402
import shendu.nn as nn  # noqa: E402
from shendu.onnx.cli import add_export  # noqa: E402
from shendu.tensor import Tensor  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def run(*argv):
    """Parse ``shendu export ...`` with the subcommand's own parser and run it."""
    p = argparse.ArgumentParser(prog="shendu")
    add_export(p.add_subparsers(dest="command"), [])
    args = p.parse_args(["export", *map(str, argv)])
    return args.func(args)


def _sess(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_saved_mlp_module(tmp_path, capsys):
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    shendu.save(net, tmp_path / "mlp.safetensors")
    assert run(tmp_path / "mlp.safetensors", tmp_path / "mlp.onnx") == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "opset 18" in out and "ONNX Runtime" in out
    x = np.random.default_rng(0).standard_normal((13, 6)).astype(np.float32)
    with shendu.no_grad():
        want = net(Tensor(x)).data
    got = _sess(tmp_path / "mlp.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_export_conv_net_needs_input_shape(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    shendu.save(net, tmp_path / "cnn.shendu")
    with pytest.raises(Exception, match="--input-shape"):
        run(tmp_path / "cnn.shendu", tmp_path / "cnn.onnx")
    run(tmp_path / "cnn.shendu", tmp_path / "cnn.onnx", "--input-shape", "2,1,8,8")
    x = np.random.default_rng(1).standard_normal((7, 1, 8, 8)).astype(np.float32)
    with shendu.no_grad():
        want = net(Tensor(x)).data
    np.testing.assert_allclose(_sess(tmp_path / "cnn.onnx").run(None, {"input": x})[0], want,
                               rtol=RTOL, atol=ATOL)


def test_export_saved_charlm_tokens_dynamic_length(tmp_path):
    from shendu.models import CharLM

    lm = CharLM("abcdefgh", hidden_size=8, num_layers=1, embedding_dim=4)
    shendu.save(lm, tmp_path / "lm.shendu")
    run(tmp_path / "lm.shendu", tmp_path / "lm.onnx")
    x = np.random.default_rng(2).integers(0, 8, (3, 19))
    with shendu.no_grad():
        logits, _ = lm(Tensor(x))
    got = _sess(tmp_path / "lm.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(got, logits.data, rtol=RTOL, atol=ATOL)


def test_export_saved_ready_model_with_preprocessing(tmp_path, capsys):
    from shendu.models import MLPClassifier

    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 4)) * 20 + 100
    y = np.where(X[:, 0] > 100, "hi", "lo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((6,), max_iter=10, standardize=True, random_state=0).fit(X, y)
    shendu.save(clf, tmp_path / "clf.safetensors")
    run(tmp_path / "clf.safetensors", tmp_path / "clf.onnx")
    assert "label" in capsys.readouterr().out
    label, proba = _sess(tmp_path / "clf.onnx").run(None, {"X": X})
    assert np.array_equal(label, clf.predict(X))
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=RTOL, atol=ATOL)
    with pytest.raises(Exception, match="for networks"):
        run(tmp_path / "clf.safetensors", tmp_path / "x.onnx", "--input-shape", "1,4")


def test_export_errors_are_one_clear_line(tmp_path):
    with pytest.raises(Exception, match="no such file"):
        run(tmp_path / "missing.safetensors", tmp_path / "o.onnx")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(Exception) as e:
        run(bad, tmp_path / "o.onnx")
    assert "bad.safetensors" in str(e.value)
    shendu.save({"w": np.zeros(3, np.float32)}, tmp_path / "arrays.safetensors")
    with pytest.raises(Exception, match="expected a network"):
        run(tmp_path / "arrays.safetensors", tmp_path / "o.onnx")


def test_export_checkpoint_of_shendu_train(tmp_path):
    from shendu.io import save_checkpoint
    from shendu.models import LongShortTermMemory

    rng = np.random.default_rng(4)
    X = rng.standard_normal((24, 5, 2))
    est = LongShortTermMemory(hidden_size=4, max_iter=1, random_state=0).fit(X, X[:, 0, 0] > 0)
    save_checkpoint(tmp_path / "best.shendu", model=est, cli={"model": "lstm"})
    run(tmp_path / "best.shendu", tmp_path / "lstm.onnx")
    X2 = rng.standard_normal((6, 9, 2))
    label, proba = _sess(tmp_path / "lstm.onnx").run(None, {"X": X2})
    assert np.array_equal(label, est.predict(X2))
    np.testing.assert_allclose(proba, est.predict_proba(X2), rtol=RTOL, atol=ATOL)


def test_shendu_export_is_a_subcommand_of_the_cli(tmp_path, capsys):
    from shendu.cli import main

    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    shendu.save(net, tmp_path / "m.safetensors")
    code = main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx")])
    assert code in (0, None)
    assert "wrote" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sess = _sess(tmp_path / "m.onnx")
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, net(Tensor(x)).data, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_export_checkpoint_of_shendu_train_audio(tmp_path, capsys):
    """The model behind ``shendu train audio``, from its checkpoint to an ONNX file that
    takes raw waveforms (padded, with their lengths)."""
    pytest.importorskip("librosa")
    import os

    from conftest import data_dir

    from shendu.audio import load
    from shendu.cli import main

    d = data_dir()
    if d is None or not (d / "fsdd").is_dir():
        pytest.skip("the shared FSDD recordings (../shared/data/fsdd or $SHENDU_DATA) are absent")
    folder = tmp_path / "wavs"
    folder.mkdir()
    names = [f"{digit}_{s}_{t}.wav" for s in ("george", "lucas") for digit in range(10)
             for t in (0, 5, 6)]
    for name in names:
        os.symlink(d / "fsdd" / name, folder / name)
    assert main(["train", "audio", "--data", str(folder), "--epochs", "1", "--batch-size",
                 "32", "--out", str(tmp_path / "run")]) in (0, None)
    run(tmp_path / "run" / "best.ckpt", tmp_path / "speech.onnx")
    assert "X[N,W] lengths[N] -> label[N] probabilities[N,10]" in capsys.readouterr().out
    model = shendu.load(tmp_path / "run" / "best.ckpt")["model"]
    waves = [load(folder / n, 8000)[0] for n in names[::7]]
    lens = np.array([len(w) for w in waves], np.int64)
    X = np.zeros((len(waves), lens.max()), np.float32)
    for i, w in enumerate(waves):
        X[i, :len(w)] = w
    label, proba = _sess(tmp_path / "speech.onnx").run(None, {"X": X, "lengths": lens})
    assert np.array_equal(label, model.predict(waves))
    np.testing.assert_allclose(proba, model.predict_proba(waves), rtol=RTOL, atol=ATOL)
