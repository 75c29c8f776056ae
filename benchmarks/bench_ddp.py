"""DistributedDataParallel: does communication overlap backward? One run, prints a table.

    mpiexec --allow-run-as-root --oversubscribe -n 2 python benchmarks/bench_ddp.py

Each rank runs the ``mlp`` workload (Linear 784-256-256-10, global batch 128, so 64 per
rank) or ``cnn32`` on one BLAS thread. For each bucket size it times backward and reads
DDP's timeline: when each bucket's Iallreduce started (relative to the start of backward),
when the last gradient became ready (the end of backward's compute), and how long the final
wait took (the communication backward did not hide). The baseline is the same backward
under ``no_sync`` followed by one blocking Allreduce of all gradients (no overlap).
"""

from __future__ import annotations

import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import shendu  # noqa: E402
import shendu.distributed as dist  # noqa: E402
from shendu import nn  # noqa: E402
from shendu.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


def model_and_batch(name: str, per_rank: int):
    shendu.manual_seed(0)
    if name == "mlp":
        m = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
        x = shendu.randn(per_rank, 784)
    else:
        m = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64 * 8 * 8, 10))
        x = shendu.randn(per_rank, 3, 32, 32)
    y = shendu.tensor(np.arange(per_rank) % 10)
    return m, x, y


def run(name: str, per_rank: int, cap_mb: float | None, steps: int) -> dict:
    m, x, y = model_and_batch(name, per_rank)
    ddp = DDP(m, bucket_cap_mb=cap_mb or 25.0)
    params = list(m.parameters())
    rows = []
    for i in range(steps + 2):
        m.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        dist.barrier()
        t0 = time.perf_counter()
        if cap_mb is None:  # baseline: local backward, then one blocking Allreduce
            with ddp.no_sync():
                loss.backward()
            t1 = time.perf_counter()
            flat = np.concatenate([p.grad.data.reshape(-1) for p in params])
            dist.all_reduce(shendu.Tensor(flat), op=dist.ReduceOp.AVG)
            t2 = time.perf_counter()
            row = dict(total=t2 - t0, compute=t1 - t0, wait=t2 - t1, first=None, n=1)
        else:
            loss.backward()
            t2 = time.perf_counter()
            tl = ddp.timeline
            compute = max(b["ready"] for b in tl["buckets"]) - t0
            row = dict(total=t2 - t0, compute=compute, wait=tl["wait_end"] - tl["wait_begin"],
                       first=tl["buckets"][0]["start"] - t0, n=len(tl["buckets"]))
        if i >= 2:
            rows.append(row)
    med = {k: float(np.median([r[k] for r in rows])) if rows[0][k] is not None else None
           for k in rows[0]}
    med["bytes"] = sum(p.data.nbytes for p in params)
    return med


def main() -> None:
    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    out = []
    for name, batch in (("mlp", 128), ("cnn32", 64)):
        for cap in (None, 25.0, 0.25, 0.05):
            out.append((name, cap, run(name, batch // world, cap, steps)))
    if rank == 0:
        print(f"world size {world}, 1 BLAS thread per rank, median of {steps} steps (ms)")
        print(f"{'workload':8} {'buckets':>10} {'n':>3} {'backward':>9} {'compute':>8} "
              f"{'1st start':>9} {'final wait':>10} {'grad MB':>8}")
        for name, cap, r in out:
            label = "blocking" if cap is None else f"{cap:g} MB"
            first = "-" if r["first"] is None else f"{1e3 * r['first']:.2f}"
            print(f"{name:8} {label:>10} {r['n']:>3} {1e3 * r['total']:9.2f} "
                  f"{1e3 * r['compute']:8.2f} {first:>9} {1e3 * r['wait']:10.2f} "
                  f"{r['bytes'] / 2**20:8.2f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
