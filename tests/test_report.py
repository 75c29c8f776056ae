"""shendu.report: the pictures and the self-contained report.html; the page rendered in
headless Chromium (skipped, with the reason shown, where no browser is installed)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shendu.report import Picture, plots, render_html, write_html

needs_mpl = pytest.mark.skipif(not plots.have_matplotlib(),
                               reason="matplotlib is not installed (pip install 'shendu[plot]')")


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@pytest.mark.slow
@needs_mpl
def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        plots.learning_curves(tmp_path / "c.png", [("a", "loss", {"x": [3, 2, 1]}),
                                                   ("b", "mse", {"r": [1, 1], "l": [1, .1]})]),
        plots.confusion_matrix(tmp_path / "m.png", rng.integers(0, 9, (4, 4))),
        plots.conv_filters(tmp_path / "f.png", rng.standard_normal((6, 2, 3, 3))),
        plots.gradient_norms(tmp_path / "g.png", {"RNN": 10.0 ** -np.arange(10.0),
                                                  "LSTM": np.ones(10)}),
        plots.attention_heatmap(tmp_path / "a.png", rng.dirichlet(np.ones(5), 5)),
    ]
    for p in paths:
        w, h = _png_size(p)
        assert w > 100 and h > 100


@needs_mpl
def test_plots_reject_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"confusion_matrix: expected a square"):
        plots.confusion_matrix(tmp_path / "m.png", np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"conv_filters: expected a weight of shape"):
        plots.conv_filters(tmp_path / "f.png", np.zeros((2, 3)))


@pytest.mark.slow
def test_matplotlib_not_imported_by_shendu():
    code = "import sys, shendu, shendu.report, shendu.cli; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_html_escapes_and_checks_rows(tmp_path):
    page = render_html("t <b>", ["a", "b"], [["<script>", "1 & 2"]])
    assert "<script>" not in page and "&lt;script&gt;" in page and "1 &amp; 2" in page
    assert "http" not in page  # nothing to fetch
    with pytest.raises(ValueError, match="a row has 1 cells, the header has 2"):
        render_html("t", ["a", "b"], [["x"]])


def test_html_embeds_pictures(tmp_path):
    png = tmp_path / "p.png"
    # the smallest valid PNG: 1x1 transparent
    png.write_bytes(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
        "rkJggg=="))
    path = write_html(tmp_path / "r.html", "t", ["a"], [["1"]], [Picture("pic", str(png), "c")])
    page = open(path, encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 1
    assert not re.search(r'src="(?!data:)', page)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="is not a PNG"):
        render_html("t", ["a"], [["1"]], [Picture("x", str(bad))])


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def tour_report(tmp_path_factory):
    """A real report: the tour's quick perceptron, MLP and transformer chapters."""
    out = tmp_path_factory.mktemp("tour")
    from shendu.tour import run_tour

    res = None
    for only in ("perceptron", "mlp"):
        res = run_tour(quick=True, only=only, out=out / only, stream=io.StringIO())
    return res


@pytest.mark.slow
@needs_mpl
def test_report_renders_in_headless_chromium(tour_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found: install Debian's `chromium` package to run this check")
    report = tour_report.report
    assert tour_report.pictures, "the tour wrote no pictures"
    # 1. the DOM after layout: every image decoded with a real size, the table filled
    js = ("<script>window.onload=function(){var r=[];"
          "document.querySelectorAll('img').forEach(function(i){"
          "r.push(i.complete&&i.naturalWidth>0&&i.getBoundingClientRect().width>0?1:0)});"
          "document.title='IMAGES:'+r.join(',')+';ROWS:'+"
          "document.querySelectorAll('#results tbody tr').length;}</script>")
    page = open(report, encoding="utf-8").read().replace("</body>", js + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page, encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>IMAGES:([\d,]*);ROWS:(\d+)</title>", dom.stdout)
    assert m, f"Chromium did not run the check: {dom.stderr[-500:]}"
    flags_ok = [int(v) for v in m.group(1).split(",") if v]
    assert len(flags_ok) == len(tour_report.pictures) and all(flags_ok), m.group(0)
    assert int(m.group(2)) == len(tour_report.rows)
    # 2. a screenshot: not blank, and the pictures' colours are in it
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1200,2400", "--hide-scrollbars",
                    f"--screenshot={shot}", f"file://{report}"], capture_output=True,
                   timeout=120)
    assert shot.exists(), "Chromium wrote no screenshot"
    from matplotlib.image import imread

    img = imread(str(shot))[..., :3]
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    assert img.std() > 0.05, "the screenshot is blank"
    # the confusion matrix's blues: strongly blue pixels exist only if pictures rendered
    blue = (img[..., 2] > 0.5) & (img[..., 0] < 0.3)
    assert blue.sum() > 500, "no picture is visible in the screenshot"
