"""Several runs on one set of axes: learning curves, validation curves, LR schedules.

Arrays in, PNG path out. Each run keeps one colour across every panel of a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from cifarcli.plots.figures import new_figure, save_figure

MAX_LEGEND_ENTRIES = 20  # beyond this a legend hides the plot; the page's table names the runs


def literal(text: object) -> str:
    """Text shown as is by matplotlib: a `$` would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


@dataclass(frozen=True)
class Series:
    """One run's line: x and y values, its label, and whether to draw it dashed (e.g. a pruned trial)."""

    label: str
    x: np.ndarray
    y: np.ndarray
    dashed: bool = False


def colour(index: int, count: int) -> object:
    """Distinct colours: tab10 for up to 10 lines, tab20 up to 20, then a continuous map."""
    import matplotlib

    if count <= 10:
        return matplotlib.colormaps["tab10"](index % 10)
    if count <= 20:
        return matplotlib.colormaps["tab20"](index % 20)
    return matplotlib.colormaps["viridis"](index / max(count - 1, 1))


def _finish(ax, count: int, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(literal(title), fontsize=10)
    ax.grid(alpha=0.3)
    if 0 < count <= MAX_LEGEND_ENTRIES:
        ax.legend(fontsize=7, loc="best")


def plot_overlaid(series: Sequence[Series], path: Path, title: str, xlabel: str, ylabel: str, percent: bool = False) -> Path:
    """One line per series; `percent` shows values in [0, 1] as 0-100 %."""
    fig, ax = new_figure(9.0, 5.0)
    drawn = 0
    for i, line in enumerate(series):
        y = 100.0 * np.asarray(line.y, dtype=np.float64) if percent else np.asarray(line.y, dtype=np.float64)
        if not np.isfinite(y).any():
            continue
        marker = "o" if len(y) <= 30 else None
        ax.plot(line.x, y, "--" if line.dashed else "-", marker=marker, markersize=3, color=colour(i, len(series)),
                label=literal(line.label))  # fmt: skip
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "nothing to show yet", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=xlabel == "epoch"))
    _finish(ax, drawn, xlabel, ylabel, title)
    return save_figure(fig, path)


# (metrics.csv column, panel title, y label); accuracy panels are drawn in %.
_PANELS = (("train_loss", "Training loss", "loss"), ("val_loss", "Validation loss", "loss"),
           ("train_accuracy", "Training accuracy", "accuracy (%)"), ("val_accuracy", "Validation accuracy", "accuracy (%)"))  # fmt: skip


def plot_run_curves(runs: Sequence[tuple[str, Mapping[str, np.ndarray]]], path: Path, title: str) -> Path:
    """Four panels (train/val loss, train/val accuracy per epoch), one colour per run; `runs` pairs a label with
    its metrics.csv columns."""
    fig, axes = new_figure(12.0, 8.0, rows=2, cols=2)
    for ax, (column, heading, ylabel) in zip(np.asarray(axes).ravel(), _PANELS):
        drawn = 0
        for i, (label, metrics) in enumerate(runs):
            values = metrics.get(column)
            if values is None or not np.isfinite(values).any():
                continue
            y = 100.0 * np.asarray(values) if column.endswith("accuracy") else np.asarray(values)
            ax.plot(metrics["epoch"], y, marker="o" if len(y) <= 30 else None, markersize=3,
                    color=colour(i, len(runs)), label=literal(label))  # fmt: skip
            drawn += 1
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _finish(ax, drawn if column == "train_loss" else 0, "epoch", ylabel, heading)  # one legend is enough
    fig.suptitle(literal(title))
    return save_figure(fig, path)
