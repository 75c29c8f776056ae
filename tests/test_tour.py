"""``shendu tour``: the quick tour as a user runs it, its table, pictures and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shendu.report.plots import have_matplotlib
from shendu.tour import CHAPTERS, HEADER, format_table


@pytest.fixture(scope="module")
def quick_tour(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour") / "t"
    r = subprocess.run([sys.executable, "-m", "shendu", "tour", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


@pytest.mark.slow
def test_quick_tour_prints_the_table(quick_tour):
    out, r = quick_tour
    for h in HEADER:
        assert h in r.stdout
    for who in ("Rosenblatt 1958", "Seymour Papert", "Rumelhart", "Vaswani et al. 2017"):
        assert who in r.stdout  # cells wrap at 34 characters: check words within a line
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert any(row[1] == "Marvin Minsky & Seymour Papert 1969" for row in rows)
    assert "it/s" in r.stderr or "s/it" in r.stderr  # the progress bars


@pytest.mark.slow
def test_quick_tour_results(quick_tour):
    out, _ = quick_tour
    res = json.loads((out / "results.json").read_text())
    assert res["header"] == list(HEADER)
    rows = {(row[0], row[2].split(",")[0]): row for row in res["rows"]}
    blobs = next(r for k, r in rows.items() if k[0].startswith("Perceptron (Rosenblatt"))
    assert blobs[3].startswith("100.0% train") and "converged" in blobs[3]
    xor = next(r for k, r in rows.items() if k[0] == "Perceptron on XOR")
    assert "never converges" in xor[3] and not xor[3].startswith("100")
    mlp_xor = next(r for r in res["rows"] if r[0].startswith("Multi-layer")
                   and r[2].startswith("XOR"))
    assert mlp_xor[3].startswith("100.0%")
    digits = [r for r in res["rows"] if "digits" in r[2] and "%" in r[3]]
    for r in digits:  # every digits run learns (chance is 10%)
        assert float(r[3].split("%")[0]) > 85, r
    for r in res["rows"]:
        assert not r[3].startswith(("not available yet", "failed")), r
        if r[3].startswith("skipped"):  # a chapter whose data or extra is absent says so
            continue
        assert float(r[5]) >= 0
    # the famous contrasts, measured: the LSTM solves the adding problem, the tanh RNN not
    lstm = next(r for r in res["rows"] if r[0].startswith("Long short-term"))
    rnn = next(r for r in res["rows"] if r[0].startswith("Simple recurrent"))
    mse = {k: float(r[3].split("test MSE ")[1].split()[0]) for k, r in (("lstm", lstm),
                                                                          ("rnn", rnn))}
    assert mse["lstm"] < 0.05 < 0.12 < mse["rnn"], mse
    assert "(solved)" in lstm[3] and "(not solved)" in rnn[3]
    # attention beats the fixed-vector bottleneck, and its alignment is the anti-diagonal
    att = next(r for r in res["rows"] if r[0].startswith("Encoder-decoder"))
    with_att = float(att[3].split("%")[0])
    without = float(att[4].split("same budget: ")[1].split("%")[0])
    mirrored = float(att[3].split("mirrored position at ")[1].split("%")[0])
    assert with_att > 90 and with_att > without + 30 and mirrored > 90, att
    assert res["cpu_seconds"] > 0


@pytest.mark.slow
def test_quick_tour_writes_the_report(quick_tour):
    out, r = quick_tour
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<table" in page and "Rosenblatt" in page
    pics = json.loads((out / "results.json").read_text())["pictures"]
    if have_matplotlib():
        assert "learning_curves.png" in pics and "confusion_matrix.png" in pics
        assert "attention.png" in pics and "rnn_vs_lstm_gradients.png" in pics
        assert "conv_filters.png" in pics
        for p in pics:
            assert (out / p).stat().st_size > 1000
        assert page.count("data:image/png;base64,") == len(pics)
    else:
        assert "pip install 'shendu[plot]'" in r.stdout


def test_only_one_chapter(tmp_path):
    from io import StringIO

    from shendu.tour import run_tour

    buf = StringIO()
    res = run_tour(quick=True, only="perceptron", out=None, stream=buf)
    assert len(res.rows) == 2 and res.report is None
    assert "Perceptron on XOR" in buf.getvalue()
    with pytest.raises(ValueError, match="unknown chapter 'nope'"):
        run_tour(only="nope", out=None, stream=buf)


def test_chapter_lists():
    from shendu.tour import chapter_names

    assert chapter_names(None) == list(CHAPTERS)
    assert chapter_names("seed, mlp") == ["mlp", "seed"]          # the tour's order
    assert chapter_names(["cnn"]) == ["cnn"]
    for bad in ("mlp,nope", "", ","):
        with pytest.raises(ValueError, match="unknown chapter"):
            chapter_names(bad)


def test_a_chapter_runs_in_the_process_of_the_chapters_it_quotes():
    """A chapter quoting another's measurement (the MLP's accuracy as the CNN's baseline)
    must see it: the two share a worker process, in the tour's order."""
    from shendu.tour import _groups

    groups = _groups(list(CHAPTERS))
    assert sorted(n for g in groups for n in g) == sorted(CHAPTERS)
    home = {n: i for i, g in enumerate(groups) for n in g}
    for name, ch in CHAPTERS.items():
        for q in ch.quotes:
            assert home[q] == home[name], (name, q)
    for g in groups:
        assert g == [n for n in CHAPTERS if n in g]
    assert _groups(["cnn", "seed"]) == [["cnn"], ["seed"]]     # mlp absent: cnn alone
    assert ["perceptron", "mlp", "cnn", "transformer"] in groups


def test_every_quoted_measurement_is_declared():
    """A chapter that reads another's measurement (``ctx.measured``) names that chapter in
    ``quotes``, so that it runs in the same worker process: read from the chapters' own
    code, so a new quote without its declaration fails here (in several processes it would
    silently read nothing)."""
    import inspect
    import re

    writes, reads = {}, {}
    for name, ch in CHAPTERS.items():
        src = inspect.getsource(ch.run)
        for key in re.findall(r"""ctx\.measured\[["'](\w+)["']\]\s*(?:,[^=\n]*)?=(?!=)""", src):
            writes[key] = name
        reads[name] = set(re.findall(r"""ctx\.measured(?:\.get\(|\[)["'](\w+)["']""", src))
    assert {"perceptron_xor", "mlp_digits"} <= set(writes)
    for name, keys in reads.items():
        for key in keys:
            if writes.get(key, name) != name:
                assert writes[key] in CHAPTERS[name].quotes, (name, key)
    assert "mlp_digits" in reads["cnn"] and "mlp_digits" in reads["transformer"]


@pytest.mark.slow
def test_chapters_in_processes_give_the_results_of_one_process(tmp_path):
    """jobs=2 (the default on two cores) against jobs=1: the same rows, the same pictures
    in the same order; the chapters that quote others still quote them."""
    from io import StringIO

    from shendu.tour import run_tour

    only = "perceptron,mlp,cnn,seed"
    one = run_tour(quick=True, only=only, out=tmp_path / "one", stream=StringIO(), jobs=1)
    buf = StringIO()
    two = run_tour(quick=True, only=only, out=tmp_path / "two", stream=buf, jobs=2)
    assert not one.failed and not two.failed
    assert [r.cells()[:5] for r in two.rows] == [r.cells()[:5] for r in one.rows]
    assert all(r.seconds is not None and r.seconds >= 0 for r in two.rows)
    cnn = next(r for r in two.rows if r.algorithm == "Convolutional network")
    assert cnn.contrast.startswith("MLP: ") and "%" in cnn.contrast
    assert [os.path.basename(p) for p in two.pictures] == \
        [os.path.basename(p) for p in one.pictures]
    for p in two.pictures:
        assert os.path.getsize(p) > 1000
    assert "2 processes" in buf.getvalue()
    assert two.cpu_seconds > 0


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for Python")
def test_a_worker_that_dies_is_a_failed_row(tmp_path, monkeypatch):
    """A worker process that exits without its result (killed, out of memory): its
    chapters are listed as failed with its exit code and last line; the others stand."""
    from io import StringIO

    from shendu.tour import run_tour

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'MemoryError: out of memory' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    res = run_tour(quick=True, only="perceptron,seed", out=None, stream=StringIO(), jobs=2)
    assert sorted(res.failed) == ["perceptron", "seed"]
    assert len(res.rows) == 2
    for r in res.rows:
        assert r.result == ("failed: worker process exited with code 3: MemoryError: out of "
                            "memory"), r.result


def test_chapters_report_missing_pieces():
    ch = CHAPTERS["attention"]
    fake = type(ch)(ch.name, ch.algorithm, ch.who, ch.task, ("nn.NoSuchLayer",), ch.run)
    assert fake.missing() == ["shendu.nn.NoSuchLayer"]


def test_history_is_right():
    """Who and when, as docs/history.md has it."""
    assert CHAPTERS["perceptron"].who.startswith("Frank Rosenblatt 1958")
    assert "1986" in CHAPTERS["mlp"].who and "1989" in CHAPTERS["cnn"].who
    assert "1997" in CHAPTERS["lstm"].who and "Elman 1990" in CHAPTERS["lstm"].who
    assert "Bahdanau" in CHAPTERS["attention"].who and "2014" in CHAPTERS["attention"].who
    assert "2017" in CHAPTERS["transformer"].who


def test_mirrored_fraction():
    from shendu.tour import mirrored_fraction

    L = 5
    assert mirrored_fraction([np.eye(L)[::-1]]) == 1.0
    assert mirrored_fraction([np.eye(L)]) == 1 / L    # only the middle step is mirrored


def test_one_thread_restores_the_kernel_threads():
    from shendu.functional import conv
    from shendu.tour import one_thread

    before = conv._N_THREADS
    with one_thread():
        assert conv._N_THREADS == 1
    assert conv._N_THREADS == before


def test_format_table_wraps():
    t = format_table([("a" * 70, "b", "c", "d", "e", "1.0")], max_width=30)
    lines = t.splitlines()
    assert len(lines) == 5 and all(len(ln) < 120 for ln in lines)
