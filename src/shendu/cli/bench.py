"""``shendu bench``: the scripts in ``benchmarks/``, run one after another."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from shendu.cli.errors import CLIError


# ------------------------------------------------------------------------ bench
def _benchmarks_dir(given: str | None) -> Path:
    if given:
        d = Path(given)
        if not d.is_dir():
            raise CLIError(f"benchmarks folder {given!r} does not exist")
        return d
    import shendu

    for cand in (Path(shendu.__file__).resolve().parents[2] / "benchmarks",
                 Path.cwd() / "benchmarks"):
        if cand.is_dir() and list(cand.glob("bench_*.py")):
            return cand
    raise CLIError("no benchmarks/ folder found (it is in a clone of the shendu repository; "
                   "pass --dir PATH)")


def _cmd_bench(args) -> int:
    import importlib.util

    d = _benchmarks_dir(args.dir)
    scripts = sorted(d.glob("bench_*.py"))
    names = [s.stem[len("bench_"):] for s in scripts]
    if args.list:
        for n, s in zip(names, scripts):
            print(f"{n:<14} {s}")
        return 0
    if args.only:
        unknown = [o for o in args.only if o not in names]
        if unknown:
            raise CLIError(f"unknown benchmark {unknown[0]!r}; available: {', '.join(names)}")
        scripts = [s for n, s in zip(names, scripts) if n in args.only]
    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    if not have_torch:
        print("torch is not installed (or --no-torch): timing shendu alone")
    steps, repeats = (10, 2) if args.quick else (args.steps, args.repeats)
    failed = 0
    summary = []
    for s in scripts:
        text = s.read_text(encoding="utf-8", errors="replace")
        wanted = [("--steps", str(steps)), ("--repeats", str(repeats)), ("--no-memory",),
                  ("--no-scaling",)] + ([] if have_torch else [("--no-torch",)])
        # pass each script only the options it declares
        cmd = [sys.executable, str(s)] + [w for opt in wanted if f'"{opt[0]}"' in text
                                          for w in opt]
        print(f"== {s.stem[len('bench_'):]}: {' '.join(['python', s.name, *cmd[2:]])}",
              flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(d))
        if r.returncode == 2 and "unrecognized arguments" in r.stderr:
            r = subprocess.run([sys.executable, str(s)], capture_output=True, text=True,
                               cwd=str(d))
        if r.stdout:
            print(r.stdout.rstrip(), flush=True)
        if r.returncode != 0:
            failed += 1
            last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            print(f"   failed (exit {r.returncode}): {last}")
            continue
        for line in r.stdout.splitlines():
            m = re.search(r"^(\S+)\s+shendu\s+([\d.]+) steps/s(?:.*?torch\s+([\d.]+) steps/s"
                          r".*?shendu/torch ([\d.]+)x)?", line)
            if m:
                summary.append(m.groups())
    if summary:
        print("\nworkload      shendu steps/s   torch steps/s   shendu/torch")
        for name, s_rate, t_rate, ratio in summary:
            print(f"{name:<13} {float(s_rate):>14.1f}   "
                  f"{float(t_rate) if t_rate else float('nan'):>13.1f}   "
                  f"{(ratio + 'x') if ratio else '-':>12}")
    if failed:
        raise CLIError(f"{failed} of {len(scripts)} benchmark(s) failed")
    return 0
