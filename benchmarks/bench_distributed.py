"""Data-parallel scaling: 2 ranks x 1 thread against 1 rank x 1 thread, same global batch.

    python benchmarks/bench_distributed.py [--workload cnn32|lenet] [--batch 64]
                                           [--steps 20] [--repeats 3]

The script launches itself under ``mpiexec -n 1`` and ``mpiexec -n 2`` in turn (interleaved,
``--repeats`` times each, every rank on one thread: one BLAS thread and one thread for the
conv and pooling kernels' own loops). Each run trains the workload of
``bench_cnn.py`` through ``shendu.train.Trainer`` — ``fit(..., distributed=None)``, so the
2-rank run is the real user path: DistributedDataParallel, each rank on half of every
global batch, metrics reduced — on synthetic data, and times the steps after ``--warmup``.

It prints, per configuration, the median samples/s, the step time, and for 2 ranks the
communication share of a step: the time the end of backward waits for the last gradient
bucket's all-reduce (the communication that backward did not hide) over the step time.
The ratio of samples/s (2 ranks / 1 rank) is the scaling; 2.0 is perfect.

A third configuration, "2 alone", runs two processes at the same time that each train on
B/2 samples a step without communicating: what this machine gives two processes at all
(on a machine that other work also loads, far less than two cores). "2 ranks DDP" over
"2 alone" is then the efficiency of the data parallelism itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from bench_cnn import SHAPES, build  # noqa: E402


def worker(workload: str, batch: int, steps: int, warmup: int, alone: bool) -> None:
    """One rank of one run: prints a JSON line on rank 0. ``alone``: each rank trains
    its own model on ``batch / world`` samples a step, without communicating."""
    import shendu
    import shendu.distributed as dist
    from shendu import nn, optim
    from shendu.data import DataLoader, TensorDataset
    from shendu.functional.conv import set_kernel_threads
    from shendu.train import LambdaCallback, Trainer

    set_kernel_threads(1)        # the conv/pool kernels' own threads: one, as BLAS's
    dist.init_process_group("mpi")
    world = dist.get_world_size()
    shendu.manual_seed(0)
    rng = np.random.default_rng(0)
    n = (steps + warmup) * batch
    X = rng.standard_normal((n,) + SHAPES[workload]).astype(np.float32)
    y = rng.integers(0, 10, n)
    model = build(nn, workload)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    per_step = batch // world if alone else batch     # what the loader gives each rank
    loader = DataLoader(TensorDataset(X[:(steps + warmup) * per_step],
                                      y[:(steps + warmup) * per_step]),
                        batch_size=per_step, shuffle=True)
    marks: list[float] = []
    cpu: list[float] = []
    waits: list[float] = []

    def begin(b, logs):
        if b == warmup:
            dist.barrier()          # every rank starts the timed steps together
            marks.append(time.perf_counter())
            cpu.append(time.process_time())

    def end(b, logs):
        if b >= warmup:
            marks.append(time.perf_counter())
            cpu.append(time.process_time())
            ddp = trainer._dist.ddp if trainer._dist is not None else None
            if ddp is not None and ddp.timeline:
                waits.append(ddp.timeline["wait_end"] - ddp.timeline["wait_begin"])

    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, loader,
                      callbacks=[LambdaCallback(on_batch_begin=begin, on_batch_end=end)],
                      verbose=0, distributed=False if alone else None)
    trainer.fit(1)
    step = np.diff(marks[1:]) if len(marks) > 2 else np.array([marks[-1] - marks[0]])
    slowest = shendu.tensor([marks[-1] - marks[0], cpu[-1] - cpu[0]], dtype="float64")
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)   # the last rank done, the busiest
    seconds, busiest = (float(v) for v in slowest.data)
    if dist.get_rank() == 0:
        print(json.dumps({
            "world": world, "samples_per_s": steps * batch / seconds,
            "step_ms": 1e3 * seconds / steps,
            "step_ms_median": 1e3 * float(np.median(step)),
            "wait_ms": 1e3 * float(np.median(waits)) if waits else 0.0,
            "cpu_ms": 1e3 * busiest / steps,
            "grad_bytes": int(sum(p.data.nbytes for p in model.parameters())),
        }), flush=True)
    dist.destroy_process_group()


def launch(world: int, alone: bool, args) -> dict:
    cmd = [shutil.which("mpiexec") or "mpiexec", "--allow-run-as-root", "--oversubscribe",
           "-n", str(world), "--bind-to", "none", sys.executable, os.path.abspath(__file__),
           "--worker", "--workload", args.workload, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if alone:
        cmd.append("--alone")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if p.returncode != 0:
        raise SystemExit(f"mpiexec -n {world} failed:\n{p.stdout}\n{p.stderr}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


CONFIGS = {"1 rank": (1, False), "2 ranks DDP": (2, False), "2 alone": (2, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=sorted(SHAPES), default="cnn32")
    ap.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.workload, args.batch, args.steps, args.warmup, args.alone)
        return
    if shutil.which("mpiexec") is None:
        raise SystemExit("bench_distributed: mpiexec is not on PATH (pip install "
                         "'shendu[dist]')")
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):          # interleaved: 1 rank, 2 ranks, 2 alone, ...
        for name, (world, alone) in CONFIGS.items():
            runs[name].append(launch(world, alone, args))
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in runs.items()}
    print(f"{args.workload}, global batch {args.batch}, one thread per rank, "
          f"{args.steps} timed steps, median of {args.repeats} interleaved runs "
          f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'':>12} {'samples/s':>10} {'step ms':>8} {'wait ms':>8} {'comm share':>10} "
          f"{'CPU ms/step':>11}")
    for name, m in med.items():
        share = m["wait_ms"] / m["step_ms_median"]
        print(f"{name:>12} {m['samples_per_s']:>10.1f} {m['step_ms_median']:>8.1f} "
              f"{m['wait_ms']:>8.2f} {share:>10.1%} {m['cpu_ms']:>11.1f}")

    def ratio(a: str, b: str) -> str:
        r = [y["samples_per_s"] / x["samples_per_s"] for x, y in zip(runs[a], runs[b])]
        return f"{statistics.median(r):.2f}x (per repeat: " + ", ".join(
            f"{v:.2f}" for v in r) + ")"

    print(f"speed-up, 2 ranks DDP / 1 rank: {ratio('1 rank', '2 ranks DDP')}")
    print(f"ceiling of this machine, 2 processes alone (B/2 each, no communication) / 1 rank: "
          f"{ratio('1 rank', '2 alone')}")
    print(f"efficiency of data parallelism, 2 ranks DDP / 2 alone: "
          f"{ratio('2 alone', '2 ranks DDP')}")
    print(f"CPU time per step, 1 rank / busiest of 2 DDP ranks: "
          f"{med['1 rank']['cpu_ms'] / med['2 ranks DDP']['cpu_ms']:.2f}x; gradient bytes per "
          f"step {int(med['1 rank']['grad_bytes']):,}")


if __name__ == "__main__":
    main()
