"""Data-parallel scaling: 2 ranks x 1 thread against 1 rank x 1 thread, same global batch.

    python benchmarks/bench_distributed.py [--workload cnn32|lenet] [--batch 64]
                                           [--steps 20] [--repeats 3]

The script launches itself under ``mpiexec -n 1`` and ``mpiexec -n 2`` in turn (interleaved,
``--repeats`` times each, every rank on one BLAS thread). Each run trains the workload of
``bench_cnn.py`` through ``shendu.train.Trainer`` — ``fit(..., distributed=None)``, so the
2-rank run is the real user path: DistributedDataParallel, each rank on half of every
global batch, metrics reduced — on synthetic data, and times the steps after ``--warmup``.

It prints, per configuration, the median samples/s, the step time, and for 2 ranks the
communication share of a step: the time the end of backward waits for the last gradient
bucket's all-reduce (the communication that backward did not hide) over the step time.
The ratio of samples/s (2 ranks / 1 rank) is the scaling; 2.0 is perfect.
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


def worker(workload: str, batch: int, steps: int, warmup: int) -> None:
    """One rank of one run: prints a JSON line on rank 0."""
    import shendu
    import shendu.distributed as dist
    from shendu import nn, optim
    from shendu.data import DataLoader, TensorDataset
    from shendu.train import LambdaCallback, Trainer

    dist.init_process_group("mpi")
    shendu.manual_seed(0)
    rng = np.random.default_rng(0)
    n = (steps + warmup) * batch
    X = rng.standard_normal((n,) + SHAPES[workload]).astype(np.float32)
    y = rng.integers(0, 10, n)
    model = build(nn, workload)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=True)
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
                      verbose=0)
    trainer.fit(1)
    seconds = marks[-1] - marks[0]
    step = np.diff(marks[1:]) if len(marks) > 2 else np.array([seconds])
    busiest = shendu.tensor([cpu[-1] - cpu[0]], dtype="float64")
    dist.all_reduce(busiest, op=dist.ReduceOp.MAX)   # the rank that used the most CPU
    if dist.get_rank() == 0:
        print(json.dumps({
            "world": dist.get_world_size(), "samples_per_s": steps * batch / seconds,
            "step_ms": 1e3 * seconds / steps,
            "step_ms_median": 1e3 * float(np.median(step)),
            "wait_ms": 1e3 * float(np.median(waits)) if waits else 0.0,
            "cpu_ms": 1e3 * float(busiest.data[0]) / steps,
            "grad_bytes": int(sum(p.data.nbytes for p in model.parameters())),
        }), flush=True)
    dist.destroy_process_group()


def launch(world: int, args) -> dict:
    cmd = [shutil.which("mpiexec") or "mpiexec", "--allow-run-as-root", "--oversubscribe",
           "-n", str(world), "--bind-to", "none", sys.executable, os.path.abspath(__file__),
           "--worker", "--workload", args.workload, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if p.returncode != 0:
        raise SystemExit(f"mpiexec -n {world} failed:\n{p.stdout}\n{p.stderr}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=sorted(SHAPES), default="cnn32")
    ap.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.workload, args.batch, args.steps, args.warmup)
        return
    if shutil.which("mpiexec") is None:
        raise SystemExit("bench_distributed: mpiexec is not on PATH (pip install "
                         "'shendu[dist]')")
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):          # interleaved: 1, 2, 1, 2, ...
        for world in (1, 2):
            runs[world].append(launch(world, args))
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in runs.items()}
    print(f"{args.workload}, global batch {args.batch}, 1 BLAS thread per rank, "
          f"{args.steps} timed steps, median of {args.repeats} interleaved runs "
          f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'ranks':>5} {'samples/s':>10} {'step ms':>8} {'wait ms':>8} {'comm share':>10} "
          f"{'CPU ms/step':>11}")
    for w in (1, 2):
        m = med[w]
        share = m["wait_ms"] / m["step_ms_median"] if w > 1 else 0.0
        print(f"{w:>5} {m['samples_per_s']:>10.1f} {m['step_ms_median']:>8.1f} "
              f"{m['wait_ms']:>8.2f} {share:>10.1%} {m['cpu_ms']:>11.1f}")
    ratios = [b["samples_per_s"] / a["samples_per_s"] for a, b in zip(runs[1], runs[2])]
    print(f"speed-up 2 ranks / 1 rank: {statistics.median(ratios):.2f}x (per repeat: "
          + ", ".join(f"{r:.2f}" for r in ratios) + "); gradient bytes per step "
          f"{int(med[1]['grad_bytes']):,}")
    # CPU time does not count the time a process waits for a core that another program
    # holds: on a loaded machine it tells what each rank's own work costs
    print(f"CPU time per step, 1 rank / busiest of 2 ranks: "
          f"{med[1]['cpu_ms'] / med[2]['cpu_ms']:.2f}x (the speed-up with a free core "
          "per rank, communication waits included)")


if __name__ == "__main__":
    main()
