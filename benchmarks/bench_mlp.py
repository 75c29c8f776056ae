"""The ``mlp`` workload of DESIGN.md: Linear 784-256-256-10 with ReLU, batch 128, SGD,
cross-entropy — train steps/s of shendu and torch in one run, and their ratio.

    python benchmarks/bench_mlp.py [--steps 50] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

B, D_IN, H1, H2, D_OUT = 128, 784, 256, 256, 10


def make_data(seed: int = 0, n_batches: int = 8):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((B, D_IN)).astype(np.float32) for _ in range(n_batches)]
    ys = [rng.integers(0, D_OUT, B) for _ in range(n_batches)]
    return xs, ys


def build(nn):
    return nn.Sequential(nn.Linear(D_IN, H1), nn.ReLU(), nn.Linear(H1, H2), nn.ReLU(),
                         nn.Linear(H2, D_OUT))


def shendu_step_fn(xs, ys):
    return H.train_step_fn("shendu", build, xs, ys)


def torch_step_fn(xs, ys):
    return H.train_step_fn("torch", build, xs, ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both NumPy's BLAS and torch (default: each library's own)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-probe", choices=["shendu", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--workload", default="mlp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    H.set_threads(args.threads)
    xs, ys = make_data()
    if args.memory_probe:
        make = shendu_step_fn if args.memory_probe == "shendu" else torch_step_fn
        __import__(args.memory_probe)
        base = H.rss_mb()  # after the import, before the model: the model's + training's memory
        step = make(xs, ys)
        for _ in range(args.steps):
            step()
        print(json.dumps({"peak_mb": max(0.0, H.peak_rss_mb() - base)}))
        return
    torch_step = None
    if not args.no_torch:
        try:
            torch_step = torch_step_fn(xs, ys)
        except ImportError:
            print("torch is not installed: timing shendu alone")
    res = H.compare("mlp", shendu_step_fn(xs, ys), torch_step, args.steps, args.repeats)
    if not args.no_memory:
        res["shendu_peak_mb"] = H.memory_in_subprocess(__file__, "shendu", "mlp")
        if torch_step is not None:
            res["torch_peak_mb"] = H.memory_in_subprocess(__file__, "torch", "mlp")
    print(H.threads_note())
    H.print_result(res)


if __name__ == "__main__":
    main()
