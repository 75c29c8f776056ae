"""Issue 19: no global state beyond the seeded generator — one scratch pool with a public
release, plotting that leaves pyplot's backend alone."""

import os
import pathlib
import subprocess
import sys

import pytest

import shendu
import shendu.functional as F
from shendu import nn
from shendu.workspace import workspace

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_one_pool_and_empty_cache_releases_it():
    assert F.conv.workspace is workspace and F.recurrent._workspace is workspace
    shendu.manual_seed(0)
    lstm, conv = nn.LSTM(8, 64), nn.Conv2d(3, 16, 3, padding=1)
    for _ in range(2):
        out, _ = lstm(shendu.randn(40, 16, 8))
        out.sum().backward()
        conv(shendu.randn(8, 3, 32, 32)).sum().backward()
    del out
    assert workspace.nbytes > 0  # the scratch buffers are kept for the next step
    shendu.backend.empty_cache()
    assert workspace.nbytes == 0


@pytest.mark.slow
def test_drawing_leaves_pyplot_alone(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import numpy as np
from shendu.report import plots
plots.learning_curves({str(tmp_path / 'lc.png')!r}, [("loss", "loss", {{"train": [3, 2, 1]}})])
plots.attention_heatmap({str(tmp_path / 'att.png')!r}, np.eye(4), list("abcd"), list("wxyz"))
print(matplotlib.get_backend(), plt.get_fignums())
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MPLBACKEND", None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["svg", "[]"]
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "att.png").stat().st_size > 0


@pytest.mark.slow
def test_import_changes_no_process_limit():
    code = ("import resource\n"
            "before = resource.getrlimit(resource.RLIMIT_AS)\n"
            "import shendu, shendu.io, shendu.cli\n"
            "assert resource.getrlimit(resource.RLIMIT_AS) == before\n"
            "print('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
