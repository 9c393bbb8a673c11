"""The LR range test figure: raw and smoothed loss against LR (log axis), suggestions marked."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure, set_log_scale

SUGGESTION_COLOURS = ("tab:red", "tab:green", "tab:purple", "tab:brown")


DIVERGENCE_VIEW = 3.0  # the rise after the lowest loss is shown up to this many times the descent before it


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def loss_axis_limits(raw: np.ndarray, smoothed: np.ndarray, burn_in_steps: int = 0) -> tuple[float, float]:
    """y-limits that show the whole descent and the divergence after it.

    The rise after the lowest smoothed loss is shown up to DIVERGENCE_VIEW times the descent
    (a loss that shoots to 100x would flatten the descent to a line); a curve with no descent
    (its lowest point is its first) is shown whole. Non-finite losses and the burn-in (whose
    spikes the suggestions ignore too) are left out.
    """
    if burn_in_steps < len(smoothed):
        raw, smoothed = np.asarray(raw)[burn_in_steps:], np.asarray(smoothed)[burn_in_steps:]
    smoothed = np.asarray(smoothed, dtype=np.float64)
    shown = np.concatenate([_finite(raw), _finite(smoothed)])
    if not len(shown):
        return 0.0, 1.0
    lowest = float(shown.min())
    curve = np.where(np.isfinite(smoothed), smoothed, np.nan)
    bottom_index = int(np.nanargmin(curve)) if np.isfinite(curve).any() else 0
    if bottom_index == 0:
        top = float(shown.max())
    else:
        start = float(np.nanmax(curve[: bottom_index + 1]))
        tail = _finite(curve[bottom_index:])
        top = max(start, min(float(tail.max()), start + DIVERGENCE_VIEW * (start - float(curve[bottom_index]))))
    margin = 0.05 * max(top - lowest, 1e-3)
    return lowest - margin, top + margin


def _mark_off_the_top(ax, lrs: np.ndarray, smoothed: np.ndarray, top: float, burn_in_steps: int) -> None:
    """Say how high the smoothed loss rose after its lowest point where it leaves the axes."""
    curve = np.where(np.isfinite(smoothed), smoothed, np.nan)[burn_in_steps:]
    if not np.isfinite(curve).any():
        return
    after = int(np.nanargmin(curve))
    peak = burn_in_steps + after + int(np.nanargmax(curve[after:]))
    if smoothed[peak] <= top:
        return
    ax.annotate(f"diverged: smoothed loss {smoothed[peak]:.3g} at lr {lrs[peak]:.2e}", xy=(lrs[peak], top),
                xytext=(-30, -28), textcoords="offset points", ha="right", fontsize=9, color="tab:blue",
                arrowprops={"arrowstyle": "->", "color": "tab:blue"})  # fmt: skip


def plot_lr_find(
    lrs: np.ndarray,
    losses: np.ndarray,
    smoothed_losses: np.ndarray,
    suggestions: Mapping[str, Optional[float]],
    path: Path,
    chosen: Optional[str] = None,
    title: str = "LR range test",
    note: str = "",
    burn_in_steps: int = 0,
) -> Path:
    """Draw the loss curves; each suggestion (name -> LR, None = none) gets a labelled line and marker.

    `note` is written inside the axes (e.g. why there is no suggestion); the first
    `burn_in_steps` points, which the suggestions do not read, are shaded.
    """
    lrs, raw, smoothed = (np.asarray(a, dtype=np.float64) for a in (lrs, losses, smoothed_losses))
    fig, ax = new_figure(8.0, 5.0)
    ax.plot(lrs, raw, color="tab:blue", alpha=0.35, linewidth=1.0, label="loss (raw)")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2.0, label="loss (smoothed)")
    set_log_scale(ax, "x")
    if len(lrs):
        bottom, top = loss_axis_limits(raw, smoothed, burn_in_steps)
        ax.set_ylim(bottom, top)
        _mark_off_the_top(ax, lrs, smoothed, top, min(burn_in_steps, len(lrs) - 1))
    if 0 < burn_in_steps < len(lrs):
        ax.axvspan(lrs[0], lrs[burn_in_steps], color="0.85", alpha=0.6, linewidth=0, label=f"burn-in ({burn_in_steps} steps, not read)")
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
