"""Line figures of a run over time: loss and accuracy per epoch, the learning rate per step."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from cifarcli import escape
from cifarcli.plots.figures import new_figure, save_figure

# (metrics.csv column prefix, legend label, line style); a series that is all NaN is left out.
_SERIES = (("train_", "train", "-"), ("val_", "validation", "-"), ("ema_val_", "validation, EMA weights", "--"))


def _present(values: np.ndarray | None) -> bool:
    return values is not None and bool(np.isfinite(values).any())


def plot_training_curves(
    metrics: Mapping[str, np.ndarray], path: Path, title: str = "Training curves", best_epoch: Optional[int] = None
) -> Path:
    """Two panels, loss and accuracy (%), per epoch, for train / validation / EMA validation.

    `metrics` maps metrics.csv column names (epoch, train_loss, val_accuracy, ...) to arrays;
    `best_epoch` (the epoch best.pt holds) is marked with a vertical line in both panels.
    """
    epochs = np.asarray(metrics["epoch"], dtype=np.float64)
    fig, (loss_ax, acc_ax) = new_figure(11.0, 4.2, rows=1, cols=2)
    marker = "o" if len(epochs) <= 30 else None  # short runs: show each epoch's point
    for prefix, label, style in _SERIES:
        loss, accuracy = metrics.get(prefix + "loss"), metrics.get(prefix + "accuracy")
        if _present(loss):
            loss_ax.plot(epochs, loss, style, marker=marker, label=label)
        if _present(accuracy):
            acc_ax.plot(epochs, 100.0 * np.asarray(accuracy), style, marker=marker, label=label)
    if best_epoch is not None:
        for ax in (loss_ax, acc_ax):
            ax.axvline(best_epoch, color="tab:green", linestyle=":", linewidth=1.5, label=f"best.pt (epoch {best_epoch})")
    for ax, quantity in ((loss_ax, "loss"), (acc_ax, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.set_title(quantity.split(" ")[0].capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    acc_ax.set_ylim(bottom=0.0, top=100.0)
    fig.suptitle(escape.plot(title))
    return save_figure(fig, path)


def plot_lr_schedule(lr_per_step: Sequence[float], steps_per_epoch: int, path: Path, title: str = "Learning-rate schedule") -> Path:
    """The LR of every optimizer step, x axis in epochs (step / steps_per_epoch)."""
    lrs = np.asarray(lr_per_step, dtype=np.float64)
    epochs = np.arange(len(lrs)) / max(steps_per_epoch, 1)
    fig, ax = new_figure(8.0, 4.0)
    ax.plot(epochs, lrs, linewidth=1.5)
    if len(lrs):
        peak = int(np.argmax(lrs))
        ax.scatter([epochs[peak]], [lrs[peak]], color="C3", zorder=3)
        ax.annotate(f"peak {lrs[peak]:.3g}", (epochs[peak], lrs[peak]), textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(escape.plot(title))
    ax.set_ylim(bottom=0.0)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return save_figure(fig, path)
