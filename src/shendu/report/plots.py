"""The pictures of a run, as PNG files drawn with matplotlib (the optional ``plot`` extra).

matplotlib is imported inside each function and draws on ``matplotlib.figure.Figure``
objects (never pyplot, whose backend stays the user's), so ``import shendu`` never pays for
it and no window ever opens. Call :func:`have_matplotlib`
first; every drawing function raises :class:`ImportError` with an install hint without it.

Each function takes plain NumPy arrays, writes one PNG and returns its path.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["MATPLOTLIB_HINT", "have_matplotlib", "learning_curves", "confusion_matrix",
           "conv_filters", "gradient_norms", "attention_heatmap"]

MATPLOTLIB_HINT = ("pictures need matplotlib: pip install 'shendu[plot]' "
                   "(the table and report.html are written without them)")

_DPI = 100


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (checked without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


class _Figures:
    """What the drawing functions need of pyplot — ``subplots`` — on a plain
    ``matplotlib.figure.Figure``: pyplot's backend and figure list are left alone (a
    notebook keeps its inline backend), and no window can open."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kwargs)


def _pyplot() -> _Figures:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(MATPLOTLIB_HINT) from e
    return _Figures()


def _save(fig, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)  # a Figure of its own draws with Agg for a .png
    return path


def learning_curves(path, panels: Sequence[tuple[str, str, Mapping[str, Sequence[float]]]],
                    title: str = "Learning curves") -> str:
    """One panel per ``(panel title, y label, {series name: values per epoch})``; the x axis
    counts epochs (or evaluation points) from 1."""
    if not panels:
        raise ValueError("learning_curves: no panels to draw")
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, ylabel, series) in zip(axes.flat, panels):
        for label, values in series.items():
            v = np.asarray(values, dtype=np.float64)
            ax.plot(np.arange(1, len(v) + 1), v, marker="o" if len(v) <= 30 else None,
                    markersize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def confusion_matrix(path, cm: np.ndarray, labels: Sequence[str] | None = None,
                     title: str = "Confusion matrix") -> str:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion_matrix: expected a square matrix, got shape {cm.shape}")
    k = cm.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else [str(s) for s in labels]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > top / 2 else "black")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def conv_filters(path, weight: np.ndarray, title: str = "First-layer convolution filters") -> str:
    """The kernels of a convolution weight ``(C_out, C_in, kh, kw)``, one tile per output
    channel (averaged over input channels), each scaled to its own range."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"conv_filters: expected a weight of shape (C_out, C_in, kh, kw), "
                         f"got shape {w.shape}")
    tiles = w.mean(axis=1)
    n = len(tiles)
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(tiles[i], cmap="gray", interpolation="nearest")
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def gradient_norms(path, norms: Mapping[str, Sequence[float]],
                   title: str = "Backpropagation through time: ||dL/dh_t||") -> str:
    """``{model name: ||dL/dh_t|| for t = 1..T}`` on a log scale: the vanishing-gradient
    picture (Hochreiter 1991; Bengio, Simard & Frasconi 1994)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, values in norms.items():
        v = np.asarray(values, dtype=np.float64)
        ax.semilogy(np.arange(1, len(v) + 1), np.maximum(v, 1e-30), label=label)
    ax.set_xlabel("time step t (the loss is at the last step)")
    ax.set_ylabel("||dL/dh_t||")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def attention_heatmap(path, weights: np.ndarray, source: Sequence[str] | None = None,
                      target: Sequence[str] | None = None,
                      title: str = "Attention weights") -> str:
    """``weights[i, j]`` = how much output step ``i`` attends to input position ``j``."""
    a = np.asarray(weights, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attention_heatmap: expected a 2-D matrix (T_out, T_in), got "
                         f"shape {a.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(a, cmap="viridis", vmin=0.0, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if source is not None:
        ax.set_xticks(range(a.shape[1]), [str(s) for s in source], fontsize=8)
    if target is not None:
        ax.set_yticks(range(a.shape[0]), [str(s) for s in target], fontsize=8)
    ax.set_xlabel("input position")
    ax.set_ylabel("output step")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
