"""`cifar runs`: the run folders under a root, newest first, with what each one trained and how it ended."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from cifarcli import escape, fileio, runs
from cifarcli.errors import CifarError, UsageError

UNKNOWN = "?"  # a fact whose file is missing or damaged: the listing still shows the run


@dataclass(frozen=True)
class RunRow:
    """One line of `cifar runs`, every cell already text."""

    name: str
    date: str
    model: str
    dataset: str
    epochs: str  # done / planned
    best_val: str
    test: str
    status: str


def runs_list(
    runs_dir: Annotated[Optional[Path], typer.Option("--runs-dir", metavar="DIR", help="The folder holding the run folders (default: run.root's default, runs/).", show_default=False)] = None,
) -> None:
    """List the run folders, newest first: model, data set, epochs, best val and test accuracy, status.

    Example: cifar runs --runs-dir runs
    """
    from rich.console import Console
    from rich.table import Table

    root = runs_dir if runs_dir is not None else runs.default_root()
    if not root.is_dir():
        raise UsageError(f"no such folder: {root}", hint="pass the folder your runs are in with --runs-dir (run.root of their config)")
    found = runs.list_run_dirs(root)
    if not found:
        typer.echo(f"no run folders under {escape.terminal(root)} (train one with `cifar train`)")
        return
    table = Table(title=escape.terminal(f"runs in {root}, newest first"), title_justify="left")
    for column in ("run", "date", "model", "data set", "epochs", "best val", "test", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "best val", "test") else "left", overflow="fold")
    for run_dir in found:
        row = describe_run(run_dir)
        table.add_row(*(escape.terminal(cell) for cell in (row.name, row.date, row.model, row.dataset, row.epochs,
                                                             row.best_val, row.test, row.status)))  # fmt: skip
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:  # piped: one line per run, however long, for grep and awk
        console = Console(highlight=False, markup=False, width=1000)
    console.print(table)


def describe_run(run_dir: Path) -> RunRow:
    """The facts of one run folder, read from its config.yaml, run_info.json, metrics.csv and evaluation."""
    from cifarcli.config import load_saved_config

    try:
        cfg = load_saved_config(run_dir / runs.CONFIG_FILE)
    except (CifarError, OSError):
        cfg = None
    info = _read_json(run_dir / runs.RUN_INFO_FILE)
    done, best_val = _epochs_and_best_val(run_dir / runs.METRICS_FILE)
    planned = cfg.train.epochs if cfg is not None else None
    scored = runs.training_evaluation(run_dir, cfg.eval.tta_flip, cfg.eval.tta_shift) if cfg is not None else None
    top1 = _read_json(scored).get("top1") if scored is not None else None
    return RunRow(
        name=run_dir.name,
        date=_date_of(run_dir),
        model=cfg.model.name if cfg is not None else UNKNOWN,
        dataset=str(info.get("dataset", cfg.data.dataset if cfg is not None else UNKNOWN)),
        epochs=f"{done} / {planned if planned is not None else UNKNOWN}",
        best_val=_percent(best_val),
        test=_percent(top1),
        status=runs.run_status(run_dir, done, planned if planned is not None else math.inf),
    )


def _read_json(path: Path) -> dict:
    try:
        value = fileio.read_json(path)
    except (CifarError, OSError):
        return {}
    return value if isinstance(value, dict) else {}


def _epochs_and_best_val(path: Path) -> tuple[int, Optional[float]]:
    """Epochs finished (rows of metrics.csv) and the best validation accuracy among them."""
    try:
        rows = fileio.read_csv(path)
    except (CifarError, OSError, ValueError):
        return 0, None
    values = []
    for row in rows:
        try:
            values.append(float(row.get("val_accuracy") or "nan"))
        except ValueError:
            continue
    finite = [v for v in values if math.isfinite(v)]
    return len(rows), max(finite) if finite else None


def _percent(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.2%}"
    return "-"


def _date_of(run_dir: Path) -> str:
    """When the run started: from its name (<date>-<time>-...), else the folder's change time."""
    try:
        started = datetime.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S")
    except ValueError:
        started = datetime.fromtimestamp(run_dir.stat().st_mtime)
    return started.strftime("%Y-%m-%d %H:%M")
