"""``DataLoader``: batches from a data set, reshuffled each epoch, resumable mid-epoch.

One epoch is one pass over an *order* of indices that the sampler gives (``0, 1, ..., n-1``,
or a fresh random permutation when ``shuffle=True``), cut into consecutive batches of
``batch_size``. Each batch is a list of samples merged by ``collate_fn`` (default:
:func:`default_collate`). For a :class:`~shendu.data.TensorDataset` — or a
:class:`~shendu.data.Subset` of one, as :func:`~shendu.data.random_split` makes — with the
default collate, the loader skips the per-sample work and cuts each batch out of the whole
arrays with one fancy index (``np.take(a, idx, axis=0)``); the result is the same.

Randomness. A shuffling loader draws each epoch's permutation from its ``generator`` (a
``numpy.random.Generator``, or an int that seeds one), else from shendu's global generator
at the moment the epoch starts — so ``shendu.manual_seed(n)`` fixes every epoch's order.

>>> import numpy as np, shendu
>>> from shendu.data import DataLoader, TensorDataset
>>> ds = TensorDataset(np.arange(10, dtype=np.float32).reshape(5, 2), np.arange(5))
>>> loader = DataLoader(ds, batch_size=2)
>>> len(loader), [tuple(y.tolist()) for _, y in loader]
(3, [(0, 1), (2, 3), (4,)])
"""

from __future__ import annotations

import collections.abc as cabc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from shendu import backend
from shendu.backend import get_default_dtype
from shendu.data.dataset import Subset, TensorDataset, as_generator
from shendu.tensor import Tensor, from_numpy

__all__ = ["DataLoader", "default_collate", "Sampler", "SequentialSampler", "RandomSampler"]


# ---------------------------------------------------------------------------------- samplers
class Sampler:
    """An iterable over dataset indices, one pass per epoch, with a ``__len__``."""

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class SequentialSampler(Sampler):
    """``0, 1, ..., len(data_source) - 1``, every epoch."""

    def __init__(self, data_source) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A fresh random order each epoch.

    Without replacement: a permutation of ``range(n)`` (``num_samples`` must then be at most
    ``n``; the first ``num_samples`` of the permutation are used). With replacement:
    ``num_samples`` (default ``n``) independent uniform draws. Drawn from ``generator`` (a
    ``numpy.random.Generator`` or an int seed) or, when it is ``None``, from shendu's global
    generator at the start of each epoch.
    """

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None,
                 generator: np.random.Generator | int | None = None) -> None:
        self.data_source = data_source
        self.replacement = bool(replacement)
        self.generator = as_generator(generator, "RandomSampler")
        n = len(data_source)
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(
                num_samples, (int, np.integer)) or num_samples < 0):
            raise ValueError(f"RandomSampler expected num_samples a non-negative int, got "
                             f"{num_samples!r}")
        if num_samples is not None and not self.replacement and num_samples > n:
            raise ValueError(f"RandomSampler without replacement can draw at most {n} samples, "
                             f"got num_samples={num_samples}")
        self._num_samples = num_samples

    @property
    def num_samples(self) -> int:
        n = self._num_samples
        return len(self.data_source) if n is None else int(n)

    def indices(self) -> np.ndarray:
        """One epoch's order as an int64 array (draws from the generator)."""
        gen = self.generator if self.generator is not None else backend.rng()
        n, m = len(self.data_source), self.num_samples
        if self.replacement:
            if n == 0 and m:
                raise ValueError("RandomSampler: cannot draw with replacement from an empty "
                                 "dataset")
            return gen.integers(0, n, size=m, dtype=np.int64)
        return gen.permutation(n)[:m].astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


# ----------------------------------------------------------------------------------- collate
def _batch_tensor(arr: np.ndarray) -> Tensor:
    """The one rule for a batched leaf: integer arrays become int64 (class labels, as
    ``cross_entropy`` and torch expect), every other dtype is kept."""
    if arr.dtype.kind in "iu" and arr.dtype != np.int64:
        arr = arr.astype(np.int64)
    return from_numpy(arr)


def _path(path: str) -> str:
    return f" at {path}" if path else ""


def _stack(arrays: list[np.ndarray], path: str) -> np.ndarray:
    shape = arrays[0].shape
    for k, a in enumerate(arrays):
        if a.shape != shape:
            raise ValueError(f"default_collate: cannot stack samples of different shapes"
                             f"{_path(path)}: sample 0 has {shape}, sample {k} has {a.shape}")
    return np.stack(arrays)


def _collate(batch: list, path: str) -> Any:
    elem = batch[0]
    if isinstance(elem, Tensor):
        if not all(isinstance(b, Tensor) for b in batch):
            raise TypeError(f"default_collate: samples mix tensors and other types{_path(path)}")
        return _batch_tensor(_stack([b.data for b in batch], path))
    if isinstance(elem, (np.ndarray, np.generic)) and not isinstance(elem, (np.str_, np.bytes_)):
        if not all(isinstance(b, (np.ndarray, np.generic)) for b in batch):
            raise TypeError(f"default_collate: samples mix numpy arrays and other types"
                            f"{_path(path)}")
        arrs = [np.asarray(b) for b in batch]
        if any(a.dtype.kind == "O" for a in arrs):
            raise TypeError(f"default_collate: cannot batch object arrays{_path(path)}")
        return _batch_tensor(_stack(arrs, path))
    if isinstance(elem, (bool, int, float)):
        if not all(isinstance(b, (bool, int, float)) for b in batch):
            raise TypeError(f"default_collate: samples mix numbers and other types{_path(path)}")
        arr = np.array(batch)
        if arr.dtype.kind == "f":  # Python floats take the default dtype, as shendu.tensor does
            arr = arr.astype(get_default_dtype())
        return _batch_tensor(arr)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, cabc.Mapping):
        keys = list(elem.keys())
        for k, b in enumerate(batch):
            if not isinstance(b, cabc.Mapping) or set(b.keys()) != set(keys):
                got = sorted(map(str, b.keys())) if isinstance(b, cabc.Mapping) else type(b)
                raise ValueError(f"default_collate: sample {k}{_path(path)} has keys {got}, "
                                 f"sample 0 has {sorted(map(str, keys))}")
        out = {key: _collate([b[key] for b in batch], f"{path}[{key!r}]") for key in keys}
        try:
            return type(elem)(out)
        except TypeError:
            return out
    if isinstance(elem, (tuple, list)):
        n = len(elem)
        for k, b in enumerate(batch):
            if not isinstance(b, (tuple, list)) or len(b) != n:
                got = len(b) if isinstance(b, (tuple, list)) else type(b).__name__
                raise ValueError(f"default_collate: sample {k}{_path(path)} has {got} fields, "
                                 f"sample 0 has {n}")
        fields = [_collate([b[i] for b in batch], f"{path}[{i}]") for i in range(n)]
        if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
            return type(elem)(*fields)
        return tuple(fields) if isinstance(elem, tuple) else fields
    raise TypeError(f"default_collate: samples must hold tensors, numpy arrays, numbers, "
                    f"strings, or dicts/tuples/lists of those; found {type(elem).__name__}"
                    f"{_path(path)}")


def default_collate(batch: list) -> Any:
    """Merge a list of samples into one batch, keeping the samples' structure.

    ==========================================  ===============================================
    sample field                                batch field
    ==========================================  ===============================================
    shendu ``Tensor`` / NumPy array, shape s    ``Tensor`` of shape (B, *s), same dtype
    NumPy scalar (``np.float64(1.0)``)          ``Tensor`` (B,), same dtype
    Python ``float``                            ``Tensor`` (B,), default dtype (float32)
    Python ``int`` / ``bool``                   ``Tensor`` (B,), int64 / bool
    ``str`` / ``bytes``                         the list of them
    ``dict`` / ``tuple`` / ``list`` /           the same container of batched fields
    namedtuple
    ==========================================  ===============================================

    Floating dtypes are never changed (like ``shendu.from_numpy``; a float64 data set gives
    float64 batches). Integer arrays of any width become int64, the label type
    :func:`~shendu.functional.cross_entropy` and torch expect. Batches never require grad.
    """
    if not isinstance(batch, (list, tuple)):
        raise TypeError(f"default_collate expected a list of samples, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("default_collate expected a non-empty list of samples, got []")
    return _collate(list(batch), "")


# -------------------------------------------------------------------------------- the loader
def _fast_source(dataset) -> tuple[TensorDataset, np.ndarray | None] | None:
    """If ``dataset`` is a TensorDataset, or Subsets of one (not subclasses that change
    ``__getitem__``), return it and the composed index map into it."""
    index_map = None
    ds = dataset
    while type(ds).__getitem__ is Subset.__getitem__ and isinstance(ds, Subset):
        index_map = ds.indices if index_map is None else ds.indices[index_map]
        ds = ds.dataset
    if isinstance(ds, TensorDataset) and type(ds).__getitem__ is TensorDataset.__getitem__:
        return ds, index_map
    return None


class DataLoader:
    """Iterate over ``dataset`` in batches.

    Parameters
    ----------
    dataset : map-style data set (``__len__`` and ``__getitem__``).
    batch_size : samples per batch (positive int).
    shuffle : a fresh random order each epoch (drawn from ``generator``, else from shendu's
        global generator).
    drop_last : drop the last batch when it is smaller than ``batch_size``.
    collate_fn : merges a list of samples into a batch (default :func:`default_collate`).
    generator : ``numpy.random.Generator`` or int seed for shuffling.
    sampler : your own iterable of indices with ``__len__`` (then leave ``shuffle`` off).

    ``len(loader)`` is the number of batches per epoch. Each ``iter(loader)`` starts a new
    epoch. ``state_dict()`` / ``load_state_dict()`` save and restore the position (epoch,
    batches done, this epoch's order, the shuffling generator's state): after loading, the
    next ``iter(loader)`` continues the interrupted epoch where it stopped; later epochs then
    draw as the original run did. A loader without its own generator draws from the global
    one, whose state a checkpoint restores with ``shendu.set_rng_state``.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, collate_fn: Callable[[list], Any] | None = None,
                 generator: np.random.Generator | int | None = None, sampler=None) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader expected a map-style dataset (with __len__ and "
                            f"__getitem__), got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ValueError(f"DataLoader expected batch_size a positive int, got {batch_size!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader expected collate_fn callable, got "
                            f"{type(collate_fn).__name__}")
        if sampler is not None:
            if shuffle:
                raise ValueError("DataLoader: sampler and shuffle=True are mutually exclusive; "
                                 "shuffle inside the sampler instead")
            if generator is not None:
                raise ValueError("DataLoader: generator is used only by the built-in shuffling; "
                                 "give it to your sampler instead")
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(f"DataLoader expected a sampler with __iter__ and __len__, got "
                                f"{type(sampler).__name__}")
        elif shuffle:
            sampler = RandomSampler(dataset, generator=generator)
        else:
            if generator is not None:
                as_generator(generator, "DataLoader")  # validate even if unused
            sampler = SequentialSampler(dataset)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.sampler = sampler
        self._fast = _fast_source(dataset)  # used while collate_fn is default_collate
        # position: the epoch index, and the iterator of the epoch in progress (if any)
        self._epoch = 0
        self._current: _LoaderIterator | None = None
        self._resume: tuple[np.ndarray, int] | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _draw_order(self) -> np.ndarray:
        s = self.sampler
        order = s.indices() if isinstance(s, RandomSampler) else np.fromiter(
            iter(s), dtype=np.int64)
        return np.asarray(order, dtype=np.int64)

    def __iter__(self) -> _LoaderIterator:
        if self._resume is not None:
            order, start = self._resume
            self._resume = None
        else:
            if self._current is not None and not self._current.done:
                self._epoch += 1  # the previous epoch was left unfinished
            order, start = self._draw_order(), 0
        self._current = _LoaderIterator(self, order, start)
        return self._current

    def _fetch(self, idx: np.ndarray):
        if self._fast is not None and self.collate_fn is default_collate:
            ds, index_map = self._fast
            return tuple(_batch_tensor(a) for a in ds._take(
                idx if index_map is None else index_map[idx]))
        return self.collate_fn([self.dataset[int(i)] for i in idx])

    # ---------------------------------------------------------------- resumable position
    def state_dict(self) -> dict:
        """The loader's position as a JSON-serialisable dict: ``epoch`` (index of the epoch
        in progress or next), ``batch`` (batches already yielded in it), ``order`` (its index
        order, ``None`` between epochs) and ``generator`` (the shuffling generator's
        bit-generator state after drawing that order, or ``None`` if it uses the global one)."""
        gen = getattr(self.sampler, "generator", None)
        order, batch = None, 0
        if self._resume is not None:
            order, batch = self._resume
        elif self._current is not None and not self._current.done:
            order, batch = self._current.order, self._current.batch
        return {
            "epoch": self._epoch,
            "batch": batch,
            "order": None if order is None else order.tolist(),
            "generator": gen.bit_generator.state if isinstance(gen, np.random.Generator)
            else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict`; the next ``iter(self)`` resumes."""
        missing = {"epoch", "batch", "order", "generator"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}")
        order = state["order"]
        batch = int(state["batch"])
        if order is not None:
            order = np.asarray(order, dtype=np.int64)
            if order.ndim != 1 or len(order) != len(self.sampler):
                raise ValueError(f"DataLoader.load_state_dict: saved order has {order.size} "
                                 f"indices, but this loader's sampler yields {len(self.sampler)}")
            if not 0 <= batch <= len(self):
                raise ValueError(f"DataLoader.load_state_dict: batch {batch} out of range for "
                                 f"{len(self)} batches per epoch")
        gen = getattr(self.sampler, "generator", None)
        if state["generator"] is not None:
            if not isinstance(gen, np.random.Generator):
                raise ValueError("DataLoader.load_state_dict: the state holds a generator state, "
                                 "but this loader has no generator of its own")
            gen.bit_generator.state = state["generator"]
        self._epoch = int(state["epoch"])
        self._current = None
        self._resume = None if order is None else (order, batch)

    def __repr__(self) -> str:
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, batches={len(self)})")


class _LoaderIterator:
    """One epoch of a :class:`DataLoader`. Several may run at once; the loader records the
    position of the newest one."""

    def __init__(self, loader: DataLoader, order: np.ndarray, start: int) -> None:
        self.loader = loader
        self.order = order
        self.batch = start
        bs, n = loader.batch_size, len(order)
        self.n_batches = n // bs if loader.drop_last else -(-n // bs)
        self.done = False

    def __iter__(self) -> _LoaderIterator:
        return self

    def __len__(self) -> int:
        return max(self.n_batches - self.batch, 0)

    def __next__(self):
        if self.done:
            raise StopIteration
        b = self.batch
        if b >= self.n_batches:
            self.done = True
            if self.loader._current is self:
                self.loader._epoch += 1
            raise StopIteration
        bs = self.loader.batch_size
        out = self.loader._fetch(self.order[b * bs:(b + 1) * bs])
        self.batch = b + 1
        return out
