"""Image grids: captioned pictures (e.g. the most confidently wrong ones) and augmentation rows.

Images are N x H x W x 3 arrays, uint8 or floats in [0, 1]; each 32 x 32 picture is drawn
about 1.5 inches wide with nearest-neighbour upscaling, so what is shown is what the model saw.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure

IMAGE_SIDE_IN = 1.5  # drawn width of one picture, inches
INTERPOLATION = "nearest"


def _as_displayable(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else np.clip(image.astype(np.float64), 0.0, 1.0)


def _suptitle(fig, title: str, width_in: float, fontsize: float = 12.0) -> None:
    """A figure title wrapped to the figure's width (about 0.55 em per character)."""
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in escape.plot(title).splitlines()), fontsize=fontsize)


def _hide_frame(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_image_grid(images: np.ndarray, captions: Sequence[str], path: Path, title: str, columns: int = 5) -> Path:
    """Pictures in rows of `columns`, each with its caption above; an empty set draws a note instead."""
    count = len(images)
    if len(captions) != count:
        raise ValueError(f"plot_image_grid: {count} images but {len(captions)} captions")
    if count == 0:
        fig, ax = new_figure(6.0, 2.0)
        ax.text(0.5, 0.5, "nothing to show: no image matched", ha="center", va="center", fontsize=12)
        _hide_frame(ax)
        _suptitle(fig, title, 6.0)
        return save_figure(fig, path)
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    lines = max(caption.count("\n") + 1 for caption in captions)
    caption_in = 0.18 * lines + 0.1
    width_in = max(columns * (IMAGE_SIDE_IN + 0.35), 5.0)
    fig, axes = new_figure(width_in, rows * (IMAGE_SIDE_IN + caption_in) + 0.8, rows=rows, cols=columns)
    flat = np.atleast_1d(axes).ravel()
    for ax, image, caption in zip(flat, images, captions):
        ax.imshow(_as_displayable(image), interpolation=INTERPOLATION)
        ax.set_title(escape.plot(caption), fontsize=9)
    for ax in flat:
        _hide_frame(ax)
    _suptitle(fig, title, width_in)
    return save_figure(fig, path)


def plot_augmentation_rows(
    originals: Sequence[np.ndarray], augmented: Sequence[np.ndarray], row_labels: Sequence[str], path: Path, title: str
) -> Path:
    """One row per label: each original picture followed by its augmented copy.

    `originals[i]` and `augmented[i]` hold the pictures of row i (same count, possibly 0).
    """
    if not (len(originals) == len(augmented) == len(row_labels)) or not row_labels:
        raise ValueError("plot_augmentation_rows: need one originals and one augmented array per row label")
    per_row = max(max(len(row) for row in originals), 1)
    columns = 2 * per_row
    side = IMAGE_SIDE_IN * 0.8
    width_in = max(columns * side + 1.4, 4.5)
    fig, axes = new_figure(width_in, len(row_labels) * (side + 0.25) + 0.9, rows=len(row_labels), cols=columns)
    grid = np.asarray(axes, dtype=object).reshape(len(row_labels), columns)
    for r, (label, row_originals, row_augmented) in enumerate(zip(row_labels, originals, augmented)):
        for k in range(len(row_originals)):
            for offset, image, kind in ((0, row_originals[k], "original"), (1, row_augmented[k], "augmented")):
                ax = grid[r, 2 * k + offset]
                ax.imshow(_as_displayable(image), interpolation=INTERPOLATION)
                if r == 0:
                    ax.set_title(kind, fontsize=9)
        grid[r, 0].set_ylabel(escape.plot(label), rotation=0, ha="right", va="center", fontsize=10)
    for ax in grid.ravel():
        _hide_frame(ax)
    _suptitle(fig, title, width_in)
    return save_figure(fig, path)
