"""Ops that move data without arithmetic: reshape, transpose/permute, expand, squeeze,
cat/stack/split, indexing, pad, gather, repeat.

Each backward is the inverse move: reshape the gradient back, permute it by the inverse
permutation, sum it over broadcast (``expand``) or tiled (``repeat``) copies, split it
where ``cat`` joined, join it where ``split`` cut. Indexing and ``gather`` scatter the
gradient back with ``np.add.at``, so an element picked twice gets both contributions.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from shendu.autograd import Function
from shendu.functional._util import norm_dim, unbroadcast
from shendu.tensor import Tensor

__all__ = ["reshape", "view", "flatten", "transpose", "permute", "expand", "squeeze",
           "unsqueeze", "cat", "concat", "concatenate", "stack", "split", "chunk", "getitem",
           "pad", "gather", "repeat", "index_select", "movedim", "fill", "setitem"]


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


class Reshape(Function):
    saved_inputs = ()
    is_view = True

    def forward(self, a, shape=()):
        self.shape = a.shape
        if a.flags.c_contiguous or a.ndim > 4:
            return a.reshape(shape)
        try:                    # a view where one can be had (NumPy >= 2.1 says so)
            return a.reshape(shape, copy=False)
        except TypeError:       # an older NumPy: its own reshape
            return a.reshape(shape)
        except ValueError:      # a copy: a transposed layout's in tiles (conv.contiguous)
            from shendu.functional.conv import contiguous

            return contiguous(a).reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


def reshape(x: Tensor, *shape) -> Tensor:
    """A tensor with the same data and a new shape (one dim may be -1)."""
    shape = _shape_arg(shape)
    if shape == x.data.shape:
        return x
    try:
        known = math.prod(s for s in shape if s != -1)
        if shape.count(-1) > 1:
            raise ValueError
        if -1 in shape:
            if known == 0 or x.data.size % known:
                raise ValueError
        elif known != x.data.size:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"reshape: shape {shape} is invalid for input of shape {x.data.shape} "
            f"({x.data.size} elements)"
        ) from None
    return Reshape.apply(x, shape=shape)


view = reshape


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    nd = x.data.ndim
    if nd == 0:
        return reshape(x, (1,))
    s, e = norm_dim(start_dim, nd, "flatten"), norm_dim(end_dim, nd, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    sh = x.data.shape
    return reshape(x, sh[:s] + (math.prod(sh[s:e + 1]),) + sh[e + 1:])


class Permute(Function):
    saved_inputs = ()
    is_view = True

    def forward(self, a, dims=()):
        self.inv = tuple(np.argsort(dims))
        return a.transpose(dims)

    def backward(self, g):
        return g.transpose(self.inv)


def permute(x: Tensor, *dims) -> Tensor:
    dims = _shape_arg(dims)
    nd = x.data.ndim
    for d in dims:
        norm_dim(d, max(nd, 1), "permute")
    if len(dims) != nd or sorted(d % max(nd, 1) for d in dims) != list(range(nd)):
        raise ValueError(f"permute: dims {dims} are not a permutation of the {nd} dims of "
                         f"a tensor of shape {x.data.shape}")
    return Permute.apply(x, dims=tuple(d % nd for d in dims))


def transpose(x: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    nd = x.data.ndim
    d0, d1 = norm_dim(dim0, nd, "transpose"), norm_dim(dim1, nd, "transpose")
    dims = list(range(nd))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(x, dims=tuple(dims))


def movedim(x: Tensor, source: int, destination: int) -> Tensor:
    nd = x.data.ndim
    s, d = norm_dim(source, nd, "movedim"), norm_dim(destination, nd, "movedim")
    dims = [i for i in range(nd) if i != s]
    dims.insert(d, s)
    return Permute.apply(x, dims=tuple(dims))


class Expand(Function):
    saved_inputs = ()
    is_view = True
    n_out_views = True  # overlapping memory: no in-place

    def forward(self, a, shape=()):
        self.shape = a.shape
        return np.broadcast_to(a, shape)

    def backward(self, g):
        return unbroadcast(g, self.shape)


def expand(x: Tensor, *shape) -> Tensor:
    """Broadcast to ``shape`` without copying (-1 keeps a dim's size)."""
    shape = _shape_arg(shape)
    xs = x.data.shape
    lead = len(shape) - len(xs)
    if lead < 0:
        raise ValueError(f"expand: the number of sizes ({len(shape)}) must be >= the number of "
                         f"dims of the tensor {xs}")
    for i, s in enumerate(shape):
        if s == -1 and i < lead:
            raise ValueError(f"expand: the size -1 isn't allowed in a leading, new dimension "
                             f"({shape} for a tensor of shape {xs})")
        if s < -1:
            raise ValueError(f"expand: invalid size {s} in {shape}")
    full = tuple(xs[i - lead] if (s == -1 and i >= lead) else s for i, s in enumerate(shape))
    for i, s in enumerate(xs):
        if s != 1 and s != full[i + lead]:
            raise ValueError(f"expand: the size {s} of dim {i} of {xs} must match {full} "
                             "or be 1")
    return Expand.apply(x, shape=full)


def squeeze(x: Tensor, dim=None) -> Tensor:
    sh = x.data.shape
    if dim is None:
        return reshape(x, tuple(s for s in sh if s != 1))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    dims = {norm_dim(d, max(len(sh), 1), "squeeze") for d in dims}
    return reshape(x, tuple(s for i, s in enumerate(sh) if not (i in dims and s == 1)))


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    sh = x.data.shape
    d = norm_dim(dim, len(sh) + 1, "unsqueeze")
    return reshape(x, sh[:d] + (1,) + sh[d:])


class Cat(Function):
    saved_inputs = ()

    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.bounds, axis=self.axis))


def cat(tensors, dim: int = 0) -> Tensor:
    """Join tensors along an existing dim."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    from shendu.functional._util import as_tensor

    tensors = [as_tensor(t, tensors[0] if isinstance(tensors[0], Tensor) else None)
               for t in tensors]
    ref = tensors[0].data
    d = norm_dim(dim, ref.ndim, "cat")
    for i, t in enumerate(tensors):
        s = t.data.shape
        if len(s) != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(s, ref.shape))
                                     if j != d):
            raise ValueError(f"cat: tensor {i} has shape {s}, expected {ref.shape} except in "
                             f"dim {d}")
    return Cat.apply(*tensors, axis=d)


concat = concatenate = cat


class Stack(Function):
    saved_inputs = ()

    def forward(self, *arrays, axis=0):
        self.axis = axis
        return np.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.moveaxis(g, self.axis, 0))


def stack(tensors, dim: int = 0) -> Tensor:
    """Join tensors of one shape along a new dim."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    from shendu.functional._util import as_tensor

    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    tensors = [as_tensor(t, like) for t in tensors]
    ref = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != ref:
            raise ValueError(f"stack: expects each tensor to be equal size, but got {ref} at "
                             f"entry 0 and {t.shape} at entry {i}")
    d = norm_dim(dim, len(ref) + 1, "stack")
    return Stack.apply(*tensors, axis=d)


class Split(Function):
    saved_inputs = ()
    is_view = True
    n_out_views = True

    def forward(self, a, bounds=(), axis=0):
        self.axis = axis
        return tuple(np.split(a, bounds, axis=axis))

    def backward(self, *grads):
        return np.concatenate(grads, axis=self.axis)


def split(x: Tensor, split_size_or_sections, dim: int = 0) -> tuple:
    """Split into pieces of ``split_size`` (last may be smaller) or of the listed sizes."""
    d = norm_dim(dim, x.data.ndim, "split")
    n = x.data.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        s = int(split_size_or_sections)
        if s <= 0:
            raise ValueError(f"split: split_size must be positive, got {s}")
        sizes = [s] * (n // s) + ([n % s] if n % s else [])
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not sum to dim {d}'s size {n}")
    bounds = tuple(np.cumsum(sizes)[:-1].tolist())
    out = Split.apply(x, bounds=bounds, axis=d)
    return out if isinstance(out, tuple) else (out,)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple:
    d = norm_dim(dim, x.data.ndim, "chunk")
    if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = x.data.shape[d]
    size = -(-n // chunks)
    return split(x, max(size, 1), d)


def _is_basic(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice))
               and not isinstance(i, bool) for i in items)


class GetItem(Function):
    """``a[idx]``. Basic indexing (ints, slices, None, ...) picks each element at most once,
    so the gradient is assigned; advanced (integer-array or boolean) indexing may pick an
    element several times, so the gradient is accumulated with ``np.add.at``."""

    saved_inputs = ()
    is_view = True  # basic indexing only (advanced indexing copies)

    def forward(self, a, idx=None, basic=True):
        self.shape, self.dtype, self.idx, self.basic = a.shape, a.dtype, idx, basic
        out = a[idx]
        if isinstance(out, np.ndarray):
            return out
        if basic:  # one element: a 0-d view of it (as torch), not a copied scalar
            return a[(*idx, ...) if isinstance(idx, tuple) else (idx, ...)]
        return np.asarray(out)

    def backward(self, g):
        out = np.zeros(self.shape, self.dtype)
        if self.basic:
            out[self.idx] = g
        else:
            np.add.at(out, self.idx, g)  # repeated indices add up
        return out


class Fill(Function):
    """Every element set to ``value`` (a number, or a tensor broadcast to the shape and cast
    to the dtype: ``copy_``). ``da = 0``; ``dvalue = g`` summed back to its shape."""

    saved_inputs = ()

    def forward(self, a, value=None):
        out = np.empty_like(a)
        out[...] = value
        return out

    def backward(self, g):
        gv = None
        if len(self.needs_input_grad) > 1 and self.needs_input_grad[1]:
            gv = unbroadcast(g, self.parents[1].data.shape)
        return np.zeros_like(g), gv


def fill(x: Tensor, value) -> Tensor:
    """A tensor of ``x``'s shape and dtype filled with ``value`` (the out-of-place ``fill_``
    and ``copy_``); a tensor ``value`` gets the gradient."""
    if isinstance(value, Tensor):
        if value.data.dtype.kind in "fc" and value.data.dtype != x.data.dtype and \
                x.data.dtype.kind in "fc":
            from shendu.functional.math import cast

            value = cast(value, x.data.dtype)
        return Fill.apply(x, value)
    return Fill.apply(x, value=value)


class SetItem(Function):
    """``a[idx] = value``, written into ``a``'s memory (only the in-place
    ``Tensor.__setitem__`` uses it). ``da = g`` with the written positions zeroed;
    ``dvalue = g[idx]`` summed back to ``value``'s shape."""

    saved_inputs = ()

    def forward(self, a, value, idx=None):
        self.idx = idx
        a[idx] = value
        return a

    def backward(self, g):
        ga = gv = None
        if self.needs_input_grad[0]:
            ga = g.copy()
            ga[self.idx] = 0
        if self.needs_input_grad[1]:
            gv = unbroadcast(np.asarray(g[self.idx]), self.parents[1].data.shape)
        return ga, gv


def setitem(x: Tensor, idx, value) -> Tensor:
    """``x[idx] = value`` in ``x``'s memory, recorded as an op; use ``x[idx] = value``."""
    from shendu.functional._util import as_tensor

    value = as_tensor(value, x)
    if value.data.dtype != x.data.dtype and x.data.dtype.kind in "fc" and \
            value.data.dtype.kind in "fc":
        from shendu.functional.math import cast

        value = cast(value, x.data.dtype)
    try:
        return SetItem.apply(x, value, idx=idx)
    except (IndexError, ValueError) as e:
        raise RuntimeError(f"__setitem__: can't assign a value of shape {value.data.shape} "
                           f"to index {idx!r} of a tensor of shape {x.data.shape}: {e}") from None


def getitem(x: Tensor, idx) -> Tensor:
    """``x[idx]``: basic and integer-array/boolean indexing; repeated indices add gradients."""
    if isinstance(idx, Tensor):
        idx = idx.data
    elif isinstance(idx, tuple):
        idx = tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    elif isinstance(idx, list):
        idx = np.asarray(idx)
    basic = _is_basic(idx)
    if not basic:  # the index is kept for backward: a copy, safe from in-place changes
        idx = tuple(np.array(i) if isinstance(i, np.ndarray) else i for i in idx) \
            if isinstance(idx, tuple) else (np.array(idx) if isinstance(idx, np.ndarray)
                                            else idx)
    try:
        return GetItem.apply(x, idx=idx, basic=basic)
    except IndexError as e:
        raise IndexError(f"getitem: index {idx!r} is invalid for a tensor of shape "
                         f"{x.data.shape}: {e}") from None


class Pad(Function):
    """Constant padding; a negative width crops instead (as torch). The gradient is the
    gradient's interior, placed back where the (cropped) input sat."""

    saved_inputs = ()

    def forward(self, a, widths=(), value=0.0):
        self.shape = a.shape
        self.crop = tuple(slice(builtins.max(-lo, 0), n - builtins.max(-hi, 0))
                          for (lo, hi), n in zip(widths, a.shape))
        c = a[self.crop]
        pos = [(builtins.max(lo, 0), builtins.max(hi, 0)) for lo, hi in widths]
        self.inner = tuple(slice(lo, lo + m) for (lo, _), m in zip(pos, c.shape))
        out = np.full(tuple(m + lo + hi for m, (lo, hi) in zip(c.shape, pos)), value, a.dtype)
        out[self.inner] = c
        return out

    def backward(self, g):
        gi = g[self.inner]
        if gi.shape == self.shape:
            return gi
        out = np.zeros(self.shape, g.dtype)
        out[self.crop] = gi
        return out


def pad(x: Tensor, pad: tuple, mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad with a constant. ``pad`` is torch's order, last dim first:
    ``(last_lo, last_hi, prev_lo, prev_hi, ...)``; negative sizes crop."""
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    pad = tuple(pad)
    nd = x.data.ndim
    if len(pad) % 2 or len(pad) // 2 > nd:
        raise ValueError(f"pad: expected an even number of sizes for at most {nd} dims of a "
                         f"tensor of shape {x.data.shape}, got {pad}")
    widths = [(0, 0)] * nd
    for i in range(len(pad) // 2):
        lo, hi = int(pad[2 * i]), int(pad[2 * i + 1])
        d = nd - 1 - i
        if x.data.shape[d] + lo + hi < 0:
            raise ValueError(f"pad: padding {pad} gives a negative size in dim {d} of a tensor "
                             f"of shape {x.data.shape}")
        widths[d] = (lo, hi)
    return Pad.apply(x, widths=tuple(widths), value=value)


class Gather(Function):
    """``out[i][j][k] = a[i][index[i][j][k]][k]`` (dim 1); backward scatter-adds."""

    saved_inputs = ()

    def forward(self, a, index=None, dim=0):
        self.shape, self.dtype = a.shape, a.dtype
        idx = list(np.indices(index.shape, sparse=True))
        idx[dim] = index
        self.idx = tuple(idx)
        return a[self.idx]

    def backward(self, g):
        out = np.zeros(self.shape, self.dtype)
        np.add.at(out, self.idx, g)
        return out


def gather(x: Tensor, dim: int, index) -> Tensor:
    """``out[i][j][k] = x[i][index[i][j][k]][k]`` (for dim=1), as torch.gather."""
    index = np.array(index.data if isinstance(index, Tensor) else index)  # a copy, kept
    if index.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, got {index.dtype}")
    d = norm_dim(dim, x.data.ndim, "gather")
    if index.ndim != x.data.ndim:
        raise ValueError(f"gather: index has {index.ndim} dims, expected {x.data.ndim} like "
                         f"the input {x.data.shape}")
    for i, (a, b) in enumerate(zip(index.shape, x.data.shape)):
        if i != d and a > b:
            raise ValueError(f"gather: index shape {index.shape} is larger than input "
                             f"{x.data.shape} in dim {i}")
    if index.size and (index.min() < 0 or index.max() >= x.data.shape[d]):
        bad = index[(index < 0) | (index >= x.data.shape[d])].flat[0]
        raise IndexError(f"gather: index {bad} is out of bounds for dim {d} with size "
                         f"{x.data.shape[d]} (expected 0 <= index < {x.data.shape[d]})")
    return Gather.apply(x, index=index, dim=d)


def index_select(x: Tensor, dim: int, index) -> Tensor:
    index = np.asarray(index.data if isinstance(index, Tensor) else index)
    d = norm_dim(dim, x.data.ndim, "index_select")
    return getitem(x, (slice(None),) * d + (index,))


class Repeat(Function):
    """Tile ``a`` ``reps`` times per dim (torch's ``repeat``, NumPy's ``tile``).

    Output dim ``i`` is ``reps[i]`` copies of the input's dim side by side, so its gradient
    is the output gradient viewed as ``(reps[i], size[i])`` pairs and summed over the copies.
    """

    saved_inputs = ()

    def forward(self, a, reps=()):
        self.in_shape = a.shape
        self.shape = (1,) * (len(reps) - a.ndim) + a.shape
        self.reps = reps
        return np.tile(a, reps)

    def backward(self, g):
        inter = []
        for r, s in zip(self.reps, self.shape):
            inter += [r, s]
        g = g.reshape(inter).sum(axis=tuple(range(0, len(inter), 2)))
        return g.reshape(self.in_shape)


def repeat(x: Tensor, *sizes) -> Tensor:
    reps = _shape_arg(sizes)
    if len(reps) < x.data.ndim:
        raise ValueError(f"repeat: number of repeat dims ({len(reps)}) can not be smaller than "
                         f"the number of dims of the tensor ({x.data.ndim})")
    return Repeat.apply(x, reps=reps)
