"""Normalisation layers as fused ops with hand-derived backward."""

from __future__ import annotations

import math

import numpy as np

from shendu.autograd import Function
from shendu.functional import _numba
from shendu.functional._util import column_sums, matvec, row_sums
from shendu.functional.conv import parallel
from shendu.functional.linear import check_same_dtype
from shendu.tensor import Tensor

__all__ = ["layer_norm", "batch_norm"]


def _compiled(x: np.ndarray, *params):
    """The compiled loops for a layer norm of ``x`` with ``params``, or None (NumPy's
    passes): see :func:`shendu.functional._numba.kernels_for`."""
    return _numba.kernels_for(x, *params, min_size=_COMPILED_MIN)


_COMPILED_MIN = 1 << 12      # elements from which a compiled loop pays for its call


def _by_rows(rows, split, args: tuple, x2: np.ndarray) -> None:
    """``rows(*args, lo, hi)`` over the rows of ``x2``: with several kernel threads, rows
    enough (``conv.PARALLEL_MIN`` elements) and Numba's TBB layer, as one compiled region
    (``split(*args, t)``: TBB's threads take a piece of work at once); else by
    ``conv.parallel`` (Python threads, which stay on one for loops this size beside BLAS's
    threads). Rows are independent: any split, the same bits."""
    from shendu.functional import _regions, conv

    t = min(conv._N_THREADS, len(x2))
    if t >= 2 and x2.size >= conv.PARALLEL_MIN and not conv.in_parallel_region() \
            and _regions.tbb():
        split(*args, t)
    else:
        parallel(lambda lo, hi: rows(*args, lo, hi), len(x2), x2.size)


class LayerNorm(Function):
    r"""Layer normalisation (Ba, Kiros & Hinton 2016) over the last ``D`` elements of each row.

    With ``mu = mean(x)``, ``sigma^2 = mean((x - mu)^2)`` (biased) and
    ``r = 1 / sqrt(sigma^2 + eps)``: ``xhat = (x - mu) r``, ``y = xhat * w + b``.

    Backward, with ``dxhat = dy * w`` and means over the normalised elements:
    ``dx = r (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``,
    ``dw = sum_rows(dy * xhat)``, ``db = sum_rows(dy)``.
    """

    saved_inputs = None  # input, weight, bias (as torch)

    def forward(self, x, w=None, b=None, d=1, eps=1e-5):
        shape = x.shape
        x2 = x.reshape(-1, d)                                  # (M, D)
        nb = _compiled(x2, w, b)
        if nb is not None:                      # one pass per row (functional._numba)
            dt = x2.dtype
            xhat, y = np.empty(x2.shape, dt), np.empty(x2.shape, dt)
            rstd = np.empty((len(x2), 1), dt)
            wv = np.ones(d, dt) if w is None else w.reshape(-1)
            bv = np.zeros(d, dt) if b is None else b.reshape(-1)
            r1 = rstd.reshape(-1)
            _by_rows(nb.layer_norm_rows, nb.layer_norm_split, (x2, wv, bv, eps, y, xhat, r1),
                     x2)
            self.xhat, self.rstd, self.shape, self.w = xhat, rstd, shape, w
            return y.reshape(shape)
        # row means as a matrix-vector product: NumPy's reductions along short rows run
        # far slower than BLAS (5x at D=64), and normalised rows are short
        mu = matvec(x2, np.full(d, 1.0 / d, x2.dtype))[:, None]
        xc = x2 - mu
        var = np.einsum("ij,ij->i", xc, xc)[:, None]
        var /= d
        var += eps
        rstd = 1.0 / np.sqrt(var)                              # (M, 1)
        xc *= rstd                                             # xhat
        self.xhat, self.rstd, self.shape = xc, rstd, shape
        self.w = w
        if w is None:
            y = xc.copy()
        else:
            y = xc * w.reshape(-1)
            if b is not None:
                y += b.reshape(-1)
        return y.reshape(shape)

    def backward(self, g):
        xhat, rstd, w = self.xhat, self.rstd, self.w
        d = xhat.shape[1]
        g2 = g.reshape(-1, d)                                  # (M, D)
        need = self.needs_input_grad
        gw = gb = None
        if len(need) > 1 and w is not None and need[1]:
            gw = np.einsum("ij,ij->j", g2, xhat).reshape(w.shape)
        if len(need) > 2 and need[2]:
            gb = column_sums(g2).reshape(w.shape)
        gx = None
        nb = _compiled(xhat, w) if need[0] and g2.dtype == xhat.dtype else None
        if nb is not None:                      # one pass per row (functional._numba)
            gx = np.empty(xhat.shape, xhat.dtype)
            wv = np.ones(d, xhat.dtype) if w is None else w.reshape(-1)
            r1 = rstd.reshape(-1)
            _by_rows(nb.layer_norm_grad_rows, nb.layer_norm_grad_split,
                     (g2, xhat, r1, wv, gx), g2)
            gx = gx.reshape(self.shape)
        elif need[0]:
            dxh = g2 * w.reshape(-1) if w is not None else g2.copy()
            m1 = matvec(dxh, np.full(d, 1.0 / d, dxh.dtype))[:, None]
            m2 = np.einsum("ij,ij->i", dxh, xhat)[:, None]
            m2 /= d
            dxh -= m1
            dxh -= xhat * m2
            dxh *= rstd
            gx = dxh.reshape(self.shape)
        if w is None:
            return gx
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)


class _AddLayerNorm(LayerNorm):
    """``layer_norm(x + q)``, a post-norm transformer's residual connection and the norm
    after it, as one op on the compiled loops (``functional._numba``): the sum is made
    as each element is read, never stored, with the bits of ``x + q`` then
    :class:`LayerNorm`. Inputs ``x, q, w`` and ``b`` (both or neither); backward is
    :class:`LayerNorm`'s, its ``dx`` going to ``x`` and ``q`` alike (as ``Add``'s does)."""

    def forward(self, x, q, w=None, b=None, d=1, eps=1e-5):
        shape = x.shape
        x2, q2 = x.reshape(-1, d), q.reshape(-1, d)
        dt = x2.dtype
        nb = _numba.kernels()
        keep = any(self.needs_input_grad)       # inference writes y alone (same bits)
        y = np.empty(x2.shape, dt)
        xhat = np.empty(x2.shape, dt) if keep else y
        rstd = np.empty((len(x2), 1), dt)
        wv = np.ones(d, dt) if w is None else w.reshape(-1)
        bv = np.zeros(d, dt) if b is None else b.reshape(-1)
        r1 = rstd.reshape(-1)
        _by_rows(nb.add_layer_norm_rows, nb.add_layer_norm_split,
                 (x2, q2, wv, bv, eps, y, keep, xhat, r1), x2)
        if keep:
            self.xhat, self.rstd, self.shape, self.w = xhat, rstd, shape, w
        return y.reshape(shape)

    def backward(self, g):
        need = self.needs_input_grad
        self.needs_input_grad = (need[0] or need[1],) + need[2:]
        try:
            res = super().backward(g)
        finally:
            self.needs_input_grad = need
        gx, rest = (res[0], res[1:]) if type(res) is tuple else (res, ())
        return (gx if need[0] else None, gx if need[1] else None) + rest


def add_layer_norm(x: Tensor, q: Tensor, normalized_shape: tuple, weight: Tensor | None,
                   bias: Tensor | None, eps: float) -> Tensor:
    """``layer_norm(x + q, normalized_shape, weight, bias, eps)``: one op where it can be
    (:class:`_AddLayerNorm`: x and q of one shape and dtype, the weights' too, both weights
    or neither, the compiled loops present, no exporter tracing the ops), else the two."""
    from shendu import autograd

    xd, qd = x.data, q.data
    ns = tuple(normalized_shape)
    if (xd.shape != qd.shape or xd.dtype != qd.dtype or len(ns) == 0
            or xd.shape[max(xd.ndim - len(ns), 0):] != ns or xd.ndim < len(ns)
            or (weight is None) != (bias is None) or autograd._tracer is not None
            or any(t is not None and (t.data.dtype != xd.dtype or t.data.shape != ns)
                   for t in (weight, bias))
            or _compiled(xd) is None):
        return layer_norm(x + q, ns, weight, bias, eps)
    d = math.prod(ns)
    if weight is None:
        return _AddLayerNorm.apply(x, q, d=d, eps=eps)
    return _AddLayerNorm.apply(x, q, weight, bias, d=d, eps=eps)


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing dims ``normalized_shape``, then scale and shift."""
    ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(s) for s in normalized_shape)
    xs = input.data.shape
    if len(ns) == 0 or xs[len(xs) - len(ns):] != ns or len(xs) < len(ns):
        raise ValueError(f"layer_norm: expected input (..., {', '.join(map(str, ns))}) for "
                         f"normalized_shape {ns}, got {xs}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.data.shape != ns:
            raise ValueError(f"layer_norm: {name} must have shape {ns}, got {t.data.shape}")
    d = math.prod(ns)
    check_same_dtype("layer_norm", input, weight if weight is not None else bias)
    if weight is None and bias is not None:
        weight = Tensor(np.ones(ns, input.data.dtype))
    if weight is None:
        return LayerNorm.apply(input, d=d, eps=eps)
    if bias is None:
        return LayerNorm.apply(input, weight, d=d, eps=eps)
    return LayerNorm.apply(input, weight, bias, d=d, eps=eps)


def _channel_view(x: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """``x`` (N, C, ...) as a 3-D array in memory order, and the permutation that made it.

    Channel-major memory (the batch-innermost activations of conv, or (C, N, ...)) gives
    ``(C, 1, S)`` and the permutation bringing C first; anything else ``(N, C, S)`` (a
    copy if ``x`` is not contiguous) and None.
    """
    c = x.shape[1]
    if x.ndim > 2 and not x.flags.c_contiguous:
        rest = tuple(range(2, x.ndim))
        for perm in ((1, 0) + rest, (1,) + rest + (0,)):
            t = x.transpose(perm)
            if t.flags.c_contiguous:
                return t.reshape(c, 1, -1), perm
    return x.reshape(x.shape[0], c, -1), None


def _restore(v: np.ndarray, shape: tuple, perm: tuple | None) -> np.ndarray:
    """Inverse of :func:`_channel_view` for an array shaped like its result."""
    if perm is None:
        return v.reshape(shape)
    return v.reshape(tuple(shape[p] for p in perm)).transpose(np.argsort(perm))


def _channel_sums(v: np.ndarray, cm: bool) -> np.ndarray:
    """Per-channel sums of a :func:`_channel_view` result, as matrix-vector products (BLAS
    runs several times faster than NumPy's reductions here, as in layer_norm)."""
    if cm:                                                   # (C, 1, S)
        return row_sums(v.reshape(v.shape[0], -1))
    n, c, s = v.shape                                        # (N, C, S)
    rows = v.reshape(n, c) if s == 1 else row_sums(v)
    return column_sums(rows)


class BatchNorm(Function):
    r"""Batch normalisation (Ioffe & Szegedy 2015) of each channel ``c`` of (N, C, ...).

    Training: ``mu_c`` and ``sigma_c^2`` (biased) over the ``m = N * prod(...)`` values of
    channel ``c``; ``r = 1 / sqrt(sigma^2 + eps)``, ``xhat = (x - mu) r``,
    ``y = w xhat + b``. The running estimates are updated in place with the *unbiased*
    variance, as torch: ``rm <- (1 - a) rm + a mu``, ``rv <- (1 - a) rv + a sigma^2 m/(m-1)``.
    Evaluation: the running estimates replace ``mu`` and ``sigma^2``.

    Backward (training), with means over the ``m`` values of a channel:
    ``dx = w r (dy - mean(dy) - xhat mean(dy xhat))``, ``dw = sum(dy xhat)``,
    ``db = sum(dy)``. In evaluation the statistics are constants: ``dx = w r dy``.

    Training keeps the centred input ``x - mu`` (the forward computes it anyway) for the
    backward; per-channel sums are matrix-vector products, per-channel dot products one
    ``einsum``: three passes over the data forward after the mean, four backward.
    """

    saved_inputs = None

    def forward(self, x, w=None, b=None, rm=None, rv=None, training=True, momentum=0.1,
                eps=1e-5):
        v, perm = _channel_view(x)
        cm = perm is not None                     # channel-major: (C, 1, S)
        bshape = (-1, 1, 1) if cm else (1, -1, 1)
        spec = "ijk,ijk->i" if cm else "ijk,ijk->j"
        m = v.size // x.shape[1]
        dt = x.dtype
        if training:
            mean = _channel_sums(v, cm) / m
            xc = v - mean.reshape(bshape)
            var = np.einsum(spec, xc, xc) / m
            if rm is not None:
                rm *= 1 - momentum
                rm += momentum * mean
            if rv is not None:
                rv *= 1 - momentum
                rv += (momentum * m / max(m - 1, 1)) * var
            rstd = (1.0 / np.sqrt(var + eps)).astype(dt)
            scale = rstd if w is None else w * rstd
            y = xc * scale.reshape(bshape)
            if b is not None:
                y += b.reshape(bshape)
            self.xc = xc
        else:
            mean, var = rm, rv
            rstd = (1.0 / np.sqrt(var + eps)).astype(dt)
            scale = rstd if w is None else w * rstd
            shift = -mean * scale if b is None else b - mean * scale
            y = v * scale.reshape(bshape)
            y += shift.astype(dt).reshape(bshape)
            self.x, self.mean = v, mean.astype(dt)
        self.rstd, self.w, self.vshape = rstd, w, v.shape
        self.perm, self.m, self.training, self.shape = perm, m, training, x.shape
        return _restore(y, x.shape, perm)

    def backward(self, g):
        rstd, w, perm, m = self.rstd, self.w, self.perm, self.m
        cm = perm is not None
        if cm:
            t = g.transpose(perm)
            g3 = (t if t.flags.c_contiguous else np.ascontiguousarray(t)).reshape(self.vshape)
            bshape, spec = (-1, 1, 1), "ijk,ijk->i"
        else:
            g3 = g.reshape(self.vshape)
            bshape, spec = (1, -1, 1), "ijk,ijk->j"
        need = self.needs_input_grad
        xc = self.xc if self.training else self.x - self.mean.reshape(bshape)
        sg = _channel_sums(g3, cm)                               # sum(dy)
        gw = np.einsum(spec, g3, xc) * rstd                      # sum(dy xhat)
        gx = None
        if need[0]:
            a = rstd if w is None else w * rstd
            if self.training:
                # dx = a (dy - sum(dy)/m - (x - mu) r sum(dy xhat)/m)
                t = xc * (-(gw * rstd / m)).reshape(bshape)
                t += g3
                t -= (sg / m).reshape(bshape)
                t *= a.reshape(bshape)
            else:
                t = g3 * a.reshape(bshape)
            gx = _restore(t, self.shape, perm)
        if w is None:
            return gx
        gb = sg if len(need) > 2 and need[2] else None
        return (gx, gw if need[1] else None) + ((gb,) if len(need) > 2 else ())


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel of ``input`` (N, C, ...) by batch or running statistics.

    ``training=True`` uses the batch's statistics and, when given, updates ``running_mean``
    and ``running_var`` in place (``momentum`` is the weight of the new batch);
    ``training=False`` uses the running statistics. See :class:`BatchNorm`.
    """
    xs = input.data.shape
    if input.data.ndim < 2:
        raise ValueError(f"batch_norm: expected input (N, C, ...) with at least 2 dims, got {xs}")
    c = xs[1]
    dt = input.data.dtype
    if dt.kind != "f":
        raise RuntimeError(f"batch_norm: expected a floating input dtype, got {dt}")
    check_same_dtype("batch_norm", input, weight if weight is not None else running_mean)
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.data.shape != (c,):
            raise ValueError(f"batch_norm: {name} must have shape ({c},) for input {xs}, "
                             f"got {t.data.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must be given when "
                         "training=False")
    if input.data.size == 0:  # an empty batch: an empty result, statistics untouched (torch)
        from shendu.functional.math import clone

        return clone(input)
    if training:
        m = input.data.size // max(c, 1)
        if m <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when "
                             f"training, got input {xs}")
    rm = None if running_mean is None else running_mean.data
    rv = None if running_var is None else running_var.data
    if not training:
        rm, rv = rm.astype(dt, copy=False), rv.astype(dt, copy=False)
    kw = dict(rm=rm, rv=rv, training=bool(training), momentum=float(momentum), eps=float(eps))
    if weight is None and bias is not None:
        weight = Tensor(np.ones(c, dt))
    if weight is None:
        return BatchNorm.apply(input, **kw)
    if bias is None:
        return BatchNorm.apply(input, weight, **kw)
    return BatchNorm.apply(input, weight, bias, **kw)
