"""Figures that look inside a conv net: first-layer filters, feature maps, Grad-CAM overlays.

Arrays in, PNG path out. Images are the raw test pixels (N x H x W x 3 uint8), so what is
shown is what the data set holds, not the normalised tensors the model saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure

GAP_PX = 1  # blank pixels between tiles of a mosaic
MIN_GRID_COLS = 8  # mosaics are at least this wide (when there are as many tiles), else about square
GRADCAM_COLS = 8  # images per row group in gradcam.png
HEATMAP_ALPHA = 0.45  # opacity of the Grad-CAM colours over the image


@dataclass(frozen=True)
class ImageCaption:
    """What a figure says about one shown test image."""

    test_index: int
    true_name: str
    predicted_name: str
    confidence: float  # softmax probability of the predicted class, in [0, 1]

    @property
    def correct(self) -> bool:
        return self.true_name == self.predicted_name


@dataclass(frozen=True)
class Mosaic:
    """Tiles laid out row by row in one image, with blank (NaN) gaps between them."""

    image: np.ndarray  # (rows*h + gaps, cols*w + gaps) or with a trailing RGB axis
    rows: int
    cols: int
    count: int  # tiles placed; the last row may be partly empty
    tile_height_px: int
    tile_width_px: int


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, cols) for `count` tiles: about square, at least MIN_GRID_COLS wide when possible."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    cols = min(count, max(MIN_GRID_COLS, math.ceil(math.sqrt(count))))
    return math.ceil(count / cols), cols


def normalise_each(tiles: np.ndarray) -> np.ndarray:
    """Each tile (along the first axis) scaled to [0, 1] over all its values; a constant tile becomes 0."""
    tiles = np.asarray(tiles, dtype=np.float64)
    flat = tiles.reshape(len(tiles), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    scaled = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return scaled.reshape(tiles.shape).astype(np.float32)


def filter_tiles(weights: np.ndarray) -> np.ndarray:
    """Conv weights (out, in, kh, kw) as one (kh, kw, 3) tile per filter, each scaled to [0, 1].

    A 3-input-channel filter is an RGB tile (its weights for red, green, blue); other filters
    show the mean over their input channels in grey.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 4:
        raise ValueError(f"conv weights must be (out, in, kh, kw), got shape {weights.shape}")
    if weights.shape[1] == 3:
        tiles = weights.transpose(0, 2, 3, 1)
    else:
        tiles = np.repeat(weights.mean(axis=1)[..., None], 3, axis=3)
    return normalise_each(tiles)


def mosaic(tiles: np.ndarray) -> Mosaic:
    """Lay out (n, h, w) or (n, h, w, 3) tiles row by row (see `grid_shape`), NaN between them."""
    tiles = np.asarray(tiles, dtype=np.float32)
    count, height, width = tiles.shape[:3]
    rows, cols = grid_shape(count)
    shape = (rows * height + (rows - 1) * GAP_PX, cols * width + (cols - 1) * GAP_PX, *tiles.shape[3:])
    image = np.full(shape, np.nan, dtype=np.float32)
    for i, tile in enumerate(tiles):
        top, left = (i // cols) * (height + GAP_PX), (i % cols) * (width + GAP_PX)
        image[top : top + height, left : left + width] = tile
    return Mosaic(image, rows, cols, count, height, width)


def _label_grid(ax, grid: Mosaic, what: str) -> None:
    """Ticks that name the tiles: column offsets along x, the first index of each row along y."""
    ax.set_xticks([c * (grid.tile_width_px + GAP_PX) + (grid.tile_width_px - 1) / 2 for c in range(grid.cols)])
    ax.set_xticklabels([f"+{c}" for c in range(grid.cols)], fontsize=7)
    ax.set_yticks([r * (grid.tile_height_px + GAP_PX) + (grid.tile_height_px - 1) / 2 for r in range(grid.rows)])
    ax.set_yticklabels([str(r * grid.cols) for r in range(grid.rows)], fontsize=7)
    ax.set_xlabel(f"{what} index: + column offset", fontsize=8)
    ax.set_ylabel(f"first {what} of the row", fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_filters(weights: np.ndarray, path: Path, layer_name: str) -> Path:
    """One tile per filter of a conv layer's weights (out, in, kh, kw), each scaled to [0, 1]."""
    grid = mosaic(filter_tiles(weights))
    rgb = np.nan_to_num(grid.image, nan=1.0)  # white gaps
    side_in = min(9.0, max(3.5, 0.45 * grid.cols + 1.5))
    fig, ax = new_figure(side_in, side_in * grid.rows / grid.cols + 1.0)
    ax.imshow(rgb, interpolation="nearest")
    _label_grid(ax, grid, "filter")
    kh, kw = np.asarray(weights).shape[2:]
    colour = "RGB" if np.asarray(weights).shape[1] == 3 else "grey: mean over input channels"
    ax.set_title(f"{escape.plot(layer_name)}: {grid.count} filters, {kh}x{kw} ({colour})\neach filter scaled to its own [0, 1] range", fontsize=10)
    return save_figure(fig, path)


def plot_feature_maps(
    images: np.ndarray, activations: np.ndarray, captions: list[ImageCaption], path: Path, layer_name: str, max_maps: int
) -> Path:
    """Per image: the image, then its first `max_maps` channels of `activations` (N, C, h, w) as a grid."""
    count, channels = activations.shape[:2]
    shown = min(channels, max_maps)
    grids = [mosaic(normalise_each(maps[:shown])) for maps in activations]
    rows, cols = grids[0].rows, grids[0].cols
    tile_in = min(1.0, max(0.22, 6.0 / cols))  # the grid about 6 inches wide, from 1 to 512 maps
    maps_width_in, image_width_in = cols * tile_in, 2.0
    row_in = max(image_width_in, rows * tile_in) + 0.9  # + title and axis label
    fig, axes = new_figure(image_width_in + maps_width_in + 2.0, row_in * count + 0.5, rows=count, cols=2)
    axes = np.asarray(axes).reshape(count, 2)
    axes[0, 0].get_gridspec().set_width_ratios([image_width_in, maps_width_in])
    picture = None
    for (image_ax, maps_ax), image, grid, caption in zip(axes, images, grids, captions):
        image_ax.imshow(image, interpolation="nearest")
        image_ax.set_title(f"test #{caption.test_index}\ntrue: {escape.plot(caption.true_name)}", fontsize=9)
        image_ax.axis("off")
        picture = maps_ax.imshow(np.ma.masked_invalid(grid.image), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        maps_ax.set_title(f"channels 0-{shown - 1} of {channels}, {grid.tile_height_px}x{grid.tile_width_px} each", fontsize=9)
        _label_grid(maps_ax, grid, "channel")
    fig.suptitle(f"Feature maps: output of {escape.plot(layer_name)} (each map scaled to its own range)", fontsize=11)
    if picture is not None:
        fig.colorbar(picture, ax=axes[:, 1].tolist(), shrink=min(0.9, 3.0 / count), label="activation (scaled per map)")
    return save_figure(fig, path)


def plot_gradcam(images: np.ndarray, heatmaps: np.ndarray, captions: list[ImageCaption], path: Path, layer_name: str) -> Path:
    """Per image: the image (captioned with its true class) above it with the Grad-CAM heatmap overlaid
    (captioned with the predicted class and confidence: green when right, red when wrong)."""
    count = len(images)
    cols = min(count, GRADCAM_COLS)
    groups = math.ceil(count / cols)
    fig, axes = new_figure(max(1.75 * cols + 1.2, 4.6), 4.0 * groups + 0.8, rows=2 * groups, cols=cols)
    axes = np.asarray(axes).reshape(2 * groups, cols)
    overlay = None
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, heatmap, caption) in enumerate(zip(images, heatmaps, captions)):
        image_ax, cam_ax = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        image_ax.imshow(image, interpolation="nearest")
        image_ax.set_title(f"test #{caption.test_index}\ntrue: {escape.plot(caption.true_name)}", fontsize=8)
        cam_ax.imshow(image, interpolation="nearest")
        overlay = cam_ax.imshow(heatmap, cmap="jet", alpha=HEATMAP_ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
        verdict = "right" if caption.correct else "wrong"
        cam_ax.set_title(
            f"pred: {escape.plot(caption.predicted_name)}\n{caption.confidence:.0%} ({verdict})",
            fontsize=8, color="tab:green" if caption.correct else "tab:red",
        )  # fmt: skip
    fig.suptitle(f"Grad-CAM of {escape.plot(layer_name)} for the predicted class\n(top: test image, below: heatmap over it)", fontsize=11)
    if overlay is not None:
        fig.colorbar(overlay, ax=axes.ravel().tolist(), shrink=0.8, label="relevance (1 = the image's maximum)")
    return save_figure(fig, path)
