"""The kernels' matrix products on our layers' shapes, float32: GFLOP/s of shendu's product
with the rows loops (``_gemm.ROWS``: the direct convolution's loops as GEMM, where the
products are OpenBLAS's and Numba is installed), of the same call with them off (the GEMM
of the kernels' own: OpenBLAS's or MKL's), and of torch's ``mm`` / ``addmm``; interleaved,
the median of the rounds, and shendu/torch. Row-major products ``A @ B`` (``matmul``) and
a layer's ``x @ W^T + b`` (``linear``). BENCHMARKS.md's products table comes from here.

    python benchmarks/bench_products.py [--threads 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

#: (what, kind, m, k, n): ``A`` (m, k) @ ``B`` (k, n), or ``x`` (m, k) @ ``W`` (n, k)^T + b
SHAPES = [
    ("LSTM step W [1; x; h]", "nn", 512, 161, 64),
    ("MLP input gradient dY W", "nn", 128, 256, 784),
    ("feed-forward input gradient", "nn", 2048, 384, 128),
    ("MLP layer x W^T + b", "nt", 128, 784, 256),
    ("MLP layer x W^T + b", "nt", 128, 256, 256),
    ("feed-forward x W^T + b", "nt", 4096, 512, 128),
    ("feed-forward x W^T + b", "nt", 4096, 128, 512),
    ("wide layer x W^T + b", "nt", 128, 4096, 4096),
]


def _rate(f, flops: float, seconds: float = 0.05) -> float:
    """GFLOP/s of ``f()`` over about ``seconds`` of calls (after one untimed call)."""
    f()
    t0 = time.perf_counter()
    f()
    n = max(3, int(seconds / max(time.perf_counter() - t0, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return flops * n / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    H.set_threads(args.threads)
    from shendu.functional import _gemm

    torch = None
    if not args.no_torch:
        import torch
    print(H.threads_note())
    print(f"{'product':<30} {'shape':>26} {'rows':>7} {'GEMM':>7} {'torch':>7}  GFLOP/s  "
          "rows/GEMM  rows/torch")
    rng = np.random.default_rng(0)
    for what, kind, m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        if kind == "nn":
            b = rng.standard_normal((k, n)).astype(np.float32)
            out = np.empty((m, n), np.float32)

            def ours(a=a, b=b, out=out):
                _gemm.matmul(a, b, out=out)
            if torch is not None:
                ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)

                def theirs(ta=ta, tb=tb, tout=tout):
                    torch.mm(ta, tb, out=tout)
        else:
            w = rng.standard_normal((n, k)).astype(np.float32)
            bias = rng.standard_normal(n).astype(np.float32)

            def ours(a=a, w=w, bias=bias):
                _gemm.linear(a, w, bias)
            if torch is not None:
                ta, tw, tb = torch.from_numpy(a), torch.from_numpy(w), torch.from_numpy(bias)

                def theirs(ta=ta, tw=tw, tb=tb):
                    torch.addmm(tb, ta, tw.t())
        flops = 2.0 * m * k * n
        rates: dict[str, list[float]] = {"rows": [], "gemm": [], "torch": []}
        try:
            for _ in range(args.rounds):
                for key, on in (("rows", True), ("gemm", False)):
                    _gemm.ROWS = on
                    rates[key].append(_rate(ours, flops))
                if torch is not None:
                    rates["torch"].append(_rate(theirs, flops))
        finally:
            _gemm.ROWS = True
        med = {key: statistics.median(v) if v else float("nan") for key, v in rates.items()}
        shape = f"({m}, {k}) {'@' if kind == 'nn' else 'x'} {(k, n) if kind == 'nn' else (n, k)}"
        vs_torch = f"{med['rows'] / med['torch']:5.2f}x" if rates["torch"] else "    -"
        print(f"{what:<30} {shape:>26} {med['rows']:7.0f} {med['gemm']:7.0f} "
              f"{med['torch']:7.0f}           {med['rows'] / med['gemm']:5.2f}x     "
              f"{vs_torch}", flush=True)


if __name__ == "__main__":
    main()
