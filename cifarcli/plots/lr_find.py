"""The LR range test figure: raw and smoothed loss against LR (log axis), suggestions marked."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure

SUGGESTION_COLOURS = ("tab:red", "tab:green", "tab:purple", "tab:brown")


def loss_axis_limits(raw: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """y-limits that show the whole descent but not a diverged tail that would flatten it.

    A curve with no descent (its lowest point is its first) is shown whole.
    """
    lowest = float(min(np.nanmin(raw), np.nanmin(smoothed)))
    bottom_index = int(np.nanargmin(smoothed))
    if bottom_index == 0:
        top = float(np.nanmax(np.concatenate([raw, smoothed])))
        margin = 0.05 * max(top - lowest, 1e-3)
        return lowest - margin, top + margin
    before_min = float(np.nanmax(smoothed[: bottom_index + 1]))
    top = max(before_min, float(smoothed[0])) + 0.5 * max(before_min - lowest, 0.0)
    top = min(top, float(np.nanmax(np.concatenate([raw, smoothed]))))
    margin = 0.05 * max(top - lowest, 1e-3)
    return lowest - margin, top + margin


def plot_lr_find(
    lrs: np.ndarray,
    losses: np.ndarray,
    smoothed_losses: np.ndarray,
    suggestions: Mapping[str, Optional[float]],
    path: Path,
    chosen: Optional[str] = None,
    title: str = "LR range test",
    note: str = "",
) -> Path:
    """Draw the loss curves; each suggestion (name -> LR, None = none) gets a labelled line and marker.

    `note` is written inside the axes (e.g. why there is no suggestion).
    """
    lrs, raw, smoothed = (np.asarray(a, dtype=np.float64) for a in (lrs, losses, smoothed_losses))
    fig, ax = new_figure(8.0, 5.0)
    ax.plot(lrs, raw, color="tab:blue", alpha=0.35, linewidth=1.0, label="loss (raw)")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2.0, label="loss (smoothed)")
    ax.set_xscale("log")
    if len(lrs):
        ax.set_ylim(*loss_axis_limits(raw, smoothed))
    marked = [(name, lr) for name, lr in suggestions.items() if lr is not None]
    for colour, (name, lr) in zip(SUGGESTION_COLOURS, marked):
        label = f"{name}: {lr:.2e}" + ("  (chosen)" if name == chosen else "")
        width = 2.2 if name == chosen else 1.2
        ax.axvline(lr, color=colour, linestyle="--", linewidth=width, label=label)
        at_loss = float(np.interp(np.log(lr), np.log(lrs), smoothed)) if len(lrs) else np.nan
        ax.plot([lr], [at_loss], marker="o", markersize=8 if name == chosen else 6, color=colour)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.ticklabel_format(axis="y", useOffset=False)
    if note:
        ax.text(0.5, 0.5, escape.plot(note), transform=ax.transAxes, ha="center", va="center", wrap=True,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:gray"})  # fmt: skip
    ax.set_title(escape.plot(title))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)  # an LR-find curve is high on the left, low in the middle
    return save_figure(fig, path)
