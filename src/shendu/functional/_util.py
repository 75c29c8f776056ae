"""Helpers shared by every op: broadcasting gradients back, turning scalars into tensors,
normalising ``dim`` arguments."""

from __future__ import annotations

import numpy as np

from shendu.backend import get_default_dtype
from shendu.tensor import Tensor


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach ``shape``.

    The one place broadcasting is undone; every binary op's backward calls it.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor; Python and NumPy scalars take the dtype of ``like``."""
    if isinstance(x, Tensor):
        return x
    if like is not None:
        ld = like.data.dtype
        if ld.kind == "f":
            arr = np.asarray(x)
            if arr.dtype.kind in "biuf" and arr.dtype != ld:
                if arr.ndim == 0 or arr.dtype.kind != "f":
                    arr = arr.astype(ld)
            return Tensor._wrap(arr, None, 0)
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and arr.ndim == 0:
            arr = arr.astype(get_default_dtype())
        return Tensor._wrap(arr, None, 0)
    arr = np.asarray(x)
    if arr.dtype.kind == "f" and isinstance(x, float):
        arr = arr.astype(get_default_dtype())
    return Tensor._wrap(arr, None, 0)


def pair(a, b) -> tuple[Tensor, Tensor]:
    """Two operands as tensors of one dtype family (scalars follow the tensor)."""
    if isinstance(a, Tensor):
        b = as_tensor(b, a)
    else:
        a = as_tensor(a, b)
    return a, b


def norm_axes(dim, ndim: int, op: str):
    """``dim`` (None, int or sequence) as a sorted tuple of non-negative axes, or None."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise IndexError(
                f"{op}: dimension out of range (expected to be in range of "
                f"[{-max(ndim, 1)}, {max(ndim, 1) - 1}], but got {d})"
            )
        out.append(int(d) % max(ndim, 1))
    return tuple(sorted(set(out)))


def norm_dim(dim: int, ndim: int, op: str) -> int:
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{op}: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim})"
        )
    return int(dim) % ndim


def resolve_dim_kw(dim, keepdim, kw: dict, op: str):
    """Accept NumPy's ``axis``/``keepdims`` beside torch's ``dim``/``keepdim``."""
    if kw:
        unknown = set(kw) - {"axis", "keepdims"}
        if unknown:
            raise TypeError(f"{op}() got unexpected keyword arguments {sorted(unknown)}")
        if "axis" in kw:
            dim = kw["axis"]
        if "keepdims" in kw:
            keepdim = kw["keepdims"]
    return dim, keepdim
