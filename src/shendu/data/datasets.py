"""Built-in data sets that need no network: XOR, linearly separable blobs, and
scikit-learn's bundled 8x8 digits and iris.

Every loader returns a :class:`Split` — a named tuple ``(X_train, X_test, y_train, y_test)``,
in the order of scikit-learn's ``train_test_split`` — so one line unpacks it::

    >>> from shendu.data.datasets import blobs
    >>> X_train, X_test, y_train, y_test = blobs(n_samples=100, random_state=0)
    >>> X_train.shape, X_test.shape
    ((80, 2), (20, 2))

The split is **stratified** (each class keeps its share in train and test, within one
sample) and **seeded**: the same ``random_state`` gives the same split, bit for bit, on any
machine. The loaders draw from their own ``numpy.random.Generator(PCG64(random_state))``
and never touch shendu's global generator, so ``digits(random_state=0)`` is the same split
whatever ``shendu.manual_seed`` was called with. Both halves are shuffled (classes are
interleaved), which matters for online learners such as the perceptron.

``X`` comes in shendu's default dtype (float32) unless ``dtype`` says otherwise; ``y`` is
int64 class indices ``0 .. n_classes - 1``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from shendu.backend import as_dtype

__all__ = ["Split", "stratified_split", "xor", "blobs", "digits", "iris"]


class Split(NamedTuple):
    """A train/test split: ``X_train, X_test, y_train, y_test``."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def _check_test_size(op: str, test_size: float) -> None:
    if not (isinstance(test_size, (int, float)) and 0.0 <= test_size < 1.0):
        raise ValueError(f"{op}: test_size must be a fraction in [0, 1), got {test_size!r}")


def stratified_split(X: np.ndarray, y: np.ndarray, test_size: float = 0.2,
                     random_state: int = 0) -> Split:
    """Split ``(X, y)`` so that every class keeps its share in both halves.

    The test set gets ``round(test_size * n)`` samples. They are shared out among the
    classes in proportion to class size by the largest-remainder method (each class gets
    ``floor(test_size * n * n_c / n)``, and the samples left over go to the classes with the
    largest fractional parts, ties to the smaller label); within each class the test samples
    are a uniformly random subset. Both halves are then shuffled.
    """
    _check_test_size("stratified_split", test_size)
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"stratified_split: X has {len(X)} samples but y has {len(y)}")
    rng = np.random.Generator(np.random.PCG64(random_state))
    n = len(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    counts = np.bincount(y_idx, minlength=len(classes))
    n_test = int(round(test_size * n))
    quota = n_test * counts / n
    per_class = np.floor(quota).astype(np.int64)
    left = n_test - int(per_class.sum())
    # largest fractional part first; np.argsort is stable, so ties go to the smaller label
    order = np.argsort(-(quota - per_class), kind="stable")
    per_class[order[:left]] += 1
    test_idx, train_idx = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y_idx == c))
        test_idx.append(members[: per_class[c]])
        train_idx.append(members[per_class[c]:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return Split(X[tr], X[te], y[tr], y[te])


def _finish(X: np.ndarray, y: np.ndarray, test_size: float, random_state: int,
            dtype) -> Split:
    X = np.asarray(X, dtype=as_dtype(dtype))
    y = np.asarray(y, dtype=np.int64)
    return stratified_split(X, y, test_size, random_state)


def xor(n_samples: int = 4, noise: float = 0.0, test_size: float = 0.0,
        random_state: int = 0, dtype=None) -> Split:
    """The XOR problem: ``y = x1 XOR x2`` on the corners of the unit square.

    No single-layer perceptron can represent it (Minsky & Papert 1969); one hidden layer
    trained by backpropagation can (Rumelhart, Hinton & Williams 1986).

    With the defaults it is the classic four points ``(0,0)->0, (0,1)->1, (1,0)->1,
    (1,1)->0``, all in the training half (the test half is empty: the task *is* fitting
    those four). With ``n_samples > 4`` each sample is a corner (cycling through the four)
    plus Gaussian noise of standard deviation ``noise``, and ``test_size`` may hold some out.
    """
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 4:
        raise ValueError(f"xor: n_samples must be an int >= 4, got {n_samples!r}")
    if noise < 0:
        raise ValueError(f"xor: noise must be >= 0, got {noise}")
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    labels = np.array([0, 1, 1, 0])
    idx = np.arange(n_samples) % 4
    X = corners[idx]
    if noise > 0:
        rng = np.random.Generator(np.random.PCG64(random_state))
        X = X + noise * rng.standard_normal(X.shape)
    if n_samples == 4 and test_size == 0.0:
        # keep the textbook order of the four corners
        return Split(np.asarray(X, as_dtype(dtype)), np.empty((0, 2), as_dtype(dtype)),
                     labels.astype(np.int64), np.empty((0,), np.int64))
    return _finish(X, labels[idx], test_size, random_state, dtype)


def blobs(n_samples: int = 200, n_features: int = 2, n_classes: int = 2,
          radius: float = 4.0, spread: float = 0.8, test_size: float = 0.2,
          random_state: int = 0, dtype=None) -> Split:
    r"""Linearly separable blobs: every class can be cut from all the others by one
    hyperplane, with a margin, so a perceptron provably converges on them (Novikoff 1962).

    The class centres lie on a circle of radius ``radius`` in the plane of the first two
    features (``c_k = radius * (cos 2πk/K, sin 2πk/K, 0, ...)``; with one feature, two
    classes at ``±radius``). Each class fills a ball around its centre, uniformly, of
    radius ``rho = spread * rho_max`` where ``rho_max = radius * (1 - cos(2π/K)) / 2`` is
    the largest radius for which class ``k``'s projection on ``c_k`` (at least
    ``radius - rho``) stays above every other class's (at most
    ``radius cos(2π/K) + rho``). So with ``spread < 1`` each class is separable from the
    rest (one-vs-rest) with margin ``(1 - spread) * rho_max`` along ``c_k``.

    Samples are shared among classes as evenly as possible.
    """
    if n_classes < 2:
        raise ValueError(f"blobs: n_classes must be >= 2, got {n_classes}")
    if n_features < 1 or (n_features == 1 and n_classes > 2):
        raise ValueError(f"blobs: n_features must be >= 2 for more than two classes "
                         f"(got n_features={n_features}, n_classes={n_classes})")
    if not 0.0 <= spread < 1.0:
        raise ValueError(f"blobs: spread must be in [0, 1) to keep the classes separable, "
                         f"got {spread}")
    if n_samples < n_classes:
        raise ValueError(f"blobs: need at least one sample per class, got n_samples="
                         f"{n_samples} for {n_classes} classes")
    rng = np.random.Generator(np.random.PCG64(random_state))
    y = np.arange(n_samples) % n_classes
    angles = 2 * math.pi * np.arange(n_classes) / n_classes
    centres = np.zeros((n_classes, n_features))
    if n_features == 1:
        centres[:, 0] = radius * np.array([1.0, -1.0])
    else:
        centres[:, 0] = radius * np.cos(angles)
        centres[:, 1] = radius * np.sin(angles)
    rho = spread * radius * (1 - math.cos(2 * math.pi / n_classes)) / 2
    # uniform in a ball: a uniform direction times rho * U^(1/d)
    direction = rng.standard_normal((n_samples, n_features))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    r = rho * rng.uniform(size=(n_samples, 1)) ** (1.0 / n_features)
    X = centres[y] + r * direction
    return _finish(X, y, test_size, random_state, dtype)


def _sklearn_datasets(name: str):
    try:
        from sklearn import datasets as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{name}() reads the copy of the data bundled with scikit-learn, which is not "
            f"installed; install it with: pip install 'shendu[datasets]'"
        ) from e
    return skd


def digits(test_size: float = 0.2, random_state: int = 0, scale: bool = True,
           dtype=None) -> Split:
    """The 1,797 handwritten digits of scikit-learn (8x8 images, 10 classes; UCI's
    "Optical Recognition of Handwritten Digits", Alpaydin & Kaynak 1998).

    ``X`` has 64 columns, the pixel intensities 0..16 row by row, divided by 16 when
    ``scale`` (so in [0, 1]). The default split is stratified 80/20 with seed 0:
    1,438 training and 359 test images.
    """
    _check_test_size("digits", test_size)
    d = _sklearn_datasets("digits").load_digits()
    X = d.data / 16.0 if scale else d.data
    return _finish(X, d.target, test_size, random_state, dtype)


def iris(test_size: float = 0.2, random_state: int = 0, dtype=None) -> Split:
    """Fisher's iris (1936): 150 flowers, 4 measurements in cm (sepal length and width,
    petal length and width), 3 species. Setosa is linearly separable from the other two;
    versicolor and virginica are not separable from each other."""
    _check_test_size("iris", test_size)
    d = _sklearn_datasets("iris").load_iris()
    return _finish(d.data, d.target, test_size, random_state, dtype)


def __getattr__(name: str):
    if name in ("fsdd", "fsdd_recordings", "leave_one_speaker_out"):   # spoken digits
        import importlib

        return getattr(importlib.import_module("shendu.data.fsdd"), name)
    """The sequence data sets live in their own modules; they are reachable from here too
    (``datasets.adding_problem``, ``datasets.sequential_digits``, ``datasets.CharCorpus``;
    ``shendu.data.tasks.sequence_task`` for copy/reverse/sort) without importing them until
    they are asked for."""
    if name in ("adding_problem", "sequential_digits", "CharCorpus"):
        from shendu.data import sequences

        return getattr(sequences, name)
    raise AttributeError(f"module 'shendu.data.datasets' has no attribute {name!r}")
