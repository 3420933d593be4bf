"""A self-contained HTML page of figures (PNG embedded as data URIs), plus PNG and SVG files."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

from matplotlib.figure import Figure


@final
@dataclass(frozen=True)
class Panel:
    """One figure of a report, with the file name it is saved under and its caption."""

    name: str
    caption: str
    figure: Figure


def write_report(panels: Sequence[Panel], title: str, summary: str, out: str | Path) -> Path:
    """Write ``out/report.html`` and every figure as ``out/figures/NAME.png`` and ``.svg``.

    The HTML page embeds the PNGs, so it can be mailed or opened anywhere on its own.

    Returns:
        The path of the HTML page.
    """
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    sections = []
    for panel in panels:
        png = io.BytesIO()
        panel.figure.savefig(png, format="png", dpi=110)
        (figures / f"{panel.name}.png").write_bytes(png.getvalue())
        panel.figure.savefig(figures / f"{panel.name}.svg", format="svg")
        data = base64.b64encode(png.getvalue()).decode("ascii")
        caption = html.escape(panel.caption)
        sections.append(
            f'<figure id="{html.escape(panel.name)}">\n'
            f'<img src="data:image/png;base64,{data}" alt="{caption}">\n'
            f"<figcaption>{caption}</figcaption>\n</figure>"
        )
    page = out / "report.html"
    temporary = page.with_suffix(".html.tmp")  # never a half-written page
    temporary.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "img{max-width:100%}figure{margin:2em 0}figcaption{color:#333}pre{background:#f4f4f4;"
        "padding:1em;overflow-x:auto}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<pre>{html.escape(summary)}</pre>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n",
        encoding="utf-8",
    )
    temporary.replace(page)
    return page
