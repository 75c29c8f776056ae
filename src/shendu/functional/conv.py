"""Convolution (LeCun et al. 1989; LeCun, Bottou, Bengio & Haffner 1998) as one fused op
with a hand-derived backward, and channel-wise dropout for convolutional feature maps.

The API is NCHW, as in torch: input ``(N, C, H, W)``, weight ``(O, C/groups, kh, kw)``.
Inside, the kernel works channel-major ("CNHW"): every activation is stored as a
contiguous ``(C, N, H, W)`` block and handed to the user as the transposed *view*
``(N, C, H, W)``. Shapes and values are NCHW; only the strides differ (like torch's
``channels_last``, but with the channel outermost). This layout makes

* the patch matrix ("im2col", Chellapilla, Puri & Simard 2006) a set of ``kh * kw``
  block copies whose inner runs are whole image rows,
* the forward pass one matrix product ``Y (O, N*Ho*Wo) = W (O, C*kh*kw) @ X_col``
  whose result already *is* the next activation (no transpose, no copy),
* groups a batched product over ``G`` contiguous channel blocks,
* and the input gradient a transposed convolution evaluated as one product
  ``dX_col = W^T @ dY`` followed by ``kh * kw`` strided slice-adds ("col2im").

Every pooling, batch-norm and element-wise op accepts any strides, so the layout flows
through a network without copies; ``reshape``/``flatten`` before a ``Linear`` copies once
into NCHW order, as it must.
"""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.backend import rng
from shendu.tensor import Tensor

__all__ = ["conv2d", "conv1d", "dropout2d", "dropout1d"]


# --------------------------------------------------------------------------- helpers
def _tuple(v, n: int, name: str, op: str) -> tuple[int, ...]:
    """``v`` (an int or a sequence of ``n`` ints) as a tuple of ``n`` ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    t = tuple(v)
    if len(t) == 1:
        t = t * n
    if len(t) != n or not all(isinstance(a, (int, np.integer)) for a in t):
        raise ValueError(f"{op}: {name} must be an int or a tuple of {n} ints, got {v!r}")
    return tuple(int(a) for a in t)


def out_range(offset: int, stride: int, size: int, n_out: int) -> tuple[int, int, int]:
    """Which outputs ``o`` read an input inside ``[0, size)`` at index ``o*stride + offset``.

    Returns ``(o0, o1, i0)``: outputs ``o0 <= o < o1`` do, the first one reads input
    ``i0``. Used for padding without a padded copy: the outputs outside the range see a
    padded element.
    """
    o0 = 0 if offset >= 0 else (-offset + stride - 1) // stride
    last = size - 1 - offset
    o1 = min(n_out, last // stride + 1) if last >= 0 else 0
    o1 = max(o1, o0)
    return o0, o1, o0 * stride + offset


def _im2col(xc: np.ndarray, kh: int, kw: int, stride, pads, dilation, ho: int, wo: int
            ) -> np.ndarray:
    """Patch matrix ``(C, kh, kw, N, Ho, Wo)`` of the channel-major input ``(C, N, H, W)``.

    ``cols[c, i, j, n, y, x] = x[c, n, y*sh + i*dh - pt, x*sw + j*dw - pl]`` (zero outside).
    """
    c, n, h, w = xc.shape
    sh, sw = stride
    dh, dw = dilation
    pt, pl = pads
    cols = np.empty((c, kh, kw, n, ho, wo), xc.dtype)
    for i in range(kh):
        y0, y1, iy = out_range(i * dh - pt, sh, h, ho)
        for j in range(kw):
            x0, x1, ix = out_range(j * dw - pl, sw, w, wo)
            dst = cols[:, i, j]
            if y0 >= y1 or x0 >= x1:
                dst[...] = 0
                continue
            dst[:, :, y0:y1, x0:x1] = xc[:, :, iy:iy + (y1 - y0 - 1) * sh + 1:sh,
                                         ix:ix + (x1 - x0 - 1) * sw + 1:sw]
            if y0 > 0:
                dst[:, :, :y0] = 0
            if y1 < ho:
                dst[:, :, y1:] = 0
            if x0 > 0:
                dst[:, :, y0:y1, :x0] = 0
            if x1 < wo:
                dst[:, :, y0:y1, x1:] = 0
    return cols


def _col2im(dcols: np.ndarray, h: int, w: int, stride, pads, dilation) -> np.ndarray:
    """Adjoint of :func:`_im2col`: scatter-add ``(C, kh, kw, N, Ho, Wo)`` into ``(C, N, H, W)``."""
    c, kh, kw, n, ho, wo = dcols.shape
    sh, sw = stride
    dh, dw = dilation
    pt, pl = pads
    dx = None
    for i in range(kh):
        y0, y1, iy = out_range(i * dh - pt, sh, h, ho)
        for j in range(kw):
            x0, x1, ix = out_range(j * dw - pl, sw, w, wo)
            if y0 >= y1 or x0 >= x1:
                continue
            src = dcols[:, i, j, :, y0:y1, x0:x1]
            ys = slice(iy, iy + (y1 - y0 - 1) * sh + 1, sh)
            xs = slice(ix, ix + (x1 - x0 - 1) * sw + 1, sw)
            if dx is None and src.shape[2:] == (h, w):
                dx = np.array(src)  # the first window that covers the whole input: no zeros
                continue
            if dx is None:
                dx = np.zeros((c, n, h, w), dcols.dtype)
            dx[:, :, ys, xs] += src
    if dx is None:
        dx = np.zeros((c, n, h, w), dcols.dtype)
    return dx


def _cn(a: np.ndarray) -> np.ndarray:
    """The channel-major view ``(C, N, ...)`` of an ``(N, C, ...)`` array, made contiguous."""
    t = np.swapaxes(a, 0, 1)
    return t if t.flags.c_contiguous else np.ascontiguousarray(t)


# --------------------------------------------------------------------------- conv
class Conv2d(Function):
    r"""2-D cross-correlation, the "convolution" of deep learning.

    For input ``x`` (N, C, H, W), weight ``w`` (O, C/G, kh, kw), bias ``b`` (O,), stride
    ``s``, dilation ``d``, zero padding ``p`` and ``G`` groups (channel ``o`` of the output
    sees the input channels of its group ``g = o // (O/G)`` only):

    .. math::
        y_{n,o,u,v} = b_o + \sum_{c,i,j} w_{o,c,i,j}\,
                      x_{n,\,gC/G + c,\; u s_h + i d_h - p_t,\; v s_w + j d_w - p_l}

    With the patch matrix :math:`X_{col}[(c,i,j), (n,u,v)]` this is one product per group,
    :math:`Y = W X_{col}`, and backward is

    * :math:`\partial W = \partial Y X_{col}^\top` (the patches saved in forward),
    * :math:`\partial b_o = \sum_{n,u,v} \partial y_{n,o,u,v}`,
    * :math:`\partial x = \mathrm{col2im}(W^\top \partial Y)`: each patch gradient is added
      back where it was read, i.e. a transposed convolution of ``dy`` with ``w``.
    """

    def forward(self, x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                groups=1, flat1d=False):
        if flat1d:  # conv1d: (N, C, L) as (N, C, 1, L)
            x = x[:, :, None, :]
            w = w[:, :, None, :]
        n, c, h, wd = x.shape
        o, cg, kh, kw = w.shape
        pt, pb, pl, pr = pads
        sh, sw = stride
        dh, dw = dilation
        ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
        cols = _im2col(_cn(x), kh, kw, stride, (pt, pl), dilation, ho, wo)
        m = n * ho * wo
        kg = cg * kh * kw
        if groups == 1:
            y = w.reshape(o, kg) @ cols.reshape(kg, m)                 # (O, M)
        else:
            y = np.matmul(w.reshape(groups, o // groups, kg),
                          cols.reshape(groups, kg, m)).reshape(o, m)   # (G, O/G, M)
        if b is not None:
            y += b[:, None]
        need = self.needs_input_grad
        self.cols = cols if need[1] else None
        self.w = w
        self.geom = (n, c, h, wd, ho, wo, stride, (pt, pl), dilation, groups, flat1d)
        y = y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)             # NCHW view of CNHW
        return y[:, :, 0, :] if flat1d else y

    def backward(self, g):
        n, c, h, wd, ho, wo, stride, pads, dilation, groups, flat1d = self.geom
        w = self.w
        o, cg, kh, kw = w.shape
        if flat1d:
            g = g[:, :, None, :]
        m = n * ho * wo
        kg = cg * kh * kw
        g2 = _cn(g).reshape(o, m)                                      # (O, M)
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[0]:
            if groups == 1:
                dcols = w.reshape(o, kg).T @ g2                        # (C*kh*kw, M)
            else:
                wg = w.reshape(groups, o // groups, kg)
                dcols = np.matmul(wg.transpose(0, 2, 1), g2.reshape(groups, o // groups, m))
            dx = _col2im(dcols.reshape(c, kh, kw, n, ho, wo), h, wd, stride, pads, dilation)
            gx = dx.transpose(1, 0, 2, 3)
            if flat1d:
                gx = gx[:, :, 0, :]
        if need[1]:
            cols = self.cols
            if groups == 1:
                gw = g2 @ cols.reshape(kg, m).T
            else:
                gw = np.matmul(g2.reshape(groups, o // groups, m),
                               cols.reshape(groups, kg, m).transpose(0, 2, 1))
            gw = gw.reshape(o, cg, kw) if flat1d else gw.reshape(w.shape)
        if len(need) > 2 and need[2]:
            gb = g2.sum(axis=1)
        return gx, gw, gb


def _conv_pads(padding, k, dilation, stride, nd: int, op: str) -> tuple[int, int, int, int]:
    """``padding`` (int, tuple, 'valid' or 'same') as (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same', got "
                             f"{padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions, "
                             f"got stride {stride[-nd:] if nd == 1 else stride}")
        # total d*(k-1); torch puts the odd element on the bottom/right
        tot = [d * (kk - 1) for d, kk in zip(dilation, k)]
        return (tot[0] // 2, tot[0] - tot[0] // 2, tot[1] // 2, tot[1] - tot[1] // 2)
    p = _tuple(padding, nd, "padding", op)
    if any(v < 0 for v in p):
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    if nd == 1:
        return (0, 0, p[0], p[0])
    return (p[0], p[0], p[1], p[1])


def _conv(x: Tensor, weight: Tensor, bias, stride, padding, dilation, groups, nd: int
          ) -> Tensor:
    op = f"conv{nd}d"
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{op}: input and weight must be Tensors, got {type(x).__name__} and "
                        f"{type(weight).__name__}")
    ws = weight.data.shape
    if weight.data.ndim != nd + 2:
        dims = "(O, C/groups, kH, kW)" if nd == 2 else "(O, C/groups, k)"
        raise ValueError(f"{op}: weight must be {nd + 2}-D {dims}, got {ws}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    xs = x.data.shape
    unbatched = x.data.ndim == nd + 1
    if x.data.ndim not in (nd + 1, nd + 2):
        spatial = "H, W" if nd == 2 else "L"
        raise ValueError(f"{op}: expected input (N, C, {spatial}) or (C, {spatial}), got {xs}")
    cin = ws[1] * groups
    if xs[-nd - 1] != cin:
        spatial = "H, W" if nd == 2 else "L"
        raise ValueError(f"{op}: expected input (N, {cin}, {spatial}) for weight {ws} with "
                         f"groups={groups}, got {xs}")
    if ws[0] % groups:
        raise ValueError(f"{op}: out_channels {ws[0]} must be divisible by groups={groups}")
    if bias is not None and bias.data.shape != (ws[0],):
        raise ValueError(f"{op}: bias must have shape ({ws[0]},), got {bias.data.shape}")
    if x.data.dtype.kind != "f" or x.data.dtype != weight.data.dtype or (
            bias is not None and bias.data.dtype != weight.data.dtype):
        raise TypeError(f"{op}: expected input, weight and bias of one floating dtype, got "
                        f"{x.data.dtype}, {weight.data.dtype}"
                        + ("" if bias is None else f", {bias.data.dtype}"))
    stride_t = _tuple(stride, nd, "stride", op)
    dil_t = _tuple(dilation, nd, "dilation", op)
    if any(s < 1 for s in stride_t) or any(d < 1 for d in dil_t):
        raise ValueError(f"{op}: stride and dilation must be positive, got stride={stride!r}, "
                         f"dilation={dilation!r}")
    k = ws[2:]
    if nd == 1:
        stride_t, dil_t, k = (1,) + stride_t, (1,) + dil_t, (1,) + k
    pads = _conv_pads(padding, k, dil_t, stride_t, nd, op)
    sp = xs[-nd:] if nd == 2 else (1,) + xs[-1:]
    eff = [d * (kk - 1) + 1 for d, kk in zip(dil_t, k)]
    padded = (sp[0] + pads[0] + pads[1], sp[1] + pads[2] + pads[3])
    if padded[0] < eff[0] or padded[1] < eff[1]:
        shown = padded if nd == 2 else padded[1:]
        ker = tuple(eff) if nd == 2 else tuple(eff[1:])
        raise ValueError(f"{op}: padded input size {shown} is smaller than the (dilated) "
                         f"kernel size {ker}")
    if unbatched:
        x = x.unsqueeze(0)
    args = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*args, stride=stride_t, pads=pads, dilation=dil_t, groups=int(groups),
                     flat1d=nd == 1)
    return y.squeeze(0) if unbatched else y


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation) over ``input`` (N, C, H, W) or (C, H, W).

    ``weight`` is (O, C/groups, kH, kW); ``stride``, ``dilation`` an int or a pair;
    ``padding`` an int, a pair, ``'valid'`` (none) or ``'same'`` (output size = input size,
    stride 1 only; an odd total padding puts the extra row/column at the bottom/right, as
    torch). See :class:`Conv2d` for the equations.
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """1-D convolution over ``input`` (N, C, L) or (C, L) with ``weight`` (O, C/groups, k).

    The same kernel as :func:`conv2d` on a height-1 image.
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1)


# --------------------------------------------------------------------------- dropout
class _ChannelDropout(Function):
    def forward(self, a, mask=None):
        self.mask = mask
        return a * mask

    def backward(self, g):
        return g * self.mask


def _channel_dropout(x: Tensor, p: float, training: bool, nd: int, op: str) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: probability has to be between 0 and 1, got {p}")
    if x.data.ndim not in (nd + 1, nd + 2):
        shape = "(N, C, H, W) or (C, H, W)" if nd == 2 else "(N, C, L) or (C, L)"
        raise ValueError(f"{op}: expected input {shape}, got {x.data.shape}")
    if not training or p == 0.0:
        return x
    dt = x.data.dtype
    # one draw per (sample, channel): a whole feature map is kept or dropped
    mshape = x.data.shape[:-nd] + (1,) * nd
    if p == 1.0:
        mask = np.zeros(mshape, dt)
    else:
        keep = rng().random(mshape, dtype=np.float32 if dt == np.float32 else np.float64)
        mask = (keep >= p).astype(dt) * dt.type(1.0 / (1.0 - p))
    return _ChannelDropout.apply(x, mask=mask)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Spatial dropout (Tompson et al. 2015): zero whole channels of (N, C, H, W) with
    probability ``p`` and scale the kept ones by ``1/(1-p)``.

    Neighbouring pixels of a feature map are strongly correlated, so element-wise dropout
    barely regularises a convolutional layer; dropping the entire map does.
    """
    return _channel_dropout(input, p, training, 2, "dropout2d")


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Channel-wise dropout of (N, C, L): the 1-D counterpart of :func:`dropout2d`."""
    return _channel_dropout(input, p, training, 1, "dropout1d")
