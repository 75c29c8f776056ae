r"""Blockwise ("flash") scaled dot-product attention: the same function as the fused kernel
of :mod:`shendu.functional.attention`, computed over tiles of queries and keys so that no
(L, S) matrix outlives one tile (FlashAttention, Dao et al. 2022; the online softmax of
Milakov & Gimelshein 2018).

Forward, for a block of queries ``i`` and running over key blocks ``j``, with the row max
``m``, the row normaliser ``l`` and the unnormalised output ``A``:

.. math::

    S_{ij} = \alpha Q_i K_j^\top + B_{ij}, \quad m' = \max(m, \operatorname{rowmax} S_{ij}),
    \quad E_{ij} = e^{S_{ij} - m'},

    l \leftarrow e^{m - m'} l + \operatorname{rowsum} E_{ij}, \quad
    A \leftarrow e^{m - m'} A + (E_{ij} \odot M_{ij}) V_j / (1 - p),

and at the end ``O_i = A / l`` and the log-sum-exp ``lse_i = m + log l`` (``M`` is the
dropout keep-mask; all ones at ``p = 0``). Only ``O`` and ``lse`` are kept for backward,
which recomputes ``P_ij = exp(S_ij - lse_i)`` tile by tile:

.. math::

    dV_j \mathrel{+}= P^d_{ij}{}^\top dO_i, \quad dP^d_{ij} = dO_i V_j^\top, \quad
    dS_{ij} = P^d_{ij} \odot dP^d_{ij} - P_{ij} D_i, \quad
    dQ_i \mathrel{+}= \alpha\, dS_{ij} K_j, \quad dK_j \mathrel{+}= \alpha\, dS_{ij}^\top Q_i,

with ``P^d = P ⊙ M / (1 - p)`` and ``D = rowsum(dO ⊙ O)``. Memory is linear in L and S.

The dropout mask of tile ``(i, j)`` is drawn from a generator seeded with ``(seed, i, j)``,
``seed`` one draw from shendu's generator per call, so backward redraws the same mask and
one seed gives one result bit for bit. Rows with every key masked give zero output and
zero gradient, as in the fused kernel. Tiles that a boolean mask removes entirely (above the
diagonal of a causal mask) are skipped.
"""

from __future__ import annotations

import numpy as np

#: Upper bound on the elements of one (heads, queries, keys) tile of scores.
TILE_ELEMS = 1 << 21
#: Largest query or key block.
MAX_BLOCK = 256
#: Smallest query or key block (a tile narrower than this spends its time in Python).
MIN_BLOCK = 32


def block_sizes(g: int, L: int, S: int) -> tuple[int, int]:
    """Query and key block sizes for ``g`` heads: a tile of at most :data:`TILE_ELEMS`."""
    side = int((TILE_ELEMS / max(g, 1)) ** 0.5)
    b = max(MIN_BLOCK, min(MAX_BLOCK, side))
    return min(b, L), min(b, S)


class _Masks:
    """The boolean keep-mask and the additive mask, broadcastable to ``lead + (L, S)``,
    cut into tiles without broadcasting them in full."""

    def __init__(self, lead: tuple, keep, bias):
        nd = len(lead) + 2
        self.keep = None if keep is None else keep.reshape((1,) * (nd - keep.ndim) + keep.shape)
        self.bias = None if bias is None else bias.reshape((1,) * (nd - bias.ndim) + bias.shape)

    @staticmethod
    def cut(a: np.ndarray, i0: int, i1: int, j0: int, j1: int) -> tuple:
        """Index of tile (i0:i1, j0:j1) in ``a``, a size-1 axis taken whole."""
        li = slice(None) if a.shape[-2] == 1 else slice(i0, i1)
        sj = slice(None) if a.shape[-1] == 1 else slice(j0, j1)
        return (Ellipsis, li, sj)

    def keep_tile(self, i0, i1, j0, j1):
        """The keep-mask tile, ``None`` when it keeps everything, ``False`` when nothing."""
        if self.keep is None:
            return None
        t = self.keep[self.cut(self.keep, i0, i1, j0, j1)]
        if t.all():
            return None
        if not t.any():
            return False
        return t

    def apply(self, s: np.ndarray, keep_t, i0, i1, j0, j1) -> None:
        """Add the additive mask to the score tile ``s`` (..., bi, bj) and set ``-inf``
        where the keep tile is False, in place."""
        if self.bias is not None:
            s += self.bias[self.cut(self.bias, i0, i1, j0, j1)]
        if keep_t is not None:
            np.copyto(s, -np.inf, where=~keep_t)


def _dropout_keep(seed: int, i: int, j: int, shape: tuple, dtype, p: float) -> np.ndarray:
    u = np.random.default_rng([seed, i, j]).random(
        shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    return u >= p


def _swap(a: np.ndarray) -> np.ndarray:
    return a.swapaxes(-1, -2)


def attention_forward(q, k, v, masks: _Masks, scale: float, dropout_p: float, seed: int):
    """Blockwise attention. ``q`` (..., L, E), ``k`` (..., S, E), ``v`` (..., S, Ev), the
    leading dims broadcast to ``lead``. Returns ``out`` (lead, L, Ev) and ``lse``
    (lead, L, 1) (``+inf`` on rows with no key)."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    dt = q.dtype
    bq, bk = block_sizes(int(np.prod(lead)), L, S)
    qs = q * dt.type(scale)
    kt = _swap(k)
    if lead:
        # heads innermost in memory, (..., L, H, Ev) seen as (..., H, L, Ev): the layout
        # multi-head attention merges the heads into, so that merge is free (a view)
        out = np.empty(lead[:-1] + (L, lead[-1], Ev), dt).swapaxes(-2, -3)
    else:
        out = np.empty((L, Ev), dt)
    lse = np.empty(lead + (L, 1), dt)
    inv = dt.type(1.0 / (1.0 - dropout_p)) if dropout_p < 1.0 else dt.type(0)
    masked = masks.keep is not None or masks.bias is not None
    for ib, i0 in enumerate(range(0, L, bq)):
        i1 = min(i0 + bq, L)
        qb = qs[..., i0:i1, :]                              # (..., bi, E)
        m = np.full(lead + (i1 - i0, 1), -np.inf, dt)       # running row max
        den = np.zeros(lead + (i1 - i0, 1), dt)             # running normaliser l
        acc = np.zeros(lead + (i1 - i0, Ev), dt)            # unnormalised output A
        for jb, j0 in enumerate(range(0, S, bk)):
            j1 = min(j0 + bk, S)
            keep_t = masks.keep_tile(i0, i1, j0, j1)
            if keep_t is False:
                continue
            s = qb @ kt[..., j0:j1]                         # (..., bi, bj)
            masks.apply(s, keep_t, i0, i1, j0, j1)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            shift = m_new
            if masked:
                dead = np.isneginf(m_new)
                if dead.any():                              # a row with no key yet
                    shift = np.where(dead, dt.type(0), m_new)
            s -= shift
            np.exp(s, out=s)                                # E = exp(S - m')
            alpha = np.exp(m - shift)                       # (..., bi, 1)
            den *= alpha
            den += s.sum(axis=-1, keepdims=True)
            if dropout_p > 0.0:
                s *= _dropout_keep(seed, ib, jb, s.shape, dt, dropout_p)
            acc *= alpha
            acc += s @ v[..., j0:j1, :]
            m = m_new
        dead = den == 0
        if dead.any():
            den[dead] = 1
            m = np.where(dead, dt.type(np.inf), m)
        acc /= den
        if dropout_p > 0.0:
            acc *= inv
        out[..., i0:i1, :] = acc
        lse[..., i0:i1, :] = m + np.log(den)
    return out, lse


def attention_backward(g_out, q, k, v, out, lse, masks: _Masks, scale: float,
                       dropout_p: float, seed: int, need: tuple, need_bias: bool):
    """Gradients of :func:`attention_forward`: ``(gq, gk, gv, gbias)``, each in the full
    leading shape (the caller undoes broadcasting; ``gbias`` in the mask's shape padded to
    lead's length), None where not needed."""
    lead = out.shape[:-2]
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    dt = q.dtype
    bq, bk = block_sizes(int(np.prod(lead)), L, S)
    sc = dt.type(scale)
    qs = q * sc
    kt, vt = _swap(k), _swap(v)
    d = (g_out * out).sum(axis=-1, keepdims=True)           # D = rowsum(dO O), (..., L, 1)
    gq = np.empty(lead + (L, E), dt) if need[0] else None
    gk = np.zeros(lead + (S, E), dt) if need[1] else None
    gv = np.zeros(lead + v.shape[-2:], dt) if need[2] else None
    gb = np.zeros(masks.bias.shape, dt) if need_bias else None
    inv = dt.type(1.0 / (1.0 - dropout_p)) if dropout_p < 1.0 else dt.type(0)
    for ib, i0 in enumerate(range(0, L, bq)):
        i1 = min(i0 + bq, L)
        qb, gob = qs[..., i0:i1, :], g_out[..., i0:i1, :]
        lse_b, d_b = lse[..., i0:i1, :], d[..., i0:i1, :]
        gq_b = np.zeros(lead + (i1 - i0, E), dt) if gq is not None else None
        for jb, j0 in enumerate(range(0, S, bk)):
            j1 = min(j0 + bk, S)
            keep_t = masks.keep_tile(i0, i1, j0, j1)
            if keep_t is False:
                continue
            p = qb @ kt[..., j0:j1]                         # (..., bi, bj)
            masks.apply(p, keep_t, i0, i1, j0, j1)
            p -= lse_b
            np.exp(p, out=p)                                # P = exp(S - lse)
            if dropout_p > 0.0:
                pd = p * _dropout_keep(seed, ib, jb, p.shape, dt, dropout_p)
                pd *= inv
            else:
                pd = p
            if gv is not None:
                gv[..., j0:j1, :] += _swap(pd) @ gob
            ds = gob @ vt[..., j0:j1]                       # dPd (..., bi, bj)
            if dropout_p > 0.0:                             # dS = Pd dPd - P D
                ds *= pd
                p *= d_b
                ds -= p
            else:                                           # dS = P (dP - D)
                ds -= d_b
                ds *= p
            if gb is not None:
                idx = masks.cut(gb, i0, i1, j0, j1)
                gb[idx] += _unbroadcast(ds, gb[idx].shape)
            if gq_b is not None:
                gq_b += ds @ k[..., j0:j1, :]
            if gk is not None:
                gk[..., j0:j1, :] += _swap(ds) @ qb
        if gq is not None:
            gq_b *= sc
            gq[..., i0:i1, :] = gq_b
    return gq, gk, gv, gb


def _unbroadcast(a: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``a`` over the axes where ``shape`` (same length) has 1."""
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a
