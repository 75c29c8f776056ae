"""The ``lenet`` and ``cnn32`` workloads of DESIGN.md — train steps/s of shendu and torch in
one run (interleaved), their ratio, and the peak memory of each (measured alone in a fresh
process).

* ``lenet``: LeNet-5 (LeCun et al. 1998) on 1x28x28 — conv 6@5x5 pad 2, ReLU, max-pool 2,
  conv 16@5x5, ReLU, max-pool 2, Linear 400-120-84-10 with ReLU — batch 64.
* ``cnn32``: 3x32x32 — conv 32@3x3 pad 1, ReLU, max-pool 2, conv 64@3x3 pad 1, ReLU,
  max-pool 2, Linear 4096-10 — batch 64.

Both: float32, SGD (lr 0.01, momentum 0.9), cross-entropy, the same threads for both
libraries (torch's default, or ``--threads N`` for torch and NumPy's BLAS alike).

``--malloc-cache`` asks glibc, for the whole process (both libraries), to keep freed memory
instead of returning it to the OS after every step (``mallopt`` trim/mmap thresholds, what
``MALLOC_TRIM_THRESHOLD_`` does): NumPy allocates every activation afresh, so without it
each step pays page faults for memory it just gave back.

    python benchmarks/bench_cnn.py [--workload lenet|cnn32|all] [--steps 30] [--repeats 7]
                                   [--threads N] [--malloc-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

BATCH = 64
SHAPES = {"lenet": (1, 28, 28), "cnn32": (3, 32, 32)}


def build(nn, workload: str):
    """The same architecture from ``nn`` = ``shendu.nn`` or ``torch.nn``."""
    if workload == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10))


def make_data(workload: str, seed: int = 0, n_batches: int = 4):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((BATCH,) + SHAPES[workload]).astype(np.float32)
          for _ in range(n_batches)]
    ys = [rng.integers(0, 10, BATCH) for _ in range(n_batches)]
    return xs, ys


def shendu_step_fn(workload, xs, ys):
    return H.train_step_fn("shendu", lambda nn: build(nn, workload), xs, ys)


def torch_step_fn(workload, xs, ys):
    return H.train_step_fn("torch", lambda nn: build(nn, workload), xs, ys)


def set_threads(n: int) -> None:
    """The same number of threads for torch, NumPy's BLAS and shendu's kernel loops."""
    import torch
    from threadpoolctl import threadpool_limits

    from shendu.functional.conv import set_kernel_threads

    torch.set_num_threads(n)
    threadpool_limits(n)
    set_kernel_threads(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="all", choices=["lenet", "cnn32", "all"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--malloc-cache", action="store_true")
    ap.add_argument("--memory-probe", choices=["shendu", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    workloads = ["lenet", "cnn32"] if args.workload == "all" else [args.workload]
    if args.malloc_cache and not H.keep_freed_memory():
        print("--malloc-cache: not a glibc system, ignored")
    if args.threads:
        set_threads(args.threads)
    if args.memory_probe:
        xs, ys = make_data(workloads[0])
        make = shendu_step_fn if args.memory_probe == "shendu" else torch_step_fn
        step = make(workloads[0], xs, ys)
        step()
        base = H.rss_mb()
        for _ in range(args.steps):
            step()
        print(json.dumps({"peak_mb": max(0.0, H.peak_rss_mb() - base)}))
        return
    print(H.threads_note() + (", glibc keeps freed memory" if args.malloc_cache else ""))
    for w in workloads:
        xs, ys = make_data(w)
        torch_step = None
        if not args.no_torch:
            try:
                torch_step = torch_step_fn(w, xs, ys)
            except ImportError:
                print("torch is not installed: timing shendu alone")
        steps = args.steps if w == "cnn32" else 3 * args.steps
        res = H.compare(w, shendu_step_fn(w, xs, ys), torch_step, steps, args.repeats)
        if not args.no_memory:
            res["shendu_peak_mb"] = H.memory_in_subprocess(__file__, "shendu", w)
            if torch_step is not None:
                res["torch_peak_mb"] = H.memory_in_subprocess(__file__, "torch", w)
        H.print_result(res)
        if not args.no_inference:
            H.print_result(H.compare_inference("  infer", lambda nn, w=w: build(nn, w), xs,
                                               torch_step is not None, steps, args.repeats))


if __name__ == "__main__":
    main()
