"""Real, published PyTorch scripts (beside this file, changed only in their import lines) run
on shendu and on torch from the same initial weights, on small local data: the same losses.

Each script is run as written; the harness only (1) restores torch's import lines for the
reference run, (2) gives both runs torch's initial weights (shendu loads torch's state_dict)
and (3) sets dropout to 0 in both, since the two libraries draw different random masks."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import sys
import types

import numpy as np
import pytest
import standins
import torch
from conftest import data_dir
from standins import datasets

import shendu

HERE = pathlib.Path(__file__).parent
RTOL = 1e-4

#: per script: its shendu import line -> torch's original line
IMPORTS = {
    "mnist_main.py": {
        "import shendu as torch": "import torch",
        "from shendu import nn": "import torch.nn as nn",
        "import shendu.nn.functional as F": "import torch.nn.functional as F",
        "from shendu import optim": "import torch.optim as optim",
        # torchvision's MNIST and transforms are stood in for in both runs (no network)
        "from standins import datasets, transforms": "from standins import datasets, transforms",
        "from shendu.optim.lr_scheduler import StepLR":
            "from torch.optim.lr_scheduler import StepLR",
    },
}


def load_client(name: str, lib) -> types.ModuleType:
    """The script as a module (its ``if __name__ == '__main__'`` block not run), with torch's
    import lines when ``lib`` is torch."""
    path = HERE / name
    lines = path.read_text().splitlines(keepends=True)
    table = IMPORTS[name]
    out = []
    for line in lines:
        key = line.rstrip("\n")
        if key in table:
            out.append((table[key] if lib is torch else key) + "\n")
        else:
            assert "shendu" not in line or line.startswith("#"), \
                f"{name}: a line other than an import names shendu: {line!r}"
            out.append(line)
    mod = types.ModuleType(f"client_{path.stem}_{lib.__name__}")
    mod.__file__ = str(path)
    standins.LIB = lib
    exec(compile("".join(out), str(path), "exec"), mod.__dict__)
    return mod


def test_client_files_differ_from_torch_only_in_imports():
    for name, table in IMPORTS.items():
        text = (HERE / name).read_text()
        for s in table:
            assert re.search(rf"^{re.escape(s)}$", text, re.M), f"{name}: missing {s!r}"
        src = load_client(name, torch)
        assert src.__name__.endswith("torch")


def same_start(cls, lib, store: dict) -> None:
    """After ``cls()`` builds: torch's run records its initial weights, shendu's loads them;
    dropout off in both."""
    orig = cls.__init__

    def init(self, *a, **kw):
        orig(self, *a, **kw)
        for m in self.modules():
            if type(m).__name__.startswith("Dropout"):
                m.p = 0.0
        if lib is torch:
            store.update({k: v.detach().numpy().copy() for k, v in self.state_dict().items()})
        else:
            self.load_state_dict({k: shendu.tensor(v) for k, v in store.items()})

    cls.__init__ = init


def run_main(mod, argv: list[str]) -> str:
    old, buf = sys.argv, io.StringIO()
    sys.argv = [mod.__file__, *argv]
    try:
        with contextlib.redirect_stdout(buf):
            mod.main()
    finally:
        sys.argv = old
    return buf.getvalue()


def numbers(pattern: str, text: str) -> np.ndarray:
    return np.array([float(v) for v in re.findall(pattern, text)])


@pytest.fixture
def mnist_files(monkeypatch):
    d = data_dir()
    if d is None or not (d / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the shared MNIST files (../shared/data/mnist or $SHENDU_DATA) are absent")
    monkeypatch.setattr(datasets, "ROOT", d / "mnist")
    monkeypatch.setattr(datasets, "SIZES", {"train": 192, "test": 96})


def test_pytorch_examples_mnist(mnist_files, tmp_path, monkeypatch):
    """pytorch/examples mnist/main.py: Conv2d/Dropout/Linear net, Adadelta, StepLR, two epochs
    of 6 batches, evaluation after each."""
    monkeypatch.chdir(tmp_path)
    argv = ["--epochs", "2", "--batch-size", "32", "--test-batch-size", "48",
            "--log-interval", "1", "--no-accel", "--save-model"]
    store: dict = {}
    outs = {}
    for lib in (torch, shendu):
        mod = load_client("mnist_main.py", lib)
        same_start(mod.Net, lib, store)
        outs[lib.__name__] = run_main(mod, argv)
    s, t = outs["shendu"], outs["torch"]
    train_pat = r"Loss: ([0-9.]+)"
    test_pat = r"Average loss: ([0-9.]+)"
    assert len(numbers(train_pat, t)) == 12 and len(numbers(test_pat, t)) == 2
    np.testing.assert_allclose(numbers(train_pat, s), numbers(train_pat, t), rtol=RTOL)
    np.testing.assert_allclose(numbers(test_pat, s), numbers(test_pat, t), rtol=RTOL)
    assert re.findall(r"Accuracy: (\d+)/", s) == re.findall(r"Accuracy: (\d+)/", t)
    losses = numbers(train_pat, s)
    assert losses[-1] < losses[0]  # it learns
    assert (tmp_path / "mnist_cnn.pt").is_file()
