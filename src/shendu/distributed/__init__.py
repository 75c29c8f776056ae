"""Collective communication with ``torch.distributed``'s names, over MPI (mpi4py).

A *process group* is the set of processes that train together. ``init_process_group``
joins it: with ``backend="mpi"`` each process reads its rank and the world size from MPI
(start them with ``mpiexec -n 4 python train.py``, or ``srun`` under Slurm); with
``backend="loopback"`` the group is this process alone and every collective is the identity
(or a copy), so the same script runs without MPI installed.

Collectives work on tensors in place, as torch's: ``all_reduce(t)`` leaves the sum (or
``ReduceOp.AVG``/``MAX``/``MIN``) of every rank's ``t`` in each rank's ``t``. Only MPI's
buffer-based, non-blocking calls are used (``Iallreduce``, ``Ibcast``, ``Iallgather``,
``Ireduce_scatter``, ``Ibarrier``) on NumPy arrays: nothing is ever pickled. Every wait is
bounded by the group's ``timeout`` (:class:`DistributedTimeoutError`), so a rank that died
or hangs cannot make the others wait forever.

``import shendu`` does not import mpi4py; the first ``init_process_group(backend="mpi")``
does.

>>> import shendu, shendu.distributed as dist
>>> dist.init_process_group(backend="loopback")
>>> t = shendu.tensor([1.0, 2.0])
>>> dist.all_reduce(t, op=dist.ReduceOp.SUM)
>>> t, dist.get_rank(), dist.get_world_size()
(tensor([1., 2.]), 0, 1)
>>> dist.destroy_process_group()
"""

from __future__ import annotations

from shendu.distributed.backend import (
    DistributedTimeoutError,
    ReduceOp,
    Work,
    abort,
    all_gather,
    all_reduce,
    barrier,
    broadcast,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    is_mpi_available,
    reduce_scatter,
)

__all__ = [
    "ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_initialized",
    "is_available", "is_mpi_available", "get_backend", "get_rank", "get_world_size",
    "barrier", "all_reduce", "broadcast", "all_gather", "reduce_scatter",
    "DistributedTimeoutError", "abort",
]
