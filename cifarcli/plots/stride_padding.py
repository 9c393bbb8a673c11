"""The stride-and-padding grid: one first-layer filter's output for each stride x padding, drawn to scale."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cifarcli.engine.conv_geometry import FORMULA, StridedMaps
from cifarcli.plots.figures import new_figure, save_figure
from cifarcli.plots.overlays import literal


def most_varied_channel(maps: np.ndarray) -> int:
    """The channel (of C x h x w maps) whose values vary most: the filter with the clearest picture."""
    return int(np.argmax(maps.reshape(len(maps), -1).std(axis=1)))


def plot_stride_padding(
    images: np.ndarray, settings: Sequence[StridedMaps], captions: Sequence[str], path: Path, layer_name: str, kernel: int
) -> Path:  # fmt: skip
    """Per image: a row per stride, a column per padding, each map titled with its shape and its formula.

    Every map is drawn at the same pixel scale, so a stride of 3 is visibly a third of the size.
    The filter shown for an image is its most varied channel at the first setting.
    """
    strides = list(dict.fromkeys(s.stride for s in settings))
    paddings = list(dict.fromkeys(s.padding for s in settings))
    by_setting = {(s.stride, s.padding): s for s in settings}
    n = images.shape[1]
    largest = max(max(s.maps.shape[-2:]) for s in settings)
    rows, cols = len(images) * len(strides), len(paddings) + 1
    fig, axes = new_figure(2.6 * cols, 2.5 * rows + 0.8, rows=rows, cols=cols)
    axes = np.asarray(axes).reshape(rows, cols)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, caption) in enumerate(zip(images, captions)):
        channel = most_varied_channel(settings[0].maps[i])
        top = i * len(strides)
        axes[top, 0].imshow(image, interpolation="nearest")
        axes[top, 0].set_title(literal(f"{caption}\nfilter #{channel}"), fontsize=8)
        for r, stride in enumerate(strides):
            for c, padding in enumerate(paddings):
                entry = by_setting[(stride, padding)]
                maps = entry.maps[i]
                h, w = maps.shape[-2:]
                ax = axes[top + r, c + 1]
                ax.imshow(maps[channel], cmap="viridis", interpolation="nearest", extent=(0, w, h, 0))
                ax.set_xlim(0, largest)
                ax.set_ylim(largest, 0)
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"s={stride}, p={padding}: {maps.shape[0]}x{h}x{w}\n"
                             f"floor(({n}+2*{padding}-{kernel})/{stride})+1 = {entry.predicted_side[0]}", fontsize=7)  # fmt: skip
    fig.suptitle(literal(f"{layer_name} applied with stride s and zero padding p: {FORMULA}, n = {n}, k = {kernel}\n"
                         "(output channels x height x width; every map drawn at the same pixel scale)"), fontsize=10)  # fmt: skip
    return save_figure(fig, path)
