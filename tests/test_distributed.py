"""shendu.distributed in one process (the loopback group), DistributedDataParallel's
bucketing and hooks, DistributedSampler against torch's, SyncBatchNorm's gradients. The
runs over MPI are in test_distributed_mpi.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import check_gradcheck, check_op

import shendu
import shendu.distributed as dist
from shendu import nn
from shendu.data import DataLoader, DistributedSampler, TensorDataset
from shendu.distributed.functional import sync_batch_norm
from shendu.nn.parallel import DistributedDataParallel as DDP


@pytest.fixture
def loopback():
    dist.init_process_group(backend="loopback")
    yield
    dist.destroy_process_group()


@pytest.mark.slow
def test_import_shendu_does_not_import_mpi4py():
    code = ("import sys, shendu, shendu.distributed, shendu.nn.parallel; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


# ------------------------------------------------------------------------ process group
def test_group_lifecycle_and_errors():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="get_rank: the default process group has not "
                                           "been initialized"):
        dist.get_rank()
    with pytest.raises(RuntimeError, match="DistributedDataParallel: the default process "
                                           "group"):
        DDP(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="backend must be 'mpi' or 'loopback', got 'nccl'"):
        dist.init_process_group(backend="nccl")
    with pytest.raises(ValueError, match="world_size=2 but"):
        dist.init_process_group(backend="loopback", world_size=2)
    assert not dist.is_initialized()
    dist.init_process_group(backend="loopback")
    try:
        assert dist.is_initialized() and dist.get_backend() == "loopback"
        assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
        with pytest.raises(RuntimeError, match="initialize the default process group twice"):
            dist.init_process_group(backend="loopback")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def test_loopback_collectives(loopback):
    a = np.array([[1.0, -2.0], [3.0, 4.5]], np.float32)
    for op in dist.ReduceOp:
        t = shendu.tensor(a.copy())
        v = t._version_value
        assert dist.all_reduce(t, op=op) is None
        np.testing.assert_array_equal(t.data, a)
        assert t._version_value == v + 1  # an in-place change, as torch's
    t = shendu.tensor(a.copy())
    w = dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)
    assert w.wait() and w.is_completed()
    with pytest.raises(ValueError, match="ReduceOp.AVG needs a floating tensor"):
        dist.all_reduce(shendu.tensor(np.array([1, 2])), op=dist.ReduceOp.AVG)
    with pytest.raises(ValueError, match="op must be a ReduceOp"):
        dist.all_reduce(t, op="sum")
    # a non-contiguous tensor (a transposed view) is reduced through a copy, written back
    base = shendu.tensor(a.copy())
    tv = base.T if hasattr(base, "T") else base.transpose(0, 1)
    dist.all_reduce(tv)
    np.testing.assert_array_equal(base.data, a)
    b = shendu.tensor(a.copy())
    dist.broadcast(b, src=0)
    np.testing.assert_array_equal(b.data, a)
    with pytest.raises(ValueError, match="src must be a rank in 0..0"):
        dist.broadcast(b, src=1)
    out = [shendu.zeros(2, 2)]
    dist.all_gather(out, shendu.tensor(a))
    np.testing.assert_array_equal(out[0].data, a)
    with pytest.raises(ValueError, match="world size 1 entries, got 2"):
        dist.all_gather([shendu.zeros(2, 2)] * 2, shendu.tensor(a))
    o = shendu.zeros(2, 2)
    dist.reduce_scatter(o, [shendu.tensor(a)])
    np.testing.assert_array_equal(o.data, a)
    with pytest.raises(TypeError, match="expected tensor to be a shendu Tensor, got ndarray"):
        dist.all_reduce(a)


# --------------------------------------------------------------------------------- DDP
def _mlp(seed=0):
    shendu.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def test_ddp_on_one_process_trains_as_the_bare_model(loopback):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 5)).astype(np.float32), rng.integers(0, 3, 12)
    results = []
    for wrap in (False, True):
        m = _mlp()
        model = DDP(m, bucket_cap_mb=0.0005) if wrap else m
        opt = shendu.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        for i in range(0, 12, 4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(shendu.tensor(x[i:i + 4])),
                                        shendu.tensor(y[i:i + 4])).backward()
            opt.step()
        results.append({k: np.asarray(v) for k, v in m.state_dict().items()})
    for k in results[0]:
        np.testing.assert_array_equal(results[1][k], results[0][k])
    assert not np.allclose(results[0]["0.weight"], _mlp().state_dict()["0.weight"])
    assert list(DDP(_mlp()).state_dict())[0] == "module.0.weight"  # torch's keys


def test_buckets_follow_reverse_registration_order_and_cap(loopback):
    m = _mlp()
    params = list(m.parameters())
    ddp = DDP(m, bucket_cap_mb=300 / 2**20)  # 300 bytes: 75 float32 values
    flat = [p for b in ddp._buckets for p in b.params]
    assert [id(p) for p in flat] == [id(p) for p in reversed(params)]
    for b in ddp._buckets:
        assert b.nbytes <= 300 or len(b.params) == 1
    assert len(ddp.bucket_sizes) >= 4
    assert sum(ddp.bucket_sizes) == sum(p.data.nbytes for p in params)
    # the default cap puts this small model in one bucket (the first is at most 1 MiB)
    assert len(DDP(_mlp()).bucket_sizes) == 1


def test_buckets_start_in_order_during_backward(loopback):
    ddp = DDP(_mlp(), bucket_cap_mb=200 / 2**20)
    nn.functional.cross_entropy(ddp(shendu.randn(4, 5)), shendu.tensor([0, 1, 2, 0])).backward()
    tl = ddp.timeline
    starts = [b["start"] for b in tl["buckets"]]
    assert starts == sorted(starts) and len(starts) > 1
    assert all(b["ready"] <= b["start"] for b in tl["buckets"])
    assert tl["first_ready"] <= starts[0] <= tl["wait_begin"] <= tl["wait_end"]
    assert all(not b.ready and not b.started for b in ddp._buckets)  # reset for next step


def test_no_sync_only_accumulates(loopback):
    m = _mlp()
    ddp = DDP(m, bucket_cap_mb=200 / 2**20)
    x, y = shendu.randn(4, 5), shendu.tensor([0, 1, 2, 0])
    with ddp.no_sync():
        nn.functional.cross_entropy(ddp(x), y).backward()
        assert all(not b.ready for b in ddp._buckets) and ddp.timeline == {}
    g1 = [p.grad.data.copy() for p in m.parameters()]
    nn.functional.cross_entropy(ddp(x), y).backward()
    assert ddp.timeline["wait_end"] >= ddp.timeline["wait_begin"]
    for p, g in zip(m.parameters(), g1):
        np.testing.assert_allclose(p.grad.data, 2 * g, rtol=1e-6)


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        return self.a(x)


def test_unused_parameters(loopback):
    ddp = DDP(_TwoHeads())
    ddp(shendu.randn(2, 3)).sum().backward()
    with pytest.raises(RuntimeError, match=r"finished reduction in the prior iteration.*"
                                           r"got no gradient: b\.weight, b\.bias"):
        ddp(shendu.randn(2, 3))
    m = _TwoHeads()
    ddp = DDP(m, find_unused_parameters=True)
    for _ in range(2):
        ddp(shendu.randn(2, 3)).sum().backward()
    np.testing.assert_array_equal(m.b.weight.grad.data, 0)
    assert m.a.weight.grad is not None and np.any(m.a.weight.grad.data)


def test_sync_batchnorm_module_in_ddp_and_conversion(loopback):
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    bn = m[1]
    m2 = nn.SyncBatchNorm.convert_sync_batchnorm(m)
    assert isinstance(m2[1], nn.SyncBatchNorm) and m2[1].weight is bn.weight
    assert m2[1].running_mean is bn.running_mean
    ddp = DDP(m2)
    ddp(shendu.randn(4, 2, 5, 5)).sum().backward()
    assert int(bn.num_batches_tracked.data) == 1 and np.any(bn.running_mean.data)


# ------------------------------------------------------------------ DistributedSampler
@pytest.mark.parametrize("n", [0, 1, 7, 10, 12])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_matches_torch(n, replicas, drop_last, shuffle):
    from torch.utils.data import DistributedSampler as TorchSampler

    for rank in range(replicas):
        for epoch in (0, 3):
            s = DistributedSampler(range(n), replicas, rank, shuffle=shuffle, seed=5,
                                   drop_last=drop_last)
            t = TorchSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
            s.set_epoch(epoch)
            # torch's positions, read through our shuffled order (numpy's permutation
            # stands in for torch.randperm: the one deliberate difference)
            order = (np.random.default_rng(5 + epoch).permutation(n) if shuffle
                     else np.arange(n))
            expected = [int(order[i]) for i in t]
            assert list(s) == expected
            assert len(s) == len(t) == s.num_samples and s.total_size == t.total_size


def test_distributed_sampler_shares_and_epochs():
    n, r = 10, 3
    shares = [list(DistributedSampler(range(n), r, k, seed=1)) for k in range(r)]
    every = sum(shares, [])
    assert set(every) == set(range(n)) and len(every) == 12  # two repeated as padding
    assert len({len(s) for s in shares}) == 1
    s = DistributedSampler(range(n), r, 0, seed=1)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0)
    assert list(s) == e0
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval "
                                         r"\[0, 2\]"):
        DistributedSampler(range(n), 3, 3)
    with pytest.raises(RuntimeError, match="DistributedSampler: num_replicas and rank"):
        DistributedSampler(range(n))


def test_distributed_sampler_in_a_loader(loopback):
    ds = TensorDataset(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
    s = DistributedSampler(ds, shuffle=False)
    assert (s.num_replicas, s.rank) == (1, 0)
    ys = [y.data.tolist() for _, y in DataLoader(ds, batch_size=4, sampler=s)]
    assert ys == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# ----------------------------------------------------------------------- SyncBatchNorm
def test_sync_batch_norm_gradcheck(loopback):
    rng = np.random.default_rng(0)
    for shape in [(5, 3), (4, 3, 6), (3, 2, 4, 5)]:
        x = rng.standard_normal(shape)
        w, b = rng.uniform(0.5, 1.5, shape[1]), rng.standard_normal(shape[1])
        check_gradcheck(lambda x, w, b: sync_batch_norm(x, None, None, w, b), [x, w, b])
        check_gradcheck(lambda x: sync_batch_norm(x, None, None), [x])
    # channel-major memory (what conv produces): the (C, 1, S) path
    xt = rng.standard_normal((3, 2, 4, 5))
    assert shendu.tensor(xt).transpose(0, 1).data.transpose(1, 0, 2, 3).flags.c_contiguous
    check_gradcheck(lambda x, w, b: sync_batch_norm(x.transpose(0, 1), None, None, w, b),
                    [xt, rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)])


def test_sync_batch_norm_matches_torch(loopback):
    def ours(x, w, b):
        return sync_batch_norm(x, None, None, w, b)

    def theirs(x, w, b):
        return torch.nn.functional.batch_norm(x, None, None, w, b, training=True)

    check_op(ours, [(6, 4), (4,), (4,)], theirs)
    check_op(ours, [(3, 4, 2, 5), (4,), (4,)], theirs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sync_batchnorm_layer_matches_torch_batchnorm(loopback, dtype):
    """On one rank SyncBatchNorm is BatchNorm2d: outputs, gradients, running statistics."""
    rng = np.random.default_rng(1)
    s, t = nn.SyncBatchNorm(3, momentum=0.3), torch.nn.BatchNorm2d(3, momentum=0.3)
    t = t.to(torch.float32 if dtype == np.float32 else torch.float64)
    s.to(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for step in range(2):
        x = rng.standard_normal((4, 3, 5, 5)).astype(dtype) * 2 + step
        g = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
        xs, xt = shendu.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        ys, yt = s(xs), t(xt)
        np.testing.assert_allclose(ys.data, yt.detach().numpy(), **tol)
        ys.backward(shendu.tensor(g))
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(xs.grad.data, xt.grad.numpy(), **tol)
        np.testing.assert_allclose(s.weight.grad.data, t.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(s.bias.grad.data, t.bias.grad.numpy(), **tol)
        for k in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(s, k).data, getattr(t, k).detach().numpy(),
                                       **tol)
    s.eval()
    t.eval()
    x = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    np.testing.assert_allclose(s(shendu.tensor(x)).data,
                               t(torch.tensor(x)).detach().numpy(), **tol)


def test_timeout_argument_and_abort_on_one_process():
    import datetime

    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="timeout must be a positive timedelta or number "
                                             "of seconds"):
            dist.init_process_group(backend="loopback", timeout=bad)
    assert not dist.is_initialized()
    dist.init_process_group(backend="loopback", timeout=datetime.timedelta(seconds=90))
    try:
        from shendu.distributed.backend import _group

        assert _group("test").timeout == 90.0
        with pytest.raises(SystemExit) as e:   # no MPI job to end: a plain exit
            dist.abort(3)
        assert e.value.code == 3
    finally:
        dist.destroy_process_group()
    dist.init_process_group(backend="loopback")
    try:
        from shendu.distributed.backend import DEFAULT_TIMEOUT, _group

        assert _group("test").timeout == DEFAULT_TIMEOUT.total_seconds() == 1800.0
    finally:
        dist.destroy_process_group()


def test_the_test_extra_brings_the_dist_extra():
    """CI installs .[test]; the MPI tests need what .[dist] brings."""
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert set(extras["dist"]) <= set(extras["test"])
