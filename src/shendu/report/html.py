"""One self-contained HTML page: a table and the pictures, embedded.

Every picture is read from its PNG file and inlined as a ``data:image/png;base64,...`` URI;
the style sheet is inline; there is no script, font or link to fetch. The page therefore opens
the same with or without a network, and moving it moves everything.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Picture", "render_html", "write_html"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; margin: 1em 0 2em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f4; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1em 1.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.88em; color: #444; max-width: 640px; }
ul.notes { font-size: 0.9em; color: #444; }
"""


class Picture(NamedTuple):
    """A PNG file to embed, with a short title and an explanatory caption."""

    title: str
    path: str
    caption: str = ""


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"report: {path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def render_html(title: str, header: Sequence[str], rows: Sequence[Sequence[object]],
                pictures: Sequence[Picture] = (), subtitle: str = "",
                notes: Sequence[str] = (), numeric_columns: Sequence[int] = ()) -> str:
    """The page as a string: ``title``, the table ``header`` + ``rows``, then each picture
    (read from disk and inlined) with its caption, then ``notes`` as a list."""
    e = html.escape
    width = len(header)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{e(title)}</h1>"]
    if subtitle:
        out.append(f'<p class="sub">{e(subtitle)}</p>')
    out.append('<table id="results">')
    out.append("<thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header)
               + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        if len(row) != width:
            raise ValueError(f"report: a row has {len(row)} cells, the header has {width}")
        cells = []
        for i, c in enumerate(row):
            cls = ' class="num"' if i in numeric_columns else ""
            cells.append(f"<td{cls}>{e(str(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if pictures:
        out.append("<h2>Pictures</h2>")
        for i, pic in enumerate(pictures):
            out.append(f'<figure id="fig{i}">')
            out.append(f'<img src="{_data_uri(pic.path)}" alt="{e(pic.title)}">')
            cap = f"<b>{e(pic.title)}.</b> {e(pic.caption)}" if pic.caption else e(pic.title)
            out.append(f"<figcaption>{cap}</figcaption></figure>")
    if notes:
        out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_html(path, title: str, header: Sequence[str], rows: Sequence[Sequence[object]],
               pictures: Sequence[Picture] = (), subtitle: str = "",
               notes: Sequence[str] = (), numeric_columns: Sequence[int] = ()) -> str:
    """Render the page (see :func:`render_html`) and write it to ``path``; returns the path."""
    path = os.fspath(path)
    page = render_html(title, header, rows, pictures, subtitle, notes, numeric_columns)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
