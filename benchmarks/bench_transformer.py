"""The ``transformer`` workload of DESIGN.md: one encoder layer (d=128, 4 heads, ff 512,
dropout 0.1, post-norm, batch_first), T=64, batch 32, mean-pool head to 10 classes,
cross-entropy, SGD — train steps/s of shendu and torch in one run, their ratio, and peak
memory; then the same for T = 64, 128, 256, 512 (attention's (T, T) matrices make time and
memory grow quadratically in T once they dominate).

    python benchmarks/bench_transformer.py [--threads 1] [--steps 20] [--repeats 5]
                                           [--lengths 64 128 256 512] [--dropout 0.1]

Both frameworks run on the same number of threads (BLAS and torch intra-op); timed runs are
interleaved and the medians reported. Memory: the peak resident memory of a few steps over
the memory in use before them, each framework alone in a fresh process; ``--memory-table``
prints only that, against T (64 ... 1024, then 4096), at dropout 0 and 0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

B, D, HEADS, FF, CLASSES = 32, 128, 4, 512, 10


def make_data(T: int, seed: int = 0, n_batches: int = 4):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((B, T, D)).astype(np.float32) for _ in range(n_batches)]
    ys = [rng.integers(0, CLASSES, B) for _ in range(n_batches)]
    return xs, ys


def build(nn, dropout: float):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=dropout,
                                                      batch_first=True)
            self.head = nn.Linear(D, CLASSES)

        def forward(self, x):
            return self.head(self.encoder(x).mean(1))  # mean-pool over time

    return Model()


def shendu_step_fn(xs, ys, dropout: float):
    return H.train_step_fn("shendu", lambda nn: build(nn, dropout), xs, ys, momentum=0.0)


def torch_step_fn(xs, ys, dropout: float):
    return H.train_step_fn("torch", lambda nn: build(nn, dropout), xs, ys, momentum=0.0)


def _probe(args) -> None:
    """Child process: peak RSS growth over a few steps of one framework at one length."""
    T = int(args.workload.split("_T")[-1])
    xs, ys = make_data(T)
    make = shendu_step_fn if args.memory_probe == "shendu" else torch_step_fn
    step = make(xs, ys, args.dropout)
    step()
    _release_free_memory()
    base = H.rss_mb()
    _reset_peak()
    for _ in range(args.steps):
        step()
    print(json.dumps({"peak_mb": max(0.0, _peak_mb() - base)}))


def _release_free_memory() -> None:
    """Hand the allocator's cached free memory back to the OS (glibc's ``malloc_trim``), so
    that the baseline is the memory in use and the peak counts every byte a step needs,
    whether or not the allocator kept it from the warm-up step."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> None:
    try:  # Linux: "5" resets this process's VmHWM to its current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that over
    ``execve`` from the parent, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return H.peak_rss_mb()


def _memory(T: int, framework: str, dropout: float, steps: int = 3, probes: int = 2,
            threads: int = 1) -> float:
    """Smallest of ``probes`` fresh-process measurements (allocator noise only adds)."""
    import subprocess

    peaks = []
    for _ in range(probes):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", framework, "--workload",
             f"transformer_T{T}", "--steps", str(steps), "--dropout", str(dropout),
             "--threads", str(threads)],
            capture_output=True, text=True, check=True,
        )
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])
    return min(peaks)


def memory_table(lengths, long_lengths, dropouts, threads: int, with_torch: bool) -> None:
    """Peak memory of a training step against T, each framework alone in a fresh process:
    the high-water mark of resident memory over a step, less the memory in use before it
    (after a warm-up step, with the allocator's free memory handed back)."""
    print(f"peak MiB of one training step (batch {B}, d {D}, heads {HEADS}, ff {FF}), "
          f"threads {threads}")
    print(f"{'T':>5} {'dropout':>7} {'shendu MiB':>11} {'torch MiB':>10} {'ratio':>6}")
    for T in list(lengths) + list(long_lengths):
        long = T in long_lengths
        for dropout in dropouts:
            # a long sequence: one probe of one step (a step takes tens of seconds)
            kw = dict(steps=1, probes=1) if long else {}
            sm = _memory(T, "shendu", dropout, threads=threads, **kw)
            tm = float("nan")
            # torch's attention with dropout keeps (B, H, T, T) matrices: GiBs at T = 4096
            if with_torch and not (long and dropout > 0):
                tm = _memory(T, "torch", dropout, threads=threads, **kw)
            print(f"{T:>5} {dropout:>7} {sm:>11.1f} {tm:>10.1f} {sm / tm:>6.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed run at T=64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lengths", type=int, nargs="*", default=[64, 128, 256, 512])
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--malloc-cache", action="store_true",
                    help="glibc keeps freed memory (whole process, both libraries)")
    ap.add_argument("--memory-table", action="store_true",
                    help="print only the peak memory of a training step against T "
                         "(--lengths, then --long-lengths for shendu and torch at dropout 0)")
    ap.add_argument("--long-lengths", type=int, nargs="*", default=[4096])
    ap.add_argument("--dropouts", type=float, nargs="*", default=[0.0, 0.1],
                    help="dropouts of the memory table")
    ap.add_argument("--memory-probe", choices=["shendu", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--workload", default="transformer_T64", help=argparse.SUPPRESS)
    args = ap.parse_args()
    H.set_threads(args.threads)
    if args.malloc_cache and not H.keep_freed_memory():
        print("--malloc-cache: not a glibc system, ignored")
    if args.memory_probe:
        _probe(args)
        return
    if args.memory_table:
        memory_table(args.lengths, args.long_lengths, args.dropouts, args.threads,
                     not args.no_torch)
        return
    results = []
    for T in args.lengths:
        xs, ys = make_data(T)
        torch_step = None
        if not args.no_torch:
            try:
                torch_step = torch_step_fn(xs, ys, args.dropout)
            except ImportError:
                print("torch is not installed: timing shendu alone")
        # fewer steps per run as T grows (a step costs ~T^2 in attention)
        steps = max(2, args.steps * 64 // T)
        name = "transformer" if T == 64 else f"  T={T}"
        res = H.compare(name, shendu_step_fn(xs, ys, args.dropout), torch_step, steps,
                        args.repeats, warmup=2)
        if not args.no_memory:
            res["shendu_peak_mb"] = _memory(T, "shendu", args.dropout)
            if torch_step is not None:
                res["torch_peak_mb"] = _memory(T, "torch", args.dropout)
        res["T"] = T
        results.append(res)
        H.print_result(res)
        if not args.no_inference:
            inf = H.compare_inference("  infer", lambda nn: build(nn, args.dropout), xs,
                                      torch_step is not None, steps, args.repeats, warmup=1)
            H.print_result(inf)
            res["infer"] = inf
    print(f"threads {args.threads} (BLAS and torch), {H.threads_note()}, dropout "
          f"{args.dropout}, batch {B}, d {D}, heads {HEADS}, ff {FF}"
          + (", glibc keeps freed memory" if args.malloc_cache else ""))
    if len(results) > 1:
        print(f"{'T':>5} {'shendu ms/step':>15} {'torch ms/step':>14} {'ratio':>6} "
              f"{'shendu MiB':>11} {'torch MiB':>10} {'infer ratio':>12}")
        for r in results:
            tms = 1e3 / r["torch_steps_per_s"] if "torch_steps_per_s" in r else float("nan")
            print(f"{r['T']:>5} {1e3 / r['shendu_steps_per_s']:>15.1f} {tms:>14.1f} "
                  f"{r.get('ratio', float('nan')):>6.2f} "
                  f"{r.get('shendu_peak_mb', float('nan')):>11.1f} "
                  f"{r.get('torch_peak_mb', float('nan')):>10.1f} "
                  f"{r.get('infer', {}).get('ratio', float('nan')):>12.2f}")


if __name__ == "__main__":
    main()
