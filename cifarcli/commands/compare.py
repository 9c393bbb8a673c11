"""`cifar compare`: several runs (or every trial of a sweep) side by side: curves, LR schedules, metrics, config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifarcli import runs


def compare(
    targets: Annotated[list[Path], typer.Argument(help="Run folders, or sweep folders (every trial in them).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the figures and page (default: runs/compare-<date>-<time>/).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the files written.")] = False,
) -> None:
    """Compare runs: overlaid learning curves and LR schedules, headline metrics, the config keys that differ.

    Example: cifar compare runs/20261121-093000-resnet9-cifar10 runs/20261122-101500-resnet9-cifar10
    """
    from rich.console import Console
    from rich.text import Text

    from cifarcli.commands.comparison import TERMINAL_COLUMNS, difference_cells, headline_cells, load_runs, write_comparison
    from cifarcli.commands.progress import titled_table
    from cifarcli.config import RunConfig

    compared = load_runs(targets)
    out_dir = out if out is not None else runs.create_unique_dir(RunConfig().root, f"compare-{runs.timestamp()}")
    written = write_comparison(compared, out_dir)
    if not quiet:
        stdout = Console(highlight=False)
        diff_header, diff_rows = difference_cells(compared)
        headline = headline_cells(compared, list(TERMINAL_COLUMNS))
        for title, header, rows in (("headline metrics", list(TERMINAL_COLUMNS.values()), headline),
                                    ("config keys that differ", diff_header, diff_rows or [["(none)"] + [""] * len(compared)])):  # fmt: skip
            table = titled_table(title)
            for column in header:
                table.add_column(column, overflow="fold")
            for row in rows:
                table.add_row(*(Text(cell) for cell in row))  # run names and values are shown, never read as markup
            stdout.print(table)
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"comparison folder: {out_dir} (open index.html in a browser)")
