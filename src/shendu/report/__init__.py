"""Reports (``shendu.report``): the pictures of a run and one self-contained HTML page.

``shendu.report.plots`` draws learning curves, a confusion matrix, convolution filters, the
gradient-norm-over-time picture of backpropagation through time and attention heatmaps as PNG
files. It needs matplotlib (the ``plot`` extra: ``pip install 'shendu[plot]'``), which is
imported only when a picture is drawn, never at ``import shendu``.

``shendu.report.html`` writes ``report.html``: a table and the pictures embedded as base64 data
URIs, with inline CSS and no script or link to fetch, so the page opens offline and can be mailed
as one file. Without matplotlib it still writes the table.
"""

from __future__ import annotations

from shendu.report.html import Picture, render_html, write_html
from shendu.report.plots import MATPLOTLIB_HINT, have_matplotlib

__all__ = ["Picture", "render_html", "write_html", "have_matplotlib", "MATPLOTLIB_HINT"]
