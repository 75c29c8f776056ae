"""How far apart the machine's cores are now: the round trip of one cache line between two
threads (each waits for the other's write, then writes back), in nanoseconds.

On the 2-core machine of BENCHMARKS.md this read 85-105 ns most of the time and 320-360 in
its "slow spells" (minutes long, when the two cores are placed far apart): then every
parallel region, and every number one thread reads of what the other wrote, costs several
times more, and the two-thread rows of the benchmarks move with it. Run it before and after
a benchmark to tell which of the two it ran in; ``--watch S`` prints one reading a second
for S seconds.

    python benchmarks/cores.py [--watch 60] [--trips 20000]

Needs Numba (the ``numba`` extra); two Python threads each run a compiled, GIL-free loop.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _slot(context, builder, sig, args):
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1]])


@intrinsic
def _load(typingctx, arr, i):
    """``arr[i]`` by an acquiring atomic load (re-read every time it is called)."""

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args), "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def _store(typingctx, arr, i, v):
    """``arr[i] = v`` by a releasing atomic store."""

    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], _slot(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@njit(nogil=True, cache=True)
def _ping(flag, n):
    for k in range(n):
        _store(flag, 0, 2 * k + 1)
        while _load(flag, 0) != 2 * k + 2:
            pass


@njit(nogil=True, cache=True)
def _pong(flag, n):
    for k in range(n):
        while _load(flag, 0) != 2 * k + 1:
            pass
        _store(flag, 0, 2 * k + 2)


def round_trip_ns(trips: int = 20000) -> float:
    """Nanoseconds per round trip of a cache line between two threads (one reading)."""
    flag = np.zeros(16, np.int64)               # the line the two threads hand back and forth
    other = threading.Thread(target=_pong, args=(flag, trips))
    other.start()
    t0 = time.perf_counter()
    _ping(flag, trips)
    dt = time.perf_counter() - t0
    other.join()
    return dt / trips * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watch", type=float, default=0.0, help="seconds of readings, one a second")
    ap.add_argument("--trips", type=int, default=20000)
    args = ap.parse_args()
    small = np.zeros(16, np.int64)
    _ping(small, 0), _pong(small, 0)              # compile (or load) both loops first
    if args.watch:
        end = time.time() + args.watch
        while time.time() < end:
            print(f"{time.strftime('%H:%M:%S')} {round_trip_ns(args.trips):.0f} ns", flush=True)
            time.sleep(1.0)
    else:
        print(f"cross-core round trip: "
              f"{statistics.median(round_trip_ns(args.trips) for _ in range(5)):.0f} ns")


if __name__ == "__main__":
    main()
