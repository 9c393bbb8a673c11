"""The report page: one self-contained HTML file (figures embedded as data URIs, no server, no network).

Every string that comes from a file (class names, the config, captions) goes through
`escape.html`; the page references nothing outside itself.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from cifarcli import escape
from cifarcli.fileio import write_text_atomic

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f5f5f5; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.facts { color: #555; } .scroll { max-height: 32em; overflow-y: auto; display: inline-block; }
.lead { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; } .lead > div { flex: 1 1 24em; }
details > summary { cursor: pointer; font-size: 1.3em; font-weight: bold; margin-top: 1.2em; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG file on disk and what it shows."""

    heading: str
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A table of display strings; columns named in `numeric` are right-aligned."""

    heading: str
    header: list[str]
    rows: list[list[str]]
    numeric: frozenset[str] = frozenset()
    note: str = ""


@dataclass(frozen=True)
class ReportPage:
    """Everything the page shows, in order: facts, headline metrics, lead, figures, tables, config.

    `lead` holds what belongs next to the headline (e.g. the per-class table and its bars),
    drawn side by side where the window is wide enough; the config is folded away (`<details>`).
    """

    title: str
    facts: list[tuple[str, str]]
    headline: list[tuple[str, str]]
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    config_yaml: str = ""
    lead: list[Figure | Table] = field(default_factory=list)


def png_data_uri(path: Path) -> str:
    """The PNG at `path` as a `data:image/png;base64,...` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


_e = escape.html


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{_e(name)}</th>" for name in table.header)
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="number">{_e(v)}</td>' if name in table.numeric else f"<td>{_e(v)}</td>" for name, v in zip(table.header, row)
        )
        body.append(f"<tr>{cells}</tr>")
    note = f"<p>{_e(table.note)}</p>" if table.note else ""
    return (f"<h2>{_e(table.heading)}</h2>{note}<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")  # fmt: skip


def _figure_html(figure: Figure) -> str:
    caption = f"<figcaption>{_e(figure.caption)}</figcaption>" if figure.caption else ""
    return (f"<h2>{_e(figure.heading)}</h2><figure><img src=\"{png_data_uri(figure.path)}\" "
            f"alt=\"{_e(figure.heading)}\">{caption}</figure>")  # fmt: skip


def _lead_html(items: list[Figure | Table]) -> str:
    if not items:
        return ""
    cells = "".join(f"<div>{_table_html(item) if isinstance(item, Table) else _figure_html(item)}</div>" for item in items)
    return f'<div class="lead">{cells}</div>'


def render_report_html(page: ReportPage) -> str:
    """The whole page as one HTML string."""
    facts = " &middot; ".join(f"{_e(name)}: <b>{_e(value)}</b>" for name, value in page.facts)
    headline = Table("Headline", ["metric", "value"], [list(item) for item in page.headline], frozenset({"value"}))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(page.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(page.title)}</h1><p class=\"facts\">{facts}</p>",
        _table_html(headline),
        _lead_html(page.lead),
        *(_figure_html(figure) for figure in page.figures),
        *(_table_html(table) for table in page.tables),
        f"<details><summary>Config</summary><pre>{_e(page.config_yaml)}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report_html(page: ReportPage, path: Path) -> Path:
    """Write the page to `path` atomically and return the path."""
    write_text_atomic(path, render_report_html(page))
    return path
