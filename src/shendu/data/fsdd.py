"""The Free Spoken Digit Dataset (FSDD; Jackson et al., CC BY-SA 4.0): spoken digits 0-9,
WAV files named ``{digit}_{speaker}_{take}.wav`` (8 kHz mono in the original).

* :func:`fsdd_recordings` reads a folder in that naming: waveforms, labels, speakers, takes.
* :func:`fsdd` gives a train/test split: FSDD's own (takes 0-4 of every speaker and digit
  are the test set) or, with ``test_speaker=``, one fold of leave-one-speaker-out.
* :func:`leave_one_speaker_out` yields the folds ``(speaker, train_index, test_index)``.

Reading needs the ``audio`` extra (soundfile; SciPy to resample). The recordings are in
the ``recordings/`` folder of https://github.com/Jakobovski/free-spoken-digit-dataset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

__all__ = ["FSDDRecordings", "FSDDSplit", "fsdd", "fsdd_recordings", "leave_one_speaker_out",
           "FSDD_URL"]

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$", re.IGNORECASE)


class FSDDRecordings(NamedTuple):
    """Every recording of a folder, sorted by speaker, digit, take."""

    waveforms: list          # 1-D float32 arrays in [-1, 1]
    labels: np.ndarray       # int64 digits
    speakers: np.ndarray     # speaker names (str)
    takes: np.ndarray        # int64 take numbers
    paths: list              # file paths
    sample_rate: int


class FSDDSplit(NamedTuple):
    """``X_train, X_test, y_train, y_test`` (as every shendu loader) plus the speakers."""

    X_train: list
    X_test: list
    y_train: np.ndarray
    y_test: np.ndarray
    speakers_train: np.ndarray
    speakers_test: np.ndarray


def _check_root(root, where: str) -> str:
    if root is None:
        raise ValueError(f"{where}: give the folder of FSDD recordings (the recordings/ "
                         f"folder of {FSDD_URL})")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{where}: no folder {root!r}; the Free Spoken Digit "
                                f"Dataset's WAV files are in the recordings/ folder of "
                                f"{FSDD_URL} (git clone it and pass that folder)")
    return root


def fsdd_recordings(root, sample_rate: int = 8000) -> FSDDRecordings:
    """Read every ``{digit}_{speaker}_{take}.wav`` of ``root`` (other files are ignored),
    resampled to ``sample_rate``. A file that cannot be read is an error naming it."""
    from shendu.audio.io import load

    root = _check_root(root, "fsdd")
    entries = []
    for name in os.listdir(root):
        m = _NAME.match(name)
        if m:
            entries.append((m.group(2), int(m.group(1)), int(m.group(3)), name))
    if not entries:
        raise FileNotFoundError(f"fsdd: {root!r} holds no files named "
                                f"{{digit}}_{{speaker}}_{{take}}.wav (FSDD's naming; the "
                                f"recordings/ folder of {FSDD_URL})")
    entries.sort()
    waves, paths = [], []
    for _, _, _, name in entries:
        p = os.path.join(root, name)
        x, _ = load(p, sample_rate, min_seconds=0.0, max_seconds=None)
        waves.append(x)
        paths.append(p)
    return FSDDRecordings(waves, np.array([e[1] for e in entries], np.int64),
                          np.array([e[0] for e in entries]),
                          np.array([e[2] for e in entries], np.int64), paths, int(sample_rate))


def leave_one_speaker_out(speakers) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The folds of leave-one-speaker-out: ``(speaker, train_index, test_index)`` for each
    speaker (sorted), training on all the others."""
    speakers = np.asarray(speakers)
    names = np.unique(speakers)
    if len(names) < 2:
        raise ValueError(f"leave_one_speaker_out: needs at least 2 speakers, got "
                         f"{names.tolist()}")
    for s in names:
        test = np.flatnonzero(speakers == s)
        train = np.flatnonzero(speakers != s)
        yield str(s), train, test


def fsdd(root, *, test_speaker: str | None = None, test_takes=range(5),
         sample_rate: int = 8000) -> FSDDSplit:
    """FSDD as a train/test split of waveforms.

    By default FSDD's own split: takes in ``test_takes`` (0-4) of every speaker and digit
    are the test set, the rest (5-49) the training set. With ``test_speaker`` the split is
    speaker-independent instead: all of that speaker's recordings are the test set.
    """
    rec = fsdd_recordings(root, sample_rate)
    if test_speaker is not None:
        if test_speaker not in set(rec.speakers.tolist()):
            raise ValueError(f"fsdd: test_speaker {test_speaker!r} is not among the speakers "
                             f"{sorted(set(rec.speakers.tolist()))}")
        is_test = rec.speakers == test_speaker
    else:
        is_test = np.isin(rec.takes, np.asarray(list(test_takes), np.int64))
    tr, te = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    w = rec.waveforms
    return FSDDSplit([w[i] for i in tr], [w[i] for i in te], rec.labels[tr], rec.labels[te],
                     rec.speakers[tr], rec.speakers[te])
