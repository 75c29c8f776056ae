"""``DistributedDataParallel``: one model replica per process, gradients averaged over MPI.

Each process runs the same model on its own share of the global batch. At wrap time the
replicas are made equal (rank 0's parameters and buffers are broadcast) after a check that
every rank has the same parameter shapes. During ``backward`` the gradients are averaged
across the ranks in *buckets*: the parameters, in reverse registration order (roughly the
order in which backward produces their gradients), are packed into flat buffers of at most
``bucket_cap_mb`` (the first bucket at most 1 MiB, as torch). A parameter's
post-accumulate-grad hook copies its gradient into its bucket; when a bucket is full, its
non-blocking ``Iallreduce`` starts at once (buckets start in index order on every rank, as
MPI requires), so the communication runs while backward computes the gradients of the
earlier layers. The hook of the last parameter to become ready — the end of backward —
waits for every request and writes the averaged gradients into ``p.grad``.

After ``backward`` each replica holds the same gradient, the mean over the ranks, so equal
optimizers keep the replicas equal. With the loss a mean over each rank's B/R samples this
is the gradient of the loss over the whole global batch of B samples.
"""

from __future__ import annotations

import contextlib
import time
import zlib

import numpy as np

from shendu import autograd
from shendu.distributed import backend as _dist
from shendu.nn.module import Module
from shendu.tensor import Tensor

__all__ = ["DistributedDataParallel"]

_FIRST_BUCKET_BYTES = 1024 * 1024


class _Bucket:
    """Parameters whose gradients travel together in one flat buffer."""

    def __init__(self, index: int, params: list, dtype) -> None:
        self.index, self.params = index, params
        self.offsets, off = [], 0
        for p in params:
            self.offsets.append((off, off + p.data.size))
            off += p.data.size
        self.flat = np.zeros(off, dtype)
        self.ready: set[int] = set()
        self.request = None
        self.started = False

    @property
    def nbytes(self) -> int:
        return self.flat.nbytes


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training on the default process group.

    ``DistributedDataParallel(module, bucket_cap_mb=25, broadcast_buffers=True,
    find_unused_parameters=False)`` with torch's meaning:

    - ``broadcast_buffers``: before each training forward, rank 0's buffers (BatchNorm's
      running statistics) are broadcast, as torch. Batch statistics are still each
      process's own (BatchNorm is per process); use :class:`~shendu.nn.SyncBatchNorm`
      (``SyncBatchNorm.convert_sync_batchnorm(model)``) for statistics over the global batch.
    - ``find_unused_parameters``: the forward's graph is walked and parameters it does not
      reach count as ready (zero gradient); without it, a parameter with no gradient leaves
      its bucket unreduced and the next forward raises, as torch.
    - :meth:`no_sync`: a context in which backward only accumulates local gradients
      (gradient accumulation); the first backward outside it averages the sums.

    ``device_ids``, ``output_device``, ``dim``, ``process_group`` (the default group only),
    ``gradient_as_bucket_view`` and ``static_graph`` are accepted for torch's signature.
    ``timeline`` holds the last synchronised backward's communication record (seconds
    from :func:`time.perf_counter`): each bucket's ``ready``/``start`` time and bytes, and
    ``wait_begin``/``wait_end`` around the final wait.
    """

    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group=None,
                 bucket_cap_mb: float = 25.0, find_unused_parameters: bool = False,
                 check_reduction: bool = False, gradient_as_bucket_view: bool = False,
                 static_graph: bool = False) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel expected a shendu.nn.Module, got "
                            f"{type(module).__name__}")
        g = _dist._group("DistributedDataParallel", process_group)
        if bucket_cap_mb is None or not float(bucket_cap_mb) > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got "
                             f"{bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.require_backward_grad_sync = True
        self.timeline: dict = {}
        object.__setattr__(self, "_group_", g)
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "_params", params)
        names = {id(p): n for n, p in module.named_parameters()}
        self._check_same_shapes(g, params, [names.get(id(p), "?") for p in params],
                                sum(b.data.nbytes for b in module.buffers()))
        self._sync_module_states(g)
        buckets = self._make_buckets(params, int(self.bucket_cap_mb * 1024 * 1024))
        object.__setattr__(self, "_buckets", buckets)
        where = {}
        for b in buckets:
            for k, p in enumerate(b.params):
                where[id(p)] = (b, k)
        object.__setattr__(self, "_where", where)
        self._next_launch = 0
        self._grad_hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params]

    # ------------------------------------------------------------------ wrap time
    @staticmethod
    def _check_same_shapes(g, params, names, buffer_bytes: int = 0) -> None:
        """Every rank must hold the same parameters (count, shapes, dtypes): a gathered
        summary first; if it differs and the counts agree, every rank's shapes, to name the
        first parameter that differs. Every rank raises the same error."""
        desc = ";".join(f"{tuple(p.data.shape)}:{p.data.dtype}" for p in params)
        mine = np.array([len(params), sum(p.data.size for p in params),
                         zlib.crc32(desc.encode()), buffer_bytes], np.int64)
        every = _allgather(g, mine)
        bad = [r for r in range(g.size) if not np.array_equal(every[r], every[0])]
        if not bad:
            return
        r = bad[0]
        if np.array_equal(every[r, :3], every[0, :3]):
            raise RuntimeError(
                f"DistributedDataParallel: the model's buffers differ across ranks: "
                f"{every[r, 3]} bytes on rank {r}, {every[0, 3]} on rank 0 (e.g. BatchNorm "
                "with track_running_stats on some ranks only). Build the same model on every "
                "rank")
        where = ""
        if (every[:, 0] == every[0, 0]).all():     # same count: compare shape by shape
            rows = np.full((len(params), 10), -1, np.int64)
            for i, p in enumerate(params):
                shape = p.data.shape[:8]
                rows[i, 0], rows[i, 1] = p.data.ndim, zlib.crc32(str(p.data.dtype).encode())
                rows[i, 2:2 + len(shape)] = shape
            table = _allgather(g, rows)
            i = int(np.flatnonzero((table[r] != table[0]).any(axis=1))[0])

            def show(row) -> str:
                return str(tuple(int(v) for v in row[2:2 + row[0]]))

            where = (f": parameter {i} ({names[i]!r} on this rank) has shape "
                     f"{show(table[r, i])} on rank {r} but {show(table[0, i])} on rank 0"
                     + (" (or another dtype)" if show(table[r, i]) == show(table[0, i])
                        else ""))
        raise RuntimeError(
            f"DistributedDataParallel: the model differs across ranks{where}; rank {r} has "
            f"{every[r, 0]} parameters with {every[r, 1]} elements, rank 0 has "
            f"{every[0, 0]} with {every[0, 1]}. Build the same model on every rank")

    def _sync_module_states(self, g) -> None:
        if g.size == 1:
            return
        _broadcast_coalesced(g, list(self._params) + list(self.module.buffers()))

    @staticmethod
    def _make_buckets(params, cap: int) -> list[_Bucket]:
        buckets, cur, size, dt = [], [], 0, None
        limit = min(cap, _FIRST_BUCKET_BYTES)
        for p in reversed(params):
            if cur and (p.data.dtype != dt or size + p.data.nbytes > limit):
                buckets.append(_Bucket(len(buckets), cur, dt))
                cur, size, limit = [], 0, cap
            cur.append(p)
            size += p.data.nbytes
            dt = p.data.dtype
        if cur:
            buckets.append(_Bucket(len(buckets), cur, dt))
        return buckets

    @property
    def bucket_sizes(self) -> list[int]:
        """Bytes of each bucket, in launch order."""
        return [b.nbytes for b in self._buckets]

    # ------------------------------------------------------------------ forward
    def forward(self, *inputs, **kwargs):
        if any(b.ready or b.started for b in self._buckets):
            missing = [n for n, p in self.module.named_parameters()
                       if id(p) in self._where and id(p) not in self._where[id(p)][0].ready]
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reduction in the prior "
                "iteration before starting a new one; parameters that got no gradient: "
                f"{', '.join(missing)}. Pass find_unused_parameters=True, or make every "
                "parameter take part in the loss")
        g = self._group_
        if (self.broadcast_buffers and g.size > 1 and self.module.training
                and autograd.is_grad_enabled()):
            _broadcast_coalesced(g, list(self.module.buffers()))
        out = self.module(*inputs, **kwargs)
        if (self.find_unused_parameters and self.require_backward_grad_sync
                and autograd.is_grad_enabled()):
            reached = _reachable_leaves(out)
            for p in self._params:
                if id(p) not in reached:
                    self._mark_ready(p, unused=True)
        return out

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside only accumulate local gradients."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    # ------------------------------------------------------------------ backward
    def _grad_ready(self, p: Tensor) -> None:
        if self.require_backward_grad_sync:
            self._mark_ready(p)

    def _mark_ready(self, p: Tensor, unused: bool = False) -> None:
        b, k = self._where[id(p)]
        if id(p) in b.ready:
            raise RuntimeError(
                "DistributedDataParallel: a parameter was marked ready twice in one "
                "iteration (two backward passes without a forward between them, or a "
                "parameter used by find_unused_parameters' walk and by backward)")
        now = time.perf_counter()
        if not any(x.ready for x in self._buckets):
            self.timeline = {"buckets": [None] * len(self._buckets), "first_ready": now}
        lo, hi = b.offsets[k]
        if unused and p.grad is None:
            b.flat[lo:hi] = 0
        else:
            b.flat[lo:hi] = p.grad.data.reshape(-1)
        b.ready.add(id(p))
        for x in self._buckets:  # let MPI progress the requests in flight
            if x.request is not None:
                x.request.Test()
        if len(b.ready) == len(b.params):
            self.timeline["buckets"][b.index] = {"ready": now, "bytes": b.nbytes}
            self._launch_ready()

    def _launch_ready(self) -> None:
        g = self._group_
        bs = self._buckets
        while self._next_launch < len(bs):
            b = bs[self._next_launch]
            if len(b.ready) < len(b.params):
                return
            if g.size > 1:
                b.flat *= 1.0 / g.size
            b.request = _dist.iallreduce_array(b.flat)
            b.started = True
            self.timeline["buckets"][b.index]["start"] = time.perf_counter()
            self._next_launch += 1
        self._finish()

    def _finish(self) -> None:
        """Every bucket is in flight: wait, and hand each parameter its averaged gradient."""
        self.timeline["wait_begin"] = time.perf_counter()
        for b in self._buckets:
            if b.request is not None:
                _dist.wait(b.request, "DistributedDataParallel (gradient averaging)")
            b.request = None
        self.timeline["wait_end"] = time.perf_counter()
        for b in self._buckets:
            for p, (lo, hi) in zip(b.params, b.offsets):
                g = b.flat[lo:hi].reshape(p.data.shape).astype(p.data.dtype, copy=True)
                p.grad = Tensor(g)
            b.ready.clear()
            b.started = False
        self._next_launch = 0

    def _remove_hooks(self) -> None:
        """Stop averaging: unregister the gradient hooks (the trainer does this when a
        ``fit`` that wrapped the model ends, so a later wrapper starts clean)."""
        for h in self._grad_hooks:
            h.remove()
        self._grad_hooks = []

    def extra_repr(self) -> str:
        return (f"world_size={self._group_.size}, buckets={len(self._buckets)}, "
                f"bucket_cap_mb={self.bucket_cap_mb}")


def _broadcast_coalesced(g, tensors: list) -> None:
    """Rank 0's values of ``tensors`` on every rank, in one ``Ibcast`` of their bytes
    (parameters and buffers of mixed dtypes; the shapes are the same everywhere, checked at
    wrap time)."""
    if g.size == 1 or not tensors:
        return
    arrays = [np.ascontiguousarray(t.data) for t in tensors]
    sizes = [a.nbytes for a in arrays]
    if g.rank == 0:
        flat = np.concatenate([a.reshape(-1).view(np.uint8) for a in arrays])
    else:
        flat = np.empty(sum(sizes), np.uint8)
    _dist.wait(g.comm.Ibcast(flat, root=0), "DistributedDataParallel (broadcast)")
    if g.rank == 0:
        return
    off = 0
    for t, a, n in zip(tensors, arrays, sizes):
        t.data[...] = flat[off:off + n].view(a.dtype).reshape(a.shape)
        t._version[0] += 1
        off += n


def _allgather(g, a: np.ndarray) -> np.ndarray:
    """Every rank's ``a`` (the same shape and dtype everywhere), stacked by rank."""
    out = np.empty((g.size,) + a.shape, a.dtype)
    if g.comm is not None:
        _dist.wait(g.comm.Iallgather(np.ascontiguousarray(a), out), "DistributedDataParallel")
    else:
        out[0] = a
    return out


def _reachable_leaves(out) -> set[int]:
    """ids of the leaf tensors that the graph behind ``out`` (tensors in nested
    tuples/lists/dicts) reaches; an iterative walk."""
    stack, tensors = [out], []
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            tensors.append(o)
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    leaves: set[int] = set()
    seen: set[int] = set()
    nodes = []
    for t in tensors:
        if t._ctx is None:
            leaves.add(id(t))
        elif id(t._ctx) not in seen:
            seen.add(id(t._ctx))
            nodes.append(t._ctx)
    while nodes:
        fn = nodes.pop()
        for t, (p, _i) in zip(fn.parents, fn.edges):
            if p is None:
                leaves.add(id(t))
            elif id(p) not in seen:
                seen.add(id(p))
                nodes.append(p)
    return leaves
