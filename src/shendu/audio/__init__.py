"""Speech (``shendu.audio``): reading audio files, feature layers and augmentation.

* :mod:`shendu.audio.io`: :func:`load` (soundfile; any WAV/FLAC/OGG, mixed to mono,
  resampled), :func:`info`, :class:`AudioFileError`.
* :mod:`shendu.audio.features`: :class:`MelSpectrogram`, :class:`MFCC`,
  :class:`Spectrogram`, :class:`AmplitudeToDB`, :class:`UtteranceNorm` — torchaudio's
  names and arguments, differentiable shendu modules.
* :mod:`shendu.audio.augment`: SpecAugment's :class:`FrequencyMasking` /
  :class:`TimeMasking`, :class:`FrequencyWarp` (VTLP), :class:`TimeStretch` (tempo),
  :func:`speed_perturb`, :func:`fit_length`.

The ready model is :class:`shendu.models.AudioClassifier`; the data set
:func:`shendu.data.datasets.fsdd`. soundfile, SciPy and librosa (the ``audio`` extra) are
imported only when a file is read or a filterbank is made, and ``import shendu`` does not
import this package.
"""

from shendu.audio.augment import (
    FrequencyMasking,
    FrequencyWarp,
    TimeMasking,
    TimeStretch,
    fit_length,
    speed_perturb,
)
from shendu.audio.features import (
    MFCC,
    AmplitudeToDB,
    MelSpectrogram,
    PowerSTFT,
    Spectrogram,
    UtteranceNorm,
    dct_matrix,
    mel_filterbank,
    power_stft,
)
from shendu.audio.io import AudioFileError, AudioInfo, info, load, resample, to_mono

__all__ = ["load", "info", "resample", "to_mono", "AudioFileError", "AudioInfo",
           "MelSpectrogram", "MFCC", "Spectrogram", "AmplitudeToDB", "UtteranceNorm",
           "PowerSTFT", "power_stft", "mel_filterbank", "dct_matrix",
           "FrequencyMasking", "TimeMasking", "FrequencyWarp", "TimeStretch", "speed_perturb",
           "fit_length"]
