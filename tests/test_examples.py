"""Every script in examples/ runs, with a tiny budget (its small-size or ``--quick`` flags)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("SHENDU_DATA") or ROOT.parent / "shared" / "data")

RUNS = {
    "adding_problem.py": (["--T", "8", "--n-train", "64", "--epochs", "1", "--hidden", "8"],
                          "LongShortTermMemory"),
    "char_lm.py": (["--steps", "2", "--hidden", "16", "--layers", "1", "--batch", "4",
                    "--seq-len", "16"], None),
    "char_transformer.py": (["--steps", "2", "--d-model", "16", "--heads", "2", "--layers", "1",
                             "--block", "16", "--batch", "4"], None),
    "digits_mlp.py": (["--quick"], "| shendu | MLPClassifier"),
    "mnist_lenet.py": (["--quick"], "test accuracy"),
    "seq2seq_reversal.py": (["--epochs", "1", "--n-train", "64", "--n-test", "16", "--lengths",
                             "3", "5", "--hidden", "8"], None),
    "speech_loso.py": (["--quick"], "FSDD split"),
}


def test_every_example_is_covered():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(RUNS)


SLOW = {"char_lm.py", "char_transformer.py", "digits_mlp.py", "speech_loso.py"}  # > 3 s each


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s
                                    for s in sorted(RUNS)])
def test_example_runs(script, tmp_path):
    args, expect = RUNS[script]
    if script in ("char_lm.py", "char_transformer.py"):
        text = DATA / "text" / "tinyshakespeare.txt"
        if not text.exists():
            pytest.skip(f"{text} is not here")
        args = [*args, "--text", str(text)]             # where SHENDU_DATA says, not the default
    if script == "speech_loso.py":
        pytest.importorskip("soundfile")
        if not (DATA / "fsdd").is_dir():
            pytest.skip(f"{DATA / 'fsdd'} is not here")
    if script == "mnist_lenet.py" and not (DATA / "mnist").is_dir():
        pytest.skip(f"{DATA / 'mnist'} is not here")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip()
    if expect is not None:
        assert expect in p.stdout, p.stdout[-2000:]
