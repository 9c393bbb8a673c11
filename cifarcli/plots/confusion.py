"""The confusion-matrix figure, readable at 10, 20 and 100 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, render_figure, save_figure

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


def support_labels(matrix: np.ndarray) -> list[str]:
    """Each true class's image count (its row total), as the counts panel labels its rows."""
    return [f"n={int(total):,}" for total in np.asarray(matrix).sum(axis=1)]


def _draw_panel(ax, values: np.ndarray, vmax: float, n: int, fmt: str, smallest: float):
    """One heat map with its cells written in (up to ANNOTATE_MAX_CLASSES classes); returns the image."""
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    if n <= ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                if values[i, j] >= smallest and values[i, j] > 0:
                    colour = "white" if values[i, j] > 0.5 * vmax else "black"
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7 if n > 10 else 8, color=colour)
    return image


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: list[str],
    path: Path,
    title: str = "Confusion matrix",
    order: Optional[np.ndarray] = None,
    groups: Optional[Sequence[str]] = None,
) -> Path:
    """Draw the row-normalised matrix and, beside it, the counts with each row's support.

    `order` permutes classes (e.g. grouped by superclass). `groups` names each class's group
    (e.g. its superclass), in the order of `class_names`; with it, lines separate groups that
    sit next to each other after `order`, and the group names label the top edge.
    """
    n = len(class_names)
    if order is not None:
        matrix = np.asarray(matrix)[np.ix_(order, order)]
        class_names = [class_names[i] for i in order]
        groups = [groups[i] for i in order] if groups is not None else None
    counts = np.asarray(matrix, dtype=np.int64)
    shares = normalise_rows(counts)
    side, font = _layout(n)
    fig, (share_ax, count_ax) = new_figure(2 * side + 3.0, side + (1.5 if groups is not None else 0.0), cols=2)
    smallest = 0.005 if n <= 10 else 0.01  # more classes: leave sub-1% cells blank, less clutter
    image = _draw_panel(share_ax, shares, 1.0, n, ".2f", smallest)
    shrink = 0.6 if n > ANNOTATE_MAX_CLASSES else 0.8
    fig.colorbar(image, ax=share_ax, fraction=0.046, pad=0.02, shrink=shrink).set_label("share of the true class")
    image = _draw_panel(count_ax, counts, max(1.0, float(counts.max(initial=0))), n, "d", 1)
    fig.colorbar(image, ax=count_ax, fraction=0.046, pad=0.08, shrink=shrink).set_label("images")
    labels = [escape.plot(name) for name in class_names]
    for ax, heading in ((share_ax, "row-normalised"), (count_ax, "counts")):
        ax.set_xticklabels(labels, rotation=90, fontsize=font)
        ax.set_yticklabels(labels, fontsize=font)
        ax.set_ylabel("true class")
        ax.set_title(heading, fontsize=font + 2)
        if groups is not None:
            _draw_groups(ax, groups, n, font + 1)
    support = count_ax.secondary_yaxis("right")  # the support of each true class, beside its row
    support.set_yticks(range(n))
    support.set_yticklabels(support_labels(counts), fontsize=font)
    support.tick_params(length=0)
    fig.suptitle(escape.plot(title), fontsize=14 if n > ANNOTATE_MAX_CLASSES else 12)
    return save_figure(fig, path)


def confusion_image(matrix: np.ndarray, class_names: list[str], title: str) -> np.ndarray:
    """A compact class-labelled image (H x W x 3 uint8) of the row-normalised matrix, for TensorBoard.

    One panel, the counts written in up to ANNOTATE_MAX_CLASSES classes: cheap enough to draw
    after every epoch.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    side, font = _layout(n)
    fig, ax = new_figure(side, side)
    ax.imshow(normalise_rows(counts), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    labels = [escape.plot(name) for name in class_names]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), [f"{label} (n={int(total)})" for label, total in zip(labels, counts.sum(axis=1))], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (images)")
    ax.set_title(escape.plot(title) + "\ncolour: share of the row; numbers: images", fontsize=font + 1)
    if n <= ANNOTATE_MAX_CLASSES:
        shares = normalise_rows(counts)
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color="white" if shares[i, j] > 0.5 else "black")
    return render_figure(fig)
