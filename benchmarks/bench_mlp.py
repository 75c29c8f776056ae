"""The ``mlp`` workload of DESIGN.md: Linear 784-256-256-10 with ReLU, batch 128, SGD,
cross-entropy — train steps/s of shendu and torch in one run, and their ratio; then
inference (eval, no_grad) passes/s.

``--large``: the physical limit instead — batch 1024 through 4096-wide layers
(4096-4096-4096-10), where a step is almost all GEMM: each framework's achieved GFLOP/s
against this machine's sgemm peak, measured here as the fastest float32 product of the
same sizes ((1024, 4096) @ (4096, 4096)) on the same threads: NumPy's matmul, shendu's (MKL's
GEMM where the ``mkl`` extra is installed), shendu's ``x @ w.T`` (a layer's product: the rows
loops where they take it) and torch's ``mm``.

    python benchmarks/bench_mlp.py [--steps 50] [--repeats 5] [--threads N] [--large]
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
LARGE_B, LARGE_W = 1024, 4096


def make_data(seed: int = 0, n_batches: int = 8):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((B, D_IN)).astype(np.float32) for _ in range(n_batches)]
    ys = [rng.integers(0, D_OUT, B) for _ in range(n_batches)]
    return xs, ys


def build(nn):
    return nn.Sequential(nn.Linear(D_IN, H1), nn.ReLU(), nn.Linear(H1, H2), nn.ReLU(),
                         nn.Linear(H2, D_OUT))


def build_large(nn):
    return nn.Sequential(nn.Linear(LARGE_W, LARGE_W), nn.ReLU(), nn.Linear(LARGE_W, LARGE_W),
                         nn.ReLU(), nn.Linear(LARGE_W, D_OUT))


def large_flops() -> tuple[float, float]:
    """FLOPs of one train step and of one inference pass of the large MLP: 2·B·K·N per
    GEMM; forward one GEMM per layer, backward two (the input's gradient and the
    weight's), except the first layer's input, which needs no gradient. Element-wise work
    (bias, ReLU, softmax, SGD) is left out: it is < 0.1% here."""
    layers = [(LARGE_W, LARGE_W), (LARGE_W, LARGE_W), (LARGE_W, D_OUT)]
    fwd = sum(2 * LARGE_B * k * n for k, n in layers)
    bwd = 2 * fwd - 2 * LARGE_B * LARGE_W * LARGE_W
    return fwd + bwd, fwd


def sgemm_peak(repeats: int, with_torch: bool = True) -> float:
    """GFLOP/s of float32 (1024, 4096) @ (4096, 4096), the best of ``repeats`` of NumPy's
    matmul, shendu's (MKL's GEMM when installed), shendu's ``x @ w.T`` (``_gemm.linear``)
    and torch's ``mm``."""
    import time

    from shendu.functional._gemm import linear, matmul

    rng = np.random.default_rng(0)
    a = rng.standard_normal((LARGE_B, LARGE_W)).astype(np.float32)
    b = rng.standard_normal((LARGE_W, LARGE_W)).astype(np.float32)
    out = np.empty((LARGE_B, LARGE_W), np.float32)
    products = [lambda: np.matmul(a, b, out=out), lambda: matmul(a, b, out=out),
                lambda: linear(a, b)]
    if with_torch:
        import torch

        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        products.append(lambda: torch.mm(ta, tb, out=tout))
    best = float("inf")
    for mm in products:
        mm()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(3):
                mm()
            best = min(best, (time.perf_counter() - t0) / 3)
    return 2 * LARGE_B * LARGE_W * LARGE_W / best / 1e9


def run_large(args) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((LARGE_B, LARGE_W)).astype(np.float32) for _ in range(2)]
    ys = [rng.integers(0, D_OUT, LARGE_B) for _ in range(2)]
    peak = sgemm_peak(max(args.repeats, 3), not args.no_torch)
    train_f, infer_f = large_flops()
    print(H.threads_note())
    print(f"sgemm peak (float32 (1024, 4096) @ (4096, 4096), the fastest of NumPy's, "
          f"shendu's and torch's products): {peak:.1f} GFLOP/s")
    with_torch = not args.no_torch
    steps = max(2, args.steps // 10)
    res = H.compare("mlp-large", H.train_step_fn("shendu", build_large, xs, ys),
                    H.train_step_fn("torch", build_large, xs, ys) if with_torch else None,
                    steps, args.repeats, warmup=1)
    inf = H.compare_inference("  infer", build_large, xs, with_torch, steps, args.repeats,
                              warmup=1)
    for r, flops in ((res, train_f), (inf, infer_f)):
        for f in ("shendu", "torch"):
            if f"{f}_steps_per_s" in r:
                r[f"{f}_gflops"] = r[f"{f}_steps_per_s"] * flops / 1e9
        H.print_result(r)
    for label, r in (("train", res), ("inference", inf)):
        line = f"{label}: shendu {100 * r['shendu_gflops'] / peak:.0f}% of sgemm peak"
        if "torch_gflops" in r:
            line += f", torch {100 * r['torch_gflops'] / peak:.0f}%"
        print(line)


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
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--large", action="store_true",
                    help="the large-batch MLP (batch 1024, 4096 wide) against the sgemm peak")
    ap.add_argument("--memory-probe", choices=["shendu", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--workload", default="mlp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    H.set_threads(args.threads)
    if args.large:
        run_large(args)
        return
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
    if not args.no_inference:
        H.print_result(H.compare_inference("  infer", build, xs, torch_step is not None,
                                           args.steps, args.repeats))


if __name__ == "__main__":
    main()
