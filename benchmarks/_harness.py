"""Shared benchmark harness: time shendu and torch on the same workload in one run,
interleaved, and print steps/s of each and their ratio (median over repeats)."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

# shendu's import sets glibc's allocator policy for the whole process (shendu._malloc), and
# torch, in the same process here, would run on it too, as it does not for its users; the
# scripts leave glibc's defaults to both (``--malloc-cache`` sets the policy for both).
# shendu loses nothing by it here: torch's live memory keeps the heap from shrinking.
os.environ.setdefault("SHENDU_MALLOC", "system")


def rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def keep_freed_memory() -> bool:
    """glibc only, for the whole process (every library in it): keep up to 1 GiB of freed
    heap and serve blocks up to 32 MiB from it (``mallopt`` trim and mmap thresholds, what
    ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` do). NumPy allocates every
    activation afresh, so without it a step pays page faults for memory the previous step
    gave back to the OS. ``import shendu`` sets the same policy itself (``shendu._malloc``)
    unless ``SHENDU_MALLOC=system``; this sets it whatever the environment says. Returns
    False where there is no glibc ``mallopt``."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)
                and libc.mallopt(m_mmap_threshold, 1 << 25))


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM; unlike ru_maxrss it is not inherited
    from the parent across fork+exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, n: int) -> float:
    """Steps per second of ``step()`` over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


#: seconds of untimed steps before each timed run: with several threads, each library's
#: idle threads keep spinning for a while after its last parallel region (OpenBLAS's after
#: NumPy's products, OpenMP's after torch's ops) and take the cores from the other's run;
#: torch's LSTM step at two threads measured 24 ms for its first steps right after shendu's
#: run against 10 ms once they had stopped. Steps, not a pause: after a pause of 0.3 s
#: shendu's transformer inference at two threads ran 8.3 ms a pass for its next 20 passes
#: against 6.8 ms in a steady run (its BLAS threads asleep)
SETTLE_S = 0.2


def settled(step, n: int) -> float:
    """:func:`time_steps` after :data:`SETTLE_S` (at least one step) of untimed steps."""
    t0 = time.perf_counter()
    step()
    while time.perf_counter() - t0 < SETTLE_S:
        step()
    return time_steps(step, n)


def compare(name: str, shendu_step, torch_step, steps: int = 50, repeats: int = 5,
            warmup: int = 5) -> dict:
    """Interleave ``repeats`` timed runs of each, each after untimed steps of its own
    (:func:`settled`); return medians and the ratio."""
    for _ in range(warmup):
        shendu_step()
        if torch_step is not None:
            torch_step()
    s_rates, t_rates, ratios = [], [], []
    for _ in range(repeats):
        s = settled(shendu_step, steps)
        s_rates.append(s)
        if torch_step is not None:
            t = settled(torch_step, steps)
            t_rates.append(t)
            ratios.append(s / t)
    res = {"name": name, "shendu_steps_per_s": statistics.median(s_rates)}
    if t_rates:
        res["torch_steps_per_s"] = statistics.median(t_rates)
        res["ratio"] = statistics.median(ratios)
        res["ratios"] = [round(r, 3) for r in ratios]
    return res


def print_result(res: dict) -> None:
    line = f"{res['name']:<12} shendu {res['shendu_steps_per_s']:8.1f} steps/s"
    if "shendu_gflops" in res:
        line += f" ({res['shendu_gflops']:.1f} GFLOP/s)"
    if "ratio" in res:
        line += f"   torch {res['torch_steps_per_s']:8.1f} steps/s"
        if "torch_gflops" in res:
            line += f" ({res['torch_gflops']:.1f} GFLOP/s)"
        line += f"   shendu/torch {res['ratio']:.2f}x (runs: {res['ratios']})"
    for k in ("shendu_peak_mb", "torch_peak_mb"):
        if k in res:
            line += f"   {k.split('_')[0]} peak +{res[k]:.1f} MiB"
    print(line, flush=True)


def memory_in_subprocess(script: str, framework: str, workload: str, steps: int = 20) -> float:
    """Peak RSS growth (MiB) of ``steps`` training steps run alone in a fresh process."""
    out = subprocess.run(
        [sys.executable, script, "--memory-probe", framework, "--workload", workload,
         "--steps", str(steps)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def cores_note() -> str:
    """The cross-core round trip now (``cores.py``; "" without Numba): on the machine of
    BENCHMARKS.md ~95 ns, or ~330 ns while its two cores are placed far apart, when every
    two-thread row runs slower."""
    try:
        from cores import round_trip_ns
    except ImportError:
        return ""
    round_trip_ns(100)                                  # the loops loaded, the threads warm
    return f"; cross-core round trip {statistics.median(round_trip_ns() for _ in range(3)):.0f} ns"


def threads_note() -> str:
    """Threads, CPUs, which library computes shendu's matrix products, and the cores'
    round trip (:func:`cores_note`)."""
    from shendu.functional import _gemm

    gemm = (f"shendu products on {_gemm.backend()} (SHENDU_GEMM=numpy|mkl|openblas)"
            + cores_note())
    try:
        import torch

        return f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}; {gemm}"
    except ImportError:
        return f"torch absent, cpus {os.cpu_count()}; {gemm}"


def set_threads(n: int | None) -> None:
    """The same number of threads for NumPy's BLAS, shendu's kernel threads (the element-wise
    loops of convolution, pooling and blockwise attention) and torch's intra-op pool (None:
    defaults)."""
    if not n:
        return
    import numpy  # noqa: F401 - loads its BLAS, which threadpoolctl can only limit once loaded

    from shendu.functional.conv import set_kernel_threads

    set_kernel_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def train_step_fn(lib: str, build, xs, ys, lr: float = 0.01, momentum: float = 0.9):
    """One SGD + cross-entropy train step of ``build(nn)`` on the next of the fixed batches
    ``(xs, ys)``, as a closure — in shendu or in torch with the same code, since shendu's API
    is torch's."""
    if lib == "shendu":
        import shendu as lib_mod
        from shendu import nn, optim

        as_x, as_y = lib_mod.from_numpy, (lambda y: y)
    else:
        import torch as lib_mod
        from torch import nn, optim

        as_x, as_y = lib_mod.from_numpy, lib_mod.from_numpy
    lib_mod.manual_seed(0)
    model = build(nn)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    batches = [(as_x(x), as_y(y)) for x, y in zip(xs, ys)]
    i = [0]

    def step():
        x, y = batches[i[0] % len(batches)]
        i[0] += 1
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def infer_step_fn(lib: str, build, xs):
    """One inference pass (``model.eval()``, no graph: ``no_grad``) of ``build(nn)`` on the
    next of the fixed batches ``xs``, as a closure — the same code in shendu and torch."""
    if lib == "shendu":
        import shendu as lib_mod
        from shendu import nn
    else:
        import torch as lib_mod
        from torch import nn
    lib_mod.manual_seed(0)
    model = build(nn)
    model.eval()
    batches = [lib_mod.from_numpy(x) for x in xs]
    i = [0]

    def step():
        x = batches[i[0] % len(batches)]
        i[0] += 1
        with lib_mod.no_grad():
            return model(x)

    return step


def compare_inference(name: str, build, xs, with_torch: bool, steps: int, repeats: int,
                      warmup: int = 3) -> dict:
    """Inference (eval, no_grad) passes/s of shendu and torch, interleaved as :func:`compare`."""
    torch_step = infer_step_fn("torch", build, xs) if with_torch else None
    return compare(name, infer_step_fn("shendu", build, xs), torch_step, steps, repeats,
                   warmup)
