"""A sweep's figures: a heatmap over two grid axes, and a bar per trial (one axis, variants, a search).

Arrays and labels in, PNG path out. Accuracies come in [0, 1] and are drawn in %.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cifarcli.plots.figures import new_figure, save_figure
from cifarcli.plots.overlays import literal

MISSING_COLOUR = "#dddddd"  # cells without a finished trial


def plot_heatmap(
    cells: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], row_name: str, col_name: str,
    path: Path, title: str,
) -> Path:  # fmt: skip
    """`cells` (rows x cols, accuracies or NaN) as colours, each cell written in %; NaN cells grey, marked "-"."""
    cells = np.asarray(cells, dtype=np.float64)
    rows, cols = cells.shape
    fig, ax = new_figure(max(4.5, 1.1 * cols + 2.8), max(3.2, 0.7 * rows + 2.0))
    percent = 100.0 * cells
    finite = percent[np.isfinite(percent)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    ax.set_facecolor(MISSING_COLOUR)
    picture = ax.imshow(np.ma.masked_invalid(percent), cmap="viridis", vmin=low, vmax=high, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            value = percent[i, j]
            text = f"{value:.1f}" if math.isfinite(value) else "-"
            bright = math.isfinite(value) and (value - low) / (high - low) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if bright or not math.isfinite(value) else "white")
    ax.set_xticks(range(cols), [literal(v) for v in col_labels], rotation=30 if cols > 4 else 0)
    ax.set_yticks(range(rows), [literal(v) for v in row_labels])
    ax.set_xlabel(literal(col_name))
    ax.set_ylabel(literal(row_name))
    ax.set_title(literal(title), fontsize=10)
    fig.colorbar(picture, ax=ax, label="best validation accuracy (%)")
    return save_figure(fig, path)


def plot_trial_bars(
    labels: Sequence[str], best_val: Sequence[float], test: Sequence[Optional[float]], states: Sequence[str],
    path: Path, title: str,
) -> Path:  # fmt: skip
    """Per trial, its best validation accuracy and (when scored) test accuracy side by side, in %.

    A failed trial gets an empty slot marked "failed"; a pruned one is hatched.
    """
    count = len(labels)
    fig, ax = new_figure(max(5.0, 0.75 * count + 2.5), 4.8)
    x = np.arange(count)
    width = 0.38
    val = np.array([100.0 * v if v == v else 0.0 for v in best_val])
    tst = np.array([100.0 * v if v is not None and v == v else 0.0 for v in test])
    hatches = ["//" if state == "pruned" else "" for state in states]
    bars = ax.bar(x - width / 2, val, width, label="best validation", color="tab:blue")
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    ax.bar(x + width / 2, tst, width, label="test (best checkpoint)", color="tab:orange")
    for i, (state, v) in enumerate(zip(states, val)):
        note = state if state in ("failed", "pruned", "running") else f"{v:.1f}"
        ax.text(i - width / 2, v + 1.0, note, ha="center", va="bottom", fontsize=7, rotation=90 if count > 8 else 0)
    ax.set_xticks(x, [literal(label) for label in labels], rotation=30 if count > 3 else 0, ha="right" if count > 3 else "center", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0.0, 110.0)
    ax.set_title(literal(title), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)
