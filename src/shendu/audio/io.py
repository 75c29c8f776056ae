"""Reading audio files: any WAV (8/16/24/32-bit PCM, float), FLAC or OGG that libsndfile
reads, mixed to mono, resampled to the rate a model wants, as float32 in [-1, 1].

The reading is done by `soundfile <https://python-soundfile.readthedocs.io>`_ (libsndfile,
the ecosystem's standard reader), never by a hand-written RIFF parser; resampling is
SciPy's polyphase filter (``scipy.signal.resample_poly``). Both are imported when a file is
first read, so ``import shendu`` stays NumPy-light (``pip install shendu[audio]``).

Every problem with a file — missing, empty, too short, too long, a corrupt header, not audio
at all — is one :class:`AudioFileError` whose message names the file and the problem, so a
caller answering many files can print one line for a bad one and go on with the others.
Memory stays bounded on long files: the header is read first, and at most
``max_seconds`` of samples are ever decoded.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

__all__ = ["AudioFileError", "AudioInfo", "info", "load", "resample", "to_mono"]


class AudioFileError(ValueError):
    """A file that cannot be used as audio; the message names the file and the problem."""

    def __init__(self, path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class AudioInfo(NamedTuple):
    """What a file's header says: frames, sample rate, channels, duration, subtype."""

    frames: int
    sample_rate: int
    channels: int
    duration: float
    subtype: str


def _soundfile(where: str):
    try:
        import soundfile
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{where}: reading audio needs the soundfile package "
                          "(pip install 'shendu[audio]')") from e
    return soundfile


def info(path) -> AudioInfo:
    """The header of an audio file, without reading its samples."""
    sf = _soundfile("shendu.audio.info")
    p = os.fspath(path)
    if not os.path.exists(p):
        raise AudioFileError(path, "no such file")
    if os.path.isdir(p):
        raise AudioFileError(path, "is a folder, not an audio file")
    if os.path.getsize(p) == 0:
        raise AudioFileError(path, "the file is empty (0 bytes)")
    try:
        i = sf.info(p)
    except Exception as e:  # libsndfile's LibsndfileError, RuntimeError, TypeError...
        msg = str(e).split(":")[-1].strip() or type(e).__name__
        raise AudioFileError(path, f"not a readable audio file ({msg})") from None
    return AudioInfo(int(i.frames), int(i.samplerate), int(i.channels), float(i.duration),
                     str(i.subtype))


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames,) stays; (frames, channels) is averaged over the channels."""
    x = np.asarray(x)
    if x.ndim == 2:
        return x.mean(axis=1, dtype=np.float64).astype(np.float32)
    if x.ndim != 1:
        raise ValueError(f"to_mono: expected (frames,) or (frames, channels), got {x.shape}")
    return x


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D signal from ``orig_sr`` to ``target_sr`` Hz with a polyphase
    anti-aliasing filter (``scipy.signal.resample_poly``); the same rate returns ``x``."""
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_sr} -> "
                         f"{target_sr}")
    x = np.asarray(x)
    if orig_sr == target_sr:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(orig_sr, target_sr)
    return resample_poly(x, target_sr // g, orig_sr // g).astype(x.dtype, copy=False)


def load(path, sample_rate: int | None = None, *, min_seconds: float = 0.05,
         max_seconds: float | None = 60.0, on_long: str = "error") -> tuple[np.ndarray, int]:
    """Read ``path`` as a mono float32 waveform in [-1, 1]: ``(waveform, sample_rate)``.

    Parameters
    ----------
    sample_rate : resample to this rate (Hz); ``None`` keeps the file's.
    min_seconds : a shorter recording is an error (0.05 s: too short to hold a word).
    max_seconds : a longer recording is an error (``on_long="error"``) or only its first
        ``max_seconds`` are read (``on_long="truncate"``); either way at most that much is
        decoded, so a 1-hour file costs no more memory than a ``max_seconds`` one.
        ``None`` reads any length.

    Raises :class:`AudioFileError` naming the file and the problem.
    """
    if on_long not in ("error", "truncate"):
        raise ValueError(f"shendu.audio.load: on_long must be 'error' or 'truncate', got "
                         f"{on_long!r}")
    sf = _soundfile("shendu.audio.load")
    head = info(path)
    if head.frames <= 0:
        raise AudioFileError(path, "holds no samples (0 frames)")
    if head.duration < min_seconds:
        raise AudioFileError(path, f"too short: {head.duration * 1000:.0f} ms of audio, at "
                                   f"least {min_seconds * 1000:.0f} ms expected")
    frames = head.frames
    if max_seconds is not None and head.duration > max_seconds:
        if on_long == "error":
            raise AudioFileError(path, f"too long: {head.duration:.1f} s of audio, at most "
                                       f"{max_seconds:g} s expected")
        frames = int(max_seconds * head.sample_rate)
    try:
        x, sr = sf.read(os.fspath(path), frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        msg = str(e).split(":")[-1].strip() or type(e).__name__
        raise AudioFileError(path, f"cannot decode the samples ({msg})") from None
    if len(x) == 0:
        raise AudioFileError(path, "holds no samples (the data chunk is empty)")
    x = to_mono(x[:, 0] if x.shape[1] == 1 else x)
    if not np.isfinite(x).all():
        raise AudioFileError(path, "holds NaN or infinite samples")
    if sample_rate is not None and int(sample_rate) != sr:
        x = resample(x, sr, int(sample_rate))
        sr = int(sample_rate)
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)
