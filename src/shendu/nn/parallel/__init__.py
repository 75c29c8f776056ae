"""Data parallelism (``shendu.nn.parallel``): :class:`DistributedDataParallel`."""

from shendu.nn.parallel.distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
