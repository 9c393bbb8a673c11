"""Text that did not come from the code itself, made safe for the medium it is shown in.

Class names come from archives and caches, paths and values from the user; any of them may
hold markup, escape sequences, `$...$` or a comma. One helper per medium:

- `terminal`: control and other non-printable characters (ESC, newline, a lone surrogate)
  shown as their escapes, so text cannot restyle the terminal or move the cursor. The rich
  consoles are made with markup off (`commands.progress.make_console`), so `[...]` is shown
  as written; `rich_markup` is for the few strings rich parses as markup anyway.
- `plot`: the same for matplotlib, keeping newlines; `plots.figures` turns mathtext off, so
  `$` and `\\` are drawn as written.
- `html`: `html.escape`, quotes included; `markdown` also escapes the table separator `|`.
- CSV needs no helper: `fileio.write_csv` uses `csv.writer`.
- `clip`/`value`: a long value cut to a fixed length, for messages.
"""

from __future__ import annotations

import html as _html

MESSAGE_VALUE_CHARS = 120  # longest value a message quotes in full


def _escape_char(ch: str) -> str:
    return ch if ch.isprintable() else repr(ch)[1:-1]


def terminal(text: object) -> str:
    """`text` as one printable line: every non-printable character (newline too) as its escape."""
    return "".join(_escape_char(ch) for ch in str(text))


def plot(text: object) -> str:
    """`text` for a matplotlib label: non-printable characters escaped, newlines kept."""
    return "\n".join(terminal(line) for line in str(text).split("\n"))


def rich_markup(text: object) -> str:
    """`text` for a place where rich parses markup (e.g. a progress column): `[` escaped too."""
    from rich.markup import escape

    return escape(terminal(text))


def html(text: object) -> str:
    """`text` for an HTML page, as element content or a quoted attribute."""
    return _html.escape(str(text), quote=True)


def markdown(text: object) -> str:
    """`text` for one Markdown table cell or heading: one line, HTML and `|` escaped."""
    return html(terminal(text)).replace("|", "\\|")


def clip(text: str, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """`text`, or its first `limit` characters and how many there were in all."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def value(obj: object, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """A user's value for a message: its repr, printable and cut to `limit` characters."""
    try:
        text = repr(obj)
    except (RecursionError, ValueError):  # a huge int has no repr (sys.int_info), a deep list overflows
        text = f"<{type(obj).__name__}>"
    return clip(terminal(text), limit)
