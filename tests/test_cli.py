"""The ``shendu`` command, run as a subprocess the way a user runs it: outputs, files
written, and one-line errors with a non-zero exit status on bad input."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest


def shendu(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "shendu", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r, *words, code=1):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.slow
def test_version_and_help():
    r = shendu("--version")
    assert r.returncode == 0 and r.stdout.startswith("shendu ")
    for cmd in ("tour", "train", "eval", "predict", "gradcheck", "bench"):
        r = shendu(cmd, "--help")
        assert r.returncode == 0, r.stderr
        assert "examples:" in r.stdout and f"shendu {cmd}" in r.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = shendu("train", "mlp", "--data", "digits", "--epochs", "3", "--hidden", "32",
               "--lr", "0.01", "--out", out / "mlp")
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.mark.slow
def test_train_writes_checkpoints_and_reports(trained):
    out, r = trained
    assert (out / "mlp" / "last.ckpt").exists() and (out / "mlp" / "best.ckpt").exists()
    assert "MLPClassifier on digits: 1438 train / 359 test" in r.stdout
    acc = float(r.stdout.split("test:  accuracy ")[1].split()[0])
    assert acc > 0.8


@pytest.mark.slow
def test_eval_matches_train_report(trained):
    out, r = trained
    e = shendu("eval", out / "mlp" / "last.ckpt")
    assert e.returncode == 0, e.stderr
    assert r.stdout.split("test:  ")[1].splitlines()[0] in e.stdout


@pytest.mark.slow
def test_resume_is_bit_identical(trained, tmp_path):
    out, _ = trained
    # 3 epochs + 2 resumed == 5 in one go
    a = shendu("train", "mlp", "--data", "digits", "--epochs", "5", "--hidden", "32", "--lr",
               "0.01", "--out", tmp_path / "a", "--resume", out / "mlp" / "last.ckpt")
    b = shendu("train", "mlp", "--data", "digits", "--epochs", "5", "--hidden", "32", "--lr",
               "0.01", "--out", tmp_path / "b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "epochs 4-5" in a.stdout
    from shendu.cli import load_model_checkpoint

    ma, ia = load_model_checkpoint(str(tmp_path / "a" / "last.ckpt"))
    mb, ib = load_model_checkpoint(str(tmp_path / "b" / "last.ckpt"))
    assert ia["epoch"] == ib["epoch"] == 5
    for (n, p), (_, q) in zip(ma.model_.named_parameters(), mb.model_.named_parameters()):
        assert np.array_equal(p.data, q.data), n


@pytest.mark.slow
def test_predict_to_stdout_and_file(trained, tmp_path):
    out, _ = trained
    from shendu.data.datasets import digits

    X = digits().X_test[:7]
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    r = shendu("predict", out / "mlp" / "best.ckpt", tmp_path / "x.npy")
    assert r.returncode == 0, r.stderr
    labels = [int(v) for v in r.stdout.split()]
    assert len(labels) == 7 and all(0 <= v <= 9 for v in labels)
    r = shendu("predict", out / "mlp" / "best.ckpt", tmp_path / "x.csv", "--proba",
               "--output", tmp_path / "p.npy")
    assert r.returncode == 0, r.stderr
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (7, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert list(p.argmax(1)) == labels


@pytest.mark.slow
def test_train_on_user_files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    with open(tmp_path / "d.csv", "w") as f:
        f.write("a,b,c,label\n")
        for row, t in zip(X, y):
            f.write(",".join(f"{v:.5f}" for v in row) + f",{t}\n")
    r = shendu("train", "Perceptron", "--data", tmp_path / "d.csv", "--target", "label",
               "--epochs", "5", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    assert "96 train / 24 test" in r.stdout
    np.savez(tmp_path / "r.npz", X=X, y=X @ [1.0, -2.0, 0.5])
    r = shendu("train", "MLPRegressor", "--data", tmp_path / "r.npz", "--epochs", "3",
               "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert "MSE" in r.stdout and (tmp_path / "r" / "best.ckpt").exists()
    # IDX images + labels, found beside each other by the MNIST naming
    imgs = rng.integers(0, 255, (40, 4, 4)).astype(np.uint8)
    labs = (imgs.mean((1, 2)) > 127).astype(np.uint8)
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBB3I", 0, 0, 8, 3, 40, 4, 4) + imgs.tobytes())
    with gzip.open(tmp_path / "t-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 40) + labs.tobytes())
    r = shendu("train", "Perceptron", "--data", tmp_path / "t-images-idx3-ubyte.gz",
               "--epochs", "2", "--out", tmp_path / "i")
    assert r.returncode == 0, r.stderr
    assert "32 train / 8 test" in r.stdout


@pytest.mark.slow
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, trained):
    out, _ = trained
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,0\n3,oops,1\n")
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,1\n")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00" * 5)
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "trunc-images-idx3-ubyte").write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 9,
                                                                   4, 4) + b"\x01" * 10)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5)))
    cases = [
        (("train", "mlp", "--data", "nosuch"), ["unknown data set 'nosuch'"]),
        (("train", "mlp", "--data", tmp_path / "missing.csv"), ["does not exist"]),
        (("train", "mlp", "--data", tmp_path / "bad.csv"), ["line 3, column 2", "oops"]),
        (("train", "mlp", "--data", tmp_path / "ragged.csv"), ["line 2 has 2 columns"]),
        (("train", "mlp", "--data", tmp_path / "x.npz"), ["not a valid .npz"]),
        (("train", "mlp", "--data", tmp_path / "trunc-images-idx3-ubyte"),
         ["trunc-images-idx3-ubyte is truncated", "announces 9x4x4"]),
        (("train", "nosuchmodel", "--data", "digits"), ["unknown model 'nosuchmodel'"]),
        (("train", "mlp", "--data", "digits", "--lr", "-1"), ["--lr must be > 0"]),
        (("train", "mlp", "--data", "adding"), ["needs whole-number class labels"]),
        (("eval", tmp_path / "garbage.ckpt"), ["garbage.ckpt"]),
        (("eval", tmp_path / "nothere.ckpt"), ["does not exist"]),
        (("predict", out / "mlp" / "best.ckpt", tmp_path / "wrong.npy"),
         ["takes inputs of shape (N, 64), got (3, 5)"]),
        (("gradcheck", "perceptron"), ["nothing to gradcheck"]),
    ]
    for args, words in cases:
        assert_one_line_error(shendu(*args), *words)
    # argparse errors: one line too, exit status 2
    assert_one_line_error(shendu("train", "mlp"), "--data", code=2)
    assert_one_line_error(shendu("tour", "--only", "nope"), "unknown chapter 'nope'", code=2)
    assert_one_line_error(shendu("tour", "--only", "mlp,nope"), "unknown chapter 'nope'",
                          code=2)
    assert_one_line_error(shendu("tour", "--jobs", "0"), "must be at least 1", code=2)
    assert_one_line_error(shendu("frobnicate"), "invalid choice", code=2)
    # --debug shows the traceback
    r = shendu("--debug", "eval", tmp_path / "garbage.ckpt")
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
def test_gradcheck_prints_each_parameter():
    r = shendu("gradcheck", "mlp")
    assert r.returncode == 0, r.stderr
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert name in r.stdout
    assert "PASS: worst relative error" in r.stdout
    errs = [float(ln.split()[-1]) for ln in r.stdout.splitlines() if ln.startswith(("0.", "2."))]
    assert len(errs) == 4 and max(errs) < 1e-5


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    """The check must be able to fail: break tanh's backward and it reports FAIL."""
    import shendu
    from shendu import nn
    from shendu.cli import gradcheck_model

    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = np.random.default_rng(0).normal(size=(5, 3))
    y = np.array([0, 1, 0, 1, 1])
    good = gradcheck_model(model, x, y)
    assert max(r[2] for r in good) < 1e-6

    class BadTanh(nn.Module):
        def forward(self, t):
            return shendu.tanh(t.detach()) + 0.0 * t + (t - t.detach()) * 0.5

    model[1] = BadTanh()
    bad = gradcheck_model(model, x, y)
    assert bad[0][2] > 1e-2  # the first layer's weight gets a wrong gradient


@pytest.mark.slow
def test_bench_runs_a_workload():
    r = shendu("bench", "--list")
    assert r.returncode == 0 and "mlp" in r.stdout
    r = shendu("bench", "--only", "mlp", "--steps", "3", "--repeats", "1", "--no-torch")
    assert r.returncode == 0, r.stderr
    assert "mlp" in r.stdout and "steps/s" in r.stdout
    assert_one_line_error(shendu("bench", "--only", "nope"), "unknown benchmark 'nope'")


@pytest.mark.slow
def test_train_eval_predict_sequence_models(tmp_path):
    """Every family from the command line: recurrent, transformer, seq2seq with attention,
    the seed's network; checkpoints hold the whole model."""
    r = shendu("train", "lstm", "--data", "sequential-digits", "--epochs", "2",
               "--hidden", "16", "--out", tmp_path / "lstm")
    assert r.returncode == 0, r.stderr
    assert "LongShortTermMemory on sequential-digits: 1438 train / 359 test" in r.stdout
    e = shendu("eval", tmp_path / "lstm" / "last.ckpt")
    assert e.returncode == 0 and r.stdout.split("test:  ")[1].splitlines()[0] in e.stdout
    r = shendu("train", "gru", "--data", "adding", "--epochs", "1", "--hidden", "8",
               "--out", tmp_path / "gru")
    assert r.returncode == 0 and "MSE" in r.stdout, r.stderr
    r = shendu("train", "transformer", "--data", "digits", "--epochs", "1", "--hidden", "16",
               "--out", tmp_path / "tr")
    assert r.returncode == 0 and "TransformerClassifier on digits" in r.stdout, r.stderr
    r = shendu("train", "attention", "--data", "reverse", "--epochs", "3",
               "--out", tmp_path / "rev")
    assert r.returncode == 0, r.stderr
    exact = float(r.stdout.split("test:  exact sequences ")[1].split()[0])
    assert exact > 0.9, r.stdout
    p = shendu("predict", tmp_path / "rev" / "best.ckpt", "3 1 4 1 5 9; 2 7 1 8")
    assert p.returncode == 0 and p.stdout.split("\n")[:2] == ["9 5 1 4 1 3", "8 1 7 2"]
    r = shendu("train", "NeuralNetwork", "--data", "xor", "--epochs", "2000", "--lr", "0.5",
               "--hidden", "4", "--out", tmp_path / "nn")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("test:  MSE ")[1].split()[0]) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("model", ["char-lm", "char-transformer"])
def test_char_language_models_train_and_generate(tmp_path, model):
    text = "the quick brown fox jumps over the lazy dog. " * 60
    (tmp_path / "t.txt").write_text(text)
    r = shendu("train", model, "--data", tmp_path / "t.txt", "--steps", "40", "--hidden",
               "32", "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    val = float(r.stdout.split("validation: ")[1].split()[0])
    unigram = float(r.stdout.split("unigram baseline ")[1].split()[0])
    assert val < unigram, r.stdout            # it learned more than character frequencies
    g = shendu("predict", tmp_path / "m" / "last.ckpt", "the qu", "--length", "30")
    assert g.returncode == 0, g.stderr
    out = g.stdout.rstrip("\n")
    assert out.startswith("the qu") and len(out) == 36 and set(out) <= set(text)
    again = shendu("predict", tmp_path / "m" / "last.ckpt", "the qu", "--length", "30")
    assert again.stdout == g.stdout            # seeded sampling
    e = shendu("eval", tmp_path / "m" / "last.ckpt")
    assert e.returncode == 0 and "nats/char" in e.stdout, e.stderr
    assert_one_line_error(shendu("predict", tmp_path / "m" / "last.ckpt", "QQ"),
                          "never saw")


@pytest.mark.slow
def test_char_lm_resumes_after_ctrl_c_exactly(tmp_path):
    # a run stopped by Ctrl-C and resumed from its --out folder ends with the same weights,
    # bit for bit, as the same run left alone
    import signal
    import time

    from shendu.cli.registry import load_model_checkpoint

    text = "the quick brown fox jumps over the lazy dog. " * 60
    (tmp_path / "t.txt").write_text(text)
    cmd = ("train", "char-lm", "--data", tmp_path / "t.txt", "--steps", "40", "--hidden", "16")
    whole = shendu(*cmd, "--out", tmp_path / "whole")
    assert whole.returncode == 0 and "40 of 40 steps" in whole.stdout, whole.stderr
    p = subprocess.Popen([sys.executable, "-m", "shendu", *map(str, cmd), "--out",
                          str(tmp_path / "cut")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cut" / "trainer").glob("*.ckpt")):   # the first block
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "stopped after step" in out, (out, err)
    done = int(out.split("stopped after step ")[1].split()[0])
    assert 8 <= done < 40
    # the saved settings are the run's: a different --steps is refused, none is fine
    assert_one_line_error(shendu("train", "char-lm", "--data", tmp_path / "t.txt", "--steps",
                                 "80", "--resume", tmp_path / "cut", "--out",
                                 tmp_path / "cut"), "--steps 40, not 80")
    again = shendu("train", "char-lm", "--data", tmp_path / "t.txt", "--resume",
                   tmp_path / "cut" / "last.ckpt", "--out", tmp_path / "cut")
    assert again.returncode == 0 and "40 of 40 steps" in again.stdout, again.stderr
    assert "step 8:" in whole.stdout and "step 8:" not in again.stdout   # went on, not anew
    a, _ = load_model_checkpoint(str(tmp_path / "whole" / "last.ckpt"))
    b, _ = load_model_checkpoint(str(tmp_path / "cut" / "last.ckpt"))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=k)
    assert_one_line_error(shendu("train", "char-transformer", "--data", tmp_path / "t.txt",
                                 "--resume", tmp_path / "cut"), "trains a CharLM")
    assert_one_line_error(shendu("train", "char-lm", "--data", tmp_path / "t.txt",
                                 "--resume", tmp_path), "no language-model run")


@pytest.mark.slow
def test_model_and_data_mismatches_are_one_line(tmp_path, trained):
    out, _ = trained
    np.savetxt(tmp_path / "five.csv", np.random.default_rng(0).normal(size=(20, 6)),
               delimiter=",")
    cases = [
        (("train", "cnn", "--data", tmp_path / "five.csv"), ["expects images", "(16, 5)"]),
        (("train", "char-lm", "--data", "digits"), ["trains on text"]),
        (("train", "attention", "--data", "digits"), ["--data reverse"]),
        (("train", "mlp", "--data", "reverse"), ["sequence-to-sequence"]),
        (("train", "lstm", "--data", "digits", "--epochs", "1", "--resume",
          out / "mlp" / "last.ckpt"), ["cannot resume"]),
        (("train", "mlp", "--data", "mnist", "--data-root", tmp_path),
         ["mnist", "not found"]),
        (("train", "char-lm", "--data", "shakespeare", "--data-root", tmp_path),
         ["tinyshakespeare.txt not found"]),
    ]
    for args, words in cases:
        assert_one_line_error(shendu(*args), *words)


@pytest.mark.parametrize("model", ["cnn", "lstm", "gru", "transformer", "attention",
                                   "self-attention", "char-lm", "char-transformer",
                                   "NeuralNetwork"])
@pytest.mark.slow
def test_gradcheck_every_model(model):
    from shendu.cli import _cmd_gradcheck, build_parser

    args = build_parser().parse_args(["gradcheck", model, "--max-elements", "12"])
    assert _cmd_gradcheck(args) == 0
