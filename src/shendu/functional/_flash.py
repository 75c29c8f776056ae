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

Tiles run over a group of heads (the leading dims, flattened), a block of queries and, up to
:data:`MAX_BLOCK` keys, every key: then the online softmax has one step, and the row
reductions run along long rows. Tiles are large (at most :data:`TILE_ELEMS` elements, 8 MiB
in float32), as each costs a few dozen calls from Python, which the kernels' threads make
one at a time. Backward folds ``- lse`` and ``- D`` into its two recomputing products as one
more column (``[Q, -lse] [K, 1]^T``), which saves two passes over each tile; each head
group's operands with that column are made on its own thread, just before its tiles.

The dropout mask of tile ``(h, i, j)`` is drawn from a generator seeded with ``(seed, h, i, j)``,
``seed`` one draw from shendu's generator per call, so backward redraws the same mask and
one seed gives one result bit for bit. Rows with every key masked give zero output and
zero gradient, as in the fused kernel. Tiles that a boolean mask removes entirely (above the
diagonal of a causal mask) are skipped.
"""

from __future__ import annotations

import math

import numpy as np

from shendu.functional._gemm import exp, matmul
from shendu.workspace import workspace as _workspace

#: Upper bound on the elements of one (heads, queries, keys) tile of scores (8 MiB in
#: float32: past the core's cache, but every tile costs some 40 calls of Python, which two
#: threads make in turn, one holding the GIL at a time; 1 MiB tiles made attention's
#: forward + backward at T = 256 on two threads 40 ms, these 26).
TILE_ELEMS = 1 << 21
#: Head groups a call is cut into at least (when it has that many heads), whatever the
#: tile size allows: work for the kernels' threads, and the same tiles at any thread count.
MIN_GROUPS = 4
#: Largest query or key block (longer key sequences take the online softmax over blocks).
MAX_BLOCK = 4096
#: Smallest query block (a tile narrower than this spends its time in Python).
MIN_BLOCK = 32


#: Tile size of the compiled tile loops (``_flash_mkl``): 1 MiB in float32, which stays in
#: the core's cache; they make no calls from Python per tile.
COMPILED_TILE_ELEMS = 1 << 18


def block_sizes(g: int, L: int, S: int, tile: int | None = None) -> tuple[int, int, int]:
    """Heads, queries and keys per tile for ``g`` heads: every key up to
    :data:`MAX_BLOCK`, then as many queries and heads as ``tile`` (:data:`TILE_ELEMS`)
    allows."""
    tile = TILE_ELEMS if tile is None else tile
    bk = max(1, min(S, MAX_BLOCK))
    bq = max(1, min(L, MAX_BLOCK, max(MIN_BLOCK, tile // bk)))
    hg = max(1, min(g, tile // (bq * bk), -(-g // MIN_GROUPS)))
    return hg, bq, bk


def _compiled(q, k, v, keep, bias, dropout_p: float):
    """The compiled tile loops (``_flash_mkl``) when they take this call: float32, no
    mask, no dropout, every key in one block; None otherwise."""
    if (q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32
            or keep is not None or bias is not None or dropout_p != 0.0
            or k.shape[-2] > MAX_BLOCK or q.shape[-2] == 0 or k.shape[-2] == 0):
        return None
    from shendu.functional import _flash_mkl

    return _flash_mkl.kernels()


def _flat(a: np.ndarray, lead: tuple) -> np.ndarray:
    """``a`` (..., n, m) broadcast to ``lead`` and seen as (prod(lead), n, m); a copy only
    where the broadcast cannot be one view (linear in the sequence lengths)."""
    return np.broadcast_to(a, lead + a.shape[-2:]).reshape((-1,) + a.shape[-2:])


class _Masks:
    """The boolean keep-mask and the additive mask, broadcastable to ``lead + (L, S)``,
    cut into (heads, queries, keys) tiles without broadcasting them in full."""

    def __init__(self, lead: tuple, keep, bias):
        nd = len(lead) + 2
        self.lead = lead
        self.keep = None if keep is None else keep.reshape((1,) * (nd - keep.ndim) + keep.shape)
        self.bias = None if bias is None else bias.reshape((1,) * (nd - bias.ndim) + bias.shape)

    @staticmethod
    def cut(a: np.ndarray, i0: int, i1: int, j0: int, j1: int) -> tuple:
        """Index of rows i0:i1, columns j0:j1 in ``a``, a size-1 axis taken whole."""
        li = slice(None) if a.shape[-2] == 1 else slice(i0, i1)
        sj = slice(None) if a.shape[-1] == 1 else slice(j0, j1)
        return (Ellipsis, li, sj)

    def heads(self, a: np.ndarray, h0: int, h1: int) -> tuple:
        """Index of the flattened heads h0:h1 in ``a``'s leading dims (0 where ``a`` has
        size 1); ``None`` when ``a`` has no leading extent (one tile serves every head)."""
        if all(n == 1 for n in a.shape[:-2]):
            return None
        idx = np.unravel_index(np.arange(h0, h1), self.lead)
        return tuple(ix if n != 1 else np.zeros_like(ix) for ix, n in zip(idx, a.shape[:-2]))

    def tile(self, a: np.ndarray, h0, h1, i0, i1, j0, j1) -> np.ndarray:
        """Tile of ``a``: (h1 - h0 or 1, i1 - i0 or 1, j1 - j0 or 1)."""
        rows = a[self.cut(a, i0, i1, j0, j1)]
        hi = self.heads(a, h0, h1)
        if hi is None:
            return rows.reshape((1,) + rows.shape[-2:])
        return rows[hi]

    def keep_tile(self, h0, h1, i0, i1, j0, j1):
        """The keep-mask tile, ``None`` when it keeps everything, ``False`` when nothing."""
        if self.keep is None:
            return None
        t = self.tile(self.keep, h0, h1, i0, i1, j0, j1)
        if t.all():
            return None
        if not t.any():
            return False
        return t

    def apply(self, s: np.ndarray, keep_t, h0, h1, i0, i1, j0, j1) -> None:
        """Add the additive mask to the score tile ``s`` (h, bi, bj) and set ``-inf``
        where the keep tile is False, in place."""
        if self.bias is not None:
            s += self.tile(self.bias, h0, h1, i0, i1, j0, j1)
        if keep_t is not None:
            np.copyto(s, -np.inf, where=~keep_t)

    def add_bias_grad(self, gb: np.ndarray, ds: np.ndarray, h0, h1, i0, i1, j0, j1) -> None:
        """``gb`` (the additive mask's shape) += the score-gradient tile ``ds`` (h, bi, bj),
        summed over what the mask broadcasts."""
        axes = tuple(ax for ax, n in ((-2, gb.shape[-2]), (-1, gb.shape[-1]))
                     if n == 1 and ds.shape[ax] != 1)
        if axes:
            ds = ds.sum(axis=axes, keepdims=True)
        idx = self.cut(gb, i0, i1, j0, j1)
        hi = self.heads(gb, h0, h1)
        if hi is None:
            gb[idx] += ds.sum(axis=0)
        else:
            np.add.at(gb, hi + idx[1:], ds)


#: A first score block whose row maxima all lie within +-this is exponentiated as it is
#: (no overflow, and no row underflows whole): the softmax's shift, a pass over the tile,
#: is skipped; ``lse`` stays exact.
_NO_SHIFT = 16.0


#: Score elements below which the head groups stay on the calling thread.
_PARALLEL_MIN_SCORES = 1 << 22


def _run(fn, n: int, size: int) -> None:
    """``fn(lo, hi)`` over head groups ``0..n-1``, split over the kernels' threads
    (:func:`shendu.functional.conv.set_kernel_threads`, BLAS on one thread meanwhile) when
    ``size`` is large; each group writes its own rows, so the result does not depend on the
    split."""
    from shendu.functional.conv import parallel

    if size < _PARALLEL_MIN_SCORES:               # too little work to restart BLAS's threads
        fn(0, n)
    else:
        parallel(fn, n, size, calls_blas=True)


def _dropout_keep(seed: int, h: int, i: int, j: int, shape: tuple, dtype, p: float):
    u = np.random.default_rng([seed, h, i, j]).random(
        shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    return u >= p


def _swap(a: np.ndarray) -> np.ndarray:
    return a.swapaxes(-1, -2)


def _with_column(a: np.ndarray, col, scale=None, out=None) -> np.ndarray:
    """``[a · scale, col]``: (G, n, m) -> (G, n, m + 1), ``col`` broadcast to (G, n, 1), in
    ``out`` (new when None)."""
    if out is None:
        out = np.empty(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)
    if scale is None:
        out[..., :-1] = a
    else:
        np.multiply(a, scale, out=out[..., :-1])
    out[..., -1:] = col
    return out


def _tile(buf: np.ndarray, shape: tuple) -> np.ndarray:
    """A contiguous array of ``shape`` over the start of the flat scratch ``buf``."""
    return buf[:math.prod(shape)].reshape(shape)


def row_norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norms of the rows of ``a`` (..., n, m): (..., n), rounded up by far more
    than their rounding error (a safe side for bounds on the scores)."""
    n = np.sqrt(np.einsum("...m,...m->...", a, a))
    n *= n.dtype.type(1 + 1e-3)
    return n


def attention_forward(q, k, v, masks: _Masks, scale: float, dropout_p: float, seed: int):
    """Blockwise attention. ``q`` (..., L, E), ``k`` (..., S, E), ``v`` (..., S, Ev), the
    leading dims broadcast to ``lead``. Returns ``out`` (lead, L, Ev) and ``lse``
    (lead, L, 1) (``+inf`` on rows with no key)."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    G = math.prod(lead)
    dt = q.dtype
    kern = _compiled(q, k, v, masks.keep, masks.bias, dropout_p)
    if kern is not None:
        return _forward_compiled(kern, q, k, v, lead, scale)
    hg, bq, bk = block_sizes(G, L, S)
    qsrc, kf, vf = _flat(q, lead), _flat(k, lead), _flat(v, lead)
    sc = dt.type(scale)
    out = np.empty((G, L, Ev), dt)
    lse = np.empty((G, L, 1), dt)
    ones = np.ones((bk, 1), dt)
    inv = dt.type(1.0 / (1.0 - dropout_p)) if dropout_p < 1.0 else dt.type(0)
    masked = masks.keep is not None or masks.bias is not None
    big = dt.type(_NO_SHIFT)

    def heads(c0: int, c1: int) -> None:           # head groups c0..c1-1: disjoint outputs
        buf = np.empty(hg * min(bq, L) * bk, dt)            # one score tile, reused
        qbuf = np.empty((hg,) + qsrc.shape[1:], dt)         # the group's scaled queries
        for hb in range(c0, c1):
            h0 = hb * hg
            h1 = min(h0 + hg, G)
            qg = qbuf[:h1 - h0]
            np.multiply(qsrc[h0:h1], sc, out=qg)
            # |S_ij| <= |q_i| |k_j| (Cauchy-Schwarz): where that bound keeps a first block
            # within +-_NO_SHIFT, its row max (a pass over the tile) need not be computed
            norms = None if masks.bias is not None else (row_norms(qg), row_norms(kf[h0:h1]))
            kt, vh = _swap(kf[h0:h1]), vf[h0:h1]
            for ib, i0 in enumerate(range(0, L, bq)):
                i1 = min(i0 + bq, L)
                _forward_rows(hb, h0, h1, ib, i0, i1, kt, vh, buf, qg, norms)

    def _forward_rows(hb, h0, h1, ib, i0, i1, kt, vh, buf, qg, norms) -> None:
        qb = qg[:, i0:i1]                                   # (h, bi, E)
        m = np.full((h1 - h0, i1 - i0, 1), -np.inf, dt)     # running row max
        den = np.zeros((h1 - h0, i1 - i0, 1), dt)           # running normaliser l
        acc = None                                          # unnormalised output A
        for jb, j0 in enumerate(range(0, S, bk)):
            j1 = min(j0 + bk, S)
            keep_t = masks.keep_tile(h0, h1, i0, i1, j0, j1)
            if keep_t is False:
                continue
            s = matmul(qb, kt[..., j0:j1], out=_tile(buf, (h1 - h0, i1 - i0, j1 - j0)))
            masks.apply(s, keep_t, h0, h1, i0, i1, j0, j1)
            if (acc is None and norms is not None and
                    float((norms[0][:, i0:i1] * norms[1][:, j0:j1].max(axis=-1)[:, None]).max())
                    < _NO_SHIFT):
                shift = m_new = None                        # bounded: no max, no shift
            else:
                m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
                if acc is None and bool((np.abs(m_new) < big).all()):
                    shift = None                            # exp(S) cannot overflow and
                else:                                       # no row underflows whole:
                    shift = m_new                           # skip the pass S - m
                    if masked:
                        dead = np.isneginf(m_new)
                        if dead.any():                      # a row with no key yet
                            shift = np.where(dead, dt.type(0), m_new)
                    s -= shift
            exp(s, out=s)                                   # E = exp(S - m')
            rowsum = matmul(s, ones[:j1 - j0])              # a product: NumPy's row sums
            if acc is None:                                 # of short rows are slower
                den = rowsum
            else:
                alpha = np.exp(m - shift)                   # (h, bi, 1)
                den *= alpha
                den += rowsum
            if dropout_p > 0.0:
                s *= _dropout_keep(seed, hb, ib, jb, s.shape, dt, dropout_p)
            pv = matmul(s, vh[:, j0:j1])
            if acc is None:
                acc = pv
            else:
                acc *= alpha
                acc += pv
            m = m_new if shift is not None else np.zeros_like(m)
        if acc is None:                                     # every key masked
            acc = np.zeros((h1 - h0, i1 - i0, Ev), dt)
        if masked:                                          # unmasked, a row sums to >= 1
            dead = den == 0
            if dead.any():
                den[dead] = 1
                m = np.where(dead, dt.type(np.inf), m)
        np.divide(acc, den, out=out[h0:h1, i0:i1])
        if dropout_p > 0.0:
            out[h0:h1, i0:i1] *= inv
        lse[h0:h1, i0:i1] = m + np.log(den)

    _run(heads, -(-G // hg), G * L * S)
    return out.reshape(lead + (L, Ev)), lse.reshape(lead + (L, 1))


def _four(a: np.ndarray, lead: tuple) -> np.ndarray:
    """``a`` (..., n, m) broadcast to ``lead`` as a 4-D view (A, B, n, m), ``A·B`` the heads
    (no copy where the leading dims merge into two; the compiled loops take any strides)."""
    b = np.broadcast_to(a, lead + a.shape[-2:])
    if len(lead) <= 1:
        return b.reshape((1, math.prod(lead)) + a.shape[-2:])
    try:
        return b.reshape((math.prod(lead[:-1]), lead[-1]) + a.shape[-2:], copy=False)
    except (ValueError, TypeError):
        return np.ascontiguousarray(b).reshape((math.prod(lead[:-1]), lead[-1]) + a.shape[-2:])


def _forward_compiled(kern, q, k, v, lead, scale):
    """:func:`attention_forward` by the compiled tile loops (see :func:`_compiled`)."""
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    G = math.prod(lead)
    qf, kf, vf = (_four(a, lead) for a in (q, k, v))
    hg, bq, _ = block_sizes(G, L, S, COMPILED_TILE_ELEMS)
    out = np.empty((G, L, Ev), np.float32)
    m = np.empty((G, L), np.float32)
    den = np.empty((G, L), np.float32)
    sc = np.float32(scale)

    def heads(c0: int, c1: int) -> None:
        f = np.float32
        kern.forward(qf, kf, vf, out, m, den, sc, c0, c1, hg, bq,
                     np.empty(hg * min(bq, L) * S, f), np.empty((hg, L, E), f),
                     np.empty((hg, S, E), f), np.empty((hg, S, Ev), f))

    _run(heads, -(-G // hg), G * L * S)
    lse = m + np.log(den)
    return out.reshape(lead + (L, Ev)), lse.reshape(lead + (L, 1))


def _backward_compiled(kern, g_out, q, k, v, out, lse, scale, need):
    """:func:`attention_backward` by the compiled tile loops (see :func:`_compiled`)."""
    lead = out.shape[:-2]
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    G = math.prod(lead)
    qf, kf, vf, gof, of = (_four(a, lead) for a in (q, k, v, g_out, out))
    lsef = np.ascontiguousarray(_flat(lse, lead)).reshape(G, L)
    hg, bq, _ = block_sizes(G, L, S, COMPILED_TILE_ELEMS)
    gq = _workspace.lend((G, L, E), np.float32)
    gk = _workspace.lend((G, S, E), np.float32)
    gv = _workspace.lend((G, S, Ev), np.float32)
    sc = np.float32(scale)

    def heads(c0: int, c1: int) -> None:
        n = hg * min(bq, L) * S
        f = np.float32
        kern.backward(qf, kf, vf, gof, of, lsef, gq, gk, gv, sc, c0, c1, hg, bq,
                      np.empty(n, f), np.empty(n, f), np.empty(hg * min(bq, L) * E, f),
                      np.empty((hg, L, E + 1), f), np.empty((hg, S, E + 1), f),
                      np.empty((hg, L, Ev + 1), f), np.empty((hg, S, Ev + 1), f))

    _run(heads, -(-G // hg), G * L * S)

    def back(a, n, m, want):
        return a.reshape(lead + (n, m)) if want else None

    return back(gq, L, E, need[0]), back(gk, S, E, need[1]), back(gv, S, Ev, need[2]), None


def attention_backward(g_out, q, k, v, out, lse, masks: _Masks, scale: float,
                       dropout_p: float, seed: int, need: tuple, need_bias: bool):
    """Gradients of :func:`attention_forward`: ``(gq, gk, gv, gbias)``, each in the full
    leading shape (the caller undoes broadcasting; ``gbias`` in the mask's shape padded to
    lead's length), None where not needed."""
    kern = None if need_bias else _compiled(q, k, v, masks.keep, masks.bias, dropout_p)
    if kern is not None:
        return _backward_compiled(kern, g_out, q, k, v, out, lse, scale, need)
    lead = out.shape[:-2]
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    G = math.prod(lead)
    dt = q.dtype
    hg, bq, bk = block_sizes(G, L, S)
    sc = dt.type(scale)
    gof, qf, kf, vf, of = (_flat(a, lead) for a in (g_out, q, k, v, out))
    lsef = _flat(lse, lead)
    fold_d = dropout_p == 0.0
    # the gradients come from the workspace and go back to it once they are dropped, so a
    # step does not fault in fresh pages for them
    gq = _workspace.lend((G, L, E), dt) if need[0] else None
    gk = _workspace.lend((G, S, E), dt) if need[1] else None
    gv = _workspace.lend((G, S, Ev), dt) if need[2] else None
    gb = np.zeros(masks.bias.shape, dt) if need_bias else None
    inv = dt.type(1.0 / (1.0 - dropout_p)) if dropout_p < 1.0 else dt.type(0)
    tiny = -np.finfo(dt).max

    def heads(c0: int, c1: int) -> None:           # head groups c0..c1-1: disjoint outputs
        n = hg * min(bq, L) * bk
        bufs = np.empty(2 * n, dt)                          # two score tiles, reused
        gq_buf = np.empty(hg * min(bq, L) * E, dt)
        # the group's operands with one more column each (made here, on the group's
        # thread, where its tiles will read them from cache): S - lse = [alpha Q, -lse]
        # [K, 1]^T, and with no dropout dP - D = [dO, -D] [V, 1]^T, one more column in each
        # product instead of a pass over each tile
        qa_buf = np.empty((hg, L, E + 1), dt)
        ka_buf = np.empty((hg, S, E + 1), dt)
        goa_buf = np.empty((hg, L, Ev + 1), dt) if fold_d else None
        va_buf = np.empty((hg, S, Ev + 1), dt) if fold_d else None
        for hb in range(c0, c1):
            h0 = hb * hg
            h1 = min(h0 + hg, G)
            r = h1 - h0
            neg_lse = np.negative(lsef[h0:h1])
            neg_lse[np.isneginf(neg_lse)] = tiny                # rows with no key: P = 0
            qa = _with_column(qf[h0:h1], neg_lse, sc, qa_buf[:r])   # (h, L, E + 1)
            ka = _with_column(kf[h0:h1], dt.type(1), None, ka_buf[:r])
            if fold_d:                                      # D = rowsum(dO O), (h, L, 1)
                d = (gof[h0:h1] * of[h0:h1]).sum(axis=-1, keepdims=True)
                goa = _with_column(gof[h0:h1], np.negative(d), None, goa_buf[:r])
                vat = _swap(_with_column(vf[h0:h1], dt.type(1), None, va_buf[:r]))
            else:
                d = (gof[h0:h1] * of[h0:h1]).sum(axis=-1, keepdims=True)
                goa, vat = None, _swap(vf[h0:h1])
            for g in (gk, gv):
                if g is not None:
                    g[h0:h1] = 0
            for ib, i0 in enumerate(range(0, L, bq)):
                i1 = min(i0 + bq, L)
                _backward_rows(hb, h0, h1, ib, i0, i1, qa, _swap(ka), goa, vat, d,
                               bufs[:n], bufs[n:], gq_buf)

    def _backward_rows(hb, h0, h1, ib, i0, i1, qa, kat, goa, vat, d, pbuf, dsbuf,
                       gq_buf) -> None:
        qab, qb, gob = qa[:, i0:i1], qa[:, i0:i1, :E], gof[h0:h1, i0:i1]
        kg = _swap(kat)[..., :E]
        gab = goa[:, i0:i1] if fold_d else gob
        gq_b = None
        for jb, j0 in enumerate(range(0, S, bk)):
            j1 = min(j0 + bk, S)
            keep_t = masks.keep_tile(h0, h1, i0, i1, j0, j1)
            if keep_t is False:
                continue
            shape = (h1 - h0, i1 - i0, j1 - j0)
            p = matmul(qab, kat[..., j0:j1], out=_tile(pbuf, shape))   # S - lse
            masks.apply(p, keep_t, h0, h1, i0, i1, j0, j1)
            exp(p, out=p)                                   # P = exp(S - lse)
            if dropout_p > 0.0:
                pd = p * _dropout_keep(seed, hb, ib, jb, p.shape, dt, dropout_p)
                pd *= inv
            else:
                pd = p
            if gv is not None:
                matmul(_swap(pd), gob, out=gv[h0:h1, j0:j1], accumulate=True)
            ds = matmul(gab, vat[..., j0:j1], out=_tile(dsbuf, shape))  # dPd (- D folded)
            if fold_d:                                      # dS = P (dP - D)
                ds *= p
            else:                                           # dS = Pd dPd - P D
                ds *= pd
                p *= d[:, i0:i1]
                ds -= p
            if gb is not None:
                masks.add_bias_grad(gb, ds, h0, h1, i0, i1, j0, j1)
            if gq is not None:
                if gq_b is None:
                    gq_b = matmul(ds, kg[:, j0:j1], out=_tile(gq_buf, shape[:2] + (E,)))
                else:
                    matmul(ds, kg[:, j0:j1], out=gq_b, accumulate=True)
            if gk is not None:
                matmul(_swap(ds), qb, out=gk[h0:h1, j0:j1], accumulate=True)
        if gq is not None:
            if gq_b is None:
                gq[h0:h1, i0:i1] = 0
            else:
                np.multiply(gq_b, sc, out=gq[h0:h1, i0:i1])

    # the bias gradient sums over heads that share its entries: one thread then
    _run(heads, -(-G // hg), G * L * S if gb is None else 0)

    def back(a, n, m):
        return None if a is None else a.reshape(lead + (n, m))

    return back(gq, L, E), back(gk, S, E), back(gv, S, Ev), gb
