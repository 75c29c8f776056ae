"""``DistributedSampler``: each rank's share of a data set's indices, torch's rule.

The indices ``0 .. n-1`` (shuffled with seed ``seed + epoch`` when ``shuffle``) are padded
by repeating their start to a multiple of ``num_replicas`` (or, with ``drop_last``, cut to
one), and rank ``r`` takes every ``num_replicas``-th from position ``r``: ranks see disjoint
shares of equal length, ``num_samples`` each.

Deliberate difference from torch: the shuffled order is numpy's
``default_rng(seed + epoch).permutation(n)``, not ``torch.randperm``; what is done with it
(padding, cutting, striding) is torch's exactly.

>>> from shendu.data import DistributedSampler
>>> list(DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
[1, 3, 0]
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from shendu.data.dataloader import Sampler

__all__ = ["DistributedSampler"]


class DistributedSampler(Sampler):
    """Restrict loading to this rank's share of ``dataset`` (torch's ``DistributedSampler``).

    ``num_replicas`` and ``rank`` default to the process group's world size and rank.
    Call :meth:`set_epoch` at the start of each epoch so that the shuffle differs between
    epochs (and is the same on every rank).
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from shendu import distributed as dist

            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: num_replicas and rank default to the "
                                   "process group's, but it is not initialized (call "
                                   "shendu.distributed.init_process_group or pass them)")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        num_replicas, rank = int(num_replicas), int(rank)
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be at least 1, got "
                             f"{num_replicas}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.epoch, self.shuffle, self.seed = 0, bool(shuffle), int(seed)
        self.drop_last = bool(drop_last)
        n = len(dataset)
        if self.drop_last and n % num_replicas != 0:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        order = order.astype(np.int64, copy=False)
        if not self.drop_last:
            pad = self.total_size - n
            if pad > 0:
                order = np.concatenate([order, np.resize(order, pad)])
        else:
            order = order[:self.total_size]
        assert len(order) == self.total_size
        mine = order[self.rank:self.total_size:self.num_replicas]
        assert len(mine) == self.num_samples
        return mine

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use ``seed + epoch`` for the next shuffle (the same on every rank)."""
        self.epoch = int(epoch)
