"""Pooling over the two trailing (spatial) dims of (N, C, H, W) or (C, H, W) inputs.

Max pooling (Zhou & Chellappa 1988; Ranzato et al. 2007) and average pooling (LeCun et al.
1989, "subsampling") as fused ops with hand-derived backward.

Both are computed without a padded copy and without an index array in memory: the output
is reduced over the ``kH * kW`` kernel offsets, each one a strided view of the input, and
padding is handled by restricting each offset to the outputs whose window element lies
inside the input. Max pooling's backward gives the gradient to the *first* maximal element
of each window in row-major order, exactly as torch does: for non-overlapping windows
(the usual ``kernel = stride``) the forward pass records which offset won as one byte per
output; otherwise backward recomputes it from the saved input and output.

Any memory layout is accepted. The batch-innermost activations of
:mod:`shendu.functional.conv` are pooled in place of layout (each window row is a
contiguous run over the batch) and the output keeps that layout.
"""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.functional import _numba
from shendu.functional.conv import _tuple, contiguous, from_chwn, parallel, windows
from shendu.tensor import Tensor

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _arrange(a: np.ndarray) -> tuple[np.ndarray, str]:
    """The 4-D ``a`` (N, C, H, W) as a C-contiguous (A, H, W, B) array, and its
    arrangement: ``"hwnc"``, the free reshape (1, H, W, N*C), when ``a`` is a view of
    spatial-outer memory (a tiled convolution's output); ``"chwn"``, (C, H, W, N), when it
    is a view of batch-innermost memory (or of no contiguous memory at all); else
    ``"nchw"``, the free reshape (N*C, H, W, 1)."""
    s = a.transpose(2, 3, 0, 1)
    if s.flags.c_contiguous:
        return s.reshape((1,) + s.shape[:2] + (-1,)), "hwnc"
    t = a.transpose(1, 2, 3, 0)
    if t.flags.c_contiguous:
        return t, "chwn"
    if a.flags.c_contiguous:
        return a.reshape((-1,) + a.shape[2:] + (1,)), "nchw"
    return contiguous(t), "chwn"


def _back(z: np.ndarray, mode: str, n: int, c: int) -> np.ndarray:
    """Inverse of :func:`_arrange` for an (A, Ho, Wo, B) result."""
    if mode == "hwnc":
        return z.reshape(z.shape[1:3] + (n, c)).transpose(2, 3, 0, 1)
    return from_chwn(z) if mode == "chwn" else z.reshape((n, c) + z.shape[1:3])


def _like(g: np.ndarray, mode: str) -> np.ndarray:
    """``g`` (N, C, Ho, Wo) in the arrangement ``mode`` of :func:`_arrange`."""
    if mode == "hwnc":
        s = contiguous(g.transpose(2, 3, 0, 1))
        return s.reshape((1,) + s.shape[:2] + (-1,))
    if mode == "chwn":
        return contiguous(g.transpose(1, 2, 3, 0))
    return contiguous(g).reshape((-1,) + g.shape[2:] + (1,))


def _pool_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    num = size + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        o = -(-num // s) + 1
        if (o - 1) * s >= size + p:  # the last window must start inside the input or left pad
            o -= 1
        return o
    return num // s + 1


def _geo(geom):
    h, w, ho, wo, k, s, p, d = geom
    return windows(h, w, ho, wo, k[0], k[1], s, p, d)


def _disjoint(geom) -> tuple[bool, bool]:
    """(windows never overlap, and they are plain k x k tiles: stride = kernel, no padding,
    no dilation, no partial window)."""
    h, w, ho, wo, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    disjoint = sh >= dh * (kh - 1) + 1 and sw >= dw * (kw - 1) + 1
    tile = (ph == 0 and pw == 0 and dh == 1 and dw == 1 and sh == kh and sw == kw
            and ho * kh <= h and wo * kw <= w)
    return disjoint, tile


class MaxPool2d(Function):
    r"""``y[n,c,u,v] = max_{i,j} x[n, c, u s_h + i d_h - p_h, v s_w + j d_w - p_w]``
    (padding counts as ``-inf``).

    Backward: ``dx`` receives ``dy[n,c,u,v]`` at the first (row-major) maximal element of
    each window; windows that overlap add up. NaN propagates; as in torch, a window's
    gradient then goes to its last NaN.
    """

    saved_inputs = (0,)

    def forward(self, x, geom=None, unbatched=False):
        if unbatched:
            x = x[None]
        n, c = x.shape[:2]
        z, mode = _arrange(x)
        geo = _geo(geom)
        _, tile = _disjoint(geom)
        self.code = None
        if tile:
            # offsets in row-major order; the winner so far changes only on a strictly
            # greater value, so the first maximum wins, as in torch
            first = z[geo[0][1]]
            best = np.empty(first.shape, z.dtype)
            code = np.empty(best.shape, np.uint8)
            nb = _numba.kernels_for(z)
            if nb is not None:                      # one pass (shendu.functional._numba)
                kh, kw = geom[4]

                def run(lo: int, hi: int) -> None:  # output rows lo..hi-1 of the A * Ho
                    nb.max_tiles(z, kh, kw, best, code, lo, hi)

                count = best.shape[0] * best.shape[1]
            else:
                def run(lo: int, hi: int) -> None:  # rows lo..hi-1 of (A, ...): disjoint
                    b, cd = best[lo:hi], code[lo:hi]
                    b[...] = first[lo:hi]
                    cd[...] = 0
                    for k in range(1, len(geo)):
                        q = z[geo[k][1]][lo:hi]
                        gt = np.greater(q, b)
                        np.maximum(b, q, out=b)
                        np.maximum(cd, gt.view(np.uint8) * np.uint8(k), out=cd)

                count = best.shape[0]
            parallel(run, count, z.size)
            out = best
            if not np.isnan(out).any():
                self.code = code
        else:
            full = next((k for k, o in enumerate(geo) if o[2]), None)
            if full is None:
                out = np.full((z.shape[0],) + geom[2:4] + (z.shape[3],), -np.inf, z.dtype)
            else:
                out = np.array(z[geo[full][1]])
            for k, (oi, ii, _, _) in enumerate(geo):
                if k != full and oi is not None:
                    r = out[oi]
                    np.maximum(r, z[ii], out=r)
        if self.code is None:
            self.z, self.out = z, out
        self.shape, self.mode, self.geom, self.nc = z.shape, mode, geom, (n, c)
        self.unbatched = unbatched
        y = _back(out, mode, n, c)
        return y[0] if unbatched else y

    def backward(self, g):
        if self.unbatched:
            g = g[None]
        gz = _like(g, self.mode)
        geo = _geo(self.geom)
        disjoint, tile = _disjoint(self.geom)
        h, w, ho, wo = self.geom[:4]
        k_h, k_w = self.geom[4]
        exact = tile and ho * k_h == h and wo * k_w == w
        if self.code is not None:
            code = self.code
            dz = np.empty(self.shape, gz.dtype) if exact else np.zeros(self.shape, gz.dtype)
            nb = _numba.kernels_for(gz)
            if nb is not None:                      # one pass (shendu.functional._numba)
                def rows(lo: int, hi: int) -> None:
                    nb.route_tiles(gz, code, k_h, k_w, dz, lo, hi)

                parallel(rows, gz.shape[0] * gz.shape[1], dz.size)
            else:
                def run(lo: int, hi: int) -> None:  # kernel offsets lo..hi-1: disjoint
                    for k in range(lo, hi):
                        np.multiply(gz, code == k, out=dz[geo[k][1]])

                parallel(run, len(geo), dz.size)
        else:
            dz = self._general_backward(gz, geo, disjoint)
        gx = _back(dz, self.mode, *self.nc)
        return gx[0] if self.unbatched else gx

    def _general_backward(self, gz, geo, disjoint):
        """First-maximum routing by equality tests against the saved input and output."""
        z, out = self.z, self.out
        rem = np.array(gz)                        # gradient not yet handed to an element
        dz = np.zeros_like(z)
        nanwin = np.isnan(out)
        nrem = None
        if nanwin.any():  # windows holding a NaN: torch gives the gradient to the last NaN
            nrem = np.where(nanwin, rem, 0)
            rem[nanwin] = 0
        valid = [(oi, ii) for oi, ii, _, _ in geo if oi is not None]
        for k, (oi, ii) in enumerate(valid):
            r = rem[oi]
            hit = z[ii] == out[oi]
            if disjoint:
                np.multiply(r, hit, out=dz[ii])
            else:
                dz[ii] += r * hit
            if k != len(valid) - 1:
                np.copyto(r, 0, where=hit)
        if nrem is not None:
            for oi, ii in reversed(valid):
                hit = np.isnan(z[ii])
                r = nrem[oi]
                dz[ii] += r * hit
                np.copyto(r, 0, where=hit)
        return dz


class AvgPool2d(Function):
    r"""``y[n,c,u,v] = (1/D_{uv}) \sum_{i,j} x[n, c, u s_h + i - p_h, v s_w + j - p_w]``
    (padding counts as 0).

    ``D`` is the window size clipped to the padded input (``count_include_pad``), the number
    of real elements in the window (otherwise), or ``divisor_override``.
    Backward: ``dx`` receives ``dy[u,v] / D_{uv}`` at every element of window ``(u, v)``.
    """

    saved_inputs = (0,)

    def forward(self, x, geom=None, div=None, unbatched=False):
        if unbatched:
            x = x[None]
        n, c = x.shape[:2]
        z, mode = _arrange(x)
        geo = _geo(geom)
        full = next((k for k, o in enumerate(geo) if o[2]), None)
        if full is None:
            acc = np.zeros((z.shape[0],) + geom[2:4] + (z.shape[3],), z.dtype)
        else:
            acc = np.array(z[geo[full][1]])
        for k, (oi, ii, _, _) in enumerate(geo):
            if k != full and oi is not None:
                acc[oi] += z[ii]
        div = div if np.ndim(div) == 0 else div[:, :, None]   # (Ho, Wo, 1)
        acc /= div
        self.shape, self.mode, self.geom, self.div, self.nc = z.shape, mode, geom, div, (n, c)
        self.unbatched = unbatched
        y = _back(acc, mode, n, c)
        return y[0] if unbatched else y

    def backward(self, g):
        if self.unbatched:
            g = g[None]
        gd = _like(g, self.mode) / self.div
        disjoint, tile = _disjoint(self.geom)
        h, w, ho, wo, k = self.geom[:5]
        exact = tile and ho * k[0] == h and wo * k[1] == w
        dz = np.empty(self.shape, gd.dtype) if exact else np.zeros(self.shape, gd.dtype)
        for oi, ii, _, _ in _geo(self.geom):
            if oi is None:
                continue
            if disjoint:
                np.copyto(dz[ii], gd[oi])
            else:
                dz[ii] += gd[oi]
        gx = _back(dz, self.mode, *self.nc)
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

    saved_inputs = (0,)

    def forward(self, x, out_size=(1, 1), unbatched=False):
        h, w = x.shape[-2:]
        self.ph = _adaptive_matrix(h, out_size[0], x.dtype)
        self.pw = _adaptive_matrix(w, out_size[1], x.dtype)
        return np.matmul(self.ph, np.matmul(x, self.pw.T))         # (..., Ho, Wo)

    def backward(self, g):
        return np.matmul(np.matmul(self.ph.T, g), self.pw)


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

