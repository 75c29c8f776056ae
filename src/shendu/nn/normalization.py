"""Normalisation layers with torch's names, shapes and initialisation."""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu.backend import get_default_dtype
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["LayerNorm", "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm"]


class LayerNorm(Module):
    """Layer normalisation (Ba, Kiros & Hinton 2016) over the trailing ``normalized_shape``.

    ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape`` when
    ``elementwise_affine``; ``bias=False`` drops the shift, as in torch.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        from shendu.device import check_device
        check_device(device, "LayerNorm")
        ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
            else tuple(int(s) for s in normalized_shape)
        if not ns or any(s <= 0 for s in ns):
            raise ValueError(f"LayerNorm: normalized_shape must be positive sizes, got "
                             f"{normalized_shape}")
        self.normalized_shape, self.eps = ns, float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dt = dtype or get_default_dtype()
        if elementwise_affine:
            self.weight = Parameter(np.ones(ns, dt))
            if bias:
                self.bias = Parameter(np.zeros(ns, dt))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        ns = self.normalized_shape
        if x.shape[max(len(x.shape) - len(ns), 0):] != ns:
            raise ValueError(f"LayerNorm({', '.join(map(str, ns))}) expected input "
                             f"(..., {', '.join(map(str, ns))}), got {tuple(x.shape)}")
        return F.layer_norm(x, ns, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class _BatchNorm(Module):
    """Batch normalisation (Ioffe & Szegedy 2015) with torch's parameters and buffers.

    ``weight`` (ones) and ``bias`` (zeros, unless ``bias=False``) of shape (C,) when
    ``affine``; buffers
    ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (0) when
    ``track_running_stats``. In ``train()`` mode the batch statistics normalise and update
    the running ones with weight ``momentum``, or, with ``momentum=None``, as a cumulative
    average (``1 / num_batches_tracked``); in ``eval()`` mode the running ones normalise.
    """

    _dims: tuple[int, ...] = (2, 3)
    _shape = "(N, C) or (N, C, L)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        from shendu.device import check_device
        check_device(device, type(self).__name__)
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, got "
                             f"{num_features}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dt = dtype or get_default_dtype()
        self.has_bias = bool(affine and bias)
        if affine:
            self.weight = Parameter(np.ones(num_features, dt))
        else:
            self.register_parameter("weight", None)
        if self.has_bias:
            self.bias = Parameter(np.zeros(num_features, dt))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, dt)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dt)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data = np.array(0, np.int64)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
        if self.has_bias:
            self.bias.data[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        xs = tuple(x.shape)
        name = type(self).__name__
        if len(xs) not in self._dims:
            raise ValueError(f"{name}: expected {' or '.join(f'{d}D' for d in self._dims)} "
                             f"input {self._shape}, got {len(xs)}D input {xs}")
        if xs[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) expected {self.num_features} "
                             f"channels at dim 1, got input {xs}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data = np.asarray(self.num_batches_tracked.data + 1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        use_batch = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None,
                            self.running_var if track else None, self.weight, self.bias,
                            use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.has_bias}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs over N (and L)."""

    _dims = (2, 3)
    _shape = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs over N, H and W (per channel)."""

    _dims = (4,)
    _shape = "(N, C, H, W)"


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation whose training statistics are those of the *global* batch: every
    rank's share of it, all-reduced over the process group (torch's ``SyncBatchNorm``).

    Takes (N, C, ...) input. In ``eval()`` mode, or with no process group initialized, it
    is a plain :class:`BatchNorm2d`-like layer on the running statistics / local batch.
    :meth:`convert_sync_batchnorm` swaps it in for every BatchNorm of a model.
    """

    _dims = (2, 3, 4, 5)
    _shape = "(N, C, ...)"

    def forward(self, x: Tensor) -> Tensor:
        from shendu import distributed as dist

        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        xs = tuple(x.shape)
        if len(xs) < 2 or xs[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm({self.num_features}) expected input (N, "
                             f"{self.num_features}, ...), got {xs}")
        factor = 0.0 if self.momentum is None else self.momentum
        track = self.track_running_stats
        if track:
            self.num_batches_tracked.data = np.asarray(self.num_batches_tracked.data + 1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        from shendu.distributed.functional import sync_batch_norm

        return sync_batch_norm(x, self.running_mean if track else None,
                               self.running_var if track else None, self.weight, self.bias,
                               factor, self.eps)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group=None) -> Module:
        """``module`` with every BatchNorm layer replaced by a ``SyncBatchNorm`` that shares
        its parameters, buffers and mode (the module itself when it is one)."""
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, bias=module.has_bias)
            for name in ("weight", "bias"):
                if getattr(module, name, None) is not None:
                    setattr(out, name, getattr(module, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(out, name, getattr(module, name))
            out.training = module.training
        for name, child in list(module.named_children()):
            setattr(out, name, cls.convert_sync_batchnorm(child, process_group))
        return out
