"""Augmentation for speech: SpecAugment's masks as layers (Park et al. 2019), and
waveform perturbations (speed, placement in time) as functions.

* :class:`FrequencyMasking` / :class:`TimeMasking` (torchaudio's names and arguments): in
  training mode each utterance gets a band of ``width ~ U[0, mask_param)`` consecutive
  frequency channels / frames set to ``mask_value``; in eval mode they pass the input on.
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
from shendu.functional import mul
from shendu.nn.module import Module
from shendu.tensor import Tensor

__all__ = ["FrequencyMasking", "TimeMasking", "speed_perturb", "fit_length"]


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


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` played ``factor`` times as fast (``factor > 1``: shorter and higher), by linear
    interpolation: ``y[n] = x(n * factor)``."""
    if not factor > 0:
        raise ValueError(f"speed_perturb: factor must be > 0, got {factor}")
    x = np.asarray(x)
    n_out = max(1, int(round(len(x) / factor)))
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
