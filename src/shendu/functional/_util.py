"""Helpers shared by every op: broadcasting gradients back, turning scalars into tensors,
normalising ``dim`` arguments."""

from __future__ import annotations

import numpy as np

from shendu.backend import get_default_dtype
from shendu.tensor import Tensor

__all__ = ["unbroadcast", "as_tensor", "pair", "norm_axes", "norm_dim", "resolve_dim_kw"]


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
    """``x`` as a Tensor (a no-op for tensors).

    Next to a float tensor ``like``, Python/NumPy scalars and integer or bool arrays take
    ``like``'s dtype, so ``t * 0.5`` stays float32 (torch's rule: a scalar never decides
    the precision). A bare Python float becomes the default dtype.
    """
    if isinstance(x, Tensor):
        return x
    if like is not None and (type(x) is float or type(x) is int):  # the common fast path
        ld = like.data.dtype
        if ld.kind == "f":
            return Tensor._wrap(np.array(x, ld), None, 0)
    arr = np.asarray(x)
    if like is not None:
        ld = like.data.dtype
        if ld.kind == "f":
            if arr.dtype != ld and arr.dtype.kind in "biuf" and (
                arr.ndim == 0 or arr.dtype.kind != "f"
            ):
                arr = arr.astype(ld)
        elif arr.dtype.kind == "f" and arr.ndim == 0:
            arr = arr.astype(get_default_dtype())
        return Tensor._wrap(arr, None, 0)
    if arr.dtype.kind == "f" and isinstance(x, float):
        arr = arr.astype(get_default_dtype())
    return Tensor._wrap(arr, None, 0)


def pair(a, b) -> tuple[Tensor, Tensor]:
    """Two operands as tensors of one dtype family (scalars follow the tensor).

    An integer/bool tensor meeting a float one is converted to the float one's dtype
    first (torch's promotion: int64 + float32 is float32, where NumPy would say float64).
    """
    if isinstance(a, Tensor):
        b = as_tensor(b, a)
    elif isinstance(b, Tensor):
        a = as_tensor(a, b)
    else:
        a = as_tensor(a)
        b = as_tensor(b, a)
    ka, kb = a.data.dtype.kind, b.data.dtype.kind
    if ka == kb and a.data.dtype != b.data.dtype and (a.data.ndim == 0) != (b.data.ndim == 0):
        # torch's rule: a 0-d tensor does not decide the precision of a dimensioned one of
        # the same kind (float32 tensor + float64 0-d tensor is float32)
        from shendu.functional.math import cast

        if a.data.ndim == 0:
            a = cast(a, b.data.dtype) if ka in "fc" else Tensor._wrap(
                a.data.astype(b.data.dtype), None, 0)
        else:
            b = cast(b, a.data.dtype) if kb in "fc" else Tensor._wrap(
                b.data.astype(a.data.dtype), None, 0)
        return a, b
    if ka != kb:
        if ka in "biu" and kb == "f":
            a = Tensor._wrap(a.data.astype(b.data.dtype), None, 0)
        elif kb in "biu" and ka == "f":
            b = Tensor._wrap(b.data.astype(a.data.dtype), None, 0)
    return a, b


def norm_axes(dim, ndim: int, op: str):
    """``dim`` (None, int or sequence) as a sorted tuple of non-negative axes, or None.

    A 0-d tensor accepts dims 0 and -1 (as torch) and has nothing to reduce: ``()``.
    """
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    n = max(ndim, 1)
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not -n <= d < n:
            raise IndexError(
                f"{op}: dimension out of range (expected to be in range of "
                f"[{-n}, {n - 1}], but got {d!r})"
            )
        out.append(int(d) % n)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {tuple(dims)} names a dimension more than once")
    if ndim == 0:
        return ()
    return tuple(sorted(out))


def norm_dim(dim: int, ndim: int, op: str) -> int:
    """One ``dim`` as a non-negative axis; out of range raises torch's IndexError."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -ndim <= dim < ndim:
        raise IndexError(
            f"{op}: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim!r})"
        )
    return int(dim) % ndim


def resolve_dim_kw(dim, keepdim, kw: dict, op: str):
    """Accept NumPy's ``axis``/``keepdims`` beside torch's ``dim``/``keepdim``.

    An empty ``dim`` means "all dims" (torch); an empty ``axis`` means "no dims" (NumPy).
    """
    if kw:
        unknown = set(kw) - {"axis", "keepdims"}
        if unknown:
            raise TypeError(f"{op}() got unexpected keyword arguments {sorted(unknown)}")
        if "keepdims" in kw:
            keepdim = kw["keepdims"]
        if "axis" in kw:
            return kw["axis"], keepdim
    if isinstance(dim, (tuple, list)) and len(dim) == 0:
        dim = None
    return dim, keepdim


def column_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0)`` of a 2-D float array as a matrix-vector product ``1^T a``: BLAS
    runs it 1.3-4x faster than NumPy's reduction down the rows (a bias gradient of 2048 x
    128: 42 against 11 us; of 8192 x 512 at two threads: 767 against 399); a sum in BLAS's
    order, not NumPy's. Where the kernels keep their products off NumPy's BLAS threads
    (``_gemm.products_off_blas_threads``) it is one of theirs, on one thread."""
    ones = np.ones(a.shape[0], a.dtype)
    if _kernels_take(a, ones):
        from shendu.functional._gemm import matmul

        return matmul(ones[None], a)[0]
    return ones @ a


def row_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=-1)`` of a float array of 2 or more dims as matrix-vector products
    ``a 1`` (see :func:`column_sums`)."""
    return matvec(a, np.ones(a.shape[-1], a.dtype))


def matvec(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``a @ v`` for ``a`` (..., K) and ``v`` (K,): on the kernels' products where they keep
    off NumPy's BLAS threads (``_gemm.products_off_blas_threads``), else NumPy's."""
    if _kernels_take(a, v):
        from shendu.functional._gemm import matmul

        return matmul(a, v[:, None])[..., 0]
    return a @ v


def _kernels_take(a: np.ndarray, v: np.ndarray) -> bool:
    """Whether the product of ``a`` and the vector ``v`` is the kernels' (float, one dtype,
    and their products kept off NumPy's BLAS threads) rather than NumPy's."""
    from shendu.functional import _gemm

    return (a.dtype == v.dtype and a.dtype in (np.float32, np.float64)
            and _gemm.products_off_blas_threads())
