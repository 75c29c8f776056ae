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
seed           the seed's seven classes, called as the  each on its classic task (sin, blobs,
               seed calls them (docs/seed.md)           running sum, 8x8 images, copy-first)
=============  =======================================  ==================================

Each run shows a progress bar (with chapters in several processes, one bar counts the
chapters instead); at the end the tour prints a table (algorithm, who and when,
task, result, baseline or contrast, seconds) and writes a folder with the pictures (learning
curves, a confusion matrix, first-layer convolution filters, the RNN-vs-LSTM gradient norms
over time, an attention heatmap) and one self-contained ``report.html``. The pictures need
matplotlib (``pip install 'shendu[plot]'``); without it the tour prints a one-line hint and the
report holds the table.

Every run is seeded (``shendu.manual_seed(0)`` before each chapter), so the tour prints the
same numbers on every run on the same machine, whether its chapters run one after another in
one process or side by side in several (``jobs``). ``quick=True`` shrinks every budget (about
25 CPU seconds in all, the full tour about 120); a chapter whose building blocks are missing
from this build of shendu is listed as "not available yet" instead of failing the tour.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shendu.train import Callback

__all__ = ["Chapter", "Row", "TourResult", "CHAPTERS", "run_tour", "HEADER", "one_thread",
           "chapter_names", "default_jobs",
           "mirrored_fraction", "format_table"]

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
    #: (file name, title, caption, draw, args); ``draw`` None: already drawn (by a worker)
    pictures: list[tuple[str, str, str, Callable | None, tuple]] = field(default_factory=list)
    curves: list[tuple[str, str, dict]] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    #: every chapter of this tour (some may run in other processes)
    names: tuple[str, ...] = ()
    #: the chapter running now, and which chapter made each row, picture and curve
    chapter: str = ""
    made_by: dict = field(default_factory=lambda: {"rows": [], "pictures": {}, "curves": []})

    def picture(self, filename: str, title: str, caption: str, draw: Callable, *args) -> None:
        """Ask for a picture; it is drawn after the runs (and only with matplotlib). A later
        request for the same file name replaces an earlier one."""
        self.pictures = [p for p in self.pictures if p[0] != filename]
        self.pictures.append((filename, title, caption, draw, args))
        self.made_by["pictures"][filename] = self.chapter

    def row(self, algorithm: str, who: str, task: str, result: str, contrast: str,
            seconds: float | None) -> None:
        self.rows.append(Row(algorithm, who, task, result, contrast, seconds))
        self.made_by["rows"].append(self.chapter)

    def curve(self, title: str, ylabel: str, series: dict) -> None:
        """Add a panel to the learning-curves picture: ``{label: values per epoch}``."""
        self.curves.append((title, ylabel, series))
        self.made_by["curves"].append(self.chapter)


@dataclass
class Chapter:
    """A chapter of the tour: its table labels, the shendu pieces it needs and its run."""

    name: str
    algorithm: str
    who: str
    task: str
    needs: tuple[str, ...]
    run: Callable[[_Context], None]
    #: earlier chapters whose measurements this one quotes (they run in its process)
    quotes: tuple[str, ...] = ()
    #: about how long the full budget takes on one core (s): with several processes the
    #: longest chapters start first
    seconds: float = 1.0

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
    cpu_seconds: float = 0.0


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
        from shendu.train import GradientClipping

        callbacks.append(GradientClipping(max_norm=clip, parameters=params))
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


@contextlib.contextmanager
def one_thread():
    """Run the small models of the tour on one thread: one BLAS thread (with threadpoolctl,
    when installed) and one thread for shendu's conv/pool kernels. On matrices this small,
    extra threads only add synchronisation — and on a busy machine they wait for each
    other — so one thread is both faster and fairer to whatever else runs."""
    from shendu.functional import conv

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        blas = contextlib.nullcontext()
    else:
        blas = threadpool_limits(1)
    before = getattr(conv, "_N_THREADS", None)
    conv.set_kernel_threads(1)
    try:
        with blas:
            yield
    finally:
        if isinstance(before, int) and before >= 1:
            conv.set_kernel_threads(before)


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
    p = Perceptron(max_iter=100)
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
    p = Perceptron(max_iter=epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in progress(range(1), desc="perceptron on XOR"):
            p.fit(X, y)
    acc = p.score(X, y)
    ctx.measured["perceptron_xor"] = acc
    if p.converged_:
        how = f"converged in epoch {p.n_iter_}"
    elif p.n_iter_ < epochs:       # tol / n_iter_no_change, scikit-learn's stopping rule
        how = (f"never converges: {p.mistakes_[-1]} mistakes in epoch {p.n_iter_}, where "
               f"{p.n_iter_no_change} epochs without progress stop it")
    else:
        how = f"never converges ({p.mistakes_[-1]} mistakes in epoch {epochs} of {epochs})"
    ctx.row("Perceptron on XOR", "Marvin Minsky & Seymour Papert 1969", "XOR (4 points)",
            f"{_pct(acc)}; {how}", "not linearly separable: at most 3 of 4 right",
            time.perf_counter() - t0)


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
    ctx.curve("MLP on digits", "loss / accuracy",
              {"train loss": h["loss"], "test accuracy": h["val_accuracy"]})
    ctx.picture("confusion_matrix.png", "Confusion matrix (MLP, digits test set)",
                f"Rows: true digit; columns: predicted. {int((pred != yte).sum())} of "
                f"{len(yte)} test images wrong.", _plots().confusion_matrix,
                _confusion(yte, pred, 10), None, "MLP on digits: confusion matrix")
    # the perceptron on the same split: one linear layer, averaged (Freund & Schapire 1999)
    from shendu.models import ConvergenceWarning, Perceptron

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        p = Perceptron(max_iter=5 if ctx.quick else 20, average=True, shuffle=True,
                       random_state=0).fit(Xtr, ytr)
    ctx.row("Multi-layer perceptron + backpropagation",
            "David Rumelhart, Geoffrey Hinton & Ronald Williams 1986",
            "8x8 digits (1,438 train / 359 test), 64-128-10 ReLU, Adam",
            f"{_pct(acc)} test accuracy ({epochs} epochs)",
            f"perceptron (linear): {_pct(p.score(Xte, yte))}", time.perf_counter() - t0)


def _cnn(ctx: _Context) -> None:
    """LeCun et al. (1989): convolutions share weights across the image and learn their
    own local feature detectors; trained by backpropagation they beat a fully connected
    network of the same size class on handwritten digits. The network is the one
    :class:`shendu.models.ConvolutionalNeuralNetwork` builds (``make_cnn``)."""
    import shendu
    from shendu.data.datasets import digits
    from shendu.models.cnn import make_cnn

    t0 = time.perf_counter()
    shendu.manual_seed(0)
    Xtr, Xte, ytr, yte = digits()
    Xtr, Xte = Xtr.reshape(-1, 1, 8, 8), Xte.reshape(-1, 1, 8, 8)
    # conv 32@3x3, BN, ReLU, pool -> conv 64@3x3, BN, ReLU, pool -> (B, 64, 2, 2)
    # -> dropout -> 128 -> 10
    model = make_cnn((1, 8, 8), 10, conv_channels=(32, 64), kernel_size=3,
                     hidden_layer_sizes=(128,), batch_norm=True, dropout=0.3)
    epochs = 8 if ctx.quick else 30
    h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=3e-3, batch_size=32,
               desc="CNN on digits")
    pred = _predict(model, Xte).argmax(1)
    acc = float((pred == yte).mean())
    mlp = ctx.measured.get("mlp_digits")
    ctx.row("Convolutional network", "Yann LeCun et al. 1989 (LeNet-5: 1998)",
            "8x8 digits, conv 32@3x3, pool, conv 64@3x3, pool, 128, 10 (batch norm, dropout)",
            f"{_pct(acc)} test accuracy ({epochs} epochs, {_n_params(model):,} weights)",
            f"MLP: {_pct(mlp)} ({ctx.measured['mlp_digits_params']:,} weights)"
            if mlp is not None else "MLP: run `shendu tour --only mlp`",
            time.perf_counter() - t0)
    ctx.curve("CNN on digits", "loss / accuracy",
              {"train loss": h["loss"], "test accuracy": h["val_accuracy"]})
    p = _plots()
    ctx.picture("confusion_matrix.png", "Confusion matrix (CNN, digits test set)",
                f"Rows: true digit; columns: predicted. {int((pred != yte).sum())} of "
                f"{len(yte)} test images wrong.",
                p.confusion_matrix, _confusion(yte, pred, 10), None,
                "CNN on digits: confusion matrix")
    ctx.picture("conv_filters.png", "First-layer convolution filters",
                "The 32 learned 3x3 kernels of the first convolution (each scaled to its own "
                "range): edge and stroke detectors.",
                p.conv_filters, model[0].weight.data.copy(),
                "CNN on digits: first-layer 3x3 filters")


def _lstm(ctx: _Context) -> None:
    """Hochreiter & Schmidhuber (1997): the error signal of a simple recurrent network
    (Elman 1990) shrinks geometrically as it flows back through time (Hochreiter 1991;
    Bengio, Simard & Frasconi 1994); the LSTM's additive cell state carries it across
    long lags, so an LSTM learns the adding problem and a tanh RNN of the same size does
    not.

    Both networks are the one :class:`shendu.models.LongShortTermMemory` /
    :class:`~shendu.models.RecurrentNeuralNetwork` build (``RecurrentHeadNet``: the
    recurrent layer and a linear head on the last step), trained the same way (Adam,
    gradient norm clipped at 1). The gradient norms over time come from
    :func:`shendu.nn.bptt_gradient_norms` on one test batch of the trained models."""
    import shendu
    from shendu import nn
    from shendu.data.sequences import adding_problem
    from shendu.models.recurrent import RecurrentHeadNet

    T = 30 if ctx.quick else 100
    n_train, n_test = (2000, 500) if ctx.quick else (5000, 1000)
    epochs = 12 if ctx.quick else 15
    hidden = 32
    Xtr, ytr = adding_problem(n_train, T, seed=0)
    Xte, yte = adding_problem(n_test, T, seed=1)
    ytr, yte = ytr.reshape(-1, 1), yte.reshape(-1, 1)
    base = float(((yte - ytr.mean()) ** 2).mean())
    results = {}
    for kind in ("rnn", "lstm"):
        t0 = time.perf_counter()
        shendu.manual_seed(0)
        model = RecurrentHeadNet(kind, 2, hidden, 1, 1)
        h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=1e-2, batch_size=32,
                   loss="mse", clip=1.0, desc=f"{kind.upper()} on adding T={T}")
        mse = float(((_predict(model, Xte) - yte) ** 2).mean())
        model.eval()
        y_b = shendu.from_numpy(yte[:128])

        def last_step_mse(out, head=model.head, y=y_b):   # out (B, T, H): loss at step T
            return ((head(out[:, -1]) - y) ** 2).mean()

        norms = nn.bptt_gradient_norms(model.rnn, shendu.from_numpy(Xte[:128]),
                                       last_step_mse)
        results[kind] = (mse, h, norms, time.perf_counter() - t0)
    r_mse, l_mse = results["rnn"][0], results["lstm"][0]
    ctx.measured["lstm_mse"], ctx.measured["rnn_mse"] = l_mse, r_mse
    ratio = {k: f"{results[k][2][0] / results[k][2][-1]:.1e}" if results[k][2][0] > 0
             else "0 (below float32's range)" for k in results}
    ctx.row("Long short-term memory (LSTM)",
            "Sepp Hochreiter & Jürgen Schmidhuber 1997",
            f"adding problem, T={T}, {hidden} units ({n_train:,} train sequences)",
            f"test MSE {l_mse:.4f} ({'solved' if l_mse < 0.05 else 'not solved'})",
            f"tanh RNN (Elman 1990), same size and budget: {r_mse:.4f}; "
            f"predicting the mean: {base:.3f}", results["lstm"][3])
    ctx.row("Simple recurrent network (tanh RNN)", "Jeffrey Elman 1990",
            f"adding problem, T={T}, {hidden} units",
            f"test MSE {r_mse:.4f} ({'solved' if r_mse < 0.05 else 'not solved'})",
            f"vanishing gradient: ||dL/dh_1|| / ||dL/dh_T|| = {ratio['rnn']} "
            f"(LSTM {ratio['lstm']})", results["rnn"][3])
    ctx.curve(f"Adding problem (T={T})", "test MSE",
              {"RNN": results["rnn"][1]["val_mse"],
               "LSTM": results["lstm"][1]["val_mse"]})
    ctx.picture("rnn_vs_lstm_gradients.png", "Gradient norm over time: RNN vs LSTM",
                f"||dL/dh_t|| (shendu.nn.bptt_gradient_norms) for 128 test sequences of the "
                f"trained models, loss at the last step t={T}. " + _gradient_caption(results, T),
                _plots().gradient_norms, {"tanh RNN": results["rnn"][2],
                                          "LSTM": results["lstm"][2]},
                f"Backpropagation through time on the adding problem (T={T})")


def _gradient_caption(results: dict, T: int) -> str:
    """Say what the measured gradient norms show, not what they are expected to show."""
    decay = {k: results[k][2][0] / results[k][2][-1] for k in ("rnn", "lstm")}
    if decay["rnn"] < decay["lstm"]:
        return ("The tanh RNN's gradient dies out going back in time (Hochreiter 1991; "
                "Bengio, Simard & Frasconi 1994); the LSTM's reaches the first steps.")
    return (f"At T={T} the trained tanh RNN's gradient still reaches the first steps; the "
            "vanishing gradient (Hochreiter 1991; Bengio, Simard & Frasconi 1994) shows at "
            "T=100 in the full tour, where the RNN's gradient underflows and the LSTM's does "
            "not.")


class _HeldOutExact(Callback):
    """Exact-sequence accuracy of an :class:`~shendu.models.AttentionMechanism` on held-out
    data after every epoch (for the learning curves)."""

    def __init__(self, est, X, y) -> None:
        self.est, self.X, self.y, self.values = est, X, y, []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.values.append(self.est.score(self.X, self.y))
        logs["val_exact"] = self.values[-1]


def mirrored_fraction(weights: list[np.ndarray]) -> float:
    """The fraction of output steps ``i`` of reversals whose most-attended source position is
    the mirrored one, ``L - 1 - i`` (1.0: an exact anti-diagonal)."""
    hits = total = 0
    for w in weights:                                   # (len(output), L)
        n = min(w.shape[0], w.shape[1])
        L = w.shape[1]
        hits += int((w[:n].argmax(1) == L - 1 - np.arange(n)).sum())
        total += n
    return hits / max(total, 1)


def _attention(ctx: _Context) -> None:
    """Bahdanau, Cho & Bengio (2014): an encoder-decoder that squeezes the whole input
    into one vector (Cho et al. 2014) forgets long inputs; letting the decoder look back at
    every encoder state, weighted by a learned alignment, removes that bottleneck — and the
    alignment learned for reversal is the anti-diagonal. Both runs are
    :class:`shendu.models.AttentionMechanism`, with ``attention=True`` and ``False``."""
    from shendu.data.tasks import sequence_task
    from shendu.models import AttentionMechanism

    lo, hi = (5, 8) if ctx.quick else (10, 20)
    n_train = 2000 if ctx.quick else 6000
    epochs = 6 if ctx.quick else 5
    vocab = 10
    tr = sequence_task("reverse", n_train, (lo, hi), vocab, seed=0)
    te = sequence_task("reverse", 300, (lo, hi), vocab, seed=1)
    out = {}
    for use in (False, True):
        t0 = time.perf_counter()
        m = AttentionMechanism(vocab_size=vocab, pad_id=tr.pad_id, attention=use,
                               max_iter=epochs, random_state=0, verbose=0)
        held = _HeldOutExact(m, te.src, te.tgt)
        m.callbacks = [held, _ProgressBar(f"seq2seq {'with' if use else 'without'} "
                                          f"attention", epochs)]
        m.fit(tr.src, tr.tgt)
        m.callbacks = None
        out[use] = (m.score(te.src, te.tgt), m, held.values, time.perf_counter() - t0)
    m = out[True][1]
    srcs = [te.src[i, :te.lengths[i]] for i in range(len(te))]
    mirrored = mirrored_fraction(m.attention_weights(srcs))
    ctx.measured["attention_exact"], ctx.measured["bottleneck_exact"] = out[True][0], \
        out[False][0]
    ctx.row("Encoder-decoder with additive attention",
            "Dzmitry Bahdanau, Kyunghyun Cho & Yoshua Bengio 2014",
            f"reverse digit sequences, length {lo}-{hi} ({n_train:,} train)",
            f"{_pct(out[True][0])} exact sequences (300 held out); attention peaks on the "
            f"mirrored position at {_pct(mirrored)} of steps",
            f"without attention (Cho et al. 2014), same budget: {_pct(out[False][0])}",
            out[True][3] + out[False][3])
    ctx.curve(f"Reversal, length {lo}-{hi}", "held-out exact sequences",
              {"with attention": out[True][2], "without": out[False][2]})
    k = int(np.argmax(te.lengths))                     # the longest held-out sequence
    src, tgt = srcs[k], te.tgt[k, :te.lengths[k]]
    pred, weights = m.predict(src, return_attention=True)
    ctx.picture("attention.png", "Attention weights (reversal)",
                "Which source position each output step attends to, for a held-out sequence "
                "the model has never seen: the anti-diagonal is the reversal it learned, "
                "without being told.",
                _plots().attention_heatmap, weights, [int(v) for v in src],
                [int(v) for v in pred],
                f"Seq2seq with attention: reversing {''.join(map(str, src))}"
                + ("" if np.array_equal(pred, tgt) else " (wrong)"))


def _transformer(ctx: _Context) -> None:
    """Vaswani et al. (2017): self-attention lets every token look at every other one in
    one step; here each digit image is read as a sequence of its 8 pixel rows. The network
    is the one :class:`shendu.models.TransformerClassifier` builds
    (``SequenceEncoderNet``: a pre-norm encoder over projected rows, mean-pooled)."""
    import shendu
    from shendu.models.attention import SequenceEncoderNet

    t0 = time.perf_counter()
    shendu.manual_seed(0)
    Xtr, Xte, ytr, yte = digits_rows()
    d, layers = (32, 1) if ctx.quick else (64, 2)
    model = SequenceEncoderNet(10, d_model=d, nhead=4, num_layers=layers,
                               dim_feedforward=2 * d, dropout=0.0 if ctx.quick else 0.1,
                               n_features=8, max_len=8)
    epochs = 8 if ctx.quick else 20
    h = _train(model, Xtr, ytr, Xte, yte, epochs=epochs, lr=3e-3 if ctx.quick else 2e-3,
               batch_size=32,
               desc="Transformer on digits")
    acc = float((_predict(model, Xte).argmax(1) == yte).mean())
    mlp = ctx.measured.get("mlp_digits")
    ctx.row("Transformer encoder (self-attention)", "Ashish Vaswani et al. 2017",
            f"8x8 digits read as 8 row tokens, {layers} layer{'s' if layers > 1 else ''}, d={d}, "
            f"4 heads",
            f"{_pct(acc)} test accuracy ({epochs} epochs)",
            f"MLP on the flat pixels: {_pct(mlp)}" if mlp is not None
            else "MLP: run `shendu tour --only mlp`", time.perf_counter() - t0)
    ctx.curve("Transformer on digits", "loss / accuracy",
              {"train loss": h["loss"], "test accuracy": h["val_accuracy"]})
    if "attention" not in ctx.names:      # else that chapter draws attention.png
        layer = model.encoder.layers[0]
        with shendu.no_grad():
            model.eval()
            x = layer.norm1(model.pos(model.embed(shendu.from_numpy(Xte[:1]))))
            _, w = layer.self_attn(x, x, x, need_weights=True)
        ctx.picture("attention.png", "Self-attention weights (transformer, one digit)",
                    "How much each pixel row (output) attends to every other row (input), "
                    "averaged over the 4 heads.", _plots().attention_heatmap,
                    np.asarray(w.data)[0], [f"r{i}" for i in range(8)],
                    [f"r{i}" for i in range(8)], f"Transformer: rows of a '{yte[0]}'")


def _seed_tasks(quick: bool):
    """The seed's classes built and called the seed's way, each on its classic task (the
    same calls as docs/seed.md): ``(class name, who, task, model, X, y, epochs, lr)``."""
    from shendu.data.datasets import blobs, digits
    from shendu.models import (
        AttentionMechanism,
        ConvolutionalNeuralNetwork,
        LongShortTermMemory,
        MultiLayerPerceptron,
        NeuralNetwork,
        Perceptron,
        RecurrentNeuralNetwork,
    )

    rng = np.random.default_rng(0)
    Xs = np.linspace(-np.pi, np.pi, 64)[:, None]
    Xb, _, yb, _ = blobs(n_samples=60, dtype="float64")
    S = rng.uniform(0, 1, (64, 8, 1))                                   # (N, T, 1)
    running = np.cumsum(S, 1) / 8
    Xtr, _, ytr, _ = digits()
    images = Xtr[:100].reshape(-1, 8, 8)
    images = (images - images.mean()) / images.std()
    tok = rng.integers(0, 4, (64, 6))
    Xa = np.zeros((64, 6, 5))
    Xa[np.arange(64)[:, None], np.arange(6), tok] = 1.0
    Xa[:, 0, 4] = 1.0                                                   # flags step 0
    ya = np.repeat(np.eye(4)[tok[:, 0]][:, None], 6, 1)
    return [
        ("NeuralNetwork(1, 16, 1)", "McCulloch & Pitts 1943 (the neuron)", "fit sin(x)",
         NeuralNetwork(1, 16, 1, random_state=0), Xs, np.sin(Xs), 300, 0.1),
        ("Perceptron(2, 1)", "Frank Rosenblatt 1958", "separable blobs (mistakes)",
         Perceptron(2, 1), Xb, np.where(yb == 1, 1, -1), 100, 1.0),
        ("MultiLayerPerceptron(1, 16, 1)", "Rumelhart, Hinton & Williams 1986", "fit sin(x)",
         MultiLayerPerceptron(1, 16, 1, random_state=0), Xs, np.sin(Xs), 300, 0.1),
        ("RecurrentNeuralNetwork(1, 16, 1)", "Jeffrey Elman 1990", "running sum, T=8",
         RecurrentNeuralNetwork(1, 16, 1, random_state=0), S, running, 300, 0.1),
        ("ConvolutionalNeuralNetwork(1, 16, 10)", "Yann LeCun et al. 1989/1998",
         "100 handwritten 8x8 images, one-hot",
         ConvolutionalNeuralNetwork(1, 16, 10, random_state=0), images, np.eye(10)[ytr[:100]],
         500 if quick else 600, 2.0),
        ("LongShortTermMemory(1, 16, 1)", "Hochreiter & Schmidhuber 1997",
         "sum of 8 steps, at the last step", LongShortTermMemory(1, 16, 1, random_state=0), S,
         running[:, -1], 300, 0.5),
        ("AttentionMechanism(5, 16, 4)", "Bahdanau 2014; Vaswani et al. 2017",
         "copy the first token (T=6)", AttentionMechanism(5, 16, 4, random_state=0), Xa, ya,
         300, 1.0),
    ]


def _seed(ctx: _Context) -> None:
    """The seed's own calls — ``Model(input_dim, hidden_dim, output_dim)``, ``forward``,
    ``backward(y, learning_rate)``, ``train(X, y, epochs, learning_rate)`` — on each of its
    classes, each on its classic task (docs/seed.md, section 4): how far ``train`` brings
    the loss (the perceptron: its mistakes) down."""
    from shendu.models import ConvergenceWarning
    from shendu.utils import progress

    for name, who, task, model, X, y, epochs, lr in _seed_tasks(ctx.quick):
        t0 = time.perf_counter()
        for _ in progress(range(1), desc=f"seed: {name.split('(')[0]}"):
            out = model.forward(X)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                history = model.train(X, y, epochs, lr)
        fall = 1 - history[-1] / history[0] if history[0] else 0.0
        what = "mistakes" if name.startswith("Perceptron") else "loss"
        ctx.row(f"seed: {name}", who, task,
                f"{what} {history[0]:.3g} -> {history[-1]:.3g} (-{100 * fall:.0f}%) in "
                f"{len(history)} epochs", f"forward: {tuple(out.shape)}",
                time.perf_counter() - t0)


def _fsdd_root():
    """The shared FSDD folder ($SHENDU_DATA/fsdd, else ../shared/data/fsdd), or None."""
    from shendu.cli import _data_root

    root = _data_root(None)
    return root / "fsdd" if root is not None and (root / "fsdd").is_dir() else None


def _speech(ctx: _Context) -> None:
    """Speech recognition from raw recordings: :class:`shendu.models.AudioClassifier`
    (log-mel front end inside the network, 1-D convolutions over time, speed perturbation
    and SpecAugment) on FSDD's spoken digits, FSDD's split; the contrast is a linear model
    on per-utterance mean and deviation of 20 MFCCs. docs/speech.md has the full-size and
    leave-one-speaker-out numbers."""
    import shendu
    from shendu.audio import MFCC, AmplitudeToDB, MelSpectrogram
    from shendu.data.fsdd import fsdd_recordings
    from shendu.models import AudioClassifier, MLPClassifier

    t0 = time.perf_counter()
    task = "spoken digits (FSDD, 5 speakers, 8 kHz WAVs), test takes 0-4"
    root = _fsdd_root()
    if root is None:
        ctx.row("Speech recognition (conv net on log-mels)",
                "Waibel et al. 1989 (TDNN); Park et al. 2019 (SpecAugment)",
                task, "skipped: FSDD recordings not found ($SHENDU_DATA/fsdd)", "", None)
        return
    rec = fsdd_recordings(root)
    n_train = 10 if ctx.quick else 45            # training takes per speaker and digit
    tr = np.flatnonzero((rec.takes >= 5) & (rec.takes < 5 + n_train))
    te = np.flatnonzero(rec.takes < 5)
    Xtr, Xte = [rec.waveforms[i] for i in tr], [rec.waveforms[i] for i in te]
    ytr, yte = rec.labels[tr], rec.labels[te]
    shendu.manual_seed(0)
    # --quick: a small network, light augmentation (the defaults' heavier one needs epochs);
    # the full tour: the defaults' network and augmentation on a shorter budget (22 epochs
    # instead of 50, 0.8 s windows: 98% of the recordings are shorter) with the settings that
    # learn fastest in it (batches of 32, lighter mixup); docs/tour.md has the measurements
    kw = dict(max_iter=30, channels=(32, 48, 64), speed_range=0.1, noise_snr=None, freq_mask=4,
              time_mask=8) if ctx.quick else \
        dict(max_iter=22, max_seconds=0.8, batch_size=32, mixup=0.2)
    model = AudioClassifier(random_state=0, **kw).fit(Xtr, ytr)
    pred = model.predict(Xte)
    acc = float((pred == yte).mean())
    mfcc = MFCC(8000, n_mfcc=20, melkwargs=dict(n_fft=256, hop_length=80, n_mels=40))

    def pooled(waves):
        out = []
        with shendu.no_grad():
            for x in waves:
                m = mfcc(shendu.from_numpy(x)).data
                out.append(np.concatenate([m.mean(1), m.std(1)]))
        return np.stack(out)

    lin = MLPClassifier(hidden_layer_sizes=(), max_iter=60 if ctx.quick else 200,
                        learning_rate_init=1e-2, random_state=0).fit(pooled(Xtr), ytr)
    lin_acc = lin.score(pooled(Xte), yte)
    ctx.row("Speech recognition (conv net on log-mels)",
            "Waibel et al. 1989 (TDNN); Park et al. 2019 (SpecAugment)",
            f"{task}; {len(Xtr)} training recordings",
            f"{_pct(acc)} test accuracy ({model.n_iter_} epochs)",
            f"linear model on pooled MFCCs: {_pct(lin_acc)}", time.perf_counter() - t0)
    first = {}
    for i in te:
        if rec.speakers[i] == "jackson" and rec.labels[i] not in first:
            first[int(rec.labels[i])] = rec.waveforms[i]
    front = MelSpectrogram(8000, n_fft=256, hop_length=80, n_mels=40)
    db = AmplitudeToDB(top_db=80.0)
    with shendu.no_grad():
        specs = [db(front(shendu.from_numpy(first[d]))).data for d in sorted(first)]
    from shendu.audio.plots import logmel_grid

    ctx.picture("speech_logmel.png", "Log-mel spectrograms of the ten digits",
                "One recording of each digit (speaker jackson, take 0): 40 mel bands, 10 ms "
                "frames, dB. What the network's front end computes from the waveform.",
                logmel_grid, specs, [f"'{d}'" for d in sorted(first)], 0.01,
                "Spoken digits: log-mel spectrograms")
    ctx.picture("speech_confusion.png", "Confusion matrix (spoken digits)",
                f"Rows: spoken digit; columns: predicted. {int((pred != yte).sum())} of "
                f"{len(yte)} test recordings wrong.",
                _plots().confusion_matrix, _confusion(yte, pred, 10), None,
                "AudioClassifier on FSDD: confusion matrix")


def _game_ai(ctx: _Context) -> None:
    """Mnih et al. (2013, 2015): deep Q-learning (replay, target network, Double-DQN
    targets, Huber loss) balances CartPole against a random policy; Tesauro (1992): a value
    network that learns tic-tac-toe by TD self-play only, checked against perfect play.
    docs/game_ai.md has the 5-seed and Acrobot numbers."""
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        ctx.row("Deep Q-network; TD self-play", "Mnih et al. 2015; Tesauro 1992",
                "CartPole-v1; tic-tac-toe", "skipped: pip install 'shendu[rl]'", "", None)
        return
    from shendu.rl import DQN, EvalCallback, TDSelfPlay, evaluate_policy
    from shendu.rl.plots import frame_strip, learning_curve, rollout_frames
    from shendu.rl.tictactoe import RandomPlayer, count_losses, play_match

    t0 = time.perf_counter()
    budget = 20_000 if ctx.quick else 100_000
    agent = DQN("CartPole-v1", seed=0)
    cb = EvalCallback("CartPole-v1", eval_freq=2500, n_eval_episodes=10,
                      reward_threshold=490, seed=1000)
    agent.learn(budget, callback=cb)
    mean, std = evaluate_policy(agent, "CartPole-v1", 20 if ctx.quick else 100, seed=10_000)

    class _Random:
        def predict(self, obs, deterministic=True):
            return int(rng.integers(2)), None

    rng = np.random.default_rng(0)
    rand, _ = evaluate_policy(_Random(), "CartPole-v1", 100, seed=10_000)
    ctx.row("Deep Q-network (DQN)", "Volodymyr Mnih et al. 2013/2015; van Hasselt et al. 2016",
            f"CartPole-v1, {agent.num_timesteps} environment steps",
            f"greedy return {mean:.0f} ± {std:.0f} (solved: 475)",
            f"random policy: {rand:.0f}", time.perf_counter() - t0)
    h = agent.history
    ctx.picture("dqn_cartpole.png", "DQN learning CartPole",
                "Return of every training episode (exploring) and of greedy evaluations, "
                "against environment steps; dashed: a random policy.",
                learning_curve, h["episode_end_steps"], h["episode_returns"],
                h.get("eval", []), rand)
    try:
        frames, steps, length = rollout_frames(agent, "CartPole-v1", 6, seed=3)
        ctx.picture("dqn_frames.png", "The trained agent balancing the pole",
                    f"Six frames of one greedy episode ({length} steps; Gymnasium's "
                    "rgb_array rendering).", frame_strip, frames, steps)
    except Exception:  # rendering needs pygame (gymnasium[classic-control])
        pass

    t0 = time.perf_counter()
    games = 5_000 if ctx.quick else 30_000
    player = TDSelfPlay(seed=0).learn(games)
    l1, g1 = count_losses(player, True, "minimax")
    l2, g2 = count_losses(player, False, "minimax")
    r1 = play_match(player, RandomPlayer(1), 1000)
    r2 = play_match(RandomPlayer(2), player, 1000)
    ctx.row("TD self-play (value network)", "Gerald Tesauro 1992 (TD-Gammon)",
            f"tic-tac-toe, {games} self-play games",
            f"vs perfect play: {l1 + l2} losses in {g1 + g2} games (every opening, "
            "both sides)",
            f"vs random: wins {r1['first'] / 10:.1f}% as X, {r2['second'] / 10:.1f}% as O",
            time.perf_counter() - t0)


def digits_rows():
    """The digits split of ``shendu.data.datasets.digits`` as (N, 8 rows, 8 pixels)."""
    from shendu.data.datasets import digits

    Xtr, Xte, ytr, yte = digits()
    return Xtr.reshape(-1, 8, 8), Xte.reshape(-1, 8, 8), ytr, yte


CHAPTERS: dict[str, Chapter] = {c.name: c for c in [
    Chapter("perceptron", "Perceptron", "Frank Rosenblatt 1958; Minsky & Papert 1969",
            "separable blobs; XOR", ("models.Perceptron",), _perceptron, (), 0.1),
    Chapter("mlp", "Multi-layer perceptron + backpropagation",
            "David Rumelhart, Geoffrey Hinton & Ronald Williams 1986", "XOR; 8x8 digits",
            ("train.fit", "nn.Linear", "optim.Adam"), _mlp, ("perceptron",), 3),
    Chapter("cnn", "Convolutional network", "Yann LeCun et al. 1989 (LeNet-5: 1998)",
            "8x8 digits", ("train.fit", "nn.Conv2d", "nn.MaxPool2d"), _cnn, ("mlp",), 5),
    Chapter("lstm", "Long short-term memory vs simple RNN",
            "Sepp Hochreiter & Jürgen Schmidhuber 1997; Jeffrey Elman 1990",
            "adding problem", ("train.fit", "nn.RNN", "nn.LSTM"), _lstm, (), 16),
    Chapter("attention", "Encoder-decoder with additive attention",
            "Dzmitry Bahdanau, Kyunghyun Cho & Yoshua Bengio 2014",
            "reverse digit sequences", ("models.AttentionMechanism",), _attention, (), 32),
    Chapter("transformer", "Transformer encoder (self-attention)",
            "Ashish Vaswani et al. 2017", "8x8 digits as 8 row tokens",
            ("train.fit", "nn.TransformerEncoderLayer"), _transformer, ("mlp",), 6),
    Chapter("seed", "The seed's classes, as the seed calls them",
            "McCulloch & Pitts 1943 ... Vaswani et al. 2017",
            "sin; blobs; running sum; 8x8 images; copy-first-token",
            ("models.AttentionMechanism", "models.NeuralNetwork"), _seed, (), 2),
    Chapter("speech", "Speech recognition (conv net on log-mels)",
            "Waibel et al. 1989 (TDNN); Park et al. 2019 (SpecAugment)",
            "spoken digits (FSDD recordings)", ("models.AudioClassifier",), _speech, (), 29),
    Chapter("game_ai", "Deep Q-learning; TD self-play",
            "Mnih et al. 2013/2015; Gerald Tesauro 1992", "CartPole-v1; tic-tac-toe",
            ("rl.DQN", "rl.TDSelfPlay"), _game_ai, (), 26),
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


def chapter_names(only) -> list[str]:
    """The chapters to run, in the tour's order: all of them (``only`` None), or those that
    ``only`` names (one name, names separated by commas, or a list of names)."""
    names = list(CHAPTERS)
    if only is None:
        return names
    asked = [n.strip() for n in only.split(",")] if isinstance(only, str) else list(only)
    unknown = [n for n in asked if n not in CHAPTERS]
    if unknown or not asked:
        raise ValueError(f"tour: unknown chapter {', '.join(map(repr, unknown)) or repr(only)};"
                         f" choose from {', '.join(names)}")
    return [n for n in names if n in asked]


def default_jobs() -> int:
    """The cores this process may use (the tour's default number of processes)."""
    from shendu.functional.conv import usable_cpus

    return usable_cpus()


def run_tour(quick: bool = False, only=None, out: str | os.PathLike | None = "shendu-tour",
             stream=None, debug: bool = False, jobs: int = 1) -> TourResult:
    """Run the tour (or the chapters ``only`` names: one name, a comma-separated string or
    a list), print the table to ``stream`` (stdout) and, unless ``out`` is None, write the
    pictures and ``report.html`` into ``out``.

    ``jobs`` > 1 runs chapters in that many processes at once, each on one thread (a
    chapter that quotes another's measurement runs after it, in the same process); the
    results are those of ``jobs=1``, which runs every chapter in this process, one after
    another. A chapter that raises is listed as "failed: ..." (``debug=True`` re-raises
    instead, and runs in this process) and named in ``TourResult.failed``."""
    stream = sys.stdout if stream is None else stream
    names = chapter_names(only)
    if int(jobs) < 1:
        raise ValueError(f"tour: jobs must be >= 1, got {jobs}")
    groups = _groups(names)
    # several processes need an interpreter to start (an embedding one may have none)
    jobs = 1 if debug or not sys.executable else min(int(jobs), len(groups))
    failed: list[str] = []
    start, cpu0 = time.perf_counter(), time.process_time()
    if jobs == 1:
        ctx = _Context(quick=quick, names=tuple(names))
        with one_thread():
            for name in names:
                _run_chapter(ctx, name, failed, debug)
        cpu_workers = 0.0
    else:
        ctx, cpu_workers = _run_in_processes(groups, names, quick,
                                             None if out is None else os.fspath(out), jobs,
                                             failed)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0 + cpu_workers
    table = format_table([r.cells() for r in ctx.rows])
    print(file=stream)
    print(table, file=stream)
    how = "" if jobs == 1 else f", {jobs} processes"
    print(f"\n{len(names)} chapter(s) in {total:.1f} s ({cpu:.1f} s CPU{how})"
          f"{' (--quick budgets)' if quick else ''}", file=stream)
    written: list[str] = []
    report = None
    if out is not None:
        written, report = _write_outputs(ctx, os.fspath(out), quick, total, cpu, stream, jobs)
    return TourResult(ctx.rows, written, report, total, failed, cpu)


def _run_chapter(ctx: _Context, name: str, failed: list[str], debug: bool) -> None:
    ch = CHAPTERS[name]
    ctx.chapter = name
    missing = ch.missing()
    if missing:
        ctx.row(ch.algorithm, ch.who, ch.task,
                f"not available yet (needs {', '.join(missing)})", "", None)
        return
    try:
        ch.run(ctx)
    except Exception as e:  # one broken chapter must not hide the others' results
        if debug:
            raise
        ctx.row(ch.algorithm, ch.who, ch.task,
                f"failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}", "", None)
        failed.append(name)


def _groups(names: list[str]) -> list[list[str]]:
    """``names`` in groups that run in one process each: a chapter joins the group of a
    chapter it quotes (when that one runs too). Each group keeps the tour's order."""
    group_of: dict[str, list[str]] = {}
    groups: list[list[str]] = []
    for n in names:
        home = next((group_of[q] for q in CHAPTERS[n].quotes if q in group_of), None)
        if home is None:
            home = []
            groups.append(home)
        home.append(n)
        group_of[n] = home
    return groups


def _run_in_processes(groups, names, quick: bool, out: str | None, jobs: int,
                      failed: list[str]) -> tuple[_Context, float]:
    """Run the groups of chapters on ``jobs`` worker processes (fresh Pythons running
    :func:`_worker_main`, each on one thread), the longest groups first, a group to each
    worker that is free; gather their rows, pictures (drawn by the workers), curves and CPU
    time into one context, in the tour's order. Work and results travel as JSON files: the
    parent writes a group's file and its path to a worker's stdin, the worker writes the
    result file (a worker that dies fails its group, and a new one takes the next)."""
    from shendu.utils import progress

    order = sorted(groups, key=lambda g: -sum(CHAPTERS[n].seconds for n in g))
    tmp = tempfile.mkdtemp(prefix="shendu-tour-")
    free: list[_Worker] = []
    busy: dict = {}                      # worker -> (group, result path)
    done: dict[str, dict] = {}
    cpu = 0.0
    bar = progress(None, desc="tour chapters", total=len(names))
    shown, ticked = None, time.monotonic()
    started = itertools.count()
    try:
        queue = []                               # (group, its work file, its result file)
        for k, group in enumerate(order):
            work, result = os.path.join(tmp, f"{k}.json"), os.path.join(tmp, f"{k}.result.json")
            with open(work, "w", encoding="utf-8") as f:
                json.dump({"chapters": group, "quick": quick, "out": out, "names": names,
                           "result": result}, f)
            queue.append((group, work, result))
        while queue or busy:
            while queue and len(busy) < jobs:
                w = free.pop() if free else _Worker(tmp, next(started))
                group, work, result = queue.pop(0)
                # a worker that died before taking the work: no result to wait for
                busy[w] = (group, result if w.send(work) else None)
            time.sleep(0.05)
            for w in list(busy):
                group, result = busy[w]
                if result is not None and os.path.exists(result):
                    with open(result, encoding="utf-8") as f:
                        res = json.load(f)
                    busy.pop(w)
                    free.append(w)
                elif result is None or w.proc.poll() is not None:
                    busy.pop(w)
                    res = {"chapters": {}, "error": w.death()}
                else:
                    continue
                for n in group:
                    done[n] = res["chapters"].get(n) or _failed_chapter(n, res["error"])
                cpu += res.get("cpu", 0.0)
                bar.update(len(group))
            now = ", ".join(n for g, _ in busy.values() for n in g)
            if now != shown:
                bar.set_postfix_str(now)
                shown, ticked = now, time.monotonic()
            elif time.monotonic() - ticked > 1.0:  # let the elapsed time tick
                bar.refresh()
                ticked = time.monotonic()
        for w in free:
            cpu += w.close()
        free = []
    finally:
        for w in [*busy, *free]:              # interrupted: stop the rest
            w.kill()
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ctx = _Context(quick=quick, names=tuple(names))
    for n in names:
        part = done[n]
        ctx.chapter = n
        for cells in part["rows"]:
            ctx.row(*cells)
        for title, ylabel, series in part["curves"]:
            ctx.curve(title, ylabel, series)
        for filename, title, caption in part["pictures"]:
            ctx.pictures.append((filename, title, caption, None, ()))
        failed.extend(part["failed"])
    return ctx, cpu


class _Worker:
    """A worker process of :func:`_run_in_processes`: a fresh Python on this shendu."""

    def __init__(self, tmp: str, k: int) -> None:
        import shendu

        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(shendu.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        self.log = open(os.path.join(tmp, f"worker{k}.log"), "w+", encoding="utf-8")
        self.cpu_file = os.path.join(tmp, f"worker{k}.cpu")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from shendu.tour import _worker_main; _worker_main()",
             str(os.getpid()), self.cpu_file], env=env, stdin=subprocess.PIPE,
            stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def send(self, spec: str) -> bool:
        """Give the worker a group's work file; False when it has died."""
        try:
            self.proc.stdin.write(spec + "\n")
            self.proc.stdin.flush()
        except OSError:
            return False
        return True

    def death(self) -> str:
        """Why the worker ended (its exit code and last line of output)."""
        code = self.proc.wait()
        self.log.seek(0)
        lines = [ln.strip() for ln in self.log.read().splitlines() if ln.strip()]
        self.log.close()
        return (f"worker process exited with code {code}: "
                f"{lines[-1][:200] if lines else 'no output'}")

    def close(self) -> float:
        """Let the worker end (no more work); the CPU time it spent between the groups."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()
        self.log.close()
        try:
            with open(self.cpu_file, encoding="utf-8") as f:
                return float(f.read())
        except (OSError, ValueError):
            return 0.0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def _failed_chapter(name: str, error: str) -> dict:
    ch = CHAPTERS[name]
    return {"rows": [[ch.algorithm, ch.who, ch.task, f"failed: {error}", "", None]],
            "curves": [], "pictures": [], "failed": [name]}


def _worker_main() -> None:
    """A worker of :func:`run_tour` (``argv``: the tour's process id, a file for its CPU
    time): for each work file named on stdin, run its chapters on one thread, draw their
    pictures into its ``out`` folder, and write each chapter's rows, curves and picture
    titles, and the CPU time, to its ``result`` file; at the end of stdin write the CPU
    time not yet reported."""
    threading.Thread(target=_exit_with, args=(int(sys.argv[1]),), daemon=True).start()
    reported = 0.0
    with one_thread():
        for line in sys.stdin:
            with open(line.strip(), encoding="utf-8") as f:
                spec = json.load(f)
            _run_group(spec, time.process_time() - reported)
            reported = time.process_time()
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(repr(time.process_time() - reported))


def _run_group(spec: dict, cpu_before: float) -> None:
    cpu0 = time.process_time()
    ctx = _Context(quick=bool(spec["quick"]), names=tuple(spec["names"]))
    failed: list[str] = []
    for name in spec["chapters"]:
        _run_chapter(ctx, name, failed, debug=False)
    out = spec["out"]
    from shendu.report import have_matplotlib

    if out is not None and have_matplotlib():
        os.makedirs(out, exist_ok=True)
        for filename, _, _, draw, args in ctx.pictures:
            draw(os.path.join(out, filename), *args)
    made = ctx.made_by
    parts = {n: {"rows": [dataclasses.astuple(r) for r, m in zip(ctx.rows, made["rows"])
                          if m == n],
                 "curves": [c for c, m in zip(ctx.curves, made["curves"]) if m == n],
                 "pictures": [p[:3] for p in ctx.pictures if made["pictures"].get(p[0]) == n],
                 "failed": [x for x in failed if x == n]}
             for n in spec["chapters"]}
    cpu = cpu_before + time.process_time() - cpu0
    with open(spec["result"] + ".part", "w", encoding="utf-8") as f:
        json.dump({"chapters": parts, "cpu": cpu}, f, default=_jsonable)
    os.replace(spec["result"] + ".part", spec["result"])


def _exit_with(parent: int) -> None:
    """End this worker soon after the tour that started it ends (killed without the chance
    to stop its workers), instead of training on for nobody."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"tour: cannot send {type(v).__name__} from a worker")


def _write_outputs(ctx: _Context, out: str, quick: bool, total: float, cpu: float,
                   stream, jobs: int = 1):
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
            if draw is not None:                 # else a worker process drew it
                draw(path, *args)
            pictures.append(Picture(title, path, caption))
    else:
        print(f"hint: {MATPLOTLIB_HINT}", file=stream)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"quick": quick, "seconds": round(total, 2),
                   "cpu_seconds": round(cpu, 2), "shendu": __version__,
                   "header": list(HEADER), "rows": [list(r.cells()) for r in ctx.rows],
                   "pictures": [os.path.basename(p.path) for p in pictures]}, f, indent=1)
    report = write_html(
        os.path.join(out, "report.html"), "shendu tour: the classic algorithms of deep learning",
        HEADER, [r.cells() for r in ctx.rows], pictures,
        subtitle=f"shendu {__version__}; {'quick budgets; ' if quick else ''}"
                 f"{total:.0f} s in all ({cpu:.0f} s CPU, one thread per chapter"
                 f"{'' if jobs == 1 else f', {jobs} chapters at a time'}); built-in data only, "
                 f"every run seeded.",
        notes=["History as in docs/history.md: backpropagation (reverse-mode differentiation) "
               "goes back to Linnainmaa 1970 and Werbos 1974; Rumelhart, Hinton & Williams "
               "1986 showed it learns useful hidden representations."],
        numeric_columns=(5,))
    print(f"wrote {report} ({len(pictures)} picture{'s' if len(pictures) != 1 else ''})",
          file=stream)
    return [p.path for p in pictures], report
