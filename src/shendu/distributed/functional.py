"""Differentiable ops that talk across ranks: :func:`sync_batch_norm`."""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.distributed import backend as _dist
from shendu.functional.normalization import _channel_view, _restore
from shendu.tensor import Tensor

__all__ = ["SyncBatchNormFunction", "sync_batch_norm"]


def _allreduce_sum(a: np.ndarray) -> np.ndarray:
    """Sum of ``a`` over the ranks (a new array; ``a`` itself on the loopback group)."""
    g = _dist._group("sync_batch_norm")
    if g.comm is None:
        return a
    return _dist.allreduce_array(a, what="sync_batch_norm")


class SyncBatchNormFunction(Function):
    r"""Batch normalisation with statistics over the *global* batch (every rank's).

    Forward, per channel ``c``: ``M = sum_r m_r`` values over all ranks;
    ``mu = (sum_r sum x) / M`` (an all-reduce), ``sigma^2 = (sum_r sum (x - mu)^2) / M``
    (a second one), ``r = 1 / sqrt(sigma^2 + eps)``, ``xhat = (x - mu) r``,
    ``y = w xhat + b``; running estimates as :class:`BatchNorm` with the unbiased
    ``sigma^2 M / (M - 1)``.

    Backward: every rank's output depends on every rank's input through ``mu`` and
    ``sigma``, so the sums of the mean-subtraction terms are all-reduced:
    ``dx = w r (dy - S1 / M - xhat r S2 / M)`` with ``S1 = sum_r sum dy`` and
    ``S2 = sum_r sum dy (x - mu)``; ``dw = sum dy xhat`` and ``db = sum dy`` stay local
    (DistributedDataParallel averages them) — torch's ``SyncBatchNorm``.
    """

    saved_inputs = None

    def forward(self, x, w=None, b=None, rm=None, rv=None, momentum=0.1, eps=1e-5):
        v, perm = _channel_view(x)
        cm = perm is not None                     # channel-major: (C, 1, S)
        axes, bshape = ((1, 2), (-1, 1, 1)) if cm else ((0, 2), (1, -1, 1))
        c, dt = x.shape[1], x.dtype
        acc = np.float64
        s = np.empty(c + 1, acc)
        s[:c] = v.sum(axis=axes, dtype=acc)
        s[c] = v.size // c
        s = _allreduce_sum(s)
        m = int(round(s[c]))
        if m <= 1:
            raise ValueError(f"sync_batch_norm: expected more than 1 value per channel over "
                             f"all ranks when training, got {m}")
        mean = s[:c] / m
        xc = v - mean.astype(dt).reshape(bshape)
        var = _allreduce_sum((xc * xc).sum(axis=axes, dtype=acc)) / m
        if rm is not None:
            rm *= 1 - momentum
            rm += (momentum * mean).astype(rm.dtype)
        if rv is not None:
            rv *= 1 - momentum
            rv += ((momentum * m / (m - 1)) * var).astype(rv.dtype)
        rstd = (1.0 / np.sqrt(var + eps)).astype(dt)
        scale = rstd if w is None else w * rstd
        y = xc * scale.reshape(bshape)
        if b is not None:
            y += b.reshape(bshape)
        self.x, self.mean, self.rstd, self.w = v, mean.astype(dt), rstd, w
        self.perm, self.m, self.shape, self.cm = perm, m, x.shape, cm
        return _restore(y, x.shape, perm)

    def backward(self, g):
        v, mean, rstd, w, perm, m = self.x, self.mean, self.rstd, self.w, self.perm, self.m
        if perm is not None:
            t = g.transpose(perm)
            g3 = (t if t.flags.c_contiguous else np.ascontiguousarray(t)).reshape(v.shape)
            axes, bshape = (1, 2), (-1, 1, 1)
        else:
            g3 = g.reshape(v.shape)
            axes, bshape = (0, 2), (1, -1, 1)
        c = mean.shape[0]
        need = self.needs_input_grad
        xc = v - mean.reshape(bshape)
        sg = g3.sum(axis=axes)                                   # local sum(dy)
        dot = (g3 * xc).sum(axis=axes)                           # local sum(dy (x - mu))
        gx = None
        if need[0]:
            both = _allreduce_sum(np.concatenate([sg, dot]).astype(np.float64))
            s1, s2 = both[:c].astype(v.dtype), both[c:].astype(v.dtype)
            a = rstd if w is None else w * rstd
            t = g3 - (s1 / m).reshape(bshape)
            t -= xc * (s2 * rstd * rstd / m).reshape(bshape)
            t *= a.reshape(bshape)
            gx = _restore(t, self.shape, perm)
        if w is None:
            return gx
        gw = dot * rstd if need[1] else None
        gb = sg if len(need) > 2 and need[2] else None
        return (gx, gw) + ((gb,) if len(need) > 2 else ())


def sync_batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                    weight: Tensor | None = None, bias: Tensor | None = None,
                    momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Training-mode batch normalisation over the global batch of the process group (see
    :class:`SyncBatchNormFunction`); the running statistics, when given, are updated in
    place. Every rank must call it, in the same order."""
    xs = input.data.shape
    if input.data.ndim < 2:
        raise ValueError(f"sync_batch_norm: expected input (N, C, ...) with at least 2 dims, "
                         f"got {xs}")
    c = xs[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.data.shape != (c,):
            raise ValueError(f"sync_batch_norm: {name} must have shape ({c},) for input {xs}, "
                             f"got {t.data.shape}")
    if weight is not None and weight.data.dtype != input.data.dtype:
        raise RuntimeError(f"sync_batch_norm: input is {input.data.dtype} but weight is "
                           f"{weight.data.dtype}")
    kw = dict(rm=None if running_mean is None else running_mean.data,
              rv=None if running_var is None else running_var.data,
              momentum=float(momentum), eps=float(eps))
    if weight is None and bias is not None:
        weight = Tensor(np.ones(c, input.data.dtype))
    if weight is None:
        return SyncBatchNormFunction.apply(input, **kw)
    if bias is None:
        return SyncBatchNormFunction.apply(input, weight, **kw)
    return SyncBatchNormFunction.apply(input, weight, bias, **kw)
