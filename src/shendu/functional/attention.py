r"""Attention as fused ops: scaled dot-product attention (Vaswani et al. 2017) and additive
attention (Bahdanau, Cho & Bengio 2014), each one :class:`~shendu.autograd.Function` with a
hand-derived backward.

Scaled dot-product attention, for queries ``Q`` (..., L, E), keys ``K`` (..., S, E) and
values ``V`` (..., S, Ev):

.. math::

    S = \alpha\, Q K^\top + B, \qquad P = \operatorname{softmax}_{\text{rows}}(S), \qquad
    O = P V,

with ``alpha = 1/sqrt(E)`` unless given, ``B`` an additive mask (``-inf`` where a query may
not look at a key). Backward, with ``dO`` the gradient of ``O`` (the softmax backward is
inline; ``D = rowsum(dO * O)`` replaces ``rowsum(dP * P)`` as in FlashAttention, Dao et al.
2022, so no second (L, S) product is formed):

.. math::

    dV = P^\top dO, \quad dP = dO V^\top, \quad dS = P \odot (dP - D), \quad
    dQ = \alpha\, dS K, \quad dK = \alpha\, dS^\top Q, \quad dB = dS.

Rows whose keys are all masked out have no defined softmax (torch's ``softmax`` gives NaN).
Here such a row gets **zero** attention weights, hence a zero output and a zero gradient —
the same rule as torch's ``scaled_dot_product_attention`` (its "safe softmax"), never NaN.
"""

from __future__ import annotations

import math

import numpy as np

from shendu.autograd import Function
from shendu.backend import rng
from shendu.functional import _flash, _gemm, _numba, _regions
from shendu.functional._gemm import exp, matmul
from shendu.functional._openblas import ONE_THREAD
from shendu.functional._util import matvec, unbroadcast
from shendu.tensor import Tensor

__all__ = ["scaled_dot_product_attention", "additive_attention", "causal_mask"]


def _swap(a: np.ndarray) -> np.ndarray:
    return a.swapaxes(-1, -2)


#: Score rows up to this long are computed transposed, (..., S, L) in memory (see
#: :func:`_masked_softmax_`): NumPy reduces along a short contiguous row one row at a time
#: (the row max of (32, 4, 64, 64) scores takes three times as long as the column max of
#: their transpose); from about 256 keys on the rows are long enough for it not to matter.
#: Not when the weights are returned (they keep the row-major layout callers expect).
_SHORT_ROWS = 128


def _scores(q: np.ndarray, k: np.ndarray, short: bool, out=None) -> np.ndarray:
    """``Q K^T`` (..., L, S); with ``short`` computed as ``K Q^T`` and stored (..., S, L)
    (the result is its transposed view; see :data:`_SHORT_ROWS`). ``out``: in that layout."""
    if short:
        s = _gemm.rows_nt(k, q, out)
        return _swap(s if s is not None else matmul(k, _swap(q), out=out))
    return matmul(q, _swap(k), out=out)


def _score_grads(g_out: np.ndarray, v: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``dP = dO V^T`` (..., L, S), laid out in memory as ``p`` is."""
    if p.strides[-1] != p.itemsize:                         # p transposed: (..., S, L) memory
        s = _gemm.rows_nt(v, g_out)
        return _swap(s if s is not None else matmul(v, _swap(g_out)))
    return matmul(g_out, _swap(v))


def _masked_softmax_(s: np.ndarray, bounded: bool = False, scale=None) -> np.ndarray:
    """Softmax over the last axis of ``s``, in place; rows that are all ``-inf`` become 0.
    ``bounded``: every finite score is known to lie within ``±_flash._NO_SHIFT`` (see
    :func:`_bounded`), so the row max need not be subtracted (two passes fewer).
    ``scale`` (of ``s``'s dtype): ``s`` is multiplied by it first, inside the compiled
    column shift, which must then apply (:func:`_column_kernels`).

    ``s`` may be the transposed view of a (..., S, L) array (its last axis not the
    contiguous one): the reductions then run down that array's columns, which NumPy
    vectorises across the L rows at once."""
    if s.ndim >= 2 and s.strides[-1] != s.itemsize and s.strides[-2] == s.itemsize:
        return _swap(_softmax_along_(_swap(s), -2, bounded, _column_kernels(s), scale))
    return _softmax_along_(s, -1, bounded)


#: scores from which the softmax's max and shift down the columns run as one compiled loop
_COMPILED_MIN = 1 << 12


def _column_kernels(s: np.ndarray):
    """The compiled loops (``functional._numba``) when ``s`` is the transposed view of a
    C-contiguous (..., S, L) array large enough for them: its softmax's column max and
    shift are then one pass (NumPy's bits), cheaper than the bound that would skip them
    (:func:`_bounded`); None otherwise."""
    if s.ndim < 2 or s.strides[-2] != s.itemsize or not _swap(s).flags.c_contiguous:
        return None
    return _numba.kernels_for(s, min_size=_COMPILED_MIN)


def _softmax_along_(s: np.ndarray, axis: int, bounded: bool = False, kern=None,
                    scale=None) -> np.ndarray:
    if kern is not None and not bounded:                # axis -2 of a C-contiguous s
        one = s.dtype.type(1) if scale is None else scale
        kern.shift_columns(s.reshape((-1,) + s.shape[-2:]), one)
    else:
        if scale is not None:
            s *= scale
        if not bounded:             # bounded: exp(s) within [e^-16, e^16], or 0 where masked
            m = s.max(axis=axis, keepdims=True)
            m[m == -np.inf] = 0                             # rows with every key masked
            s -= m
    exp(s, out=s)
    if kern is not None:                    # NumPy's sums and division, one compiled pass
        kern.normalize_columns(s.reshape((-1,) + s.shape[-2:]))
        return s
    z = s.sum(axis=axis, keepdims=True)
    z[z == 0] = 1                   # only a row with every key masked sums to 0: it stays 0
    s /= z
    return s


def _bounded(q: np.ndarray, k: np.ndarray, scale: float) -> bool:
    """Whether every score ``scale q_i . k_j`` lies within ``±_flash._NO_SHIFT``: by
    Cauchy-Schwarz when ``scale`` times the largest row norms of ``q`` and ``k`` (rounded up
    far beyond their rounding error) is below it."""
    if q.size == 0 or k.size == 0 or q.dtype.kind != "f":
        return False
    bound = abs(scale) * float(_flash.row_norms(q).max()) * float(_flash.row_norms(k).max())
    return bound < _flash._NO_SHIFT


class ScaledDotProductAttention(Function):
    """``O = softmax(alpha Q K^T + B) V`` (masks folded into ``B`` or a boolean keep-mask).

    Inputs: ``q, k, v`` and, when the additive mask is a tensor, that mask (its gradient is
    ``dS``). Keyword params: ``keep`` (bool array, True = take part, broadcastable to
    (..., L, S)), ``scale``, ``dropout_p``, ``need_weights`` (second output: the attention
    weights actually used, after dropout, as torch's ``MultiheadAttention`` returns them).
    """

    saved_inputs = None  # q, k, v (and a tensor mask)

    def forward(self, q, k, v, bias=None, keep=None, scale=1.0, dropout_p=0.0,
                need_weights=False):
        self.blockwise = not need_weights and _use_blockwise(q, k, v, bias, keep, dropout_p)
        if self.blockwise:
            return self._forward_blockwise(q, k, v, bias, keep, scale, dropout_p)
        self.by_heads = (bias is None and dropout_p == 0.0 and not need_weights
                         and _by_heads(q, k, v, keep))
        if self.by_heads:
            return self._forward_by_heads(q, k, v, keep, scale)
        s = _scores(q, k, dropout_p == 0.0 and not need_weights and k.shape[-2] <= _SHORT_ROWS)
        # with no mask, the compiled column shift scales the scores in its own pass
        fold = bias is None and keep is None and _column_kernels(s) is not None
        if not fold:
            s *= scale
        bounded = bias is None and _column_kernels(s) is None and _bounded(q, k, scale)
        if bias is not None:
            if np.broadcast_shapes(s.shape, bias.shape) == s.shape:
                s += bias
            else:
                s = s + bias
        if keep is not None:
            if np.broadcast_shapes(s.shape, keep.shape) != s.shape:
                s = np.array(np.broadcast_to(s, np.broadcast_shapes(s.shape, keep.shape)))
            np.copyto(s, -np.inf, where=~keep)
        p = _masked_softmax_(s, bounded, s.dtype.type(scale) if fold else None)  # (..., L, S)
        self.p = p
        pd = p
        self.dropped = dropout_p > 0.0
        if self.dropped:                                    # Pd = P * keep / (1 - p)
            dt = p.dtype
            u = rng().random(p.shape, dtype=np.float32 if dt == np.float32 else np.float64)
            self.keep_d = u >= dropout_p                    # kept as bool: 1 byte, not 4
            self.inv = dt.type(1.0 / (1.0 - dropout_p)) if dropout_p < 1.0 else dt.type(0)
            pd = p * self.keep_d
            pd *= self.inv
        # keep Pd only if it is returned anyway (else rebuilt from P and keep in backward)
        self.pd = pd if (need_weights or not self.dropped) else None
        out = matmul(pd, v)                                      # (..., L, Ev)
        self.q, self.k, self.v, self.out = q, k, v, out
        self.scale, self.has_bias = scale, bias is not None
        if bias is not None:
            self.bias_shape = bias.shape
        if need_weights:
            return out, pd
        return out

    def _forward_blockwise(self, q, k, v, bias, keep, scale, dropout_p):
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        self.masks = _flash._Masks(lead, keep, bias)
        # one draw from shendu's generator seeds every dropout tile (redrawn in backward)
        self.seed = int(rng().integers(0, 2**63)) if dropout_p > 0.0 else 0
        out, self.lse = _flash.attention_forward(q, k, v, self.masks, scale, dropout_p,
                                                 self.seed)
        self.q, self.k, self.v, self.out = q, k, v, out
        self.scale, self.dropout_p, self.has_bias = scale, dropout_p, bias is not None
        if bias is not None:
            self.bias_shape = bias.shape
        return out

    def _backward_blockwise(self, g_out):
        q, k, v = self.q, self.k, self.v
        need = self.needs_input_grad
        need_bias = self.has_bias and need[3]
        gq, gk, gv, gb = _flash.attention_backward(
            g_out, q, k, v, self.out, self.lse, self.masks, self.scale, self.dropout_p,
            self.seed, need[:3], need_bias)
        gq = unbroadcast(gq, q.shape) if gq is not None else None
        gk = unbroadcast(gk, k.shape) if gk is not None else None
        gv = unbroadcast(gv, v.shape) if gv is not None else None
        gb = gb.reshape(self.bias_shape) if gb is not None else None
        return _grads(gq, gk, gv, gb, self.has_bias)

    def _forward_by_heads(self, q, k, v, keep, scale):
        """The fused kernel over groups of heads on the kernels' threads (BLAS on one
        thread meanwhile): the same numbers as in one piece, group by group."""
        from shendu.functional import conv
        from shendu.functional.conv import parallel

        lead, L, (S, Ev) = q.shape[:-2], q.shape[-2], v.shape[-2:]
        G = math.prod(lead)
        qf, kf, vf = (a.reshape((G,) + a.shape[-2:]) for a in (q, k, v))
        short = S <= _SHORT_ROWS
        p = np.empty((G, S, L) if short else (G, L, S), q.dtype)
        out = np.empty((G, L, Ev), q.dtype)
        kern = _column_kernels(_swap(p)) if short else None
        bounded = kern is None and _bounded(q, k, scale)
        fold = kern is not None and keep is None           # scaled inside the column shift
        sc = q.dtype.type(scale)
        region = _heads_region(qf, kf, vf) if fold else None

        def heads(lo: int, hi: int) -> None:
            s = _scores(qf[lo:hi], kf[lo:hi], short, out=p[lo:hi])
            if not fold:
                s *= scale
            if keep is not None:
                np.copyto(s, -np.inf, where=~keep)
            _masked_softmax_(s, bounded, sc if fold else None)
            matmul(s, vf[lo:hi], out=out[lo:hi])

        if region is not None:          # every head's steps in one compiled region
            fn, fg, fexp, mode, dexp = region
            with ONE_THREAD:
                fn(fg, fexp, mode, dexp, qf, kf, vf, p, out, sc, min(conv._N_THREADS, G),
                   _gemm.rows_nt_lanes(q.dtype, q.shape[-1], L))
        else:
            parallel(heads, G, G * L * S, calls_blas=True)
        self.p = _swap(p) if short else p                   # (G, L, S)
        self.q, self.k, self.v, self.out = qf, kf, vf, out
        self.scale, self.has_bias, self.lead = scale, False, lead
        return out.reshape(lead + (L, Ev))

    def _backward_by_heads(self, g_out):
        from shendu.functional.conv import parallel

        q, k, v, p, out = self.q, self.k, self.v, self.p, self.out
        G, L, S = p.shape
        need = self.needs_input_grad
        go = g_out.reshape((G,) + g_out.shape[-2:])
        gq = np.empty_like(q) if need[0] else None
        gk = np.empty_like(k) if need[1] else None
        gv = np.empty_like(v) if need[2] else None

        def heads(lo: int, hi: int) -> None:
            pc, gc = p[lo:hi], go[lo:hi]
            if gv is not None:
                matmul(_swap(pc), gc, out=gv[lo:hi])
            if gq is None and gk is None:
                return
            d = (gc * out[lo:hi]).sum(axis=-1, keepdims=True)
            dp = _score_grads(gc, v[lo:hi], pc)
            dp -= d
            dp *= pc                                        # dS = P (dP - D)
            dp *= self.scale
            if gq is not None:
                matmul(dp, k[lo:hi], out=gq[lo:hi])
            if gk is not None:
                matmul(_swap(dp), q[lo:hi], out=gk[lo:hi])

        parallel(heads, G, G * L * S, calls_blas=True)
        lead = self.lead
        return tuple(None if a is None else a.reshape(lead + a.shape[-2:])
                     for a in (gq, gk, gv))

    def backward(self, g_out, g_w=None):
        if self.blockwise:
            return self._backward_blockwise(g_out)
        if self.by_heads:
            return self._backward_by_heads(g_out)
        q, k, v, p, pd = self.q, self.k, self.v, self.p, self.pd
        if pd is None:
            pd = p * self.keep_d
            pd *= self.inv
        need = self.needs_input_grad
        gv = unbroadcast(matmul(_swap(pd), g_out), v.shape) if need[2] else None
        if not (need[0] or need[1] or (self.has_bias and need[3])):
            return _grads(None, None, gv, None, self.has_bias)
        # D = rowsum(dP * Pd) = rowsum(dO * O) (+ rowsum(dW * Pd) for the weights output)
        d = (g_out * self.out).sum(axis=-1, keepdims=True)  # (..., L, 1)
        dp = _score_grads(g_out, v, p)                      # (..., L, S) = dPd
        if g_w is not None and g_w.any():
            dp += g_w
            d = d + (g_w * pd).sum(axis=-1, keepdims=True)
        if self.dropped:                                    # dS = P (dP - D), dP = dPd*keep/(1-p)
            dp *= pd                                        #    = Pd dPd - P D
            dp -= p * d
        else:
            dp -= d
            dp *= p                                         # dS = P (dP - D)
        gb = unbroadcast(dp, self.bias_shape) if self.has_bias and need[3] else None
        if gb is not None and gb is dp:
            gb = dp.copy()
        dp *= self.scale
        gq = unbroadcast(matmul(dp, k), q.shape) if need[0] else None
        gk = unbroadcast(matmul(_swap(dp), q), k.shape) if need[1] else None
        return _grads(gq, gk, gv, gb, self.has_bias)


#: Blockwise attention runs when each query has at least this many keys (the tiles then hold
#: every key of a block of queries: long rows, and no (L, S) matrix kept; measured faster
#: than the fused kernel from 256 keys on, see docs/attention.md) ...
BLOCKWISE_MIN_KEYS = 256
#: ... or, with fewer keys, when the (L, S) scores of every head would hold at least this
#: many elements (256 MiB in float32): the fused kernel keeps them for backward.
BLOCKWISE_MIN_SCORES = 1 << 26
#: On one thread, where the blockwise tiles run compiled (``_flash_mkl``: float32, no mask,
#: no dropout), they are faster from this many keys (T = 128: forward 3.8 against 4.4 ms,
#: forward + backward 11.3 against 12.0, batch 32, 4 heads of 32); with several threads the
#: fused kernel, split by heads, stays faster there (3.6 against 2.6 ms).
COMPILED_MIN_KEYS = 128


def _use_blockwise(q, k, v, bias, keep, dropout_p: float = 0.0) -> bool:
    """Whether the blockwise kernel takes this call: long key rows or a large score matrix
    (or, on one thread, moderately long rows its compiled tiles take), and masks that do not
    widen the leading dims."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n = math.prod(lead) * q.shape[-2] * k.shape[-2]
    if n == 0:
        return False
    if k.shape[-2] < BLOCKWISE_MIN_KEYS and n < BLOCKWISE_MIN_SCORES:
        from shendu.functional import conv

        if (k.shape[-2] < COMPILED_MIN_KEYS or conv._N_THREADS != 1
                or _flash._compiled(q, k, v, keep, bias, dropout_p) is None):
            return False
    full = lead + (q.shape[-2], k.shape[-2])
    return all(m is None or (m.ndim <= len(full) and np.broadcast_shapes(m.shape, full) == full)
               for m in (bias, keep))


#: Scores (over every head) from which the fused kernel splits the heads over the kernels'
#: threads, when there are several.
BY_HEADS_MIN_SCORES = 1 << 19


def _by_heads(q, k, v, keep) -> bool:
    """Whether the fused kernel runs by groups of heads on the kernels' threads: several
    threads, enough scores, q, k and v with the same leading dims (no broadcasting) and a
    keep-mask that is the same for every head (or none)."""
    from shendu.functional import conv

    lead = q.shape[:-2]
    if conv._N_THREADS < 2 or not lead or k.shape[:-2] != lead or v.shape[:-2] != lead:
        return False
    if math.prod(lead) < 2 or math.prod(lead) * q.shape[-2] * k.shape[-2] < BY_HEADS_MIN_SCORES:
        return False
    return keep is None or keep.ndim <= 2


def _heads_region(q, k, v):
    """``_regions.attention()`` where it gives the bits of the heads split over the
    kernels' Python threads: float32, C-contiguous, each head's scores at least
    ``_gemm.MIN_EXP`` (so that every group's ``exp`` is the one the region calls, MKL's
    where ``_gemm.exp`` takes MKL's); None otherwise."""
    if q.dtype != np.float32 or not (k.dtype == v.dtype == np.float32):
        return None
    if not (q.flags.c_contiguous and k.flags.c_contiguous and v.flags.c_contiguous):
        return None
    if q.shape[-2] * k.shape[-2] < _gemm.MIN_EXP:
        return None
    return _regions.attention()


def _grads(gq, gk, gv, gb, has_bias):
    return (gq, gk, gv, gb) if has_bias else (gq, gk, gv)


def causal_mask(L: int, S: int | None = None) -> np.ndarray:
    """Boolean (L, S) mask, True where query ``i`` may attend to key ``j`` (``j <= i``).

    Aligned at the top-left corner, as torch's ``is_causal=True``.
    """
    S = L if S is None else S
    return np.arange(L)[:, None] >= np.arange(S)


def _mask_array(m) -> np.ndarray:
    return m.data if isinstance(m, Tensor) else np.asarray(m)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask=None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, need_weights: bool = False):
    r"""Attention ``softmax(Q K^T / sqrt(E) + mask) V`` (Vaswani et al. 2017), one fused op.

    ``query`` (..., L, E), ``key`` (..., S, E), ``value`` (..., S, Ev); leading dims broadcast.
    ``attn_mask`` broadcastable to (..., L, S): boolean (True = this query may look at this
    key, as torch) or floating (added to the scores; a tensor that requires grad receives
    one). ``is_causal`` lets query ``i`` see keys ``j <= i`` (combined with ``attn_mask`` if
    both are given). ``dropout_p`` drops attention weights (always, as torch's functional
    form: pass 0 in evaluation). ``scale`` defaults to ``1/sqrt(E)``.

    Rows with every key masked give zeros (output and gradient), never NaN.

    Returns the output (..., L, Ev), or ``(output, weights)`` with ``need_weights=True``
    (weights (..., L, S), after dropout).
    """
    qd, kd, vd = query.data, key.data, value.data
    op = "scaled_dot_product_attention"
    if qd.ndim < 2 or kd.ndim < 2 or vd.ndim < 2:
        raise ValueError(f"{op}: expected query, key and value with at least 2 dims "
                         f"(..., L, E), got {qd.shape}, {kd.shape}, {vd.shape}")
    if qd.shape[-1] != kd.shape[-1]:
        raise ValueError(f"{op}: query (..., L, E) and key (..., S, E) must share E, got "
                         f"query {qd.shape} and key {kd.shape}")
    if kd.shape[-2] != vd.shape[-2]:
        raise ValueError(f"{op}: key (..., S, E) and value (..., S, Ev) must share S, got "
                         f"key {kd.shape} and value {vd.shape}")
    if qd.dtype.kind != "f" or qd.dtype != kd.dtype or qd.dtype != vd.dtype:
        raise TypeError(f"{op}: query, key and value must share one floating dtype, got "
                        f"{qd.dtype}, {kd.dtype}, {vd.dtype}")
    try:
        lead = np.broadcast_shapes(qd.shape[:-2], kd.shape[:-2], vd.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: the leading dims of query {qd.shape}, key {kd.shape} and "
                         f"value {vd.shape} cannot be broadcast together") from None
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1], got {dropout_p}")
    L, S = qd.shape[-2], kd.shape[-2]
    scores_shape = lead + (L, S)
    keep = None
    bias = None
    if attn_mask is not None:
        m = _mask_array(attn_mask)
        try:
            np.broadcast_shapes(m.shape, scores_shape)
        except ValueError:
            raise ValueError(f"{op}: attn_mask of shape {m.shape} cannot be broadcast to the "
                             f"attention scores (..., L, S) = {scores_shape}") from None
        if m.dtype == np.bool_:
            keep = m
        elif m.dtype.kind == "f":
            if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
                if m.dtype != qd.dtype:
                    raise TypeError(f"{op}: a float attn_mask that requires grad must have "
                                    f"the query's dtype {qd.dtype}, got {m.dtype}")
                bias = attn_mask
            else:
                bias = Tensor._wrap(m.astype(qd.dtype, copy=False), None, 0)
        else:
            raise TypeError(f"{op}: attn_mask must be boolean (True = take part) or floating "
                            f"(added to the scores), got {m.dtype}")
    if is_causal:
        c = causal_mask(L, S)
        keep = c if keep is None else (keep & c)
    sc = 1.0 / math.sqrt(qd.shape[-1]) if scale is None else float(scale)
    params = dict(keep=keep, scale=sc, dropout_p=float(dropout_p), need_weights=need_weights)
    if bias is None:
        return ScaledDotProductAttention.apply(query, key, value, **params)
    return ScaledDotProductAttention.apply(query, key, value, bias, **params)


class AdditiveAttention(Function):
    r"""Bahdanau attention with the projections done: ``e = v^T tanh(q' + k')``.

    Inputs ``qp`` (..., L, H) (projected queries), ``kp`` (..., S, H) (projected keys), ``w``
    (H,) (the vector ``v``), ``values`` (..., S, Dv). With ``T = tanh(qp_i + kp_j)``
    (..., L, S, H), ``e = T w``, ``P = softmax(e)`` over keys (masked), ``O = P values``.

    Backward: ``dValues = P^T dO``, ``dP = dO values^T``, ``de = P (dP - rowsum(dO O))``,
    ``dU = de w (1 - T^2)`` (..., L, S, H), ``dqp = sum_j dU``, ``dkp = sum_i dU``,
    ``dw = sum de T``.
    """

    saved_inputs = None

    def forward(self, qp, kp, w, values, keep=None):
        t = qp[..., :, None, :] + kp[..., None, :, :]        # (..., L, S, H)
        np.tanh(t, out=t)
        e = matvec(t, w)                                    # (..., L, S)
        if keep is not None:
            if np.broadcast_shapes(e.shape, keep.shape) != e.shape:
                e = np.array(np.broadcast_to(e, np.broadcast_shapes(e.shape, keep.shape)))
            np.copyto(e, -np.inf, where=~keep)
        p = _masked_softmax_(e)
        out = matmul(p, values)                                  # (..., L, Dv)
        self.t, self.p, self.out, self.w, self.values = t, p, out, w, values
        self.qshape, self.kshape = qp.shape, kp.shape
        return out, p

    def backward(self, g_out, g_w):
        t, p, w, values = self.t, self.p, self.w, self.values
        gvals = (unbroadcast(matmul(_swap(p), g_out), values.shape)
                 if self.needs_input_grad[3] else None)
        d = (g_out * self.out).sum(axis=-1, keepdims=True)
        dp = matmul(g_out, _swap(values))
        if g_w.any():
            dp += g_w
            d = d + (g_w * p).sum(axis=-1, keepdims=True)
        dp -= d
        dp *= p                                             # de (..., L, S)
        gw = unbroadcast(np.einsum("...ls,...lsh->...h", dp, t), w.shape) \
            if self.needs_input_grad[2] else None
        N, L, S, H = t.shape if t.ndim == 4 else (0,) * 4
        kern = _numba.kernels_for(t, dp, w)
        if (kern is not None and t.ndim == 4 and self.qshape == (N, L, H)
                and self.kshape == (N, S, H) and t.flags.c_contiguous
                and dp.flags.c_contiguous and w.flags.c_contiguous):
            # one pass: dU's two sums, dU never written
            gq, gk = np.empty((N, L, H), t.dtype), np.empty((N, S, H), t.dtype)
            kern.additive_grads(t, dp, w, gq, gk, t.dtype.type(1))
            need = self.needs_input_grad
            return gq if need[0] else None, gk if need[1] else None, gw, gvals
        du = t * t
        np.subtract(1, du, out=du)                          # 1 - T²
        du *= dp[..., None]
        du *= w                                             # (..., L, S, H)
        gq = unbroadcast(du.sum(axis=-2), self.qshape) if self.needs_input_grad[0] else None
        gk = unbroadcast(du.sum(axis=-3), self.kshape) if self.needs_input_grad[1] else None
        return gq, gk, gw, gvals


def additive_attention(query_proj: Tensor, key_proj: Tensor, v: Tensor, values: Tensor,
                       mask=None) -> tuple[Tensor, Tensor]:
    r"""Additive (Bahdanau et al. 2014) attention on projected queries and keys, fused.

    ``score_ij = v^T tanh(q'_i + k'_j)``, ``weights = softmax_j(score)``,
    ``context_i = sum_j weights_ij values_j``. ``query_proj`` (..., L, H) or (..., H) (one
    query per batch row), ``key_proj`` (..., S, H), ``v`` (H,), ``values`` (..., S, Dv),
    ``mask`` boolean broadcastable to (..., L, S), True = take part. Rows with no key give
    zero weights and a zero context. Returns ``(context, weights)``: (..., L, Dv) and
    (..., L, S), or (..., Dv) and (..., S) for a single query.
    """
    op = "additive_attention"
    qd, kd, vd, wd = query_proj.data, key_proj.data, values.data, v.data
    if kd.ndim < 2 or vd.ndim < 2:
        raise ValueError(f"{op}: expected key_proj (..., S, H) and values (..., S, Dv), got "
                         f"{kd.shape} and {vd.shape}")
    if wd.shape != (kd.shape[-1],) or qd.shape[-1] != kd.shape[-1]:
        raise ValueError(f"{op}: query_proj (..., H), key_proj (..., S, H) and v (H,) must "
                         f"share H, got {qd.shape}, {kd.shape} and {wd.shape}")
    if kd.shape[-2] != vd.shape[-2]:
        raise ValueError(f"{op}: key_proj (..., S, H) and values (..., S, Dv) must share S, "
                         f"got {kd.shape} and {vd.shape}")
    single = qd.ndim == kd.ndim - 1
    from shendu.functional.shape import reshape

    q = reshape(query_proj, qd.shape[:-1] + (1, qd.shape[-1])) if single else query_proj
    keep = None
    if mask is not None:
        keep = _mask_array(mask)
        if keep.dtype != np.bool_:
            raise TypeError(f"{op}: mask must be boolean (True = take part), got {keep.dtype}")
        if single:
            keep = keep[..., None, :]
    out, p = AdditiveAttention.apply(q, key_proj, v, values, keep=keep)
    if single:
        out = reshape(out, out.shape[:-2] + out.shape[-1:])
        p = reshape(p, p.shape[:-2] + p.shape[-1:])
    return out, p
