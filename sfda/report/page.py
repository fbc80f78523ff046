"""The report's HTML: one self-contained file (inline style, images embedded as data URIs, a content
security policy that forbids any network or script), so it opens from disk anywhere."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { font-size: 1.0em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: .5em 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #666; font-size: .9em; }
details { margin: .5em 0 1em; }
"""
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
GENERATOR = '<meta name="generator" content="sfda report">'  # marks a page this module wrote


@dataclass
class Section:
    """A titled part of the report: HTML snippets and PNG paths, shown in order."""

    title: str
    parts: list[str | Path] = field(default_factory=list)


def escape(value) -> str:
    return html.escape(str(value))


def number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return escape(value)


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; numbers right-aligned with 4 decimals."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{number(v)}</td>' if isinstance(v, int | float) else f"<td>{escape(v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def collapsed(summary: str, text: str) -> str:
    return f"<details><summary>{escape(summary)}</summary><pre>{escape(text)}</pre></details>"


def embedded(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(Path(path).stem)}">'


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page ``sfda report`` wrote (which a new report may replace)."""
    with open(path, "rb") as handle:
        return GENERATOR.encode() in handle.read(4096)


def render(title: str, sections: list[Section]) -> str:
    """The whole page."""
    body = []
    for section in sections:
        body.append(f"<h2>{escape(section.title)}</h2>")
        body += [embedded(part) if isinstance(part, Path) else part for part in section.parts]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">{GENERATOR}'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )
