"""Data (``shendu.data``): data sets, samplers and the batching ``DataLoader``.

``shendu.data.datasets`` (built-in data sets) is imported on first use.
"""

from __future__ import annotations

import importlib

from shendu.data.dataloader import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    Sampler,
    SequentialSampler,
    default_collate,
    default_convert,
    get_worker_info,
)
from shendu.data.dataset import Dataset, Subset, TensorDataset, random_split
from shendu.data.mnist import mnist, mnist_split, read_idx
from shendu.data.sampler import DistributedSampler

__all__ = [
    "Dataset", "TensorDataset", "Subset", "random_split",
    "DataLoader", "default_collate", "default_convert", "Sampler", "SequentialSampler",
    "RandomSampler",
    "BatchSampler", "DistributedSampler", "get_worker_info",
    "mnist", "mnist_split", "read_idx",
]

_LAZY = ("datasets",)


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"shendu.data.{name}")
    raise AttributeError(f"module 'shendu.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_LAZY])
