"""Long independent runs of the suite side by side: each in its own Python process, as many
at a time as the cores this process may use, so that a slow test costs the suite its
longest share instead of the sum."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from shendu.functional.conv import usable_cpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_side_by_side(commands: list[list[str]], env: dict | None = None,
                     jobs: int | None = None, timeout: float = 1800.0
                     ) -> list[subprocess.CompletedProcess]:
    """Run each argv of ``commands`` (in the project's root, with ``env``), at most ``jobs``
    (default: the usable cores) at a time, in the order given (put the longest first).
    Returns their completed processes in that order, stdout and stderr as text."""
    jobs = max(1, min(jobs or usable_cpus(), len(commands)))
    pending = list(enumerate(commands))
    running: dict[int, tuple] = {}      # index: (process, its stdout and stderr files)
    done: dict[int, subprocess.CompletedProcess] = {}
    start = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, cmd = pending.pop(0)
                files = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
                running[i] = (subprocess.Popen(cmd, cwd=ROOT, env=env, text=True,
                                               stdout=files[0], stderr=files[1]), files)
            for i, (p, files) in list(running.items()):
                if p.poll() is not None:
                    for f in files:
                        f.seek(0)
                    out, err = (f.read() for f in files)
                    for f in files:
                        f.close()
                    done[i] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
                    del running[i]
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"run_side_by_side: still running after {timeout} s: "
                                   f"{[p.args for p, _ in running.values()]}")
            time.sleep(0.05)
    finally:
        for p, files in running.values():
            p.kill()
            p.wait()
            for f in files:
                f.close()
    return [done[i] for i in range(len(commands))]


def python(code: str) -> list[str]:
    """The argv that runs ``code`` in a fresh interpreter of this one, ``tests/`` on its
    path."""
    tests = os.path.join(ROOT, "tests")
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r})\n" + code]
