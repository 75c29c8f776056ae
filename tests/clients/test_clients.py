"""PyTorch scripts beside this file run on shendu and on torch from the same initial weights,
on small local data: the same losses.

The scripts (``mnist_convnet.py``, ``gpt_char.py``) are shendu's own, written in the style of
published PyTorch training scripts and importing only torch (third-party source is not kept in
this repository). Each is run as written; the harness only (1) swaps torch's import lines for
shendu's in the shendu run, (2) gives both runs torch's initial weights (shendu loads torch's
state_dict) and (3) sets dropout to 0 in both, since the two libraries draw different random
masks."""

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

#: per script: torch's import line as written -> the line the shendu run uses instead
IMPORTS = {
    "mnist_convnet.py": {
        "import torch": "import shendu as torch",
        "import torch.nn as nn": "from shendu import nn",
        "import torch.nn.functional as F": "import shendu.nn.functional as F",
        "import torch.optim as optim": "from shendu import optim",
        "from torch.optim.lr_scheduler import StepLR":
            "from shendu.optim.lr_scheduler import StepLR",
    },
    "gpt_char.py": {
        "import torch": "import shendu as torch",
        "import torch.nn as nn": "from shendu import nn",
        "import torch.nn.functional as F": "import shendu.nn.functional as F",
    },
}


def client_source(name: str, lib) -> str:
    """The script's text, with shendu's import lines when ``lib`` is shendu."""
    table = IMPORTS[name]
    out = []
    for line in (HERE / name).read_text().splitlines(keepends=True):
        key = line.rstrip("\n")
        if lib is shendu and key in table:
            out.append(table[key] + "\n")
        else:
            assert "shendu" not in line, f"{name} names shendu: {line!r}"
            if lib is shendu:
                assert not re.match(r"\s*(import|from)\s+torch\b", line), \
                    f"{name}: a torch import the shendu run would keep: {line!r}"
            out.append(line)
    return "".join(out)


def load_client(name: str, lib) -> types.ModuleType:
    """The script as a module (its ``if __name__ == '__main__'`` block not run)."""
    path = HERE / name
    mod = types.ModuleType(f"client_{path.stem}_{lib.__name__}")
    mod.__file__ = str(path)
    standins.LIB = lib
    sys.modules[mod.__name__] = mod  # dataclasses look their module up while it runs
    try:
        exec(compile(client_source(name, lib), str(path), "exec"), mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
    assert mod.torch is lib
    return mod


def test_client_scripts_import_torch_only_through_the_swapped_lines():
    for name, table in IMPORTS.items():
        text = (HERE / name).read_text()
        for line in table:
            assert re.search(rf"^{re.escape(line)}$", text, re.M), f"{name}: missing {line!r}"
        assert "shendu" not in text
        assert load_client(name, shendu).nn is shendu.nn
        assert load_client(name, torch).nn is torch.nn


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


def run_main(mod, argv: list[str]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = mod.main(argv)
    return result, buf.getvalue()


def numbers(pattern: str, text: str) -> np.ndarray:
    return np.array([float(v) for v in re.findall(pattern, text)])


@pytest.fixture
def mnist_files(monkeypatch):
    d = data_dir()
    if d is None or not (d / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the shared MNIST files (../shared/data/mnist or $SHENDU_DATA) are absent")
    monkeypatch.setattr(datasets, "ROOT", d / "mnist")
    monkeypatch.setattr(datasets, "SIZES", {"train": 192, "test": 96})


def test_mnist_convnet(mnist_files, tmp_path):
    """mnist_convnet.py's own main(): Conv2d/Dropout/Linear net, Adadelta, StepLR, two epochs
    of 6 batches, evaluation after each, torch.save of the state dict."""
    store: dict = {}
    outs, test_losses = {}, {}
    for lib in (torch, shendu):
        path = tmp_path / f"mnist_{lib.__name__}.pt"
        argv = ["--epochs", "2", "--batch-size", "32", "--test-batch-size", "48",
                "--log-interval", "1", "--no-cuda", "--no-shuffle", "--save-model",
                "--save-path", str(path)]
        mod = load_client("mnist_convnet.py", lib)
        same_start(mod.ConvNet, lib, store)
        test_losses[lib.__name__], outs[lib.__name__] = run_main(mod, argv)
        assert path.is_file()
    s, t = outs["shendu"], outs["torch"]
    train_pat = r"train loss ([0-9.]+)"
    assert len(numbers(train_pat, t)) == 12 and len(test_losses["torch"]) == 2
    np.testing.assert_allclose(numbers(train_pat, s), numbers(train_pat, t), rtol=RTOL)
    np.testing.assert_allclose(test_losses["shendu"], test_losses["torch"], rtol=RTOL)
    assert re.findall(r"correct (\d+)/", s) == re.findall(r"correct (\d+)/", t)
    losses = numbers(train_pat, s)
    assert losses[-1] < losses[0]  # it learns
    saved = shendu.load(tmp_path / "mnist_shendu.pt")
    assert sorted(saved) == sorted(store)


@pytest.fixture
def shakespeare():
    d = data_dir()
    files = sorted((d / "text").glob("*shakespeare*")) if d is not None else []
    if not files:
        pytest.skip("the shared tiny-shakespeare text (../shared/data/text) is absent")
    return files[0]


@pytest.mark.parametrize("attention", ["sdpa", "mask"])
def test_gpt_char_trains_like_torch(shakespeare, attention):
    """gpt_char.py's own main(): GPT (2 layers, 2 heads, d=32, weight tying, causal attention
    by SDPA or by the registered mask), AdamW groups, clipping, warmup+cosine lr for 8 steps on
    tiny-shakespeare characters, a validation estimate, greedy sampling; then generate(top_k)."""
    argv = ["--data", str(shakespeare), "--chars", "20000", "--context", "16",
            "--layers", "2", "--heads", "2", "--d-model", "32", "--dropout", "0",
            "--batch-size", "4", "--max-iters", "8", "--warmup", "3", "--lr", "1e-2",
            "--min-lr", "1e-3", "--eval-iters", "2", "--log-interval", "1",
            "--sample-tokens", "6", "--top-k", "1"]
    if attention == "mask":
        argv.append("--mask")
    store: dict = {}
    res, outs = {}, {}
    for lib in (torch, shendu):
        mod = load_client("gpt_char.py", lib)
        same_start(mod.CharGPT, lib, store)
        res[lib.__name__], outs[lib.__name__] = run_main(mod, argv)
        model = res[lib.__name__][0]
        assert model.head.weight is model.tok_emb.weight  # weight tying
        assert "causal" not in model.state_dict() and "blocks.0.attn.causal" not in store
        idx = lib.tensor([[3, 1, 4, 1]], dtype=lib.long)
        with lib.no_grad():
            logits, loss = model(idx)
            assert loss is None and tuple(logits.shape) == (1, 1, model.cfg.vocab_size)
        out = model.generate(idx, 6, temperature=0.8, top_k=5)
        assert tuple(out.shape) == (1, 10) and out.numpy().dtype == np.int64
        assert out.numpy()[0, :4].tolist() == [3, 1, 4, 1]
    (_, s_loss, s_val, s_sample), (_, t_loss, t_val, t_sample) = res["shendu"], res["torch"]
    assert "not decayed: " in outs["shendu"] and len(t_loss) == 8
    for pat in (r"CharGPT: \d+", r"decayed: .*"):  # parameter counts, the tied weight once
        assert re.findall(pat, outs["shendu"]) == re.findall(pat, outs["torch"])
    np.testing.assert_allclose(s_loss, t_loss, rtol=RTOL)
    np.testing.assert_allclose(s_val, t_val, rtol=RTOL)
    assert s_sample == t_sample and len(s_sample) == 7  # greedy (top_k=1): the same text
    assert s_loss[-1] < s_loss[0]
