"""Traceable forms of the modules that compute part of their result with NumPy.

A module that builds a mask from its input's values with NumPy (``x.data == pad_id``)
hides that computation from the tracer. For the modules of shendu that do so, the
exporter runs the form below instead while tracing: the same arithmetic, with the mask
made by shendu's ops (comparisons, ``where``), so the graph rebuilds it from the input.
The tracer also runs the module itself and checks that both give the same outputs (see
:func:`shendu.onnx._trace.trace`), so a module that changes can't be exported wrongly.
"""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu.audio.features import UtteranceNorm
from shendu.functional.pooling import AdaptiveAvgPool2d as AdaptiveAvgPoolOp
from shendu.models.attention import SequenceEncoderNet
from shendu.nn.linear import Linear
from shendu.nn.pooling import AdaptiveAvgPool2d
from shendu.onnx._trace import OVERRIDES
from shendu.tensor import Tensor


def _float_of(mask: Tensor, dtype) -> Tensor:
    """A bool tensor as 1.0 / 0.0 of ``dtype`` (a ``Where`` the graph follows)."""
    dt = np.dtype(dtype)
    return F.where(mask, Tensor(np.ones((), dt)), Tensor(np.zeros((), dt)))


def _utterance_norm(m: UtteranceNorm, args, kwargs) -> Tensor:
    """``UtteranceNorm(active_db=...)``: statistics over the frames whose loudest channel is
    within ``active_db`` dB of the utterance's peak, the other frames set to 0."""
    x = args[0] if args else kwargs["x"]
    loud = F.amax(x, dim=-2, keepdim=True)                           # (..., 1, T)
    peak = F.amax(loud, dim=-1, keepdim=True)                        # (..., 1, 1)
    mask = _float_of(loud >= peak - m.active_db, x.dtype)            # (..., 1, T)
    count = F.sum(mask, dim=-1, keepdim=True)
    x = (x - F.sum(x * mask, dim=-1, keepdim=True) / count) * mask
    if m.variance:
        x = x / F.sqrt(F.sum(x * x, dim=-1, keepdim=True) / count + m.eps)
    return x


def _sequence_encoder(m: SequenceEncoderNet, args, kwargs) -> Tensor:
    """``SequenceEncoderNet`` on tokens with ``pad_id``: the key padding mask and the
    mean over the real tokens, from ``tokens == pad_id``."""
    x = args[0] if args else kwargs["x"]
    if not isinstance(x, Tensor):
        x = Tensor(np.asarray(x))
    pad = x == m.pad_id                                              # (N, T) bool
    h = m.encoder(m.pos(m.embed(x)), src_key_padding_mask=pad)       # (N, T, d)
    keep = F.unsqueeze(_float_of(~pad, h.dtype), -1)                 # (N, T, 1)
    denom = F.maximum(F.sum(keep, dim=1), Tensor(np.ones((), h.dtype)))
    return m.head(F.sum(h * keep, dim=1) / denom)


def _adaptive_avg_pool(m: AdaptiveAvgPool2d, args, kwargs) -> Tensor:
    """``AdaptiveAvgPool2d`` always as its averaging matrices (``F.adaptive_avg_pool2d``
    takes an average pool when the sizes divide, a choice made on the traced size): the
    graph then follows any input size."""
    x = args[0] if args else kwargs["x"]
    h, w = x.shape[-2:]
    size = m.output_size
    ho, wo = (size, size) if size is None or isinstance(size, (int, np.integer)) else size
    out = (h if ho is None else int(ho), w if wo is None else int(wo))
    return AdaptiveAvgPoolOp.apply(x, out_size=out, unbatched=x.ndim == 3)


OVERRIDES[AdaptiveAvgPool2d] = (lambda m: True, _adaptive_avg_pool)
OVERRIDES[UtteranceNorm] = (lambda m: m.active_db is not None, _utterance_norm)
OVERRIDES[SequenceEncoderNet] = (
    lambda m: m.pad_id is not None and not isinstance(m.embed, Linear), _sequence_encoder)
