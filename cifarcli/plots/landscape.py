"""Loss-landscape figures: a 1-D slice, 2-D contours and 3-D surfaces, side by side with one colour scale.

Arrays in, PNG path out. Losses span orders of magnitude away from a minimum, so colours and
heights use log10 of the loss; every panel of a figure shares the same scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cifarcli.plots.figures import new_figure, save_figure, set_log_scale
from cifarcli.plots.overlays import literal

CONTOUR_LEVELS = 30
Surface = tuple[str, np.ndarray]  # (panel title, losses: rows b, columns a)


def _log_losses(losses: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(np.asarray(losses, dtype=np.float64), 1e-12, None))


def shared_log_range(surfaces: Sequence[Surface]) -> tuple[float, float]:
    """(low, high) of log10 loss over every surface's finite values: the one colour scale they share."""
    values = np.concatenate([_log_losses(grid).ravel() for _, grid in surfaces])
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def plot_landscape_1d(coordinates: np.ndarray, curves: Sequence[Surface], path: Path, title: str) -> Path:
    """The loss along the first direction (b = 0), one line per weight set, log loss axis."""
    fig, ax = new_figure(7.5, 4.5)
    for label, losses in curves:
        ax.plot(coordinates, losses, marker="o" if len(coordinates) <= 31 else None, markersize=3, label=literal(label))
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    set_log_scale(ax, "y")
    ax.set_xlabel("step along direction 1 (a)")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(literal(title), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_landscape_contours(coordinates: np.ndarray, surfaces: Sequence[Surface], path: Path, title: str) -> Path:
    """Filled contours of log10 loss over (a, b), one panel per surface, one colour bar for all."""
    low, high = shared_log_range(surfaces)
    levels = np.linspace(low, high, CONTOUR_LEVELS)
    fig, axes = new_figure(5.2 * len(surfaces) + 1.2, 4.8, rows=1, cols=len(surfaces))
    axes = np.atleast_1d(axes)
    filled = None
    for ax, (label, losses) in zip(axes, surfaces):
        logs = np.clip(_log_losses(losses), low, high)
        filled = ax.contourf(coordinates, coordinates, logs, levels=levels, cmap="viridis", vmin=low, vmax=high)
        ax.contour(coordinates, coordinates, logs, levels=levels[::3], colors="white", linewidths=0.4)
        ax.plot([0.0], [0.0], marker="x", color="red", markersize=8)
        ax.set_aspect("equal")
        ax.set_xlabel("direction 1 (a)")
        ax.set_ylabel("direction 2 (b)")
        ax.set_title(literal(label), fontsize=10)
    if filled is not None:
        fig.colorbar(filled, ax=list(axes), label="log10 loss (same scale in every panel)")
    fig.suptitle(literal(title), fontsize=11)
    return save_figure(fig, path)


def plot_landscape_surfaces(coordinates: np.ndarray, surfaces: Sequence[Surface], path: Path, title: str) -> Path:
    """3-D surfaces of log10 loss over (a, b), side by side, with the same height and colour range."""
    import matplotlib.pyplot as plt

    low, high = shared_log_range(surfaces)
    a, b = np.meshgrid(coordinates, coordinates)
    fig = plt.figure(figsize=(5.5 * len(surfaces), 5.0), constrained_layout=True)
    picture = None
    for index, (label, losses) in enumerate(surfaces, start=1):
        ax = fig.add_subplot(1, len(surfaces), index, projection="3d")
        logs = np.clip(_log_losses(losses), low, high)
        picture = ax.plot_surface(a, b, logs, cmap="viridis", vmin=low, vmax=high, linewidth=0, antialiased=True)
        ax.set_zlim(low, high)
        ax.set_xlabel("direction 1 (a)")
        ax.set_ylabel("direction 2 (b)")
        ax.set_zlabel("log10 loss")
        ax.set_title(literal(label), fontsize=10)
    if picture is not None:
        fig.colorbar(picture, ax=fig.axes, shrink=0.6, label="log10 loss")
    fig.suptitle(literal(title), fontsize=11)
    return save_figure(fig, path)
