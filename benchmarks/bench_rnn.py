"""The ``rnn``, ``lstm`` and ``gru`` workloads of DESIGN.md — train steps/s of shendu and
torch in one run (interleaved), their ratio, and the peak memory of each; then time and
memory per step for T = 50, 200, 800, to show both grow linearly in T.

Workload: a one-layer tanh RNN / LSTM / GRU, T=50, batch 64, input 32, hidden 128, a linear
head (10 classes) on the last step's output, cross-entropy, SGD (lr 0.01, momentum 0.9),
float32, the same threads for both libraries (``--threads N`` sets them; by default torch's
default and as many for NumPy's BLAS). Shendu runs each layer as one fused scan
(``shendu.functional.recurrent``); torch runs its native CPU kernels (oneDNN for the LSTM).

    python benchmarks/bench_rnn.py [--workload rnn|lstm|gru|all] [--steps 20] [--repeats 7]
                                   [--threads N] [--no-scaling] [--no-memory]

On a shared machine the numbers move from run to run: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as Hn  # noqa: E402

BATCH, INPUT, HIDDEN, CLASSES = 64, 32, 128, 10
SCALING_T = (50, 200, 800)


def make_data(T: int, seed: int = 0, n_batches: int = 2):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((T, BATCH, INPUT)).astype(np.float32) for _ in range(n_batches)]
    ys = [rng.integers(0, CLASSES, BATCH) for _ in range(n_batches)]
    return xs, ys


def build(nn, workload: str):
    """The recurrent layer and a linear head on the last step (time-major input)."""
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[workload]

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cls(INPUT, HIDDEN)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            out, _ = self.rnn(x)  # (T, B, H)
            return self.head(out[-1])

    return Model()


def shendu_step_fn(workload: str, xs, ys):
    return Hn.train_step_fn("shendu", lambda nn: build(nn, workload), xs, ys)


def torch_step_fn(workload: str, xs, ys):
    return Hn.train_step_fn("torch", lambda nn: build(nn, workload), xs, ys)


def probe(framework: str, workload: str, T: int, steps: int) -> dict:
    """Run alone: seconds per step (median) and peak RSS growth over the model's baseline."""
    xs, ys = make_data(T)
    make = shendu_step_fn if framework == "shendu" else torch_step_fn
    step = make(workload, xs, ys)
    base = Hn.rss_mb()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"s_per_step": statistics.median(times[1:] or times),
            "peak_mb": max(0.0, Hn.peak_rss_mb() - base)}


def probe_in_subprocess(framework: str, workload: str, T: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--probe", framework, "--workload", workload,
           "--T", str(T), "--steps", str(steps)]
    if "--threads" in sys.argv:
        cmd += ["--threads", sys.argv[sys.argv.index("--threads") + 1]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="all", choices=["rnn", "lstm", "gru", "all"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--probe", choices=["shendu", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--T", type=int, default=50, help=argparse.SUPPRESS)
    args = ap.parse_args()
    workloads = ["rnn", "lstm", "gru"] if args.workload == "all" else [args.workload]
    Hn.set_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args.probe, workloads[0], args.T, args.steps)))
        return
    print(Hn.threads_note() + (f", {args.threads} for both" if args.threads else ""))
    frameworks = ["shendu"] if args.no_torch else ["shendu", "torch"]
    for w in workloads:
        xs, ys = make_data(50)
        torch_step = None if args.no_torch else torch_step_fn(w, xs, ys)
        res = Hn.compare(w, shendu_step_fn(w, xs, ys), torch_step, args.steps, args.repeats)
        if not args.no_memory:
            for f in frameworks:
                res[f"{f}_peak_mb"] = probe_in_subprocess(f, w, 50, 10)["peak_mb"]
        Hn.print_result(res)
        if not args.no_inference:
            Hn.print_result(Hn.compare_inference("  infer", lambda nn, w=w: build(nn, w), xs,
                                                 not args.no_torch, args.steps, args.repeats))
    if args.no_scaling:
        return
    print("\nscaling in T: ms per train step (median of interleaved runs in this process) and "
          "peak MiB above the model's baseline (each alone in a fresh process)")
    for w in workloads:
        rows = {f: [] for f in frameworks}
        for T in SCALING_T:
            xs, ys = make_data(T)
            steps = 2 if T > 200 else 5
            res = Hn.compare(f"{w} T={T}", shendu_step_fn(w, xs, ys),
                             None if args.no_torch else torch_step_fn(w, xs, ys),
                             steps, 3, warmup=1)
            for f in frameworks:
                mem = probe_in_subprocess(f, w, T, 3)["peak_mb"] if not args.no_memory else 0
                rows[f].append((1e3 / res[f"{f}_steps_per_s"], mem))
        for f in frameworks:
            cells = "  ".join(f"T={T}: {ms:7.1f} ms {mb:6.1f} MiB"
                              for T, (ms, mb) in zip(SCALING_T, rows[f]))
            per_t = " ".join(f"{ms / T:.3f}" for T, (ms, _) in zip(SCALING_T, rows[f]))
            print(f"{w:<5} {f:<7} {cells}   ms/step/T: {per_t}", flush=True)

if __name__ == "__main__":
    main()
