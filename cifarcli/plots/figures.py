"""Shared figure plumbing: a non-interactive backend and atomic PNG saving."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never opens a window; works on headless machines
# Text is drawn as written: class names and run names come from files and the user, and a
# `$...$` in one must not be parsed as mathtext (an unknown command would fail the figure).
# Control characters are escaped by `escape.plot` where such text enters a figure.
matplotlib.rcParams["text.parse_math"] = False

import matplotlib.pyplot as plt  # noqa: E402

from cifarcli.fileio import write_atomic  # noqa: E402


def new_figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1):
    """A figure and its axes, sized in inches."""
    return plt.subplots(rows, cols, figsize=(width_in, height_in), constrained_layout=True)


def set_log_scale(ax, which: str) -> None:
    """A log scale on `ax`'s "x" or "y" axis, its decades labelled as plain text ("1e-05").

    Matplotlib's own log labels are mathtext (`$\\mathdefault{10^{-5}}$`), which would be drawn
    as written here, since mathtext is off (see above).
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def render_figure(fig, dpi: int = 80) -> "np.ndarray":
    """`fig` as an H x W x 3 uint8 array (for TensorBoard), and closed."""
    import numpy as np

    fig.set_dpi(dpi)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return pixels


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Render `fig` to PNG at `path` atomically, close it, and return the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return path
