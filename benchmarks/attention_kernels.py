"""The two kernels of ``F.scaled_dot_product_attention`` against each other: forward +
backward of attention alone (batch 32, 4 heads, head dim 32, float32 — the transformer
workload's shapes), the fused kernel and the blockwise one forced in turn, interleaved,
CPU time, best of the rounds. This is the measurement behind
``attention.BLOCKWISE_MIN_KEYS`` (docs/attention.md).

    python benchmarks/attention_kernels.py [--lengths 64 128 256 512] [--threads 1] [--torch]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

B, HEADS, E = 32, 4, 32


def _step(T: int, p: float, causal: bool) -> None:
    import shendu
    import shendu.functional as F

    rng = np.random.default_rng(0)
    q, k, v = (shendu.tensor(rng.standard_normal((B, HEADS, T, E)).astype(np.float32),
                             requires_grad=True) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
    out.backward(shendu.tensor(np.ones(out.shape, np.float32)))


def _torch_step(T: int, p: float, causal: bool) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, HEADS, T, E, generator=g, requires_grad=True) for _ in range(3))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p,
                                                           is_causal=causal)
    out.backward(torch.ones(out.shape))


def _time(kernel: str, T: int, p: float, causal: bool, n: int) -> float:
    from shendu.functional import attention as A

    before = A.BLOCKWISE_MIN_SCORES, A.BLOCKWISE_MIN_KEYS
    A.BLOCKWISE_MIN_SCORES, A.BLOCKWISE_MIN_KEYS = \
        (0, 0) if kernel == "blockwise" else (1 << 62, 1 << 62)
    step = _torch_step if kernel == "torch" else _step
    try:
        best = float("inf")
        for _ in range(n):
            t0 = time.process_time()
            step(T, p, causal)
            best = min(best, time.process_time() - t0)
        return best
    finally:
        A.BLOCKWISE_MIN_SCORES, A.BLOCKWISE_MIN_KEYS = before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="*", default=[64, 128, 256, 512])
    ap.add_argument("--dropouts", type=float, nargs="*", default=[0.0, 0.1])
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--torch", action="store_true",
                    help="also time torch's scaled_dot_product_attention the same way")
    args = ap.parse_args()
    H.set_threads(args.threads)
    print(f"batch {B}, heads {HEADS}, head dim {E}, float32, threads {args.threads}, "
          f"causal {args.causal}; ms of CPU per forward + backward (best)")
    print(f"{'T':>5} {'dropout':>7} {'fused':>9} {'blockwise':>10} {'fused/blockwise':>16}"
          + (f" {'torch':>9}" if args.torch else ""))
    for T in args.lengths:
        for p in args.dropouts:
            n = max(2, 512 // T)
            res: dict = {"fused": [], "blockwise": []}
            if args.torch:
                res["torch"] = []
            for _ in range(args.rounds):
                for kernel in res:
                    res[kernel].append(_time(kernel, T, p, args.causal, n))
            f, b = min(res["fused"]), min(res["blockwise"])
            extra = f" {1e3 * min(res['torch']):>9.1f}" if args.torch else ""
            print(f"{T:>5} {p:>7} {1e3 * f:>9.1f} {1e3 * b:>10.1f} {f / b:>16.2f}{extra}",
                  flush=True)


if __name__ == "__main__":
    main()
