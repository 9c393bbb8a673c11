"""The confusion-matrix figure, readable at 10, 20 and 100 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure

ANNOTATE_MAX_CLASSES = 20  # up to this many classes every cell shows its share as text


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the share of a true class given each prediction)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def _layout(n: int) -> tuple[float, float]:
    """(figure side in inches, tick-label font size in points) that keep n class names legible."""
    if n <= ANNOTATE_MAX_CLASSES:
        return 6.5 + 0.25 * max(n - 10, 0), 9.0
    return max(16.0, 0.19 * n), 7.0  # about 14 pt of row height per class at 100 classes


def _group_spans(groups: Sequence[str]) -> list[tuple[str, int, int]]:
    """Runs of equal consecutive group names as (name, first index, last index)."""
    spans: list[tuple[str, int, int]] = []
    for i, name in enumerate(groups):
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], i)
        else:
            spans.append((name, i, i))
    return spans


def _draw_groups(ax, groups: Sequence[str], n: int, font: float) -> None:
    """Lines between consecutive groups and the group names along the top edge."""
    spans = _group_spans(groups)
    for _, first, _ in spans[1:]:
        ax.axhline(first - 0.5, color="0.55", linewidth=0.6)
        ax.axvline(first - 0.5, color="0.55", linewidth=0.6)
    top = ax.secondary_xaxis("top")
    top.set_xticks([(first + last) / 2 for _, first, last in spans])
    top.set_xticklabels([escape.plot(name) for name, _, _ in spans], rotation=90, fontsize=font)
    top.tick_params(length=0)
    ax.set_xlim(-0.5, n - 0.5)


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: list[str],
    path: Path,
    title: str = "Confusion matrix (row-normalised)",
    order: Optional[np.ndarray] = None,
    groups: Optional[Sequence[str]] = None,
) -> Path:
    """Draw the row-normalised matrix; `order` permutes classes (e.g. grouped by superclass).

    `groups` names each class's group (e.g. its superclass), in the order of `class_names`;
    with it, lines separate groups that sit next to each other after `order`, and the group
    names label the top edge.
    """
    n = len(class_names)
    if order is not None:
        matrix = np.asarray(matrix)[np.ix_(order, order)]
        class_names = [class_names[i] for i in order]
        groups = [groups[i] for i in order] if groups is not None else None
    shares = normalise_rows(matrix)
    side, font = _layout(n)
    fig, ax = new_figure(side + 1.5, side + (1.5 if groups is not None else 0.0))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, shrink=0.6 if n > ANNOTATE_MAX_CLASSES else 1.0)
    cbar.set_label("share of the true class")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    labels = [escape.plot(name) for name in class_names]
    ax.set_xticklabels(labels, rotation=90, fontsize=font)
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(escape.plot(title), fontsize=14 if n > ANNOTATE_MAX_CLASSES else 12)
    if groups is not None:
        _draw_groups(ax, groups, n, font + 1)
    if n <= ANNOTATE_MAX_CLASSES:
        smallest = 0.005 if n <= 10 else 0.01  # more classes: leave sub-1% cells blank, less clutter
        for i in range(n):
            for j in range(n):
                if shares[i, j] >= smallest:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7 if n > 10 else 8, color=colour)
    return save_figure(fig, path)
