"""The array backend: which array module does the math, the default dtype, and the one
seeded random generator.

Everything in shendu that draws random numbers (parameter init, dropout, shuffling)
asks :func:`rng` for the generator, so ``shendu.manual_seed(n)`` makes a run repeatable
bit for bit.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

__all__ = [
    "xp",
    "get_default_dtype",
    "set_default_dtype",
    "manual_seed",
    "rng",
    "get_rng_state",
    "set_rng_state",
    "empty_cache",
    "set_num_threads",
    "get_num_threads",
]

#: The array module (NumPy today; a CuPy-compatible module could stand here later).
xp = np

_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}
_default_dtype = np.dtype(np.float32)
_rng = np.random.Generator(np.random.PCG64(0))


def as_dtype(dtype) -> np.dtype:
    """Resolve ``dtype`` (a NumPy dtype, a type, or a name such as ``"float64"``)."""
    if dtype is None:
        return _default_dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return np.dtype(_DTYPES[dtype])
    try:
        return np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"shendu: unknown dtype {dtype!r}") from e


def get_default_dtype() -> np.dtype:
    """The floating dtype new tensors and parameters get (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """Set the default floating dtype (``float32`` or ``float64``)."""
    global _default_dtype
    d = as_dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"set_default_dtype expected a floating dtype, got {d}")
    _default_dtype = d


def manual_seed(seed: int) -> np.random.Generator:
    """Seed shendu's generator. Same seed, same run, bit for bit."""
    global _rng
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed expected a non-negative int, got {seed!r}")
    _rng = np.random.Generator(np.random.PCG64(int(seed)))
    return _rng


_local = threading.local()


def rng() -> np.random.Generator:
    """The generator every random draw in shendu uses."""
    return getattr(_local, "generator", None) or _rng


@contextlib.contextmanager
def _use_generator(gen):
    """In this thread, draw from ``gen`` instead of the seeded generator (``shendu.load``
    rebuilds modules this way: the seeded stream is not advanced by a load, and every draw
    is charged against the load's memory budget before it allocates)."""
    before = getattr(_local, "generator", None)
    _local.generator = gen
    try:
        yield gen
    finally:
        _local.generator = before


def empty_cache() -> None:
    """Hand the scratch memory the kernels keep for reuse (conv patch matrices, recurrent
    scan buffers: one pool, at most 256 MiB) back to the allocator, and the freed memory
    the allocator keeps (glibc; see :mod:`shendu._malloc`) back to the operating system, as
    ``torch.cuda.empty_cache`` does. Nothing else in shendu holds memory between calls."""
    from shendu import _malloc
    from shendu.workspace import workspace

    workspace.clear()
    _malloc.release()


def get_rng_state() -> dict:
    """The generator's state as a JSON-serialisable dict."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    _rng.bit_generator.state = state


def set_num_threads(n: int) -> None:
    """The threads shendu's kernels may use for one op, as ``torch.set_num_threads`` sets
    torch's intra-op threads: products split over them (with Numba), and the memory-bound
    loops of convolution, pooling, attention and the optimizers (default: the CPUs this
    process may run on, at most 4). The same errors as torch's for what is not a positive
    int. NumPy's own BLAS keeps its own count (threadpoolctl's to set): where Numba is
    missing, shendu's products are NumPy's and run on that count (docs/torch.md)."""
    if type(n) is bool or not isinstance(n, (int, np.integer)):
        raise RuntimeError(f"set_num_threads expects an int, but got {type(n).__name__}")
    if n < 1:
        raise RuntimeError("set_num_threads expects a positive integer")
    from shendu.functional import conv

    conv.set_kernel_threads(int(n))


def get_num_threads() -> int:
    """The threads shendu's kernels may use for one op (:func:`set_num_threads`)."""
    from shendu.functional import conv

    return conv._N_THREADS
