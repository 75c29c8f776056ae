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
    "nanogpt_model.py": {
        "import shendu as torch": "import torch",
        "from shendu import nn": "import torch.nn as nn",
        "from shendu.nn import functional as F": "from torch.nn import functional as F",
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
    sys.modules[mod.__name__] = mod  # dataclasses look their module up while it runs
    try:
        exec(compile("".join(out), str(path), "exec"), mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
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


def shakespeare_tokens(n: int = 20000) -> np.ndarray:
    """Character ids of the shared tiny-shakespeare text (nanoGPT's shakespeare_char
    encoding: the sorted set of characters), else of a generated text."""
    d = data_dir()
    files = sorted((d / "text").glob("*shakespeare*")) if d is not None else []
    if files:
        text = files[0].read_text(encoding="utf-8")[:n]
    else:
        rng = np.random.default_rng(0)
        text = "".join(rng.choice(list("abcdefgh \n"), n))
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    return np.array([stoi[c] for c in text], np.int64)


def test_nanogpt_model_trains_like_torch():
    """karpathy/nanoGPT model.py: GPT with weight tying, causal scaled_dot_product_attention,
    configure_optimizers' AdamW groups; train.py's inner loop (clipping, warmup+cosine lr,
    zero_grad(set_to_none=True)) for 6 steps on character batches; then generate(top_k)."""
    data = shakespeare_tokens()
    vocab = int(data.max()) + 1
    rng = np.random.default_rng(0)
    block, batch, steps = 16, 4, 6
    starts = rng.integers(0, len(data) - block - 1, (steps, batch))
    xs = np.stack([np.stack([data[i:i + block] for i in row]) for row in starts])
    ys = np.stack([np.stack([data[i + 1:i + 1 + block] for i in row]) for row in starts])
    store: dict = {}
    losses = {}
    for lib in (torch, shendu):
        mod = load_client("nanogpt_model.py", lib)
        same_start(mod.GPT, lib, store)
        cfg = mod.GPTConfig(block_size=block, vocab_size=vocab, n_layer=2, n_head=2, n_embd=32,
                            dropout=0.0, bias=True)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            model = mod.GPT(cfg)
            opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2,
                                             betas=(0.9, 0.95), device_type="cpu")
        assert "number of parameters" in out.getvalue()
        assert model.transformer.wte.weight is model.lm_head.weight  # weight tying
        got = []
        for it in range(steps):
            lr = 1e-2 * (it + 1) / 3 if it < 3 else 1e-2 * 0.5 * (
                1 + np.cos(np.pi * (it - 3) / (steps - 3)))
            for group in opt.param_groups:
                group["lr"] = lr
            X, Y = lib.from_numpy(xs[it]), lib.from_numpy(ys[it])
            logits, loss = model(X, Y)
            loss.backward()
            lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            got.append(loss.item())
        losses[lib.__name__] = np.array(got)
        model.eval()
        idx = lib.from_numpy(xs[0][:1, :4].copy())
        with lib.no_grad():
            logits, loss = model(idx)
            assert loss is None and tuple(logits.shape) == (1, 1, vocab)
            out = model.generate(idx, 6, temperature=0.8, top_k=5)
        assert tuple(out.shape) == (1, 10) and out.numpy().dtype == np.int64
        assert np.array_equal(out.numpy()[:, :4], xs[0][:1, :4])
    np.testing.assert_allclose(losses["shendu"], losses["torch"], rtol=RTOL)
    assert losses["shendu"][-1] < losses["shendu"][0]
