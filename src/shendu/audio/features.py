r"""Speech features as layers: :class:`Spectrogram`, :class:`MelSpectrogram`,
:class:`AmplitudeToDB`, :class:`MFCC` and the per-utterance normalisation
:class:`UtteranceNorm` — torchaudio's names and arguments, shendu modules, differentiable.

A model that starts with one of these goes from the raw waveform to its answer, so the
features a saved model sees when it serves are computed by the very code it was trained
with (no train/serve skew).

The short-time Fourier transform (one fused :class:`PowerSTFT` op, forward and backward side
by side) of a waveform ``x`` with window ``w`` (periodic Hann of ``win_length``, centred in
``n_fft``), hop ``H`` and, with ``center=True``, ``n_fft // 2`` samples of reflection padding
on each side, is

.. math::  X_{k,t} = \sum_{n=0}^{N-1} w_n\, x_{tH+n}\, e^{-2\pi i k n / N},\qquad
           S_{k,t} = |X_{k,t}|^{p}

for ``k = 0 .. N/2`` (``N = n_fft``, ``p = power``). The mel spectrogram is ``M = F S`` with
the triangular filterbank ``F`` of ``librosa.filters.mel`` (HTK mel scale and no area
normalisation by default, as torchaudio). :class:`AmplitudeToDB` is
``10 log10(max(M, amin))``, floored at ``top_db`` below each utterance's peak; the MFCCs are
the orthonormal DCT-II of the log-mels (``scipy.fft.dct``), keeping ``n_mfcc`` coefficients
— the definition of ``librosa.feature.mfcc``, which the tests check against.

Inputs are ``(..., time)`` waveforms; outputs ``(..., n_mels or n_mfcc or n_freqs, frames)``
with ``frames = 1 + time // hop_length`` when centred.

Deliberate difference from torchaudio: :class:`AmplitudeToDB`'s ``top_db`` floor is taken
per utterance (over frequency and time of each item of the batch); torchaudio takes the
peak over the whole batch when the input has no channel axis, so an utterance's features
would depend on the other items of its batch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from shendu import functional as F
from shendu.autograd import Function
from shendu.nn.module import Module
from shendu.tensor import Tensor

__all__ = ["PowerSTFT", "power_stft", "hann_window", "mel_filterbank", "dct_matrix",
           "Spectrogram", "MelSpectrogram", "AmplitudeToDB", "MFCC", "UtteranceNorm"]


def hann_window(win_length: int, n_fft: int, dtype=np.float64) -> np.ndarray:
    """The periodic Hann window of ``win_length`` (torch.hann_window, scipy's
    ``get_window('hann', fftbins=True)``), zero-padded on both sides to ``n_fft``."""
    n = np.arange(win_length)
    w = 0.5 - 0.5 * np.cos(2 * math.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft)
    out[left:left + win_length] = w
    return out.astype(dtype)


def _fft():
    """``scipy.fft`` (single precision stays single, about twice NumPy's speed here), else
    ``numpy.fft``."""
    try:
        from scipy import fft
    except ImportError:  # pragma: no cover - scipy comes with the audio extra
        fft = np.fft
    return fft


class PowerSTFT(Function):
    """``S = |STFT(x)|^power`` of waveforms ``x`` (B, N) -> (B, n_fft // 2 + 1, frames).

    Forward: reflection-pad (``center``), cut frames with a strided view, window, ``rfft``.
    Backward: with ``Z = g p |X|^(p-2) X``, the gradient of a windowed frame is
    ``w * sum_k Re(Z_k e^{+2 pi i k n / N})`` — ``N * irfft`` of ``Z`` with the bins that
    ``rfft`` folds (all but DC and Nyquist) halved — then the frames are overlap-added
    and the reflected padding is folded back onto the samples it copied.

    Backward reads only the transform ``X`` it computed (a fresh array), never the
    waveform or the output, so it saves no input or output.
    """

    saved_inputs = ()
    saved_outputs = ()

    def forward(self, x, window=None, n_fft=400, hop=200, center=True, power=2.0):
        b, n = x.shape
        pad = n_fft // 2 if center else 0
        if center:
            if n <= pad:
                raise ValueError(f"PowerSTFT: reflection padding of {pad} samples needs a "
                                 f"waveform longer than {pad} samples, got {n}")
            xp = np.pad(x, ((0, 0), (pad, pad)), mode="reflect")
        else:
            if n < n_fft:
                raise ValueError(f"PowerSTFT: a waveform of {n} samples is shorter than "
                                 f"n_fft={n_fft} (center=False)")
            xp = x
        n_frames = 1 + (xp.shape[1] - n_fft) // hop
        st = xp.strides
        frames = np.lib.stride_tricks.as_strided(
            xp, (b, n_frames, n_fft), (st[0], st[1] * hop, st[1]), writeable=False)
        X = _fft().rfft(frames * window, axis=-1)          # (B, T, F) complex
        train = any(self.needs_input_grad)
        if power == 2.0 and not train and X.flags.c_contiguous:
            v = X.view(X.real.dtype)                        # [re, im] pairs, squared in place
            np.square(v, out=v)                             # (the backward would need X)
            S = v[..., 0::2] + v[..., 1::2]
        elif power == 2.0:
            S = X.real * X.real + X.imag * X.imag
        elif power == 1.0:
            S = np.abs(X)
        else:
            S = np.abs(X) ** power
        if train:
            self.X, self.window, self.geo = X, window, (b, n, pad, n_frames, n_fft, hop)
            self.power = power
        return np.ascontiguousarray(S.transpose(0, 2, 1)).astype(x.dtype, copy=False)

    def backward(self, g):
        b, n, pad, n_frames, n_fft, hop = self.geo
        gt = g.transpose(0, 2, 1)                           # (B, T, F)
        p, X = self.power, self.X
        if p == 2.0:
            Z = 2.0 * gt * X
        else:
            mag = np.abs(X)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(mag > 0, p * mag ** (p - 2.0), 0.0)
            Z = gt * scale * X
        Z = Z.copy()
        last = Z.shape[-1] - 1 if n_fft % 2 == 0 else Z.shape[-1]
        Z[..., 1:last] *= 0.5
        dframes = n_fft * _fft().irfft(Z, n=n_fft, axis=-1) * self.window   # (B, T, N)
        gp = np.zeros((b, n + 2 * pad), dtype=np.float64)
        idx = (np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]).ravel()
        for i in range(b):
            np.add.at(gp[i], idx, dframes[i].ravel())
        gx = gp[:, pad:pad + n].copy()
        if pad:
            gx[:, 1:pad + 1] += gp[:, :pad][:, ::-1]
            gx[:, n - 1 - pad:n - 1] += gp[:, pad + n:][:, ::-1]
        return gx.astype(g.dtype, copy=False)


def power_stft(x: Tensor, n_fft: int, hop_length: int, window: np.ndarray,
               center: bool = True, power: float = 2.0, where: str = "power_stft") -> Tensor:
    """``|STFT(x)|^power`` of ``x`` (..., time) -> (..., n_fft // 2 + 1, frames)."""
    if not isinstance(x, Tensor):
        x = Tensor(np.asarray(x))
    if x.ndim < 1:
        raise ValueError(f"{where} expected a waveform (..., time), got a scalar")
    if x.data.dtype.kind != "f":
        raise TypeError(f"{where} expected a floating waveform, got dtype {x.data.dtype}")
    lead = tuple(x.shape[:-1])
    flat = F.reshape(x, (-1, x.shape[-1]))
    out = PowerSTFT.apply(flat, window=window.astype(x.data.dtype), n_fft=int(n_fft),
                          hop=int(hop_length), center=bool(center), power=float(power))
    return F.reshape(out, lead + tuple(out.shape[1:]))


def _hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    """Hertz to mels (``librosa.hz_to_mel``): HTK's ``2595 log10(1 + f/700)``, or
    Slaney's scale (linear below 1 kHz, logarithmic above)."""
    f = np.asanyarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_mel, logstep = 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= 1000.0, min_log_mel + np.log(np.maximum(f, 1000.0) / 1000.0) /
                    logstep, mels)


def _mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    """Mels to hertz (``librosa.mel_to_hz``), the inverse of :func:`_hz_to_mel`."""
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_mel, logstep = 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = m >= min_log_mel
    freqs[log_t] = 1000.0 * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, norm: str | None = None,
                   mel_scale: str = "htk") -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) triangular mel filterbank of ``librosa.filters.mel``
    (float64, computed by the same formulas; the tests compare the two). ``mel_scale`` is
    ``"htk"`` (torchaudio's default) or ``"slaney"`` (librosa's); ``norm`` is ``None`` or
    ``"slaney"`` (each filter's area 1).

    Filter ``i`` rises linearly from mel point ``i`` to ``i + 1`` and falls to ``i + 2``,
    the ``n_mels + 2`` points evenly spaced in mels from ``f_min`` to ``f_max``."""
    if mel_scale not in ("htk", "slaney"):
        raise ValueError(f"mel_filterbank: mel_scale must be 'htk' or 'slaney', got "
                         f"{mel_scale!r}")
    if norm not in (None, "slaney"):
        raise ValueError(f"mel_filterbank: norm must be None or 'slaney', got {norm!r}")
    htk = mel_scale == "htk"
    fmax = float(sample_rate) / 2 if f_max is None else f_max
    n_mels = int(n_mels)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mels = np.linspace(_hz_to_mel(f_min, htk), _hz_to_mel(fmax, htk), n_mels + 2)
    mel_f = _mel_to_hz(mels, htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, int(1 + n_fft // 2)), dtype=np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
        weights *= enorm[:, np.newaxis]
    if not np.all((mel_f[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn("mel_filterbank: empty filters (all zero): some mel channels will "
                      "always be 0; raise the sample rate (and f_max) or lower n_mels",
                      stacklevel=2)
    return weights


def dct_matrix(n_mfcc: int, n_mels: int, norm: str | None = "ortho") -> np.ndarray:
    """The (n_mfcc, n_mels) DCT-II matrix ``D`` with ``D @ v == scipy.fft.dct(v)[:n_mfcc]``."""
    from scipy.fft import dct

    return dct(np.eye(n_mels), type=2, norm=norm, axis=0)[:n_mfcc]


def _check_positive(where: str, **kw) -> None:
    for k, v in kw.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{where}: {k} must be a positive int, got {v!r}")


class Spectrogram(Module):
    """``|STFT(waveform)|^power``: (..., time) -> (..., n_fft // 2 + 1, frames).

    torchaudio's arguments: ``n_fft`` (400), ``win_length`` (``n_fft``), ``hop_length``
    (``win_length // 2``), ``power`` (2.0: power; 1.0: magnitude), ``center`` (reflection
    padding of ``n_fft // 2``). The window is the periodic Hann window.
    """

    def __init__(self, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, power: float = 2.0,
                 center: bool = True) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        hop_length = win_length // 2 if hop_length is None else hop_length
        _check_positive("Spectrogram", n_fft=n_fft, win_length=win_length,
                        hop_length=hop_length)
        if win_length > n_fft:
            raise ValueError(f"Spectrogram: win_length must be <= n_fft={n_fft}, got "
                             f"{win_length}")
        if power is None or not float(power) > 0:
            raise ValueError(f"Spectrogram: power must be a positive number (complex output "
                             f"is not supported), got {power!r}")
        self.n_fft, self.win_length, self.hop_length = int(n_fft), int(win_length), \
            int(hop_length)
        self.power, self.center = float(power), bool(center)
        self.window = hann_window(self.win_length, self.n_fft)   # a constant, float64

    def forward(self, waveform: Tensor) -> Tensor:
        return power_stft(waveform, self.n_fft, self.hop_length, self.window,
                          self.center, self.power, where=type(self).__name__)

    def extra_repr(self) -> str:
        return (f"n_fft={self.n_fft}, win_length={self.win_length}, "
                f"hop_length={self.hop_length}, power={self.power}, center={self.center}")


class MelSpectrogram(Module):
    """Mel spectrogram: (..., time) -> (..., n_mels, frames), torchaudio's arguments
    (``sample_rate`` 16000, ``n_fft`` 400, ``win_length``, ``hop_length``, ``f_min`` 0,
    ``f_max`` (Nyquist), ``n_mels`` 128, ``power`` 2, ``center``, ``norm`` None,
    ``mel_scale`` "htk")."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400,
                 win_length: int | None = None, hop_length: int | None = None,
                 f_min: float = 0.0, f_max: float | None = None, n_mels: int = 128,
                 power: float = 2.0, center: bool = True, norm: str | None = None,
                 mel_scale: str = "htk") -> None:
        super().__init__()
        _check_positive("MelSpectrogram", sample_rate=sample_rate, n_mels=n_mels)
        nyquist = sample_rate / 2
        top = nyquist if f_max is None else f_max
        if not 0 <= f_min < top <= nyquist:
            raise ValueError(f"MelSpectrogram: expected 0 <= f_min < f_max <= {nyquist:g} Hz "
                             f"(sample_rate / 2), got f_min={f_min}, f_max={f_max}")
        self.sample_rate, self.n_mels = int(sample_rate), int(n_mels)
        self.f_min, self.f_max, self.norm, self.mel_scale = float(f_min), f_max, norm, mel_scale
        self.spectrogram = Spectrogram(n_fft, win_length, hop_length, power, center)
        fb = mel_filterbank(self.sample_rate, self.spectrogram.n_fft, self.n_mels,
                            self.f_min, f_max, norm, mel_scale)
        self.fb = fb                                              # a constant, float64

    @property
    def hop_length(self) -> int:
        return self.spectrogram.hop_length

    def forward(self, waveform: Tensor) -> Tensor:
        spec = self.spectrogram(waveform)                     # (..., F, T)
        return F.matmul(Tensor(self.fb.astype(spec.data.dtype)), spec)   # (..., n_mels, T)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, f_min={self.f_min}, "
                f"f_max={self.f_max}")


class AmplitudeToDB(Module):
    """``10 log10(max(x, amin))`` (``stype="power"``; ``20 log10`` for ``"magnitude"``),
    floored at ``top_db`` below the peak of each utterance (the last two axes)."""

    def __init__(self, stype: str = "power", top_db: float | None = None,
                 amin: float = 1e-10) -> None:
        super().__init__()
        if stype not in ("power", "magnitude"):
            raise ValueError(f"AmplitudeToDB: stype must be 'power' or 'magnitude', got "
                             f"{stype!r}")
        if top_db is not None and not top_db >= 0:
            raise ValueError(f"AmplitudeToDB: top_db must be None or >= 0, got {top_db}")
        self.stype, self.top_db, self.amin = stype, top_db, float(amin)

    def forward(self, x: Tensor) -> Tensor:
        mult = 10.0 if self.stype == "power" else 20.0
        db = F.log(F.clamp(x, min=self.amin)) * (mult / math.log(10.0))
        if self.top_db is not None:
            if db.ndim < 2:
                raise ValueError(f"AmplitudeToDB expected (..., freq, time) with top_db, got "
                                 f"shape {tuple(db.shape)}")
            peak = F.amax(db, dim=(-2, -1), keepdim=True)
            db = F.maximum(db, peak - self.top_db)
        return db

    def extra_repr(self) -> str:
        return f"stype={self.stype!r}, top_db={self.top_db}"


class MFCC(Module):
    """Mel-frequency cepstral coefficients: (..., time) -> (..., n_mfcc, frames).

    torchaudio's arguments: ``sample_rate``, ``n_mfcc`` (40), ``dct_type`` (2), ``norm``
    ("ortho"), ``log_mels`` (False: decibels with ``top_db=80`` as librosa; True:
    ``log(mel + 1e-6)``) and ``melkwargs`` (a dict for :class:`MelSpectrogram`)."""

    def __init__(self, sample_rate: int = 16000, n_mfcc: int = 40, dct_type: int = 2,
                 norm: str | None = "ortho", log_mels: bool = False,
                 melkwargs: dict | None = None) -> None:
        super().__init__()
        if dct_type != 2:
            raise ValueError(f"MFCC: only dct_type=2 is supported, got {dct_type}")
        melkwargs = dict(melkwargs or {})
        self.melkwargs = melkwargs
        self.mel = MelSpectrogram(sample_rate=sample_rate, **melkwargs)
        if not 1 <= n_mfcc <= self.mel.n_mels:
            raise ValueError(f"MFCC: n_mfcc must be in [1, n_mels={self.mel.n_mels}], got "
                             f"{n_mfcc}")
        self.sample_rate, self.n_mfcc, self.dct_type = int(sample_rate), int(n_mfcc), 2
        self.norm, self.log_mels = norm, bool(log_mels)
        self.to_db = AmplitudeToDB("power", top_db=80.0)
        self.dct_mat = dct_matrix(self.n_mfcc, self.mel.n_mels, norm)   # a constant, float64

    @property
    def hop_length(self) -> int:
        return self.mel.hop_length

    def forward(self, waveform: Tensor) -> Tensor:
        m = self.mel(waveform)
        m = F.log(m + 1e-6) if self.log_mels else self.to_db(m)
        return F.matmul(Tensor(self.dct_mat.astype(m.data.dtype)), m)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, n_mfcc={self.n_mfcc}, log_mels={self.log_mels}"


class UtteranceNorm(Module):
    """Per-utterance normalisation of features (..., channels, frames): each channel shifted
    to mean 0 over the frames (cepstral mean normalisation) and, with ``variance=True``,
    scaled to standard deviation 1 (``eps`` added to the variance). It removes what a
    speaker or a microphone adds to every frame alike — a fixed spectral tilt, a gain.

    ``active_db``: for decibel features, take the statistics over the *active* frames only
    (those whose loudest channel lies within ``active_db`` dB of the utterance's loudest
    value) and set the other frames to 0 (the mean). Then the padding around a short
    recording in a fixed window changes neither the statistics nor the features: a short
    word and a long one of the same voice are normalised alike. ``None``: all frames."""

    def __init__(self, variance: bool = True, eps: float = 1e-5,
                 active_db: float | None = None) -> None:
        super().__init__()
        if active_db is not None and not active_db > 0:
            raise ValueError(f"UtteranceNorm: active_db must be None or > 0, got {active_db}")
        self.variance, self.eps = bool(variance), float(eps)
        self.active_db = None if active_db is None else float(active_db)

    def forward(self, x: Tensor) -> Tensor:
        if self.active_db is None:
            x = x - F.mean(x, dim=-1, keepdim=True)
            if self.variance:
                x = x / F.sqrt(F.mean(x * x, dim=-1, keepdim=True) + self.eps)
            return x
        if x.ndim < 2:
            raise ValueError(f"UtteranceNorm expected (..., channels, frames), got shape "
                             f"{tuple(x.shape)}")
        d = x.data
        loud = d.max(axis=-2, keepdims=True)                           # (..., 1, T)
        peak = loud.max(axis=-1, keepdims=True)
        m = (loud >= peak - self.active_db).astype(d.dtype)           # (..., 1, T)
        mask = Tensor(m)
        count = Tensor(m.sum(axis=-1, keepdims=True))                  # >= 1: the peak
        x = (x - F.sum(x * mask, dim=-1, keepdim=True) / count) * mask
        if self.variance:
            x = x / F.sqrt(F.sum(x * x, dim=-1, keepdim=True) / count + self.eps)
        return x

    def extra_repr(self) -> str:
        s = f"variance={self.variance}"
        return s if self.active_db is None else s + f", active_db={self.active_db}"
