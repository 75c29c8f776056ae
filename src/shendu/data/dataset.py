"""Map-style data sets: anything with ``__len__`` and ``__getitem__(i)``.

A *sample* is whatever ``dataset[i]`` returns — an array, a tensor, a number, or a tuple,
list or dict of those. :class:`~shendu.data.DataLoader` turns a list of samples into a
batch. :class:`TensorDataset` is the common case (features and labels already in memory);
the loader recognises it and cuts whole batches out of its arrays with one fancy index each,
instead of fetching samples one by one.

>>> import numpy as np
>>> from shendu.data import TensorDataset, random_split
>>> ds = TensorDataset(np.zeros((10, 3), np.float32), np.arange(10))
>>> x, y = ds[4]
>>> x.shape, int(y)
((3,), 4)
>>> train, val = random_split(ds, [0.8, 0.2], generator=0)
>>> len(train), len(val)
(8, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from shendu import backend
from shendu.tensor import Tensor, _to_array, from_numpy

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split"]


def as_generator(generator, where: str) -> np.random.Generator | None:
    """Resolve a ``generator`` argument: a ``numpy.random.Generator`` is used as is, an int
    seeds a new one (PCG64), ``None`` stays ``None`` (meaning: draw from shendu's global
    generator, :func:`shendu.backend.rng`, at the moment of drawing)."""
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    from shendu.generator import Generator

    if isinstance(generator, Generator):  # torch's generator object: its stream, shared
        return generator._np
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"{where}: seed must be non-negative, got {generator}")
        return np.random.Generator(np.random.PCG64(int(generator)))
    raise TypeError(f"{where}: generator must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(generator).__name__}")


def _check_index(index, n: int, where: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{where} index must be an int, got {type(index).__name__}")
    i = int(index)
    if not -n <= i < n:
        raise IndexError(f"{where} index {i} out of range for length {n}")
    return i + n if i < 0 else i


class Dataset:
    """Base class of map-style data sets: subclass it and define ``__len__`` and
    ``__getitem__(i)`` for ``0 <= i < len(self)``.

    >>> class Squares(Dataset):
    ...     def __len__(self):
    ...         return 5
    ...     def __getitem__(self, i):
    ...         return float(i), float(i * i)
    >>> Squares()[3]
    (3.0, 9.0)
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Samples are rows of equally long arrays: ``ds[i] = (a[i], b[i], ...)``.

    Each argument is a NumPy array, a shendu :class:`~shendu.tensor.Tensor` (its data is
    shared, without the graph) or a nested list. Arrays and tensors keep their dtype — a
    float64 array yields float64 rows and float64 batches, as ``shendu.from_numpy`` does;
    convert once (``X.astype(np.float32)``) if the model is float32. Nested lists become
    arrays as ``shendu.tensor`` makes them (Python floats take the default dtype).

    ``ds[i]`` is a tuple of tensors, one per argument, that share memory with the arrays.
    """

    def __init__(self, *tensors) -> None:
        if not tensors:
            raise ValueError("TensorDataset expected at least one array or tensor, got none")
        arrays = []
        for k, t in enumerate(tensors):
            if isinstance(t, Tensor):
                a = t.data
            elif isinstance(t, np.ndarray):
                a = t
            else:
                try:
                    a = _to_array(t)
                except (TypeError, ValueError) as e:
                    raise TypeError(f"TensorDataset: argument {k} must be an array, a tensor or "
                                    f"a nested list, got {type(t).__name__} ({e})") from e
            if a.ndim == 0:
                raise ValueError(f"TensorDataset: argument {k} must have a first (sample) "
                                 f"dimension, got a 0-d array")
            arrays.append(a)
        sizes = [a.shape[0] for a in arrays]
        if any(s != sizes[0] for s in sizes):
            raise ValueError(f"TensorDataset expected arrays of equal length along dim 0, got "
                             f"sizes {sizes}")
        self.arrays: tuple[np.ndarray, ...] = tuple(arrays)

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        """The stored arrays as tensors (sharing memory), in argument order."""
        return tuple(from_numpy(a) for a in self.arrays)

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        i = _check_index(index, len(self), "TensorDataset")
        return tuple(from_numpy(np.asarray(a[i])) for a in self.arrays)

    def _take(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows ``indices`` of every array, as new arrays (one fancy index each)."""
        n = len(self)
        if indices.size and (indices.max() >= n or indices.min() < -n):
            bad = indices[(indices >= n) | (indices < -n)][0]
            raise IndexError(f"TensorDataset index {int(bad)} out of range for length {n}")
        return tuple(np.take(a, indices, axis=0) for a in self.arrays)

    def __repr__(self) -> str:
        parts = ", ".join(f"{a.shape} {a.dtype}" for a in self.arrays)
        return f"TensorDataset({len(self)} samples: {parts})"


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order: ``Subset(ds, idx)[k] ==
    ds[idx[k]]``. Indices are checked against ``len(dataset)`` once, here."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"Subset expected a 1-d sequence of int indices, got "
                            f"{idx.dtype} array of shape {idx.shape}")
        n = len(dataset)
        if idx.size and (idx.max() >= n or idx.min() < -n):
            bad = idx[(idx >= n) | (idx < -n)][0]
            raise IndexError(f"Subset: index {int(bad)} out of range for a dataset of length {n}")
        self.dataset = dataset
        self.indices = idx.astype(np.int64) % n if n else idx.astype(np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        i = _check_index(index, len(self.indices), "Subset")
        return self.dataset[int(self.indices[i])]

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {type(self.dataset).__name__} of {len(self.dataset)})"


def _split_lengths(lengths: Sequence, n: int) -> list[int]:
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split expected at least one length, got none")
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
           or v < 0 for v in lengths):
        raise ValueError(f"random_split expected non-negative lengths or fractions, got {lengths}")
    if all(isinstance(v, (int, np.integer)) for v in lengths):
        out = [int(v) for v in lengths]
        if sum(out) != n:
            raise ValueError(f"random_split: lengths {out} sum to {sum(out)}, but the dataset "
                             f"has {n} samples")
        return out
    if not math.isclose(sum(lengths), 1.0, abs_tol=1e-9) or any(v > 1 for v in lengths):
        raise ValueError(f"random_split: fractions {lengths} must each be in [0, 1] and sum to 1, "
                         f"they sum to {sum(lengths)}")
    # floor each share, then hand the remainder out one by one from the first split (as torch)
    out = [int(math.floor(n * f)) for f in lengths]
    for k in range(n - sum(out)):
        out[k % len(out)] += 1
    return out


def random_split(dataset, lengths: Sequence[int | float],
                 generator: np.random.Generator | int | None = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random :class:`Subset` s.

    ``lengths`` holds either sizes that sum to ``len(dataset)`` or fractions that sum to 1
    (each split gets ``floor(f * n)``; the few left over go one each to the first splits,
    as in ``torch.utils.data.random_split``). The permutation comes from ``generator``
    (a ``numpy.random.Generator`` or an int seed), or from shendu's global generator when
    it is ``None`` — so ``shendu.manual_seed(n)`` makes the split repeatable.
    """
    n = len(dataset)
    sizes = _split_lengths(lengths, n)
    gen = as_generator(generator, "random_split") or backend.rng()
    perm = gen.permutation(n)
    bounds = np.cumsum([0, *sizes])
    return [Subset(dataset, perm[bounds[k]:bounds[k + 1]]) for k in range(len(sizes))]
