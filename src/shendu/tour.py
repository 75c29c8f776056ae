"""``shendu tour``: each classic algorithm of deep learning trained on its classic task, on
built-in data (no network), with the result that made it famous.

=============  =======================================  ==================================
chapter        algorithm (who, when)                    what it shows
=============  =======================================  ==================================
perceptron     perceptron (Rosenblatt 1958)             converges on separable blobs;
                                                        fails on XOR (Minsky & Papert 1969)
mlp            multi-layer perceptron + backpropagation XOR solved; 8x8 digits
               (Rumelhart, Hinton & Williams 1986)
cnn            convolutional network (LeCun et al.      digits, beside the MLP
               1989; LeNet-5 1998)
lstm           LSTM (Hochreiter & Schmidhuber 1997)     the adding problem, where a tanh RNN
               vs the simple RNN (Elman 1990)           (vanishing gradients) fails
attention      encoder-decoder with additive attention  reversing digit sequences, beside the
               (Bahdanau, Cho & Bengio 2014)            same model without attention
transformer    transformer encoder (Vaswani et al.      digits read as 8 row tokens
               2017)
=============  =======================================  ==================================

Each run shows a progress bar; at the end the tour prints a table (algorithm, who and when,
task, result, baseline or contrast, seconds) and writes a folder with the pictures (learning
curves, a confusion matrix, first-layer convolution filters, the RNN-vs-LSTM gradient norms
over time, an attention heatmap) and one self-contained ``report.html``. The pictures need
matplotlib (``pip install 'shendu[plot]'``); without it the tour prints a one-line hint and the
report holds the table.

Every run is seeded (``shendu.manual_seed(0)`` before each chapter), so the tour prints the
same numbers on every run on the same machine. ``quick=True`` shrinks every budget (about a
minute in all); a chapter whose building blocks are missing from this build of shendu is
listed as "not available yet" instead of failing the tour.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shendu.train import Callback

__all__ = ["Chapter", "Row", "TourResult", "CHAPTERS", "run_tour", "HEADER"]

HEADER = ("algorithm", "who and when", "task", "result", "baseline or contrast", "seconds")


@dataclass
class Row:
    """One line of the tour's table."""

    algorithm: str
    who: str
    task: str
    result: str
    contrast: str
    seconds: float | None

    def cells(self) -> tuple[str, ...]:
        s = "" if self.seconds is None else f"{self.seconds:.1f}"
        return (self.algorithm, self.who, self.task, self.result, self.contrast, s)


@dataclass
class _Context:
    """What a chapter gets: the budget flag, a place for its pictures, and what earlier
    chapters measured (a later chapter can quote them as its baseline)."""

    quick: bool
    rows: list[Row] = field(default_factory=list)
    pictures: list[tuple[str, str, str, Callable, tuple]] = field(default_factory=list)
    curves: list[tuple[str, str, dict]] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)

    def picture(self, filename: str, title: str, caption: str, draw: Callable, *args) -> None:
        """Ask for a picture; it is drawn after the runs (and only with matplotlib). A later
        request for the same file name replaces an earlier one."""
        self.pictures = [p for p in self.pictures if p[0] != filename]
        self.pictures.append((filename, title, caption, draw, args))

    def row(self, algorithm: str, who: str, task: str, result: str, contrast: str,
            seconds: float | None) -> None:
        self.rows.append(Row(algorithm, who, task, result, contrast, seconds))


@dataclass
class Chapter:
    """A chapter of the tour: its table labels, the shendu pieces it needs and its run."""

    name: str
    algorithm: str
    who: str
    task: str
    needs: tuple[str, ...]
    run: Callable[[_Context], None]

    def missing(self) -> list[str]:
        """The needed pieces (``"nn.LSTM"``, ``"models.AttentionMechanism"``...) that this
        build of shendu does not have."""
        out = []
        for dotted in self.needs:
            mod_name, _, attr = dotted.rpartition(".")
            try:
                mod = importlib.import_module(f"shendu.{mod_name}")
            except ImportError:
                out.append(f"shendu.{dotted}")
                continue
            if not hasattr(mod, attr):
                out.append(f"shendu.{dotted}")
        return out


@dataclass
class TourResult:
    """What :func:`run_tour` returns: the rows, the pictures written and the report's path."""

    rows: list[Row]
    pictures: list[str]
    report: str | None
    seconds: float
    failed: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- helpers
class _ProgressBar(Callback):
    """One tqdm bar per run, advanced once per epoch, showing the epoch's loss and
    metrics."""

    def __init__(self, desc: str, epochs: int) -> None:
        from shendu.utils import progress

        self.bar = progress(range(epochs), desc=desc, total=epochs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "lr"},
                             refresh=False)

    def on_train_end(self, logs: dict) -> None:
        self.bar.close()


def _loader(X, y, batch_size: int, shuffle: bool):
    from shendu.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle)


def _train(model, X, y, Xv, yv, *, epochs: int, lr: float, batch_size: int, desc: str,
           loss: str = "ce", optimizer: str = "adam", clip: float | None = None) -> dict:
    """Train with ``shendu.train.fit`` (one progress bar) and return its history."""
    from shendu import nn, optim
    from shendu.train import fit

    loss_fn = nn.CrossEntropyLoss() if loss == "ce" else nn.MSELoss()
    params = list(model.parameters())
    opt = (optim.Adam(params, lr=lr) if optimizer == "adam"
           else optim.SGD(params, lr=lr, momentum=0.9))
    callbacks: list = [_ProgressBar(desc, epochs)]
    if clip is not None:
        from shendu.nn.utils import clip_grad_norm_

        class _Clip(Callback):
            def on_after_backward(self, batch, logs):
                clip_grad_norm_(params, clip)

        callbacks.append(_Clip())
    metrics = ["accuracy"] if loss == "ce" else ["mse"]
    return fit(model, loss_fn, opt, _loader(X, y, batch_size, True), epochs,
               val_loader=_loader(Xv, yv, 512, False), metrics=metrics,
               callbacks=callbacks, verbose=0)


def _predict(model, X, batch: int = 512) -> np.ndarray:
    import shendu

    model.eval()
    outs = []
    with shendu.no_grad():
        for i in range(0, len(X), batch):
            outs.append(model(shendu.from_numpy(np.ascontiguousarray(X[i:i + batch]))).data)
    return np.concatenate(outs)


def _n_params(model) -> int:
    return int(sum(p.data.size for p in model.parameters()))


def _pct(a: float) -> str:
    return f"{100 * a:.1f}%"


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _plots():
    from shendu.report import plots

    return plots


# ------------------------------------------------------------------- chapters
def _perceptron(ctx: _Context) -> None:
    """Rosenblatt (1958): on linearly separable data the perceptron rule stops after a
    finite number of mistakes (Novikoff 1962). Minsky & Papert (1969): no single-layer
    perceptron represents XOR, so on XOR it never stops."""
    from shendu.data.datasets import blobs, xor
    from shendu.models import ConvergenceWarning, Perceptron
    from shendu.utils import progress

    t0 = time.perf_counter()
    Xtr, Xte, ytr, yte = blobs(n_samples=200, random_state=0)
    p = Perceptron(max_epochs=100)
    for _ in progress(range(1), desc="perceptron on blobs"):
        p.fit(Xtr, ytr)
    ctx.row("Perceptron (Rosenblatt rule)", "Frank Rosenblatt 1958",
            "separable blobs (2 classes, 160 train / 40 test)",
            f"{_pct(p.score(Xtr, ytr))} train, {_pct(p.score(Xte, yte))} test; "
            f"{'converged' if p.converged_ else 'did NOT converge'} in {p.n_iter_} epochs "
            f"({int(np.sum(p.mistakes_))} mistake{'' if int(np.sum(p.mistakes_)) == 1 else 's'})",
            "chance: 50%", time.perf_counter() - t0)
    ctx.measured["perceptron_blobs"] = p.score(Xte, yte)

    t0 = time.perf_counter()
    X, _, y, _ = xor()
    epochs = 20 if ctx.quick else 100
    p = Perceptron(max_epochs=epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in progress(range(1), desc="perceptron on XOR"):
            p.fit(X, y)
    acc = p.score(X, y)
    ctx.measured["perceptron_xor"] = acc
    ctx.row("Perceptron on XOR", "Marvin Minsky & Seymour Papert 1969", "XOR (4 points)",
            f"{_pct(acc)}; {'converged' if p.converged_ else 'never converges'} "
            f"({p.mistakes_[-1]} mistakes in epoch {p.n_iter_} of {epochs})",
            "not linearly separable: at most 3 of 4 right", time.perf_counter() - t0)


def _mlp(ctx: _Context) -> None:
    """Rumelhart, Hinton & Williams (1986): a hidden layer trained by backpropagation
    solves XOR and learns useful features of real data (here the 8x8 digits)."""
    import shendu
    from shendu import nn
    from shendu.data.datasets import digits, xor

    t0 = time.perf_counter()
    shendu.manual_seed(0)
    X, _, y, _ = xor()
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    epochs = 150 if ctx.quick else 300
    h = _train(model, X, y, X, y, epochs=epochs, lr=0.5, batch_size=4, optimizer="sgd",
               desc="MLP on XOR")
    acc = float((_predict(model, X).argmax(1) == y).mean())
    base = ctx.measured.get("perceptron_xor")
    ctx.row("Multi-layer perceptron + backpropagation",
            "David Rumelhart, Geoffrey Hinton & Ronald Williams 1986",
            "XOR (4 points), one hidden layer of 8 tanh units",
            f"{_pct(acc)} (loss {h['loss'][-1]:.4f} after {epochs} epochs)",
            f"perceptron: {_pct(base)}" if base is not None else "perceptron: at most 75%",
            time.perf_counter() - t0)

    t0 = time.perf_counter()
    shendu.manual_seed(0)
    Xtr, Xte, ytr, yte = digits()
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    epochs = 8 if ctx.quick else 30
    h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=1e-2 if ctx.quick else 5e-3,
               batch_size=32, desc="MLP on digits")
    pred = _predict(model, Xte).argmax(1)
    acc = float((pred == yte).mean())
    ctx.measured["mlp_digits"] = acc
    ctx.measured["mlp_digits_params"] = _n_params(model)
    ctx.curves.append(("MLP on digits", "loss / accuracy",
                       {"train loss": h["loss"], "test accuracy": h["val_accuracy"]}))
    ctx.picture("confusion_matrix.png", "Confusion matrix (MLP, digits test set)",
                f"Rows: true digit; columns: predicted. {int((pred != yte).sum())} of "
                f"{len(yte)} test images wrong.", _plots().confusion_matrix,
                _confusion(yte, pred, 10), None, "MLP on digits: confusion matrix")
    # the perceptron on the same split: one linear layer, averaged (Freund & Schapire 1999)
    from shendu.models import ConvergenceWarning, Perceptron

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p = Perceptron(max_epochs=5 if ctx.quick else 20, average=True, shuffle=True,
                       random_state=0).fit(Xtr, ytr)
    ctx.row("Multi-layer perceptron + backpropagation",
            "David Rumelhart, Geoffrey Hinton & Ronald Williams 1986",
            "8x8 digits (1,438 train / 359 test), 64-128-10 ReLU, Adam",
            f"{_pct(acc)} test accuracy ({epochs} epochs)",
            f"perceptron (linear): {_pct(p.score(Xte, yte))}", time.perf_counter() - t0)


def _cnn(ctx: _Context) -> None:
    """LeCun et al. (1989): convolutions share weights across the image and learn their
    own local feature detectors; trained by backpropagation they beat a fully connected
    network of the same size class on handwritten digits."""
    import shendu
    from shendu import nn
    from shendu.data.datasets import digits

    t0 = time.perf_counter()
    shendu.manual_seed(0)
    Xtr, Xte, ytr, yte = digits()
    Xtr, Xte = Xtr.reshape(-1, 1, 8, 8), Xte.reshape(-1, 1, 8, 8)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 16, 4, 4)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 2, 2)
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))
    epochs = 4 if ctx.quick else 15
    h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=3e-3, batch_size=32,
               desc="CNN on digits")
    pred = _predict(model, Xte).argmax(1)
    acc = float((pred == yte).mean())
    mlp = ctx.measured.get("mlp_digits")
    ctx.row("Convolutional network", "Yann LeCun et al. 1989 (LeNet-5: 1998)",
            "8x8 digits, conv 16@3x3, pool, conv 32@3x3, pool, linear",
            f"{_pct(acc)} test accuracy ({epochs} epochs, {_n_params(model):,} weights)",
            f"MLP: {_pct(mlp)} ({ctx.measured['mlp_digits_params']:,} weights)"
            if mlp is not None else "MLP: run `shendu tour --only mlp`",
            time.perf_counter() - t0)
    ctx.curves.append(("CNN on digits", "loss / accuracy",
                       {"train loss": h["loss"], "test accuracy": h["val_accuracy"]}))
    p = _plots()
    ctx.picture("confusion_matrix.png", "Confusion matrix (CNN, digits test set)",
                f"Rows: true digit; columns: predicted. {int((pred != yte).sum())} of "
                f"{len(yte)} test images wrong.",
                p.confusion_matrix, _confusion(yte, pred, 10), None,
                "CNN on digits: confusion matrix")
    ctx.picture("conv_filters.png", "First-layer convolution filters",
                "The 16 learned 3x3 kernels of the first convolution (each scaled to its own "
                "range): edge and stroke detectors.",
                p.conv_filters, model[0].weight.data.copy(),
                "CNN on digits: first-layer 3x3 filters")


def _adding_problem(n: int, T: int, seed: int):
    """Hochreiter & Schmidhuber (1997): channel 0 random in [0, 1], channel 1 marks two
    positions (one in each half); the target is the sum of the two marked values."""
    try:
        from shendu.data.datasets import adding_problem

        out = adding_problem(n=n, T=T, seed=seed)
        X, y = out[0], out[1]
        return np.asarray(X, np.float32), np.asarray(y, np.float32).reshape(-1, 1)
    except (ImportError, AttributeError, TypeError):
        rng = np.random.Generator(np.random.PCG64(seed))
        X = np.zeros((n, T, 2), np.float32)
        X[:, :, 0] = rng.uniform(size=(n, T))
        a = rng.integers(0, T // 2, n)
        b = rng.integers(T // 2, T, n)
        X[np.arange(n), a, 1] = 1.0
        X[np.arange(n), b, 1] = 1.0
        y = (X[np.arange(n), a, 0] + X[np.arange(n), b, 0]).reshape(-1, 1)
        return X, y.astype(np.float32)


class _LastStep:
    """A recurrent layer followed by a linear head on the last time step."""

    def __new__(cls, rnn, hidden: int):
        from shendu import nn

        class LastStep(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = rnn
                self.head = nn.Linear(hidden, 1)

            def forward(self, x):
                out, _ = self.rnn(x)          # (B, T, H)
                return self.head(out[:, -1])  # (B, 1)

        return LastStep()


def _bptt_norms(kind: str, rnn, head, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """||dL/dh_t|| for t = 1..T of one batch, the loss taken at the last step only.

    The recurrence is unrolled step by step from the trained layer's weights (torch's
    names: ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``; LSTM gates
    i, f, g, o), and a zero tensor ``z_t`` is added to each ``h_t``: ``dL/dz_t = dL/dh_t``.
    """
    import shendu
    import shendu.functional as F

    W_ih, W_hh = rnn.weight_ih_l0.detach(), rnn.weight_hh_l0.detach()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach()
    B, T, _ = X.shape
    H = W_hh.shape[1]
    x = shendu.from_numpy(X)
    h = shendu.zeros(B, H)
    c = shendu.zeros(B, H)
    zs = []
    for t in range(T):
        pre = shendu.matmul(x[:, t], W_ih.T) + shendu.matmul(h, W_hh.T) + b
        if kind == "lstm":
            i, f, g, o = shendu.chunk(pre, 4, dim=1)
            c = F.sigmoid(f) * c + F.sigmoid(i) * shendu.tanh(g)
            h = F.sigmoid(o) * shendu.tanh(c)
        else:
            h = shendu.tanh(pre)
        z = shendu.zeros(B, H, requires_grad=True)
        zs.append(z)
        h = h + z
    out = shendu.matmul(h, head.weight.detach().T) + head.bias.detach()
    loss = ((out - shendu.from_numpy(y)) ** 2).mean()
    loss.backward()
    return np.array([float(np.linalg.norm(z.grad.data)) for z in zs])


def _lstm(ctx: _Context) -> None:
    """Hochreiter & Schmidhuber (1997): the error signal of a simple recurrent network
    (Elman 1990) shrinks geometrically as it flows back through time (Hochreiter 1991;
    Bengio, Simard & Frasconi 1994); the LSTM's additive cell state carries it across
    long lags, so an LSTM learns the adding problem and a tanh RNN of the same size does
    not."""
    import shendu
    from shendu import nn

    T = 30 if ctx.quick else 50
    n_train, n_test = (1000, 500) if ctx.quick else (3000, 1000)
    epochs = 6 if ctx.quick else 16
    hidden = 32
    Xtr, ytr = _adding_problem(n_train, T, seed=0)
    Xte, yte = _adding_problem(n_test, T, seed=1)
    base = float(((yte - ytr.mean()) ** 2).mean())
    results = {}
    for kind in ("rnn", "lstm"):
        t0 = time.perf_counter()
        shendu.manual_seed(0)
        layer = (nn.LSTM(2, hidden, batch_first=True) if kind == "lstm"
                 else nn.RNN(2, hidden, batch_first=True))
        model = _LastStep(layer, hidden)
        h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=1e-2, batch_size=32,
                   loss="mse", clip=1.0, desc=f"{kind.upper()} on adding T={T}")
        mse = float(((_predict(model, Xte) - yte) ** 2).mean())
        norms = _bptt_norms(kind, layer, model.head, Xte[:128], yte[:128])
        results[kind] = (mse, h, norms, time.perf_counter() - t0)
    r_mse, l_mse = results["rnn"][0], results["lstm"][0]
    ctx.row("Long short-term memory (LSTM)",
            "Sepp Hochreiter & Jürgen Schmidhuber 1997",
            f"adding problem, T={T}, {hidden} units ({n_train} train sequences)",
            f"test MSE {l_mse:.4f}",
            f"tanh RNN (Elman 1990), same size and budget: {r_mse:.4f}; "
            f"predicting the mean: {base:.3f}", results["lstm"][3])
    ctx.row("Simple recurrent network (tanh RNN)", "Jeffrey Elman 1990",
            f"adding problem, T={T}, {hidden} units", f"test MSE {r_mse:.4f}",
            f"vanishing gradient: ||dL/dh_1|| / ||dL/dh_T|| = "
            f"{results['rnn'][2][0] / results['rnn'][2][-1]:.1e} "
            f"(LSTM {results['lstm'][2][0] / results['lstm'][2][-1]:.1e})",
            results["rnn"][3])
    ctx.curves.append((f"Adding problem (T={T})", "test MSE",
                       {"RNN": results["rnn"][1]["val_mse"],
                        "LSTM": results["lstm"][1]["val_mse"]}))
    ctx.picture("rnn_vs_lstm_gradients.png", "Gradient norm over time: RNN vs LSTM",
                f"||dL/dh_t|| for one batch of the trained models, loss at the last step "
                f"t={T}. The tanh RNN's gradient dies out going back in time (Hochreiter "
                f"1991; Bengio, Simard & Frasconi 1994); the LSTM's reaches the first steps.",
                _plots().gradient_norms, {"tanh RNN": results["rnn"][2],
                                          "LSTM": results["lstm"][2]},
                f"Backpropagation through time on the adding problem (T={T})")


def _reversal_data(n: int, lo: int, hi: int, vocab: int, seed: int):
    """Digit sequences of length lo..hi (tokens 0..vocab-1) and their reversals."""
    try:
        from shendu.data.datasets import sequence_task

        return sequence_task("reverse", n, (lo, hi), vocab, seed)
    except (ImportError, AttributeError):
        rng = np.random.Generator(np.random.PCG64(seed))
        xs = [rng.integers(0, vocab, rng.integers(lo, hi + 1)) for _ in range(n)]
        return xs, [x[::-1].copy() for x in xs]


def _attention(ctx: _Context) -> None:
    """Bahdanau, Cho & Bengio (2014): an encoder-decoder that squeezes the whole input
    into one vector (Cho et al. 2014) forgets long inputs; letting the decoder look back at
    every encoder state, weighted by a learned alignment, removes that bottleneck — and the
    alignment learned for reversal is the anti-diagonal."""
    import shendu
    from shendu.models import AttentionMechanism

    lo, hi = (4, 6) if ctx.quick else (6, 10)
    n_train = 1500 if ctx.quick else 4000
    epochs = 6 if ctx.quick else 20
    vocab = 10
    src_tr, tgt_tr = _reversal_data(n_train, lo, hi, vocab, seed=0)
    src_te, tgt_te = _reversal_data(300, lo, hi, vocab, seed=1)
    out = {}
    for use in (False, True):
        t0 = time.perf_counter()
        shendu.manual_seed(0)
        m = AttentionMechanism(vocab_size=vocab, attention=use, epochs=epochs,
                               random_state=0, verbose=0)
        m.fit(src_tr, tgt_tr)
        pred = m.predict(src_te)
        exact = float(np.mean([np.array_equal(p, t) for p, t in zip(pred, tgt_te)]))
        out[use] = (exact, m, time.perf_counter() - t0)
    ctx.row("Encoder-decoder with additive attention",
            "Dzmitry Bahdanau, Kyunghyun Cho & Yoshua Bengio 2014",
            f"reverse digit sequences, length {lo}-{hi}",
            f"{_pct(out[True][0])} exact sequences (held out)",
            f"without attention (Cho et al. 2014), same budget: {_pct(out[False][0])}",
            out[True][2] + out[False][2])
    weights = out[True][1].attention_weights(src_te[0])
    ctx.picture("attention.png", "Attention weights (reversal)",
                "Which input position each output step attends to: the anti-diagonal is "
                "the reversal the model learned, without being told.",
                _plots().attention_heatmap, weights, list(src_te[0]), list(tgt_te[0]),
                "Seq2seq with attention: reversing a sequence")


def _transformer(ctx: _Context) -> None:
    """Vaswani et al. (2017): self-attention lets every token look at every other one in
    one step; here each digit image is read as a sequence of its 8 pixel rows."""
    import shendu
    from shendu import nn

    t0 = time.perf_counter()
    shendu.manual_seed(0)
    Xtr, Xte, ytr, yte = digits_rows()
    d = 32

    class RowTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(8, d)
            self.pos = nn.Parameter(shendu.randn(1, 8, d) * 0.1)
            self.encoder = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
            self.head = nn.Linear(d, 10)

        def forward(self, x):                        # (B, 8 rows, 8 pixels)
            h = self.encoder(self.embed(x) + self.pos)  # (B, 8, d)
            return self.head(h.mean(dim=1))         # (B, 10)

    model = RowTransformer()
    epochs = 5 if ctx.quick else 25
    h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=3e-3, batch_size=32,
               desc="Transformer on digits")
    acc = float((_predict(model, Xte).argmax(1) == yte).mean())
    mlp = ctx.measured.get("mlp_digits")
    ctx.row("Transformer encoder (self-attention)", "Ashish Vaswani et al. 2017",
            "8x8 digits read as 8 row tokens, 1 layer, d=32, 4 heads",
            f"{_pct(acc)} test accuracy ({epochs} epochs)",
            f"MLP on the flat pixels: {_pct(mlp)}" if mlp is not None
            else "MLP: run `shendu tour --only mlp`", time.perf_counter() - t0)
    ctx.curves.append(("Transformer on digits", "loss / accuracy",
                       {"train loss": h["loss"], "test accuracy": h["val_accuracy"]}))
    if not any(p[0] == "attention.png" for p in ctx.pictures):
        with shendu.no_grad():
            model.eval()
            x = model.embed(shendu.from_numpy(Xte[:1])) + model.pos
            _, w = model.encoder.self_attn(x, x, x, need_weights=True)
        ctx.picture("attention.png", "Self-attention weights (transformer, one digit)",
                    "How much each pixel row (output) attends to every other row (input), "
                    "averaged over the 4 heads.", _plots().attention_heatmap,
                    np.asarray(w.data)[0], [f"r{i}" for i in range(8)],
                    [f"r{i}" for i in range(8)], f"Transformer: rows of a '{yte[0]}'")


def digits_rows():
    """The digits split of ``shendu.data.datasets.digits`` as (N, 8 rows, 8 pixels)."""
    from shendu.data.datasets import digits

    Xtr, Xte, ytr, yte = digits()
    return Xtr.reshape(-1, 8, 8), Xte.reshape(-1, 8, 8), ytr, yte


CHAPTERS: dict[str, Chapter] = {c.name: c for c in [
    Chapter("perceptron", "Perceptron", "Frank Rosenblatt 1958; Minsky & Papert 1969",
            "separable blobs; XOR", ("models.Perceptron",), _perceptron),
    Chapter("mlp", "Multi-layer perceptron + backpropagation",
            "David Rumelhart, Geoffrey Hinton & Ronald Williams 1986", "XOR; 8x8 digits",
            ("train.fit", "nn.Linear", "optim.Adam"), _mlp),
    Chapter("cnn", "Convolutional network", "Yann LeCun et al. 1989 (LeNet-5: 1998)",
            "8x8 digits", ("train.fit", "nn.Conv2d", "nn.MaxPool2d"), _cnn),
    Chapter("lstm", "Long short-term memory vs simple RNN",
            "Sepp Hochreiter & Jürgen Schmidhuber 1997; Jeffrey Elman 1990",
            "adding problem", ("train.fit", "nn.RNN", "nn.LSTM"), _lstm),
    Chapter("attention", "Encoder-decoder with additive attention",
            "Dzmitry Bahdanau, Kyunghyun Cho & Yoshua Bengio 2014",
            "reverse digit sequences", ("models.AttentionMechanism",), _attention),
    Chapter("transformer", "Transformer encoder (self-attention)",
            "Ashish Vaswani et al. 2017", "8x8 digits as 8 row tokens",
            ("train.fit", "nn.TransformerEncoderLayer"), _transformer),
]}


# ------------------------------------------------------------------- the tour
def format_table(rows: list[tuple[str, ...]], header=HEADER, max_width: int = 34) -> str:
    """A plain-text table; cells longer than ``max_width`` wrap onto extra lines."""
    import textwrap

    wrapped = [[textwrap.wrap(str(c), max_width) or [""] for c in r] for r in [header, *rows]]
    widths = [max(len(line) for r in wrapped for line in r[i]) for i in range(len(header))]
    out = []
    for k, r in enumerate(wrapped):
        height = max(len(c) for c in r)
        for j in range(height):
            out.append("  ".join((c[j] if j < len(c) else "").ljust(w)
                                 for c, w in zip(r, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_tour(quick: bool = False, only: str | None = None, out: str | os.PathLike | None =
             "shendu-tour", stream=None, debug: bool = False) -> TourResult:
    """Run the tour (or one chapter with ``only``), print the table to ``stream`` (stdout)
    and, unless ``out`` is None, write the pictures and ``report.html`` into ``out``.

    A chapter that raises is listed as "failed: ..." (``debug=True`` re-raises instead) and
    named in ``TourResult.failed``."""
    stream = sys.stdout if stream is None else stream
    names = list(CHAPTERS)
    if only is not None:
        if only not in CHAPTERS:
            raise ValueError(f"tour: unknown chapter {only!r}; choose one of "
                             f"{', '.join(names)}")
        names = [only]
    ctx = _Context(quick=quick)
    failed: list[str] = []
    start = time.perf_counter()
    for name in names:
        ch = CHAPTERS[name]
        missing = ch.missing()
        if missing:
            ctx.row(ch.algorithm, ch.who, ch.task,
                    f"not available yet (needs {', '.join(missing)})", "", None)
            continue
        try:
            ch.run(ctx)
        except Exception as e:  # one broken chapter must not hide the others' results
            if debug:
                raise
            ctx.row(ch.algorithm, ch.who, ch.task,
                    f"failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}", "", None)
            failed.append(name)
    total = time.perf_counter() - start
    table = format_table([r.cells() for r in ctx.rows])
    print(file=stream)
    print(table, file=stream)
    print(f"\n{len(names)} chapter(s) in {total:.1f} s"
          f"{' (--quick budgets)' if quick else ''}", file=stream)
    written: list[str] = []
    report = None
    if out is not None:
        written, report = _write_outputs(ctx, os.fspath(out), quick, total, stream)
    return TourResult(ctx.rows, written, report, total, failed)


def _write_outputs(ctx: _Context, out: str, quick: bool, total: float, stream):
    from shendu import __version__
    from shendu.report import MATPLOTLIB_HINT, Picture, have_matplotlib, write_html

    os.makedirs(out, exist_ok=True)
    pictures: list[Picture] = []
    if have_matplotlib():
        plots = _plots()
        if ctx.curves:
            path = os.path.join(out, "learning_curves.png")
            plots.learning_curves(path, ctx.curves, "Learning curves (test metrics per epoch)")
            pictures.append(Picture("Learning curves", path,
                                    "Training loss and test metrics after every epoch."))
        for filename, title, caption, draw, args in ctx.pictures:
            path = os.path.join(out, filename)
            draw(path, *args)
            pictures.append(Picture(title, path, caption))
    else:
        print(f"hint: {MATPLOTLIB_HINT}", file=stream)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"quick": quick, "seconds": round(total, 2), "shendu": __version__,
                   "header": list(HEADER), "rows": [list(r.cells()) for r in ctx.rows],
                   "pictures": [os.path.basename(p.path) for p in pictures]}, f, indent=1)
    report = write_html(
        os.path.join(out, "report.html"), "shendu tour: the classic algorithms of deep learning",
        HEADER, [r.cells() for r in ctx.rows], pictures,
        subtitle=f"shendu {__version__}; {'quick budgets; ' if quick else ''}"
                 f"{total:.0f} s in all; built-in data only, every run seeded.",
        notes=["History as in docs/history.md: backpropagation (reverse-mode differentiation) "
               "goes back to Linnainmaa 1970 and Werbos 1974; Rumelhart, Hinton & Williams "
               "1986 showed it learns useful hidden representations."],
        numeric_columns=(5,))
    print(f"wrote {report} ({len(pictures)} picture{'s' if len(pictures) != 1 else ''})",
          file=stream)
    return [p.path for p in pictures], report
