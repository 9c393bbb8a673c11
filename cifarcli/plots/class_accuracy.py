"""Per-class accuracy as horizontal bars, the weakest class on top, the overall accuracy marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure

BAR_HEIGHT_IN = 0.22  # one class's row; 100 classes make a 22-inch tall, still legible figure


def accuracy_order(accuracies: np.ndarray) -> np.ndarray:
    """Class indices from the lowest accuracy to the highest; ties keep the class order."""
    return np.argsort(np.asarray(accuracies, dtype=np.float64), kind="stable")


def plot_class_accuracy(accuracies: np.ndarray, class_names: list[str], path: Path, title: str, overall: float) -> Path:
    """One bar per class (accuracy = recall, in %), lowest first, with `overall` (a share) as a dashed line."""
    accuracies = np.asarray(accuracies, dtype=np.float64)
    order = accuracy_order(accuracies)
    n = len(class_names)
    fig, ax = new_figure(7.5, max(2.5, BAR_HEIGHT_IN * n + 1.2))
    shown = 100.0 * accuracies[order]
    ax.barh(np.arange(n), shown, color="tab:blue", height=0.7)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels([escape.plot(class_names[i]) for i in order], fontsize=9 if n <= 20 else 7)
    ax.set_ylim(n - 0.5, -0.5)  # the lowest accuracy on top, no empty rows at the ends
    for row, value in enumerate(shown):
        ax.text(min(value, 100.0) + 1.0, row, f"{value:.1f}", va="center", fontsize=8 if n <= 20 else 6)
    ax.axvline(100.0 * overall, color="tab:red", linestyle="--", linewidth=1.2)
    ax.set_xlim(0.0, 108.0)  # room for the value written after a 100% bar
    ax.set_xlabel(f"accuracy (%) = recall of the class; dashed line: overall {100.0 * overall:.1f}%")
    ax.set_title(escape.plot(title))
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
