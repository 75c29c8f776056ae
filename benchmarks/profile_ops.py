"""Where a train step's time goes, op by op, in shendu and in torch, for one workload of the
benchmark scripts: shendu's time per fused op (forward and backward separately, each
:class:`~shendu.autograd.Function` timed around its own NumPy work) and torch's profiler's
self time per aten op (its profiler's clock). Step totals are CPU time (``process_time``),
which a machine shared with other jobs disturbs less than wall time. What the ops do not
cover is the rest of the step: the graph engine, module calls, the optimizer's Python and
the loss.

    python benchmarks/profile_ops.py --workload cnn32 [--steps 10] [--threads 1]
    python benchmarks/profile_ops.py --workload lstm
    python benchmarks/profile_ops.py --workload transformer --dropout 0 [--T 64]
    python benchmarks/profile_ops.py --workload lstm --infer     # an inference pass instead
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402


def _infer_fns(workload: str, dropout: float, T: int):
    """One inference pass (eval, no_grad) of each library, as the scripts time it."""
    if workload in ("lenet", "cnn32"):
        import bench_cnn as B

        xs, _ = B.make_data(workload)
        build = lambda nn: B.build(nn, workload)  # noqa: E731
    elif workload in ("rnn", "lstm", "gru"):
        import bench_rnn as B

        xs, _ = B.make_data(T)
        build = lambda nn: B.build(nn, workload)  # noqa: E731
    elif workload == "transformer":
        import bench_transformer as B

        xs, _ = B.make_data(T)
        build = lambda nn: B.build(nn, dropout)  # noqa: E731
    else:
        import bench_mlp as B

        xs, _ = B.make_data()
        build = B.build
    return H.infer_step_fn("shendu", build, xs), H.infer_step_fn("torch", build, xs)


def _step_fns(workload: str, dropout: float, T: int):
    if workload in ("lenet", "cnn32"):
        import bench_cnn as B

        xs, ys = B.make_data(workload)
        return (B.shendu_step_fn(workload, xs, ys), B.torch_step_fn(workload, xs, ys))
    if workload in ("rnn", "lstm", "gru"):
        import bench_rnn as B

        xs, ys = B.make_data(T)
        return (B.shendu_step_fn(workload, xs, ys), B.torch_step_fn(workload, xs, ys))
    if workload == "transformer":
        import bench_transformer as B

        xs, ys = B.make_data(T)
        return (B.shendu_step_fn(xs, ys, dropout), B.torch_step_fn(xs, ys, dropout))
    if workload == "mlp":
        import bench_mlp as B

        xs, ys = B.make_data()
        return B.shendu_step_fn(xs, ys), B.torch_step_fn(xs, ys)
    raise SystemExit(f"unknown workload {workload!r}")


_clock = time.process_time      # --wall: time.perf_counter


def _subclasses(cls):
    for s in cls.__subclasses__():
        yield s
        yield from _subclasses(s)


def profile_shendu(step, steps: int) -> tuple[float, dict]:
    """Seconds per step and {op: seconds per step}, each op's forward and backward timed."""
    from shendu.autograd import Function

    spent: dict = collections.defaultdict(float)
    patched = []

    def timed(cls, name, kind):
        f = cls.__dict__[name]

        def run(self, *a, **k):
            t0 = _clock()
            try:
                return f(self, *a, **k)
            finally:
                spent[f"{cls.__name__}.{kind}"] += _clock() - t0

        return run

    for cls in set(_subclasses(Function)):
        for name, kind in (("forward", "fwd"), ("backward", "bwd")):
            if name in cls.__dict__:
                patched.append((cls, name, cls.__dict__[name]))
                setattr(cls, name, timed(cls, name, kind))
    try:
        step()
        spent.clear()
        t0 = _clock()
        for _ in range(steps):
            step()
        total = (_clock() - t0) / steps
    finally:
        for cls, name, f in patched:
            setattr(cls, name, f)
    return total, {k: v / steps for k, v in spent.items()}


def profile_torch(step, steps: int) -> tuple[float, dict]:
    import torch

    step()
    t0 = _clock()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    total = (_clock() - t0) / steps
    ops = {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages()}
    return total, ops


def _table(title: str, total: float, ops: dict, top: int) -> None:
    clock = "wall" if _clock is time.perf_counter else "CPU"
    print(f"\n{title}: {1e3 * total:.2f} ms {clock} per step (the profiler's own cost "
          "included)")
    for name, sec in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {name:<40} {1e3 * sec:8.2f} ms  {100 * sec / total:5.1f}%")
    covered = sum(ops.values())
    rest = total - covered
    print(f"  {'(outside the ops)':<40} {1e3 * rest:8.2f} ms  {100 * rest / total:5.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="transformer",
                    choices=["mlp", "lenet", "cnn32", "rnn", "lstm", "gru", "transformer"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0, help="transformer only")
    ap.add_argument("--T", type=int, default=None, help="sequence length (rnn: 50, "
                                                          "transformer: 64)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--wall", action="store_true",
                    help="wall-clock time instead of CPU time (with several threads CPU time "
                         "adds theirs up, BLAS threads spinning between products included)")
    ap.add_argument("--infer", action="store_true",
                    help="profile an inference pass (eval, no_grad) instead of a train step")
    args = ap.parse_args()
    global _clock
    if args.wall:
        _clock = time.perf_counter
    H.set_threads(args.threads)
    T = args.T or (64 if args.workload == "transformer" else 50)
    s_step, t_step = (_infer_fns if args.infer else _step_fns)(args.workload, args.dropout, T)
    print(f"{args.workload} (T={T}, dropout {args.dropout} where they apply), threads "
          f"{args.threads}, {args.steps} {'inference passes' if args.infer else 'steps'}")
    _table("shendu", *profile_shendu(s_step, args.steps), args.top)
    _table("torch", *profile_torch(t_step, args.steps), args.top)


if __name__ == "__main__":
    main()
