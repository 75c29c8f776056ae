"""Attention layers: ``MultiheadAttention`` (torch's names and shapes) and Bahdanau's
``AdditiveAttention``."""

from __future__ import annotations

import math

import numpy as np

from shendu import autograd
from shendu import functional as F
from shendu.autograd import Function
from shendu.backend import get_default_dtype
from shendu.functional import _gemm, _numba
from shendu.functional import conv as _conv
from shendu.functional._gemm import matmul
from shendu.functional._util import column_sums
from shendu.functional.conv import parallel
from shendu.functional.linear import check_same_dtype
from shendu.nn import init
from shendu.nn.linear import Linear
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["MultiheadAttention", "AdditiveAttention"]


class _HeadsProjection(Function):
    r"""Self-attention's packed in-projection and its split into heads as one op:
    ``x W^T + b`` (``W`` (3E, E)) as ``q, k, v``, each (N, H, L, hd).

    With the compiled loops (``functional._numba``), when training or on several kernel
    threads, the product is made without its bias and one pass writes it, bias added, as
    three contiguous head stacks (torch's ``_transform_bias_rescale_qkv`` but for the
    scale), which attention's kernels then read in place; the bits of ``x W^T + b``
    (tested). Otherwise the heads are views of the product (its bias added in the
    product), as ``linear``, ``reshape``, ``permute`` and ``split`` make them with four
    ops: attention split by heads over threads copies such views (T = 64, batch 32, d =
    128, two threads: inference 6.58 -> 6.11 ms, a training step 18.96 -> 18.40 ms with the
    split), while one thread's inference reads them in place as fast as the split
    (8.18 ms either way). Backward puts ``dq, dk, dv`` straight into the product's layout ``G``
    (M, 3E), one pass where those ops take three copies and a fill, then, as
    :class:`~shendu.functional.linear.Linear`, ``dW = G^T x``, ``db = sum_rows G``, ``dx =
    G W``.

    Where ``linear`` takes the rows loops and each head is whole vectors, the product is
    written straight into the heads' layout instead (``_gemm.heads_linear``): ``linear`` +
    views' numbers, with no (M, 3E) product and no pass copying it.

    Inputs ``x`` ((N, L, E) with ``batch_first``, else (L, N, E)), ``W`` and optionally
    ``b``; keyword ``heads``.
    """

    saved_inputs = ((0, 1), (1, 0))  # x for dW, W for dx (as Linear)

    def forward(self, x, w, b=None, heads=1, batch_first=True):
        a0, a1, E = x.shape
        hd = E // heads
        x2 = x.reshape(-1, E)
        self.x2, self.w, self.shape = x2, w, x.shape
        self.order = order = (2, 0, 3, 1, 4) if batch_first else (2, 1, 3, 0, 4)
        nb = _numba.kernels_for(x2, w, b)
        out = _gemm.heads_linear(x2, w, b, heads, a0, a1, batch_first)
        if out is not None:     # the product written as heads, by the rows loops
            self.kern, self.batch_first = nb, batch_first
            return out[0], out[1], out[2]
        if not any(self.needs_input_grad) and _conv._N_THREADS == 1:
            nb = None           # one thread's inference reads the views in place as fast
        self.kern, self.batch_first = nb, batch_first
        if nb is None:
            y = _gemm.linear(x2, w, b)                              # (M, 3E), the op's own
            out = y.reshape(a0, a1, 3, heads, hd).transpose(order)  # (3, N, H, L, hd) view
            return out[0], out[1], out[2]
        y = _gemm.linear(x2, w).reshape(a0, a1, 3, heads, hd)
        n, t = (a0, a1) if batch_first else (a1, a0)
        out = np.empty((3, n, heads, t, hd), x.dtype)
        bh = y[0, 0] if b is None else b.reshape(3, heads, hd)     # (unread without a bias)
        parallel(lambda lo, hi: nb.heads_split(y, bh, b is not None, batch_first, out, lo,
                                               hi), a0, y.size)
        return out[0], out[1], out[2]

    def backward(self, gq, gk, gv):
        x2, w, order = self.x2, self.w, self.order
        a0, a1, E = self.shape
        heads, hd = gq.shape[1], gq.shape[-1]
        G = np.empty((a0, a1, 3, heads, hd), gq.dtype)
        nb = self.kern
        if nb is not None and gk.dtype == gv.dtype == G.dtype:         # G: gq's dtype
            bf = self.batch_first
            parallel(lambda lo, hi: nb.heads_merge(gq, gk, gv, bf, G, lo, hi), a0, G.size)
        else:
            Gv = G.transpose(order)
            for i, g in enumerate((gq, gk, gv)):
                Gv[i] = g
        G2 = G.reshape(-1, 3 * E)
        need = self.needs_input_grad
        gx = matmul(G2, w).reshape(self.shape) if need[0] else None
        gw = matmul(G2.T, x2) if need[1] else None
        if len(need) > 2:
            return gx, gw, (column_sums(G2) if need[2] else None)
        return gx, gw


def _arr(m):
    return None if m is None else np.asarray(m.data if isinstance(m, Tensor) else m)


def merge_masks(attn_mask, key_padding_mask, n: int, h: int, L: int, S: int, dtype,
                op: str):
    """torch-convention masks (bool True = *may not* attend; float = added) -> one mask for
    :func:`~shendu.functional.scaled_dot_product_attention` (bool True = *may* attend, or
    float added), broadcastable to (N, H, L, S). Either input may be None."""
    am, kpm = _arr(attn_mask), _arr(key_padding_mask)
    parts = []
    if am is not None:
        if am.shape == (L, S):
            pass
        elif am.shape == (n * h, L, S):
            am = am.reshape(n, h, L, S)
        else:
            raise ValueError(f"{op} expected attn_mask of shape ({L}, {S}) or "
                             f"({n * h}, {L}, {S}) (N*num_heads, L, S), got {am.shape}")
        parts.append(am)
    if kpm is not None:
        if kpm.shape != (n, S):
            raise ValueError(f"{op} expected key_padding_mask of shape ({n}, {S}) (N, S), got "
                             f"{kpm.shape}")
        parts.append(kpm.reshape(n, 1, 1, S))
    for p in parts:
        if p.dtype != np.bool_ and p.dtype.kind != "f":
            raise TypeError(f"{op}: masks must be boolean (True = masked out) or floating "
                            f"(added to the scores), got {p.dtype}")
    if not parts:
        return None
    if all(p.dtype == np.bool_ for p in parts):
        keep = ~parts[0]
        for p in parts[1:]:
            keep = keep & ~p
        return keep
    out = None
    for p in parts:
        f = np.where(p, -np.inf, 0.0).astype(dtype) if p.dtype == np.bool_ else \
            p.astype(dtype, copy=False)
        out = f if out is None else out + f
    return out


class MultiheadAttention(Module):
    r"""Multi-head attention (Vaswani et al. 2017), parameter for parameter torch's layer.

    ``head_i = Attention(Q W_q^i, K W_k^i, V W_v^i)``, ``out = concat(head_1..head_h) W_o``.

    Parameters (torch's names): ``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E,), or
    ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim) when
    ``kdim``/``vdim`` differ from ``embed_dim``; ``out_proj`` (a Linear(E, E)).
    Initialised as torch: Xavier-uniform projections, zero biases.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` takes (L, N, E) (or (N, L, E) with
    ``batch_first``, or unbatched (L, E)) and returns ``(output, weights)``; weights are
    (N, L, S) averaged over heads, (N, H, L, S) otherwise, None without ``need_weights``.
    Masks follow torch: boolean True means "may not attend"; floats are added to the scores.
    A query that may attend to no key at all gets zero weights and a zero attention output
    (torch gives NaN there).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None,
                 dtype=None) -> None:
        super().__init__()
        from shendu.device import check_device
        check_device(device, "MultiheadAttention")
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"MultiheadAttention: embed_dim and num_heads must be positive, "
                             f"got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible "
                             f"by num_heads ({num_heads})")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are "
                                      "not supported")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        dt = dtype or get_default_dtype()
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.empty((3 * E, E), dt))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(np.empty((E, E), dt))
            self.k_proj_weight = Parameter(np.empty((E, self.kdim), dt))
            self.v_proj_weight = Parameter(np.empty((E, self.vdim), dt))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.empty((3 * E,), dt))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dt)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            self.in_proj_bias.data[...] = 0
            self.out_proj.bias.data[...] = 0

    def _name(self) -> str:
        return f"MultiheadAttention(embed_dim={self.embed_dim}, num_heads={self.num_heads})"

    def _project(self, query, key, value):
        """q, k, v projections, each (..., E); one fused matmul for self-attention."""
        E = self.embed_dim
        b = self.in_proj_bias
        if self._qkv_same_embed_dim and query is key and key is value:
            qkv = F.linear(query, self.in_proj_weight, b)            # (..., 3E)
            return qkv, None, None
        if self._qkv_same_embed_dim:
            wq, wk, wv = F.split(self.in_proj_weight, E, 0)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = F.split(b, E, 0) if b is not None else (None, None, None)
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        name = self._name()
        E, H, hd = self.embed_dim, self.num_heads, self.head_dim
        qs, ks, vs = query.shape, key.shape, value.shape
        if len(qs) not in (2, 3) or qs[-1] != E:
            raise ValueError(f"{name} expected query (L, N, {E}) or (L, {E}), got {qs}")
        if len(ks) != len(qs) or ks[-1] != self.kdim:
            raise ValueError(f"{name} expected key of {len(qs)} dims ending in kdim="
                             f"{self.kdim}, got {ks}")
        if len(vs) != len(qs) or vs[-1] != self.vdim:
            raise ValueError(f"{name} expected value of {len(qs)} dims ending in vdim="
                             f"{self.vdim}, got {vs}")
        batched = len(qs) == 3
        if not batched:  # unbatched (L, E): a batch of one
            bdim = 0 if self.batch_first else 1
            same_kv, same_qk = key is value, query is key
            query = F.unsqueeze(query, bdim)
            key = query if same_qk else F.unsqueeze(key, bdim)
            value = key if same_kv else F.unsqueeze(value, bdim)
            if key_padding_mask is not None:
                key_padding_mask = _arr(key_padding_mask)[None]
            qs, ks, vs = query.shape, key.shape, value.shape
        bf = self.batch_first
        n, L = (qs[0], qs[1]) if bf else (qs[1], qs[0])
        nk, S = (ks[0], ks[1]) if bf else (ks[1], ks[0])
        nv, Sv = (vs[0], vs[1]) if bf else (vs[1], vs[0])
        if nk != n or nv != n:
            raise ValueError(f"{name}: query, key and value must share the batch size, got "
                             f"{qs}, {ks}, {vs} (batch_first={bf})")
        if Sv != S:
            raise ValueError(f"{name}: key and value must share the sequence length, got "
                             f"{ks} and {vs}")
        if is_causal and attn_mask is None:
            raise RuntimeError(
                f"{name}: need attn_mask if specifying the is_causal hint (as torch); pass "
                "attn_mask=nn.Transformer.generate_square_subsequent_mask(L) with it")
        mask = merge_masks(attn_mask, key_padding_mask, n, H, L, S, query.dtype, name)
        # to heads: batch_first (N, L, H, hd) -> (N, H, L, hd); else (L, N, H, hd) -> same
        perm = (0, 2, 1, 3) if bf else (1, 2, 0, 3)
        if (self._qkv_same_embed_dim and query is key and key is value
                and autograd._tracer is None):   # self-attention: projection + heads, one op
            check_same_dtype("linear", query, self.in_proj_weight)
            b = self.in_proj_bias
            ins = (query, self.in_proj_weight) + (() if b is None else (b,))
            q, k, v = _HeadsProjection.apply(*ins, heads=H, batch_first=bf)
        else:
            q, k, v = self._project(query, key, value)
            if k is None:
                qkv = F.reshape(q, qs[:2] + (3, H, hd))
                qkv = F.permute(qkv, (2,) + tuple(p + (p > 1) for p in perm))  # (3, N, H, L, hd)
                q, k, v = (F.reshape(t, t.shape[1:]) for t in F.split(qkv, 1, 0))
            else:
                q = F.permute(F.reshape(q, qs[:2] + (H, hd)), perm)
                k = F.permute(F.reshape(k, ks[:2] + (H, hd)), perm)
                v = F.permute(F.reshape(v, vs[:2] + (H, hd)), perm)
        p = self.dropout if self.training else 0.0
        res = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                             need_weights=need_weights)
        o, w = res if need_weights else (res, None)                   # o: (N, H, L, hd)
        o = F.permute(o, (0, 2, 1, 3) if bf else (2, 0, 1, 3))         # (N, L, H, hd)/(L, N..)
        o = self.out_proj(F.reshape(o, o.shape[:2] + (E,)))
        if w is not None and average_attn_weights:
            w = F.mean(w, 1)                                          # (N, L, S)
        if not batched:
            o = F.squeeze(o, 0 if bf else 1)
            if w is not None:
                w = F.squeeze(w, 0)
        return o, w

    def extra_repr(self) -> str:
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if not self._qkv_same_embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.batch_first:
            s += ", batch_first=True"
        return s


class AdditiveAttention(Module):
    r"""Additive attention (Bahdanau, Cho & Bengio 2014, "Neural Machine Translation by
    Jointly Learning to Align and Translate").

    ``score(q, k_j) = v^T tanh(W_q q + W_k k_j)``, ``a = softmax_j(score)``,
    ``context = sum_j a_j value_j``. Parameters: ``query_proj`` (Linear(query_dim, hidden),
    no bias), ``key_proj`` (Linear(key_dim, hidden), bias if ``bias``) and ``v`` (hidden,).

    ``forward(query, keys, values=None, key_padding_mask=None, projected_keys=None)``:
    ``query`` (N, Dq) or (N, L, Dq), ``keys`` (N, S, Dk), ``values`` (N, S, Dv) (default
    ``keys``), ``key_padding_mask`` (N, S) boolean, True = padding (ignored, as torch's
    ``MultiheadAttention``). Returns ``(context, weights)``: (N, Dv) and (N, S) for one query,
    (N, L, Dv) and (N, L, S) for L. A decoder that attends every step to the same keys passes
    ``projected_keys = self.project_keys(keys)`` once to skip ``W_k k`` each step.
    """

    def __init__(self, query_dim: int, key_dim: int | None = None, hidden_dim: int | None = None,
                 bias: bool = False, dtype=None) -> None:
        super().__init__()
        key_dim = query_dim if key_dim is None else key_dim
        hidden_dim = query_dim if hidden_dim is None else hidden_dim
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        dt = dtype or get_default_dtype()
        self.query_proj = Linear(query_dim, hidden_dim, bias=False, dtype=dt)
        self.key_proj = Linear(key_dim, hidden_dim, bias=bias, dtype=dt)
        self.v = Parameter(np.empty((hidden_dim,), dt))
        bound = 1 / math.sqrt(hidden_dim)
        init.uniform_(self.v, -bound, bound)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k keys`` (N, S, hidden), to reuse across decoder steps."""
        if keys.shape[-1] != self.key_dim:
            raise ValueError(f"AdditiveAttention(key_dim={self.key_dim}) expected keys "
                             f"(N, S, {self.key_dim}), got {keys.shape}")
        return self.key_proj(keys)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None,
                key_padding_mask=None, projected_keys: Tensor | None = None):
        if query.shape[-1] != self.query_dim:
            raise ValueError(f"AdditiveAttention(query_dim={self.query_dim}) expected query "
                             f"(N, {self.query_dim}) or (N, L, {self.query_dim}), got "
                             f"{query.shape}")
        kp = self.project_keys(keys) if projected_keys is None else projected_keys
        values = keys if values is None else values
        keep = None
        if key_padding_mask is not None:
            kpm = _arr(key_padding_mask)
            if kpm.dtype != np.bool_ or kpm.shape != keys.shape[:-1]:
                raise ValueError(f"AdditiveAttention expected a boolean key_padding_mask of "
                                 f"shape {keys.shape[:-1]}, got {kpm.dtype} {kpm.shape}")
            keep = ~kpm
            if query.ndim == keys.ndim:
                keep = keep[..., None, :]
        return F.additive_attention(self.query_proj(query), kp, self.v, values, mask=keep)

    def extra_repr(self) -> str:
        return (f"query_dim={self.query_dim}, key_dim={self.key_dim}, "
                f"hidden_dim={self.hidden_dim}")
