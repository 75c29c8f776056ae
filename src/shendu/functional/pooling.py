"""Pooling over the two trailing (spatial) dims of (N, C, H, W) or (C, H, W) inputs.

Max pooling (Zhou & Chellappa 1988; Ranzato et al. 2007) and average pooling (LeCun et al.
1989, "subsampling") as fused ops with hand-derived backward.

Both are computed without a padded copy and without an index mask in memory: the output is
reduced over the ``kH * kW`` kernel offsets, each one a strided view of the input, and
padding is handled by restricting each offset to the outputs whose window element lies
inside the input. Max pooling's backward recomputes "which element was the maximum" from
the saved input and output (an equality test per offset), giving the gradient to the
*first* maximal element of each window in row-major order, exactly as torch does. Any
memory layout is accepted (channel-major activations of :mod:`shendu.functional.conv`
stay channel-major).
"""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.functional.conv import _tuple, out_range
from shendu.tensor import Tensor

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _arrange(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """A C-contiguous (A, B, H, W) arrangement of the 4-D ``a``: ``a`` itself or its
    (C, N, H, W) transpose, whichever is already contiguous (else a copy of ``a``)."""
    if a.flags.c_contiguous:
        return a, False
    t = np.swapaxes(a, 0, 1)
    if t.flags.c_contiguous:
        return t, True
    return np.ascontiguousarray(a), False


def _like(g: np.ndarray, swapped: bool) -> np.ndarray:
    """``g`` (N, C, ...) in the arrangement chosen by :func:`_arrange`, contiguous."""
    t = np.swapaxes(g, 0, 1) if swapped else g
    return t if t.flags.c_contiguous else np.ascontiguousarray(t)


def _pool_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    num = size + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        o = -(-num // s) + 1
        if (o - 1) * s >= size + p:  # the last window must start inside the input or left pad
            o -= 1
        return o
    return num // s + 1


def _offsets(geom):
    """Per kernel offset (row-major): (output region, input slices) of the valid part."""
    h, w, ho, wo, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    res = []
    for i in range(kh):
        y0, y1, iy = out_range(i * dh - ph, sh, h, ho)
        for j in range(kw):
            x0, x1, ix = out_range(j * dw - pw, sw, w, wo)
            if y0 >= y1 or x0 >= x1:
                continue
            reg = (Ellipsis, slice(y0, y1), slice(x0, x1))
            src = (Ellipsis, slice(iy, iy + (y1 - y0 - 1) * sh + 1, sh),
                   slice(ix, ix + (x1 - x0 - 1) * sw + 1, sw))
            res.append((reg, src, (y1 - y0 == ho and x1 - x0 == wo)))
    return res


def _disjoint(geom) -> tuple[bool, bool]:
    """(windows never overlap, and they tile the input exactly without padding)."""
    h, w, ho, wo, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    disjoint = sh >= dh * (kh - 1) + 1 and sw >= dw * (kw - 1) + 1
    tile = (disjoint and ph == 0 and pw == 0 and dh == 1 and dw == 1
            and ho * sh == h and wo * sw == w and sh == kh and sw == kw)
    return disjoint, tile


class MaxPool2d(Function):
    r"""``y[n,c,u,v] = max_{i,j} x[n, c, u s_h + i d_h - p_h, v s_w + j d_w - p_w]``
    (padding counts as ``-inf``).

    Backward: ``dx`` receives ``dy[n,c,u,v]`` at the first (row-major) maximal element of
    each window; windows that overlap add up. NaN propagates; as in torch, a window's
    gradient then goes to its last NaN.
    """

    def forward(self, x, geom=None, unbatched=False):
        if unbatched:
            x = x[None]
        z, swapped = _arrange(x)
        offs = _offsets(geom)
        full = next((k for k, o in enumerate(offs) if o[2]), None)
        if full is None:
            out = np.full(z.shape[:2] + geom[2:4], -np.inf, z.dtype)
        else:
            out = np.array(z[offs[full][1]])
        for k, (reg, src, _) in enumerate(offs):
            if k != full:
                r = out[reg]
                np.maximum(r, z[src], out=r)
        self.z, self.out, self.swapped, self.geom = z, out, swapped, geom
        self.unbatched = unbatched
        y = np.swapaxes(out, 0, 1) if swapped else out
        return y[0] if unbatched else y

    def backward(self, g):
        z, out, geom = self.z, self.out, self.geom
        if self.unbatched:
            g = g[None]
        rem = np.array(_like(g, self.swapped))   # gradient not yet handed to an element
        offs = _offsets(geom)
        disjoint, tile = _disjoint(geom)
        dz = np.empty_like(z) if tile else np.zeros_like(z)
        nanwin = np.isnan(out)
        nrem = None
        if nanwin.any():  # windows holding a NaN: torch gives the gradient to the last NaN
            nrem = np.where(nanwin, rem, 0)
            rem[nanwin] = 0
        last = len(offs) - 1
        for k, (reg, src, _) in enumerate(offs):
            r = rem[reg]
            if k == last and tile:
                np.copyto(dz[src], r)         # whatever no earlier element took
                break
            hit = z[src] == out[reg]
            if disjoint:
                np.multiply(r, hit, out=dz[src])
            else:
                dz[src] += r * hit
            if k != last:
                np.copyto(r, 0, where=hit)
        if nrem is not None:
            for reg, src, _ in reversed(offs):
                hit = np.isnan(z[src])
                r = nrem[reg]
                dz[src] += r * hit
                np.copyto(r, 0, where=hit)
        gx = np.swapaxes(dz, 0, 1) if self.swapped else dz
        return gx[0] if self.unbatched else gx


class AvgPool2d(Function):
    r"""``y[n,c,u,v] = (1/D_{uv}) \sum_{i,j} x[n, c, u s_h + i - p_h, v s_w + j - p_w]``
    (padding counts as 0).

    ``D`` is the window size clipped to the padded input (``count_include_pad``), the number
    of real elements in the window (otherwise), or ``divisor_override``.
    Backward: ``dx`` receives ``dy[u,v] / D_{uv}`` at every element of window ``(u, v)``.
    """

    def forward(self, x, geom=None, div=None, unbatched=False):
        if unbatched:
            x = x[None]
        z, swapped = _arrange(x)
        offs = _offsets(geom)
        full = next((k for k, o in enumerate(offs) if o[2]), None)
        if full is None:
            acc = np.zeros(z.shape[:2] + geom[2:4], z.dtype)
        else:
            acc = np.array(z[offs[full][1]])
        for k, (reg, src, _) in enumerate(offs):
            if k != full:
                acc[reg] += z[src]
        acc /= div
        self.shape, self.swapped, self.geom, self.div = z.shape, swapped, geom, div
        self.unbatched = unbatched
        y = np.swapaxes(acc, 0, 1) if swapped else acc
        return y[0] if unbatched else y

    def backward(self, g):
        if self.unbatched:
            g = g[None]
        gd = _like(g, self.swapped) / self.div
        disjoint, tile = _disjoint(self.geom)
        dz = np.empty(self.shape, gd.dtype) if tile else np.zeros(self.shape, gd.dtype)
        for reg, src, _ in _offsets(self.geom):
            if disjoint:
                np.copyto(dz[src], gd[reg])
            else:
                dz[src] += gd[reg]
        gx = np.swapaxes(dz, 0, 1) if self.swapped else dz
        return gx[0] if self.unbatched else gx


def _check_pool_input(x: Tensor, op: str) -> bool:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if x.data.ndim not in (3, 4):
        raise ValueError(f"{op}: expected input (N, C, H, W) or (C, H, W), got {x.data.shape}")
    if x.data.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got {x.data.dtype}")
    return x.data.ndim == 3


def _pool_geom(x: Tensor, kernel_size, stride, padding, dilation, ceil_mode, op: str):
    k = _tuple(kernel_size, 2, "kernel_size", op)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) \
        else _tuple(stride, 2, "stride", op)
    p = _tuple(padding, 2, "padding", op)
    d = _tuple(dilation, 2, "dilation", op)
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(f"{op}: kernel_size, stride and dilation must be positive and padding "
                         f"non-negative, got kernel_size={k}, stride={s}, padding={p}, "
                         f"dilation={d}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding should be at most half of kernel size, got "
                         f"padding={p} for kernel_size={k}")
    h, w = x.data.shape[-2:]
    ho = _pool_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    wo = _pool_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: input {tuple(x.data.shape)} is too small for kernel_size={k}, "
                         f"padding={p}, dilation={d}: the output would be ({ho}, {wo})")
    return (h, w, ho, wo, k, s, p, d)


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Max over ``kernel_size`` windows every ``stride`` (default: ``kernel_size``) pixels.

    ``padding`` (at most half the kernel) pads with ``-inf``; ``ceil_mode`` keeps a last,
    partial window. See :class:`MaxPool2d` for the equations.
    """
    unb = _check_pool_input(input, "max_pool2d")
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported")
    geom = _pool_geom(input, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    return MaxPool2d.apply(input, geom=geom, unbatched=unb)


def _avg_divisor(geom, ceil_mode: bool, count_include_pad: bool, divisor_override, dtype):
    h, w, ho, wo, k, s, p, _ = geom

    def counts(size, n, kk, ss, pp):
        start = np.arange(n) * ss - pp
        end = np.minimum(start + kk, size + pp)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    if divisor_override is not None:
        return dtype.type(divisor_override)
    ch = counts(h, ho, k[0], s[0], p[0])
    cw = counts(w, wo, k[1], s[1], p[1])
    return (ch[:, None] * cw[None, :]).astype(dtype)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over ``kernel_size`` windows every ``stride`` (default: ``kernel_size``) pixels.

    Zero ``padding`` counts in the mean unless ``count_include_pad=False``;
    ``divisor_override`` replaces the divisor. See :class:`AvgPool2d`.
    """
    unb = _check_pool_input(input, "avg_pool2d")
    if divisor_override is not None and divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must be non-zero")
    geom = _pool_geom(input, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    div = _avg_divisor(geom, ceil_mode, count_include_pad, divisor_override, input.data.dtype)
    return AvgPool2d.apply(input, geom=geom, div=div, unbatched=unb)


def _adaptive_matrix(size: int, n: int, dtype) -> np.ndarray:
    """(n, size) averaging matrix of adaptive pooling: row ``o`` averages input bin
    ``[floor(o*size/n), ceil((o+1)*size/n))``."""
    m = np.zeros((n, size), dtype)
    for o in range(n):
        a = (o * size) // n
        b = -(-((o + 1) * size) // n)
        m[o, a:b] = 1.0 / (b - a)
    return m


class AdaptiveAvgPool2d(Function):
    r"""``y = P_h x P_w^T`` per (n, c): averaging over the adaptive bins
    ``[floor(u H / H_o), ceil((u+1) H / H_o))`` (and likewise along W).

    Backward: ``dx = P_h^T dy P_w``.
    """

    def forward(self, x, out_size=(1, 1), unbatched=False):
        if unbatched:
            x = x[None]
        z, swapped = _arrange(x)
        h, w = z.shape[2:]
        self.ph = _adaptive_matrix(h, out_size[0], z.dtype)
        self.pw = _adaptive_matrix(w, out_size[1], z.dtype)
        out = np.matmul(self.ph, np.matmul(z, self.pw.T))             # (A, B, Ho, Wo)
        self.swapped, self.unbatched = swapped, unbatched
        y = np.swapaxes(out, 0, 1) if swapped else out
        return y[0] if unbatched else y

    def backward(self, g):
        if self.unbatched:
            g = g[None]
        gz = np.matmul(np.matmul(self.ph.T, _like(g, self.swapped)), self.pw)
        gx = np.swapaxes(gz, 0, 1) if self.swapped else gz
        return gx[0] if self.unbatched else gx


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average pooling to a fixed ``output_size`` (int or pair; ``None`` keeps that dim).

    When the input size is a multiple of the output size this is :func:`avg_pool2d` with
    kernel = stride = input/output; otherwise the bins overlap (see
    :class:`AdaptiveAvgPool2d`). ``output_size=1`` is global average pooling (Lin, Chen &
    Yan 2014).
    """
    unb = _check_pool_input(input, "adaptive_avg_pool2d")
    h, w = input.data.shape[-2:]
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        output_size = (output_size, output_size)
    os_ = tuple(output_size)
    if len(os_) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got "
                         f"{output_size!r}")
    ho = h if os_[0] is None else int(os_[0])
    wo = w if os_[1] is None else int(os_[1])
    if ho < 1 or wo < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size!r}")
    if h == 0 or w == 0:
        raise ValueError(f"adaptive_avg_pool2d: empty spatial input {input.data.shape}")
    if h % ho == 0 and w % wo == 0:
        return avg_pool2d(input, (h // ho, w // wo))
    return AdaptiveAvgPool2d.apply(input, out_size=(ho, wo), unbatched=unb)

