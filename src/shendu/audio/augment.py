"""Augmentation for speech: SpecAugment's masks as layers (Park et al. 2019), and
waveform perturbations (speed, placement in time) as functions.

* :class:`FrequencyMasking` / :class:`TimeMasking` (torchaudio's names and arguments): in
  training mode each utterance gets a band of ``width ~ U[0, mask_param)`` consecutive
  frequency channels / frames set to ``mask_value``; in eval mode they pass the input on.
* :class:`FrequencyWarp` stretches or squeezes the frequency axis of each utterance's
  (mel) spectrogram by a factor drawn from ``[1 - r, 1 + r]`` in training mode: vocal-tract
  length perturbation (Jaitly & Hinton 2013) on the mel axis, independent of tempo.
* :class:`TimeStretch` stretches or squeezes the time axis of each utterance's features by
  a factor drawn from ``[1 - r, 1 + r]`` about the window's centre in training mode:
  tempo without pitch (SpecAugment's time warp, Park et al. 2019, as one uniform
  stretch), independent of the waveform's speed perturbation.
* :func:`speed_perturb` plays a waveform faster or slower (tempo and pitch together, as
  Kaldi's speed perturbation, Ko et al. 2015): a speaker-independent model then sees
  shorter and longer vocal tracts than its training voices had.
* :func:`fit_length` places a waveform in a fixed-length buffer (zero-padded, or cut to
  its loudest stretch), at a given or random offset.

Randomness comes from shendu's one seeded generator, so the same seed gives the same masks.
"""

from __future__ import annotations

import numpy as np

from shendu.backend import rng
from shendu.functional import _numba, matmul, mul
from shendu.nn.module import Module
from shendu.tensor import Tensor

__all__ = ["FrequencyMasking", "TimeMasking", "FrequencyWarp", "TimeStretch", "warp_matrix",
           "stretch_matrix", "speed_perturb", "fit_length"]


class _AxisMasking(Module):
    _axis = -2
    _what = "freq_mask_param"

    def __init__(self, mask_param: int, iid_masks: bool = True, p: float = 1.0,
                 mask_value: float = 0.0) -> None:
        super().__init__()
        if isinstance(mask_param, bool) or not isinstance(mask_param, (int, np.integer)) \
                or mask_param < 0:
            raise ValueError(f"{type(self).__name__}: {self._what} must be an int >= 0, got "
                             f"{mask_param!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.mask_param, self.iid_masks = int(mask_param), bool(iid_masks)
        self.p, self.mask_value = float(p), float(mask_value)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.mask_param == 0:
            return x
        if x.ndim < 2:
            raise ValueError(f"{type(self).__name__} expected (..., freq, time), got shape "
                             f"{tuple(x.shape)}")
        size = x.shape[self._axis]
        lead = tuple(x.shape[:-2]) if self.iid_masks else ()
        g = rng()
        limit = min(self.mask_param, int(self.p * size))
        width = np.floor(g.random(lead) * limit)
        start = np.floor(g.random(lead) * (size - width))
        pos = np.arange(size)
        keep = ~((pos >= start[..., None]) & (pos < (start + width)[..., None]))  # (..., size)
        keep = keep[..., :, None] if self._axis == -2 else keep[..., None, :]
        out = mul(x, Tensor(keep.astype(x.data.dtype)))
        if self.mask_value:
            out = out + Tensor((~keep).astype(x.data.dtype) * self.mask_value)
        return out

    def extra_repr(self) -> str:
        return f"{self._what}={self.mask_param}, iid_masks={self.iid_masks}"


class FrequencyMasking(_AxisMasking):
    """SpecAugment's frequency mask on (..., freq, time): ``freq_mask_param`` is the widest
    band; ``iid_masks`` draws a mask per utterance (else one for the batch)."""

    _axis, _what = -2, "freq_mask_param"

    def __init__(self, freq_mask_param: int, iid_masks: bool = True) -> None:
        super().__init__(freq_mask_param, iid_masks)


class TimeMasking(_AxisMasking):
    """SpecAugment's time mask on (..., freq, time): at most ``time_mask_param`` frames,
    and at most ``p`` of the utterance's frames."""

    _axis, _what = -1, "time_mask_param"

    def __init__(self, time_mask_param: int, iid_masks: bool = True, p: float = 1.0) -> None:
        super().__init__(time_mask_param, iid_masks, p)


def warp_matrix(n: int, factors: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Linear-interpolation matrices ``(..., n, n)``: row ``f`` of the matrix for ``alpha``
    reads channel ``f / alpha`` (clipped to the last channel), so ``M @ x`` moves the
    content of channel ``c`` to channel ``alpha * c`` (``alpha > 1``: formants move up, a
    shorter vocal tract)."""
    factors = np.asarray(factors, dtype=np.float64)
    src = np.minimum(np.arange(n) / factors[..., None], n - 1)    # (..., n)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    m = np.zeros(factors.shape + (n, n))
    np.put_along_axis(m, lo[..., None], (1 - frac)[..., None], axis=-1)
    hi_part = np.take_along_axis(m, hi[..., None], axis=-1) + frac[..., None]
    np.put_along_axis(m, hi[..., None], hi_part, axis=-1)
    return m.astype(dtype)


class FrequencyWarp(Module):
    """Vocal-tract length perturbation on the frequency axis of (..., freq, time) features:
    in training mode each utterance's channels are resampled by ``alpha ~ U[1-r, 1+r]``
    (``r = max_warp``; channel ``c``'s content moves to ``alpha * c``, linear
    interpolation, the top channel repeated past the edge); identity in eval mode.
    Differentiable (a matrix product with the interpolation weights)."""

    def __init__(self, max_warp: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= max_warp < 0.5:
            raise ValueError(f"FrequencyWarp: max_warp must be in [0, 0.5), got {max_warp}")
        self.max_warp = float(max_warp)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.max_warp == 0:
            return x
        if x.ndim < 2:
            raise ValueError(f"FrequencyWarp expected (..., freq, time), got shape "
                             f"{tuple(x.shape)}")
        lead = tuple(x.shape[:-2])
        alpha = 1.0 + self.max_warp * (2.0 * rng().random(lead) - 1.0)
        m = warp_matrix(x.shape[-2], alpha, x.data.dtype)
        return matmul(Tensor(m), x)

    def extra_repr(self) -> str:
        return f"max_warp={self.max_warp}"


def stretch_matrix(n: int, factors: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Linear-interpolation matrices ``(..., n, n)`` that stretch a length-``n`` axis by
    ``factors`` about its centre: ``x @ M`` has at position ``t`` the value of ``x`` at
    ``c + (t - c) / alpha`` (``c = (n - 1) / 2``; clipped to the ends, so the edge values
    are repeated), i.e. ``alpha > 1`` lasts longer (slower)."""
    factors = np.asarray(factors, dtype=np.float64)
    c = (n - 1) / 2
    src = np.clip(c + (np.arange(n) - c) / factors[..., None], 0, n - 1)   # (..., n)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    m = np.zeros(factors.shape + (n, n))                   # m[..., source, target]
    rows = np.arange(n)
    idx = np.indices(factors.shape)
    np.add.at(m, (*[i[..., None] for i in idx], lo, rows), 1 - frac)
    np.add.at(m, (*[i[..., None] for i in idx], hi, rows), frac)
    return m.astype(dtype)


class TimeStretch(Module):
    """Tempo perturbation on the time axis of (..., freq, time) features: in training mode
    each utterance's frames are resampled by ``alpha ~ U[1-r, 1+r]`` (``r = max_stretch``)
    about the centre frame (linear interpolation; ``alpha > 1`` slower), leaving the
    frequency axis — the pitch and formants — alone; identity in eval mode.
    Differentiable (a matrix product with the interpolation weights)."""

    def __init__(self, max_stretch: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= max_stretch < 0.5:
            raise ValueError(f"TimeStretch: max_stretch must be in [0, 0.5), got "
                             f"{max_stretch}")
        self.max_stretch = float(max_stretch)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.max_stretch == 0:
            return x
        if x.ndim < 2:
            raise ValueError(f"TimeStretch expected (..., freq, time), got shape "
                             f"{tuple(x.shape)}")
        lead = tuple(x.shape[:-2])
        alpha = 1.0 + self.max_stretch * (2.0 * rng().random(lead) - 1.0)
        m = stretch_matrix(x.shape[-1], alpha, x.data.dtype)      # (..., T, T)
        return matmul(x, Tensor(m))

    def extra_repr(self) -> str:
        return f"max_stretch={self.max_stretch}"


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` played ``factor`` times as fast (``factor > 1``: shorter and higher), by linear
    interpolation: ``y[n] = x(n * factor)``."""
    if not factor > 0:
        raise ValueError(f"speed_perturb: factor must be > 0, got {factor}")
    x = np.asarray(x)
    n_out = max(1, int(round(len(x) / factor)))
    kern = _numba.kernels_for(x) if x.ndim == 1 and len(x) >= 2 else None
    if kern is not None:                # np.interp's arithmetic in one compiled loop
        out = np.empty(n_out, x.dtype)
        kern.speed_interp(x, float(factor), out)
        return out
    t = np.arange(n_out) * factor
    return np.interp(t, np.arange(len(x)), x).astype(x.dtype, copy=False)


def _loudest(x: np.ndarray, length: int) -> int:
    """Start of the ``length``-sample stretch of ``x`` with the most energy."""
    e = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    sums = e[length:] - e[:-length]
    return int(np.argmax(sums))


def fit_length(x: np.ndarray, length: int, offset: int | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """``x`` in a zero buffer of ``length`` samples, starting at ``offset`` (``None``:
    centred). A longer ``x`` is cut to its loudest ``length`` samples."""
    x = np.asarray(x)
    buf = np.zeros(length, dtype=x.dtype) if out is None else out
    buf[:] = 0
    if len(x) >= length:
        s = _loudest(x, length)
        buf[:] = x[s:s + length]
        return buf
    room = length - len(x)
    off = room // 2 if offset is None else int(min(max(offset, 0), room))
    buf[off:off + len(x)] = x
    return buf
