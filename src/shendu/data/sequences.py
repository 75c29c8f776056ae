r"""Sequence data for recurrent networks: the adding problem, digits read row by row, and a
character-level text corpus over any file.

* :func:`adding_problem` — Hochreiter & Schmidhuber (1997), experiment 4: each sequence
  has two channels, random values and a marker that is 1 at exactly two positions; the
  target is the sum of the two marked values. Predicting the mean scores an MSE of about
  0.167; solving it needs a memory that spans the whole sequence.
* :func:`sequential_digits` — scikit-learn's 1,797 real 8×8 digits, each image read as a
  sequence of T=8 rows of F=8 pixels.
* :class:`CharCorpus` — a text file as character ids: vocabulary, train/validation split,
  random windows of length ``L`` (input and the same window shifted by one as target).
"""

from __future__ import annotations

import os

import numpy as np

from shendu.data.datasets import Split, digits

__all__ = ["adding_problem", "sequential_digits", "CharCorpus"]


def adding_problem(n: int = 1000, T: int = 100, seed: int = 0, dtype=np.float32
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of the adding problem: ``X`` (n, T, 2), ``y`` (n,).

    Channel 0 holds values drawn from ``U(0, 1)``; channel 1 is 1 at two positions — one in
    the first half of the sequence, one in the second (so the memory must span at least
    ``T/2`` steps) — and 0 elsewhere. ``y`` is the sum of the two marked values (mean 1,
    variance 1/6, hence the baseline MSE of about 0.167 for predicting the mean).
    """
    if not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"adding_problem: T must be an integer >= 2, got {T!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"adding_problem: n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    values = rng.random((n, T))
    half = T // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n)
    marks = np.zeros((n, T))
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    X = np.stack([values, marks], axis=2).astype(dtype)
    y = (values[rows, first] + values[rows, second]).astype(dtype)
    return X, y


def sequential_digits(test_size: float = 0.2, random_state: int = 0, dtype=np.float32
                      ) -> Split:
    """The digits (8×8 images) as sequences of their rows: ``X`` (n, 8, 8), pixels scaled
    to [0, 1]; a stratified train/test split (needs scikit-learn for the bundled data)."""
    s = digits(test_size=test_size, random_state=random_state, scale=True)
    return Split(*(np.asarray(a, dtype).reshape(-1, 8, 8) if i < 2 else a
                   for i, a in enumerate(s)))


class CharCorpus:
    """A text as character ids, with a vocabulary and a train/validation split.

    ``CharCorpus(path_or_text, val_fraction=0.1)``: the last ``val_fraction`` of the text
    is held out. ``vocab`` is the sorted set of characters; ``encode``/``decode`` map
    between text and ids. :meth:`windows` draws ``(x, y)`` batches of length ``L`` where
    ``y`` is ``x`` shifted by one character (next-character targets).
    """

    def __init__(self, source: str | os.PathLike, val_fraction: float = 0.1,
                 encoding: str = "utf-8") -> None:
        if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                               and os.path.isfile(source)):
            with open(source, encoding=encoding) as f:
                text = f.read()
        elif isinstance(source, str):
            text = source
        else:
            raise TypeError(f"CharCorpus: expected a path or a string, got "
                            f"{type(source).__name__}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"CharCorpus: val_fraction must be in [0, 1), got {val_fraction}")
        if len(text) < 2:
            raise ValueError("CharCorpus: the text needs at least 2 characters")
        self.vocab = "".join(sorted(set(text)))
        self._index = {c: i for i, c in enumerate(self.vocab)}
        ids = self.encode(text)
        cut = int(round(len(ids) * (1 - val_fraction)))
        self.train, self.val = ids[:cut], ids[cut:]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise ValueError(f"CharCorpus.encode: character {e.args[0]!r} is not in the "
                             f"vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))

    def windows(self, batch_size: int, L: int, split: str = "train", rng=None
                ) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` random windows: ``x`` (batch, L) ids and ``y`` the next ids."""
        data = self.train if split == "train" else self.val
        if len(data) < L + 1:
            raise ValueError(f"CharCorpus.windows: the {split} split has {len(data)} "
                             f"characters, fewer than L + 1 = {L + 1}")
        if rng is None:
            from shendu.backend import rng as shendu_rng

            rng = shendu_rng()
        starts = rng.integers(0, len(data) - L, batch_size)
        idx = starts[:, None] + np.arange(L + 1)[None, :]
        chunk = data[idx]
        return chunk[:, :-1], chunk[:, 1:]

    def unigram_nats(self) -> float:
        """Cross-entropy (nats/char) of the validation split under the training split's
        character frequencies (add-one smoothed): the baseline a language model must beat."""
        counts = np.bincount(self.train, minlength=self.vocab_size) + 1.0
        p = counts / counts.sum()
        return float(-np.log(p[self.val]).mean())
