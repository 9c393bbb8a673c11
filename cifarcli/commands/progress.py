"""What a person sees while training: a rich live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Iterable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cifarcli import escape
from cifarcli.engine.callbacks import TrainCallbacks

if TYPE_CHECKING:
    from cifarcli.engine.loop import StepLoss, TrainState


def make_console(quiet: bool = False, stderr: bool = True) -> Console:
    """Console on stderr for progress (stdout for results), printing text as written.

    Markup is off: a path or class name holding `[...]` is shown, not parsed. Text from files
    or the user still goes through `escape.terminal`, which escapes control characters.
    """
    return Console(stderr=stderr, quiet=quiet, highlight=False, markup=False, soft_wrap=True)  # paths stay whole


def print_written(paths: Iterable[object]) -> None:
    """One `wrote PATH` line on stdout per file written."""
    for path in paths:
        typer.echo(f"wrote {escape.terminal(path)}")


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class TrainingDisplay(TrainCallbacks):
    """Per-epoch progress (loss, accuracy, LR, images/s, time left) and one line per finished epoch."""

    def __init__(self, console: Console, batch_size: int) -> None:
        self.console = console
        self.batch_size = batch_size
        self.live = console.is_terminal and not console.quiet
        self.progress: Optional[Progress] = None
        self.task: Optional[int] = None
        self.epochs = 0
        self.first_epoch = 0
        self.started = time.perf_counter()
        self.epoch_started = self.started
        self.loss_ema = math.nan
        self.state: Optional[TrainState] = None
        self.epoch_base_step = 0  # global step before the epoch's first batch
        self.first_reported_step = 0  # global step when this process started the epoch

    def on_train_start(self, state: TrainState, epochs: int, steps_per_epoch: int) -> None:
        self.epochs, self.first_epoch, self.state = epochs, state.epoch, state
        self.started = time.perf_counter()
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} img/s"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )  # fmt: skip
            self.progress.start()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch_started = time.perf_counter()
        if self.state is not None:  # a resumed epoch starts part-way through
            self.first_reported_step = self.state.global_step
            self.epoch_base_step = self.state.global_step - self.state.batch_in_epoch
        self.loss_ema = math.nan
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            label = f"{epoch + 1}/{self.epochs}"
            self.task = self.progress.add_task("train", total=steps, epoch=label, loss="-", lr="-", speed="-")

    def on_step(self, step: int, lr: float) -> None:
        """Called every train.progress_every_steps steps, with the global step just finished."""
        if self.progress is not None and self.task is not None:
            elapsed = time.perf_counter() - self.epoch_started
            speed = (step - self.first_reported_step) * self.batch_size / elapsed if elapsed > 0 else 0.0
            loss = "-" if math.isnan(self.loss_ema) else f"{self.loss_ema:.4f}"
            self.progress.update(self.task, completed=step - self.epoch_base_step, loss=loss, lr=f"{lr:.3g}",
                                 speed=f"{speed:,.0f}")  # fmt: skip

    def on_losses(self, losses: list[StepLoss]) -> None:
        """The losses read back at a sync (train.sync_every_steps): a smoothed loss for the bar."""
        for record in losses:
            self.loss_ema = record.loss if math.isnan(self.loss_ema) else 0.9 * self.loss_ema + 0.1 * record.loss

    def on_epoch_end(self, row: dict[str, float], is_best: bool) -> None:
        done = int(row["epoch"])
        elapsed = time.perf_counter() - self.started
        left = elapsed / max(done - self.first_epoch, 1) * (self.epochs - done)
        line = (
            f"epoch {done}/{self.epochs}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}"
            + (f"  val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}" if math.isfinite(row["val_loss"]) else "")
            + (f"  ema acc {row['ema_val_accuracy']:.2%}" if math.isfinite(row["ema_val_accuracy"]) else "")
            + f"  lr {row['lr']:.3g}  {row['images_per_second']:,.0f} img/s  {format_seconds(row['seconds'])}"
            + f"  left {format_seconds(left)}"
            + ("  *best" if is_best else "")
        )
        self.console.print(line, soft_wrap=True)
        sys.stderr.flush()

    def on_train_end(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def metrics_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column table of headline figures."""
    table = Table(title=escape.terminal(title), show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
