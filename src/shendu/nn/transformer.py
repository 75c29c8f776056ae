"""The transformer (Vaswani et al. 2017, "Attention Is All You Need"): encoder and decoder
layers and stacks with torch's parameter names, plus the sinusoidal positional encoding.

Each layer is a residual block around multi-head attention and a position-wise feed-forward
network ``W_2 act(W_1 x + b_1) + b_2``. Post-norm (the paper, ``norm_first=False``):
``x = LN(x + Sublayer(x))``; pre-norm (``norm_first=True``, Xiong et al. 2020):
``x = x + Sublayer(LN(x))``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np

from shendu import autograd
from shendu import functional as F
from shendu.autograd import Function
from shendu.backend import get_default_dtype, rng
from shendu.functional import _gemm, _numba, _regions
from shendu.functional._gemm import matmul
from shendu.functional._openblas import ONE_THREAD
from shendu.functional._util import column_sums
from shendu.functional.linear import check_same_dtype
from shendu.nn import init
from shendu.nn.attention import MultiheadAttention
from shendu.nn.container import ModuleList
from shendu.nn.dropout import Dropout
from shendu.nn.linear import Linear
from shendu.nn.module import Module
from shendu.nn.normalization import LayerNorm
from shendu.tensor import Tensor
from shendu.workspace import workspace

__all__ = ["TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer",
           "TransformerDecoder", "Transformer", "PositionalEncoding"]


def _activation(activation) -> Callable:
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise ValueError(f"transformer: activation should be 'relu' or 'gelu' (or a callable), "
                         f"got {activation!r}")
    if not callable(activation):
        raise TypeError(f"transformer: activation must be a string or a callable, got "
                        f"{type(activation).__name__}")
    return activation


#: elements of the hidden activation from which its element-wise passes run as one compiled
#: loop (``functional._numba``: the same bits)
_COMPILED_MIN = 1 << 12


class _FeedForward(Function):
    r"""The position-wise feed-forward network with ReLU as one op:
    ``y = W_2 D(relu(W_1 x + b_1)) + b_2``, ``D`` inverted dropout with keep-mask ``M``.

    The same arithmetic, in the same order, as ``linear2(dropout(relu(linear1(x))))``, but
    only ``H = D(relu(W_1 x + b_1))`` (and ``M``) is kept: ReLU and dropout run in place on
    the first product, whose pre-activation no backward needs. Backward::

        dW_2 = dy^T H    db_2 = Σ dy    dH = dy W_2
        dA = dH ⊙ M/(1-p) ⊙ [H > 0]     dW_1 = dA^T x    db_1 = Σ dA    dx = dA W_1

    Inputs ``x, W_1, b_1, W_2, b_2`` (or ``x, W_1, W_2`` without biases). Where Numba is
    installed, the bias and ReLU are one pass over ``W_1 x``, and ``dA`` one pass over
    ``dH`` (``functional._numba``: the NumPy passes' bits).
    """

    saved_inputs = None

    def forward(self, x, w1, *rest, p=0.0):
        self.bias = len(rest) == 3
        b1, w2, b2 = rest if self.bias else (None, rest[0], None)
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])      # (M, d)
        y = self._whole_rows(x2, w1, b1, w2, b2) if p == 0.0 else None
        if y is not None:               # the whole feed-forward, a block of rows per thread
            self.keep, self.p = None, p
            h = self.h
            if not any(self.needs_input_grad):
                h = None
            self.x2, self.w1, self.w2, self.h, self.shape = x2, w1, w2, h, x.shape
            return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w2.shape[0],))
        if any(self.needs_input_grad):  # kept for backward: memory reused between steps
            h = workspace.get((x2.shape[0], w1.shape[0]), np.result_type(x2, w1))
            _gemm.linear(x2, w1, out=h)                          # (M, ff)
        else:
            h = _gemm.linear(x2, w1)
        kern = _numba.kernels_for(h, b1, min_size=_COMPILED_MIN)
        if kern is not None and b1 is not None:
            kern.bias_relu(h, b1)
        else:
            if b1 is not None:
                h += b1
            np.maximum(h, 0, out=h)
        dt = h.dtype
        self.keep, self.p = None, p
        if p == 1.0:
            h *= dt.type(0)
        elif p > 0.0:                   # the draw F.dropout makes, so one seed, one result
            u = rng().random(h.shape, dtype=np.float32 if dt == np.float32 else np.float64)
            self.keep = u >= p
            del u
            self.inv = dt.type(1.0 / (1.0 - p))
            h *= self.inv
            h *= self.keep
        y = _gemm.linear(h, w2, b2)                                      # (M, d)
        if not any(self.needs_input_grad):
            h = None
        self.x2, self.w1, self.w2, self.h, self.shape = x2, w1, w2, h, x.shape
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w2.shape[0],))

    def _whole_rows(self, x2, w1, b1, w2, b2):
        """``max(x2 w1^T + b1, 0) w2^T + b2`` in one compiled region where both products
        would be split over the kernel threads by rows (``_regions_compiled.feed_forward``:
        each thread's rows whole, their bias and ReLU between the products while in cache;
        the split products' bits), the hidden activations left in ``self.h``; None
        elsewhere."""
        M, d = x2.shape
        F, e = w1.shape[0], w2.shape[0]
        if (b1 is None or b2 is None or M * F * d < _gemm.MIN_LINEAR_FLOPS
                or M * e * F < _gemm.MIN_LINEAR_FLOPS
                or not (x2.dtype == w1.dtype == w2.dtype == b1.dtype == b2.dtype)
                or not all(type(a) is np.ndarray and a.flags.c_contiguous
                           for a in (x2, w1, b1, w2, b2))):
            return None
        t = _gemm._threads_for(d, M * F)
        if t < 2 or _gemm._threads_for(F, M * e) != t or M < F or M < e:
            return None                 # (m >= n: both products split by rows)
        found = _regions.feed_forward()
        if found is None or x2.dtype not in found[1]:
            return None
        ff, gemms = found
        h = (workspace.get((M, F), x2.dtype) if any(self.needs_input_grad)
             else np.empty((M, F), x2.dtype))
        y = np.empty((M, e), x2.dtype)
        dt = x2.dtype
        with ONE_THREAD:                # each product as _gemm.linear makes it
            ff(gemms[dt], _gemm.linear_rows_take(dt, d, F), _gemm.linear_rows_take(dt, F, e),
               x2, w1, b1, w2, b2, h, y, t)
        self.h = h
        return y

    def backward(self, g):
        x2, w1, w2, h = self.x2, self.w1, self.w2, self.h
        g2 = g if g.ndim == 2 else g.reshape(-1, g.shape[-1])
        need = self.needs_input_grad
        i_w2 = 3 if self.bias else 2
        gw2 = matmul(g2.T, h) if need[i_w2] else None
        gb2 = column_sums(g2) if self.bias and need[4] else None
        da = workspace.get(h.shape, np.result_type(g2, w2))
        matmul(g2, w2, out=da)                                   # dH (M, ff)
        kern = _numba.kernels_for(da, h, min_size=_COMPILED_MIN)
        if self.p == 1.0:
            da *= da.dtype.type(0)
        elif self.p > 0.0 and kern is not None:
            kern.dropout_relu_grad(da, h, self.keep, self.inv)
        elif self.p > 0.0:
            da *= self.inv
            da *= self.keep
        if kern is not None and self.p == 0.0:
            kern.relu_grad(da, h)
        elif kern is None or self.p == 1.0:
            alive = np.less_equal(h, 0)
            np.logical_not(alive, out=alive)                        # relu' (NaN passes g)
            da *= alive
            del alive
        gx = None
        if need[0]:
            gx = matmul(da, w1)
            if len(self.shape) != 2:
                gx = gx.reshape(self.shape)
        gw1 = matmul(da.T, x2) if need[1] else None
        gb1 = column_sums(da) if self.bias and need[2] else None
        workspace.put(da)
        if not self.bias:
            return gx, gw1, gw2
        return gx, gw1, gb1, gw2, gb2

    def _free(self) -> None:
        h = self.__dict__.get("h")
        if h is not None:
            workspace.put(h)             # the hidden activation: private to the op
        super()._free()


def _feed_forward(layer, x: Tensor) -> Tensor:
    """``layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))``, as one
    :class:`_FeedForward` op when that is what the layer holds (ReLU, plain Linear and
    Dropout modules) and no exporter is tracing the ops; else module by module."""
    l1, l2, drop = layer.linear1, layer.linear2, layer.dropout
    if (layer.activation is not F.relu or autograd._tracer is not None
            or type(l1) is not Linear or type(l2) is not Linear or type(drop) is not Dropout
            or (l1.bias is None) != (l2.bias is None)):
        return l2(drop(layer.activation(l1(x))))
    if x.data.ndim == 0 or x.data.shape[-1] != l1.weight.data.shape[1]:
        return l2(drop(layer.activation(l1(x))))   # the layers' own error messages
    check_same_dtype("linear", x, l1.weight)
    p = drop.p if drop.training else 0.0
    ins = (x, l1.weight, l1.bias, l2.weight, l2.bias) if l1.bias is not None else \
        (x, l1.weight, l2.weight)
    return _FeedForward.apply(*ins, p=float(p))


def _add_norm(norm, x: Tensor, r: Tensor) -> Tensor:
    """``norm(x + r)``, as one op when ``norm`` is a plain LayerNorm
    (:func:`shendu.functional.normalization.add_layer_norm`); else as written."""
    if type(norm) is not LayerNorm:
        return norm(x + r)
    from shendu.functional.normalization import add_layer_norm

    return add_layer_norm(x, r, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _clones(module: Module, n: int) -> ModuleList:
    """``n`` independent deep copies (same initial weights, as torch's stacks)."""
    return ModuleList([copy.deepcopy(module) for _ in range(n)])


class TransformerEncoderLayer(Module):
    r"""Self-attention then a feed-forward network, each inside a residual connection.

    Parameters (torch's names): ``self_attn`` (MultiheadAttention), ``linear1`` (d_model ->
    dim_feedforward), ``linear2`` (back), ``norm1``, ``norm2`` (LayerNorm); dropouts
    ``dropout`` (inside the feed-forward), ``dropout1``, ``dropout2`` (on each sublayer's
    output). ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation="relu", layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        from shendu.device import check_device
        check_device(device, type(self).__name__)
        dt = dtype or get_default_dtype()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dt)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dt)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dt)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)
        self.batch_first = bool(batch_first)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(_feed_forward(self, x))

    def forward(self, src: Tensor, src_mask=None, src_key_padding_mask=None,
                is_causal: bool = False) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = _add_norm(self.norm1, x, self._sa_block(x, src_mask, src_key_padding_mask,
                                                         is_causal))
            x = _add_norm(self.norm2, x, self._ff_block(x))
        return x


class TransformerEncoder(Module):
    """A stack of ``num_layers`` copies of ``encoder_layer`` (``layers.0``, ``layers.1``, ...),
    then ``norm`` if given. ``forward(src, mask=None, src_key_padding_mask=None,
    is_causal=None)``."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int,
                 norm: Module | None = None, enable_nested_tensor: bool = True,
                 mask_check: bool = True) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"TransformerEncoder: num_layers must be positive, got {num_layers}")
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = int(num_layers)
        self.norm = norm

    def forward(self, src: Tensor, mask=None, src_key_padding_mask=None,
                is_causal: bool | None = None) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=bool(is_causal))
        if self.norm is not None:
            x = self.norm(x)
        return x


class TransformerDecoderLayer(Module):
    r"""Masked self-attention, attention over the encoder's output (``memory``), then a
    feed-forward network, each inside a residual connection.

    Parameters (torch's names): ``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``,
    ``norm1``, ``norm2``, ``norm3``; dropouts ``dropout``, ``dropout1..3``.
    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation="relu", layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        from shendu.device import check_device
        check_device(device, type(self).__name__)
        dt = dtype or get_default_dtype()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dt)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, dtype=dt)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dt)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dt)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(activation)
        self.batch_first = bool(batch_first)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=is_causal)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(_feed_forward(self, x))

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask,
                                    memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x


class TransformerDecoder(Module):
    """A stack of ``num_layers`` copies of ``decoder_layer``, then ``norm`` if given."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int,
                 norm: Module | None = None) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"TransformerDecoder: num_layers must be positive, got {num_layers}")
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = int(num_layers)
        self.norm = norm

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        if self.norm is not None:
            x = self.norm(x)
        return x


class Transformer(Module):
    """The encoder-decoder transformer of Vaswani et al. (2017), as ``torch.nn.Transformer``:
    ``encoder`` (``num_encoder_layers`` layers + a final LayerNorm) and ``decoder``
    (likewise); every weight matrix Xavier-uniform initialised.

    ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None, ...)``
    with src (S, N, E) and tgt (T, N, E) ((N, S, E), (N, T, E) if ``batch_first``) returns
    (T, N, E).
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation="relu", custom_encoder: Module | None = None,
                 custom_decoder: Module | None = None, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        from shendu.device import check_device
        check_device(device, type(self).__name__)
        kw = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                  layer_norm_eps=layer_norm_eps, batch_first=batch_first,
                  norm_first=norm_first, bias=bias, dtype=dtype)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, **kw)
            norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
            self.encoder = TransformerEncoder(layer, num_encoder_layers, norm)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, **kw)
            norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
            self.decoder = TransformerDecoder(layer, num_decoder_layers, norm)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, bool(batch_first)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src: Tensor, tgt: Tensor, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal: bool | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        bdim = 0 if self.batch_first else 1
        if src.ndim == 3 and tgt.ndim == 3 and src.shape[bdim] != tgt.shape[bdim]:
            raise ValueError(f"Transformer: the batch number of src and tgt must be equal, got "
                             f"{src.shape} and {tgt.shape} (batch_first={self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer(d_model={self.d_model}) expected src and tgt "
                             f"(..., {self.d_model}), got {src.shape} and {tgt.shape}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, dtype=None) -> Tensor:
        """(sz, sz) float mask: 0 on and below the diagonal, -inf above (no peeking ahead)."""
        dt = dtype or get_default_dtype()
        m = np.triu(np.full((sz, sz), -np.inf, dtype=dt), k=1)
        return Tensor(m)


class PositionalEncoding(Module):
    r"""Adds the sinusoidal position signal of Vaswani et al. (2017), then dropout:

    ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``.

    Input (T, N, d) or (N, T, d) with ``batch_first``. The table (``max_len``, d) is a
    non-persistent buffer ``pe``: it is derived, so it stays out of the ``state_dict``.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0,
                 batch_first: bool = False, dtype=None) -> None:
        super().__init__()
        self.d_model, self.max_len, self.batch_first = d_model, max_len, bool(batch_first)
        pos = np.arange(max_len, dtype=np.float64)[:, None]
        div = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-math.log(10000.0) / d_model))
        pe = np.zeros((max_len, d_model))
        pe[:, 0::2] = np.sin(pos * div)
        pe[:, 1::2] = np.cos(pos * div[: d_model // 2])
        self.register_buffer("pe", Tensor(pe.astype(dtype or get_default_dtype())),
                             persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1] if self.batch_first else x.shape[0]
        if x.ndim != 3 or x.shape[-1] != self.d_model or t > self.max_len:
            raise ValueError(f"PositionalEncoding(d_model={self.d_model}, max_len="
                             f"{self.max_len}) expected input "
                             f"{'(N, T, ' if self.batch_first else '(T, N, '}{self.d_model}) "
                             f"with T <= {self.max_len}, got {x.shape}")
        pe = self.pe.data[:t]
        pe = pe[None] if self.batch_first else pe[:, None]
        return self.dropout(x + pe.astype(x.dtype, copy=False))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"
