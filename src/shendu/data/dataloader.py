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

__all__ = ["DataLoader", "default_collate", "default_convert", "Sampler", "SequentialSampler",
           "RandomSampler",
           "BatchSampler", "get_worker_info"]

# Draws with replacement beyond this many are made lazily, a chunk at a time (minGPT's
# ``RandomSampler(ds, replacement=True, num_samples=int(1e10))``).
_LAZY_DRAWS = 1 << 20
_CHUNK = 1 << 16


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

    def indices(self) -> np.ndarray | _LazyDraws:
        """One epoch's order as an int64 array (draws from the generator). More than
        2**20 draws with replacement come as a lazy sequence instead, drawn a chunk at a
        time from a stream seeded by one draw from the generator, so a sampler of
        ``num_samples=int(1e10)`` costs no memory."""
        gen = self.generator if self.generator is not None else backend.rng()
        n, m = len(self.data_source), self.num_samples
        if self.replacement:
            if n == 0 and m:
                raise ValueError("RandomSampler: cannot draw with replacement from an empty "
                                 "dataset")
            if m > _LAZY_DRAWS:
                return _LazyDraws(int(gen.integers(0, 2**63, dtype=np.int64)), n, m)
            return gen.integers(0, n, size=m, dtype=np.int64)
        return gen.permutation(n)[:m].astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[int]:
        order = self.indices()
        if isinstance(order, _LazyDraws):
            return order.iter_ints()
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples


class _LazyDraws:
    """``m`` uniform draws from ``range(n)``, made a chunk of 2**16 at a time from a PCG64
    stream seeded by ``seed``: sliceable in order like an array, and saved as its seed."""

    def __init__(self, seed: int, n: int, m: int) -> None:
        self.seed, self.n, self.m = seed, n, m
        self._gen = None
        self._chunk_no = -1
        self._chunk = np.empty(0, np.int64)

    def __len__(self) -> int:
        return self.m

    def _get_chunk(self, k: int) -> np.ndarray:
        if k < self._chunk_no or self._gen is None:          # rewind: replay the stream
            self._gen = np.random.Generator(np.random.PCG64(self.seed))
            self._chunk_no = -1
        while self._chunk_no < k:
            size = min(_CHUNK, self.m - (self._chunk_no + 1) * _CHUNK)
            self._chunk = self._gen.integers(0, self.n, size=size, dtype=np.int64)
            self._chunk_no += 1
        return self._chunk

    def __getitem__(self, sl: slice) -> np.ndarray:
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise TypeError("lazy sampler draws can only be read in contiguous slices")
        start, stop, _ = sl.indices(self.m)
        parts = []
        while start < stop:
            k, off = divmod(start, _CHUNK)
            chunk = self._get_chunk(k)
            take = chunk[off:off + stop - start]
            parts.append(take)
            start += len(take)
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def iter_ints(self) -> Iterator[int]:
        for k in range(-(-self.m // _CHUNK)):
            yield from self._get_chunk(k).tolist()

    def state(self) -> dict:
        return {"lazy_seed": self.seed, "n": self.n, "m": self.m}


class BatchSampler(Sampler):
    """Wrap a sampler to yield lists of ``batch_size`` indices (torch's
    ``torch.utils.data.BatchSampler``); the last, shorter list is kept unless
    ``drop_last``. Give it to ``DataLoader(batch_sampler=...)``."""

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ValueError(f"BatchSampler expected batch_size a positive int, got "
                             f"{batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler expected drop_last a bool, got {drop_last!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def get_worker_info():
    """``None``: shendu's loader reads every batch in the calling process (torch returns
    ``None`` there too, outside a worker)."""
    return None


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


def default_convert(sample: Any) -> Any:
    """One sample as it is, with its NumPy arrays and scalars made Tensors (torch's
    ``default_convert``, the ``collate_fn`` of a loader with ``batch_size=None``): no
    batch dimension is added and dtypes are kept; dicts, lists and namedtuples keep their
    type, a plain tuple becomes a list (as torch's); strings, Python numbers and Tensors
    stay what they are."""
    if isinstance(sample, (np.ndarray, np.generic)) and not isinstance(sample, (np.str_,
                                                                              np.bytes_)):
        a = np.asarray(sample)
        return a if a.dtype.kind in "OUS" else from_numpy(a.copy())     # dtype kept
    if isinstance(sample, cabc.Mapping):
        out = {k: default_convert(v) for k, v in sample.items()}
        try:
            return type(sample)(out)
        except TypeError:
            return out
    if isinstance(sample, tuple) and hasattr(sample, "_fields"):          # namedtuple
        return type(sample)(*(default_convert(v) for v in sample))
    if isinstance(sample, tuple):           # a list, as torch's (its "backwards compatibility")
        return [default_convert(v) for v in sample]
    if isinstance(sample, list):
        out = [default_convert(v) for v in sample]
        try:
            return type(sample)(out)
        except TypeError:
            return out
    return sample


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
    batch_size : samples per batch (positive int), or ``None``: no automatic batching, each
        sample as it is (through ``collate_fn``, default :func:`default_convert`), as torch.
    shuffle : a fresh random order each epoch (drawn from ``generator``, else from shendu's
        global generator).
    drop_last : drop the last batch when it is smaller than ``batch_size``.
    collate_fn : merges a list of samples into a batch (default :func:`default_collate`).
    generator : ``numpy.random.Generator`` or int seed for shuffling.
    sampler : your own iterable of indices with ``__len__`` (then leave ``shuffle`` off).
    batch_sampler : your own iterable of index lists, one a batch (e.g.
        :class:`BatchSampler`); excludes ``batch_size``, ``shuffle``, ``sampler`` and
        ``drop_last``.
    num_workers, pin_memory, timeout, worker_init_fn, multiprocessing_context,
    prefetch_factor, persistent_workers, pin_memory_device, in_order : torch's, checked
        as torch checks them. shendu reads every batch in the calling process (NumPy
        indexing of a whole batch at once is faster than worker processes for the data sets
        it is used on), so the batches are the ones torch gives and the options only
        change when ``worker_init_fn(0)`` runs: at the start of each epoch, in this process,
        when ``num_workers > 0``.

    ``len(loader)`` is the number of batches per epoch. Each ``iter(loader)`` starts a new
    epoch. ``state_dict()`` / ``load_state_dict()`` save and restore the position (epoch,
    batches done, this epoch's order, the shuffling generator's state): after loading, the
    next ``iter(loader)`` continues the interrupted epoch where it stopped; later epochs then
    draw as the original run did. A loader without its own generator draws from the global
    one, whose state a checkpoint restores with ``shendu.set_rng_state``.
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler=None, batch_sampler=None, num_workers: int = 0,
                 collate_fn: Callable[[list], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn=None,
                 multiprocessing_context=None,
                 generator: np.random.Generator | int | None = None, *,
                 prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", in_order: bool = True) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader expected a map-style dataset (with __len__ and "
                            f"__getitem__), got {type(dataset).__name__}")
        self._check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers,
                                   worker_init_fn)
        shuffle = bool(shuffle)
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler option is mutually exclusive with "
                                 "batch_size, shuffle, sampler, and drop_last")
            if not (hasattr(batch_sampler, "__iter__") and hasattr(batch_sampler, "__len__")):
                raise TypeError(f"DataLoader expected a batch_sampler with __iter__ and "
                                f"__len__, got {type(batch_sampler).__name__}")
            batch_size = None
        elif batch_size is None:            # no automatic batching: one sample at a time
            if drop_last:
                raise ValueError("DataLoader: batch_size=None option disables auto-batching "
                                 "and is mutually exclusive with drop_last")
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
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
        self.batch_sampler = batch_sampler
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.prefetch_factor = (2 if prefetch_factor is None and self.num_workers > 0
                                else prefetch_factor)
        self.persistent_workers = bool(persistent_workers)
        self.in_order = bool(in_order)
        self.dataset = dataset
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._unbatched = batch_sampler is None and batch_size is None
        self.collate_fn = collate_fn if collate_fn is not None else \
            (default_convert if self._unbatched else default_collate)
        self.sampler = sampler
        self._fast = _fast_source(dataset)  # used while collate_fn is default_collate
        # position: the epoch index, and the iterator of the epoch in progress (if any)
        self._epoch = 0
        self._current: _LoaderIterator | None = None
        self._resume: tuple[np.ndarray, int] | None = None

    @staticmethod
    def _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers,
                              worker_init_fn) -> None:
        """torch's checks of the worker options. shendu reads every batch in the calling
        process whatever ``num_workers`` says (the batches are the same; see docs/torch.md),
        so the other options are accepted and have nothing to do."""
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) \
                or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers option should be a non-negative int; "
                             f"use num_workers=0 to disable multiprocessing, got "
                             f"{num_workers!r}")
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got "
                             f"{timeout!r}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor option could only be specified in "
                             "multiprocessing. let num_workers > 0 to enable multiprocessing, "
                             "otherwise set prefetch_factor to None.")
        if prefetch_factor is not None and (isinstance(prefetch_factor, bool) or not isinstance(
                prefetch_factor, (int, np.integer)) or prefetch_factor < 0):
            raise ValueError(f"DataLoader: prefetch_factor option should be a non-negative "
                             f"int, got {prefetch_factor!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"DataLoader expected worker_init_fn callable, got "
                            f"{type(worker_init_fn).__name__}")

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler)
        if self._unbatched:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _draw_order(self):
        """This epoch's order: an int64 array (or lazy draws) and, under a batch sampler,
        the batch boundaries in it."""
        if self.batch_sampler is not None:
            batches = [np.asarray(list(b), dtype=np.int64) for b in self.batch_sampler]
            bounds = np.cumsum([0] + [len(b) for b in batches], dtype=np.int64)
            order = np.concatenate(batches) if batches else np.empty(0, np.int64)
            return order, bounds
        s = self.sampler
        if isinstance(s, RandomSampler):
            order = s.indices()
            if isinstance(order, _LazyDraws):
                return order, None
        else:
            order = np.fromiter(iter(s), dtype=np.int64)
        return np.asarray(order, dtype=np.int64), None

    def __iter__(self) -> _LoaderIterator:
        if self._resume is not None:
            (order, bounds), start = self._resume
            self._resume = None
        else:
            if self._current is not None and not self._current.done:
                self._epoch += 1  # the previous epoch was left unfinished
            (order, bounds), start = self._draw_order(), 0
            if self.worker_init_fn is not None and self.num_workers > 0:
                self.worker_init_fn(0)      # the one "worker" is this process
        self._current = _LoaderIterator(self, order, start, bounds)
        return self._current

    def _fetch(self, idx: np.ndarray):
        if self._unbatched:                 # one index: the sample, converted
            return self.collate_fn(self.dataset[int(idx[0])])
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
        order, bounds, batch = None, None, 0
        if self._resume is not None:
            (order, bounds), batch = self._resume
        elif self._current is not None and not self._current.done:
            order, bounds = self._current.order, self._current.bounds
            batch = self._current.batch
        if isinstance(order, _LazyDraws):
            order = order.state()
        elif order is not None:
            order = order.tolist()
        state = {
            "epoch": self._epoch,
            "batch": batch,
            "order": order,
            "generator": gen.bit_generator.state if isinstance(gen, np.random.Generator)
            else None,
        }
        if bounds is not None:                 # a batch sampler's batch boundaries
            state["bounds"] = bounds.tolist()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict`; the next ``iter(self)`` resumes."""
        missing = {"epoch", "batch", "order", "generator"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}")
        order = state["order"]
        batch = int(state["batch"])
        bounds = state.get("bounds")
        if bounds is not None:
            bounds = np.asarray(bounds, dtype=np.int64)
        if isinstance(order, dict):
            if set(order) != {"lazy_seed", "n", "m"}:
                raise ValueError(f"DataLoader.load_state_dict: a lazy order holds lazy_seed, n "
                                 f"and m, got {sorted(order)}")
            order = _LazyDraws(int(order["lazy_seed"]), int(order["n"]), int(order["m"]))
            if len(order) != len(self.sampler):
                raise ValueError(f"DataLoader.load_state_dict: saved order has {len(order)} "
                                 f"indices, but this loader's sampler yields {len(self.sampler)}")
        elif order is not None:
            order = np.asarray(order, dtype=np.int64)
            n_expected = int(bounds[-1]) if bounds is not None else len(self.sampler)
            if order.ndim != 1 or len(order) != n_expected:
                raise ValueError(f"DataLoader.load_state_dict: saved order has {order.size} "
                                 f"indices, but this loader's sampler yields {n_expected}")
        if order is not None:
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
        self._resume = None if order is None else ((order, bounds), batch)

    def __repr__(self) -> str:
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, batches={len(self)})")


class _LoaderIterator:
    """One epoch of a :class:`DataLoader`. Several may run at once; the loader records the
    position of the newest one."""

    def __init__(self, loader: DataLoader, order, start: int,
                 bounds: np.ndarray | None = None) -> None:
        self.loader = loader
        self.order = order
        self.bounds = bounds        # batch b is order[bounds[b]:bounds[b + 1]] (batch sampler)
        self.batch = start
        if bounds is not None:
            self.n_batches = len(bounds) - 1
        else:
            bs, n = loader.batch_size or 1, len(order)
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
        if self.bounds is not None:
            idx = self.order[self.bounds[b]:self.bounds[b + 1]]
        else:
            bs = self.loader.batch_size or 1
            idx = self.order[b * bs:(b + 1) * bs]
        out = self.loader._fetch(idx)
        self.batch = b + 1
        return out
