"""The one pool of scratch memory shendu's kernels reuse between steps.

``shendu.backend.empty_cache()`` hands everything it holds back to the allocator.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict

import numpy as np

__all__ = ["Workspace", "workspace"]


class Workspace:
    """Big scratch arrays kept for reuse between training steps (one pool for the whole
    library: the conv kernels' patch matrices, the recurrent scans' buffers).

    A scan allocates several ``(T, G·H, B)`` buffers per step. Fresh multi-megabyte arrays
    come from the operating system as untouched pages, and faulting them in costs about as
    much as the arithmetic done on them; handing the same arrays back to the next step
    avoids that. Only arrays private to a scan are ever put back: its backward scratch,
    and the internals of its forward once the graph is freed (never anything an output or
    a gradient refers to). At most ``max_bytes`` are held; :func:`shendu.backend.empty_cache`
    drops them all.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._free: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, shape: tuple, dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            stack = self._free.get(key)
            if stack:
                arr = stack.pop()
                self._bytes -= arr.nbytes
                return arr
        return np.empty(shape, dtype)

    def put(self, *arrays) -> None:
        with self._lock:
            for a in arrays:
                if a is None or a.base is not None or a.nbytes > self.max_bytes:
                    continue
                self._keep((a.shape, a.dtype.str), a, a.nbytes)

    def _keep(self, key, item, nbytes: int) -> None:
        """File ``item`` under ``key`` (the lock is held), dropping the oldest shapes first
        while the pool would exceed ``max_bytes``."""
        while self._bytes + nbytes > self.max_bytes and self._free:
            _, stack = self._free.popitem(last=False)
            self._bytes -= sum(_size(x) for x in stack)
        self._free.setdefault(key, []).append(item)
        self._free.move_to_end(key)
        self._bytes += nbytes

    def lend(self, shape: tuple, dtype) -> np.ndarray:
        """A fresh-looking array whose memory comes from the pool and goes back to it by
        itself once the array *and every view of it* are gone — for buffers that outputs
        are views of (a scan's states), which no one can hand back explicitly.

        The memory is a ``bytearray``; the array is ``np.frombuffer`` of it, and NumPy
        makes every view of that array point to it as their base, so a finalizer on it
        runs exactly when the last view dies. Until then the memory is not reused.
        """
        dtype = np.dtype(dtype)
        # math.prod and the array interface, not np.prod and .ctypes: this runs at the start
        # of a scan's step, with the interpreter's data cold after the last one (np.prod and
        # .ctypes took 34 and 24 µs there, their cheap forms a few)
        nbytes = math.prod(shape) * dtype.itemsize
        key = ("lent", nbytes)
        mem = None
        with self._lock:
            stack = self._free.get(key)
            if stack:
                mem = stack.pop()
                self._bytes -= len(mem)
        if mem is None:
            mem = bytearray(nbytes + 64)
        pad = -np.frombuffer(mem, np.uint8, 1).__array_interface__["data"][0] % 64  # aligned
        base = np.frombuffer(mem, dtype, nbytes // dtype.itemsize, pad)
        done = weakref.finalize(base, self._give_back, key, mem)
        done.atexit = False
        return base.reshape(shape)

    def _give_back(self, key, mem: bytearray) -> None:
        if len(mem) > self.max_bytes:
            return
        with self._lock:
            self._keep(key, mem, len(mem))

    @property
    def nbytes(self) -> int:
        """Bytes held for reuse now."""
        return self._bytes

    def clear(self) -> None:
        """Drop every array held (lent ones still in use come back later, as usual)."""
        with self._lock:
            self._free.clear()
            self._bytes = 0


def _size(x) -> int:
    return x.nbytes if isinstance(x, np.ndarray) else len(x)


#: The pool every kernel draws from.
workspace = Workspace()
