"""Tensor ops that torch scripts reach for, built from the core ops where they compose
(``topk``/``sort`` gather their values, ``tril``/``triu`` select with ``where``) and one fused
:class:`~shendu.autograd.Function` where they don't (``cumsum``)."""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.functional._util import as_tensor
from shendu.functional.math import div, matmul, mul, pow, where
from shendu.functional.shape import gather, getitem, unsqueeze
from shendu.tensor import Tensor

__all__ = ["cumsum", "topk", "sort", "argsort", "tril", "triu", "narrow", "bmm", "baddbmm",
           "rsqrt", "outer", "divide", "multinomial", "randperm", "einsum"]


def _dim(dim: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dimension out of range (expected to be in range of "
                         f"[{-n}, {n - 1}], but got {dim})")
    return dim % n


class Cumsum(Function):
    """``y_i = Σ_{j<=i} x_j`` along ``dim``; ``dx_j = Σ_{i>=j} g_i`` (a reversed cumsum)."""

    saved_inputs = ()

    def forward(self, a, dim):
        self.dim = dim
        out = np.cumsum(a, axis=dim)
        return out if a.dtype.kind in "fc" else out.astype(np.int64)

    def backward(self, g):
        d = self.dim
        return np.flip(np.cumsum(np.flip(g, d), axis=d), d)


def cumsum(x, dim: int, dtype=None) -> Tensor:
    """Cumulative sum along ``dim`` (integers and bools sum as int64, as torch)."""
    x = as_tensor(x)
    if x.ndim == 0:
        return x.clone()
    out = Cumsum.apply(x, dim=_dim(dim, x.ndim, "cumsum"))
    return out if dtype is None else out.to(dtype)


def _kth(x: Tensor, order: np.ndarray, dim: int, k: int):
    idx = np.take(order, np.arange(k), axis=dim).astype(np.int64)
    return gather(x, dim, Tensor(idx)), Tensor(idx)


def topk(x, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):  # noqa: A002
    """The ``k`` largest (or smallest) values along ``dim`` and their indices (values carry
    the gradient to the positions they came from)."""
    x = as_tensor(x)
    d = _dim(dim, x.ndim, "topk")
    n = x.shape[d] if x.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: k ({k}) out of range for dimension {dim} of size {n}")
    if x.ndim == 0:
        return x.clone(), Tensor(np.zeros((), np.int64))
    a = x.data
    order = np.argsort(-a if largest else a, axis=d, kind="stable")
    if largest and a.dtype.kind == "f":  # NaN counts as the largest, as torch
        order = np.argsort(np.where(np.isnan(a), -np.inf, -a), axis=d, kind="stable")
    return _kth(x, order, d, k)


def sort(x, dim: int = -1, descending: bool = False, stable: bool = False):
    """Sorted values along ``dim`` and their indices (a stable sort)."""
    x = as_tensor(x)
    if x.ndim == 0:
        return x.clone(), Tensor(np.zeros((), np.int64))
    d = _dim(dim, x.ndim, "sort")
    return _kth(x, argsort(x, d, descending).data, d, x.shape[d])


def argsort(x, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    a = x.data if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim == 0:
        return Tensor(np.zeros((), np.int64))
    d = _dim(dim, a.ndim, "argsort")
    if descending:  # stable and descending: sort the reversed array, map indices back
        n = a.shape[d]
        order = n - 1 - np.flip(np.argsort(np.flip(a, d), axis=d, kind="stable"), d)
    else:
        order = np.argsort(a, axis=d, kind="stable")
    return Tensor(order.astype(np.int64))


def _tri_mask(x: Tensor, diagonal: int, upper: bool, op: str) -> np.ndarray:
    if x.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions, got {x.ndim}")
    r, c = x.shape[-2:]
    return (np.triu if upper else np.tril)(np.ones((r, c), bool), diagonal)


def _zero(x: Tensor) -> Tensor:
    """A 0-d zero of ``x``'s dtype, so ``where`` keeps it (a bool mask stays bool, as torch)."""
    return Tensor(np.zeros((), x.data.dtype))


def tril(x, diagonal: int = 0) -> Tensor:
    """The lower triangle (``j - i <= diagonal``) of the last two dims, zeros elsewhere."""
    x = as_tensor(x)
    return where(Tensor(_tri_mask(x, diagonal, False, "tril")), x, _zero(x))


def triu(x, diagonal: int = 0) -> Tensor:
    """The upper triangle (``j - i >= diagonal``) of the last two dims, zeros elsewhere."""
    x = as_tensor(x)
    return where(Tensor(_tri_mask(x, diagonal, True, "triu")), x, _zero(x))


def narrow(x, dim: int, start: int, length: int) -> Tensor:
    """``x`` restricted to ``start:start+length`` along ``dim`` (a view)."""
    x = as_tensor(x)
    d = _dim(dim, x.ndim, "narrow")
    n = x.shape[d]
    start = int(start)
    if start < 0:
        start += n
    if not (0 <= start <= n and 0 <= length and start + length <= n):
        raise RuntimeError(f"narrow: start ({start}) + length ({length}) exceeds dimension "
                           f"size ({n})")
    idx = (slice(None),) * d + (slice(start, start + length),)
    return getitem(x, idx)


def bmm(a, b) -> Tensor:
    """Batched ``(B, n, m) @ (B, m, p)``; both must be 3-D, as torch."""
    if a.ndim != 3 or b.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {a.ndim}-D and {b.ndim}-D")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise RuntimeError(f"bmm: shapes {tuple(a.shape)} and {tuple(b.shape)} don't match")
    return matmul(a, b)


def baddbmm(x, a, b, *, beta=1, alpha=1) -> Tensor:
    """``beta * x + alpha * (a @ b)`` (batched)."""
    p = bmm(a, b)
    if alpha != 1:
        p = mul(p, alpha)
    if beta == 0:  # torch ignores x (and its NaN) when beta is 0
        return p
    return (x if beta == 1 else mul(x, beta)) + p


def rsqrt(x) -> Tensor:
    return pow(as_tensor(x), -0.5)


def outer(a, b) -> Tensor:
    """``a_i b_j`` for 1-D ``a`` and ``b``."""
    if a.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"outer: expected 1-D tensors, got {a.ndim}-D and {b.ndim}-D")
    return mul(unsqueeze(a, 1), unsqueeze(b, 0))


def divide(a, b, *, rounding_mode: str | None = None) -> Tensor:
    """``a / b``; ``rounding_mode="floor"``/``"trunc"`` round the quotient (no gradient
    flows through the rounding, as torch's is zero almost everywhere)."""
    if rounding_mode is None:
        return div(a, b)
    if rounding_mode not in ("floor", "trunc"):
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                         f"but found '{rounding_mode}'")
    ar = a.data if isinstance(a, Tensor) else np.asarray(a)
    br = b.data if isinstance(b, Tensor) else np.asarray(b)
    if ar.dtype.kind in "iub" and br.dtype.kind in "iub":
        if rounding_mode == "floor":
            return Tensor(np.floor_divide(ar, br))
        q = np.abs(ar) // np.abs(br)
        return Tensor(np.where((ar < 0) ^ (br < 0), -q, q).astype(np.result_type(ar, br)))
    q = div(a, b).detach()
    r = np.floor(q.data) if rounding_mode == "floor" else np.trunc(q.data)
    return Tensor(r.astype(q.data.dtype, copy=False))


def multinomial(probs, num_samples: int, replacement: bool = False, *,
                generator=None) -> Tensor:
    """Draw ``num_samples`` category indices per row of (unnormalised) ``probs``."""
    from shendu.generator import as_numpy_generator

    p = np.asarray(probs.data if isinstance(probs, Tensor) else probs, np.float64)
    if p.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got {p.ndim}")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise RuntimeError("multinomial: probability tensor contains either inf, nan or "
                           "element < 0")
    rows = p.reshape(-1, p.shape[-1])
    if np.any(rows.sum(-1) <= 0):
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of "
                           "probabilities <= 0)")
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError(f"multinomial: cannot sample n_sample ({num_samples}) > "
                           f"prob_dist.size(-1) ({rows.shape[1]}) samples without replacement")
    gen = as_numpy_generator(generator)
    out = np.empty((rows.shape[0], num_samples), np.int64)
    for i, r in enumerate(rows):
        if not replacement and np.count_nonzero(r) < num_samples:
            raise RuntimeError("multinomial: not enough categories with nonzero probability "
                               "to draw without replacement")
        out[i] = gen.choice(r.shape[0], size=num_samples, replace=replacement, p=r / r.sum())
    return Tensor(out.reshape(p.shape[:-1] + (num_samples,)))


def randperm(n: int, *, generator=None, dtype=None, device=None,
             requires_grad: bool = False) -> Tensor:
    from shendu.backend import as_dtype
    from shendu.device import check_device
    from shendu.generator import as_numpy_generator

    check_device(device, "randperm")
    out = as_numpy_generator(generator).permutation(int(n))
    return Tensor(out.astype(np.int64 if dtype is None else as_dtype(dtype)),
                  requires_grad=requires_grad)


class Einsum(Function):
    """``np.einsum(spec, *ops)``; each operand's gradient is the einsum of the output
    gradient with the other operands, written to that operand's subscripts."""

    def forward(self, *arrays, spec):
        self.arrays, self.spec = arrays, spec
        return np.einsum(spec, *arrays)

    def backward(self, g):
        ins, out = self.spec.split("->")
        subs = ins.split(",")
        grads = []
        for i, s in enumerate(subs):
            if not self.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [a for j, a in enumerate(self.arrays) if j != i]
            osubs = [t for j, t in enumerate(subs) if j != i]
            # letters summed out of this operand alone come back by broadcasting
            keep = "".join(c for c in s if c in out or any(c in t for t in osubs))
            r = np.einsum(",".join([out] + osubs) + "->" + keep, g, *others)
            shape = self.arrays[i].shape
            ones = [shape[k] if c in keep else 1 for k, c in enumerate(s)]
            grads.append(np.ascontiguousarray(np.broadcast_to(r.reshape(ones), shape)))
        return tuple(grads)


def einsum(spec: str, *operands) -> Tensor:
    """Einstein summation over tensors (explicit ``->`` output or torch's implicit one)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    spec = spec.replace(" ", "")
    if "..." in spec:
        raise NotImplementedError("einsum: '...' (ellipsis) is not supported")
    if "->" not in spec:
        letters = spec.replace(",", "")
        spec += "->" + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    ops = [as_tensor(o) for o in operands]
    subs = spec.split("->")[0].split(",")
    if len(subs) != len(ops):
        raise ValueError(f"einsum: {len(subs)} operands in {spec!r}, got {len(ops)} tensors")
    if any(len(set(t)) != len(t) for t in subs):
        raise NotImplementedError("einsum: a subscript repeated within one operand (a "
                                  "diagonal) is not supported")
    return Einsum.apply(*ops, spec=spec)

