"""Generated sequence-to-sequence tasks: copy, reverse and sort digit strings.

Reversal is the classic probe of attention (Bahdanau et al. 2014): output step ``i`` needs
input position ``L - 1 - i``, far away for a fixed-size encoder summary, one look away for
an attention decoder — whose attention map comes out anti-diagonal.

Each call draws from its own ``numpy.random.Generator(PCG64(seed))``: the same seed gives
the same data, bit for bit, whatever ``shendu.manual_seed`` was called with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SequenceTask", "sequence_task"]

_TASKS = ("copy", "reverse", "sort")


@dataclass
class SequenceTask:
    """Padded source/target token arrays of one task.

    ``src`` and ``tgt``: (n, max_len) int64, tokens ``0..vocab-1``, padded with ``pad_id``
    (= ``vocab``) after each sequence's ``lengths[i]`` tokens; a target is as long as its
    source. ``bos_id`` (= ``vocab + 1``) is free for a decoder's start token;
    ``n_tokens = vocab + 2`` counts every id.
    """

    src: np.ndarray
    tgt: np.ndarray
    lengths: np.ndarray
    vocab: int
    task: str

    @property
    def pad_id(self) -> int:
        return self.vocab

    @property
    def bos_id(self) -> int:
        return self.vocab + 1

    @property
    def n_tokens(self) -> int:
        return self.vocab + 2

    @property
    def padding_mask(self) -> np.ndarray:
        """(n, max_len) bool, True at padding (torch's key_padding_mask convention)."""
        return np.arange(self.src.shape[1])[None, :] >= self.lengths[:, None]

    def __len__(self) -> int:
        return len(self.src)


def sequence_task(task: str = "reverse", n: int = 1000, length_range=(10, 20),
                  vocab: int = 10, seed: int = 0) -> SequenceTask:
    """``n`` random sequences of ``vocab`` symbols with lengths uniform in ``length_range``
    (inclusive) and their targets: the same (``"copy"``), reversed (``"reverse"``) or
    sorted ascending (``"sort"``).

    >>> t = sequence_task("reverse", n=2, length_range=(3, 4), vocab=10, seed=0)
    >>> t.src.shape == t.tgt.shape == (2, 4)
    True
    """
    if task not in _TASKS:
        raise ValueError(f"sequence_task: task must be one of {_TASKS}, got {task!r}")
    lo, hi = (int(length_range), int(length_range)) if np.isscalar(length_range) \
        else (int(length_range[0]), int(length_range[1]))
    if not 1 <= lo <= hi:
        raise ValueError(f"sequence_task: length_range must be (lo, hi) with 1 <= lo <= hi, "
                         f"got {length_range}")
    if n < 1 or vocab < 2:
        raise ValueError(f"sequence_task: need n >= 1 and vocab >= 2, got n={n}, "
                         f"vocab={vocab}")
    rng = np.random.Generator(np.random.PCG64(seed))
    lengths = rng.integers(lo, hi + 1, n)
    src = np.full((n, hi), vocab, np.int64)
    tgt = np.full((n, hi), vocab, np.int64)
    body = rng.integers(0, vocab, (n, hi))
    for i, L in enumerate(lengths):
        s = body[i, :L]
        src[i, :L] = s
        tgt[i, :L] = s if task == "copy" else (s[::-1] if task == "reverse" else np.sort(s))
    return SequenceTask(src, tgt, lengths.astype(np.int64), int(vocab), task)
