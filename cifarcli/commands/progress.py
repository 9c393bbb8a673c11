"""What a person sees: the console and reporter of a command, training's progress, headline tables."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Iterable, Optional

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from cifarcli import escape
from cifarcli.commands.console_reporter import ConsoleReporter, format_seconds
from cifarcli.engine.callbacks import TrainCallbacks
from cifarcli.reporting import Task

if TYPE_CHECKING:
    from cifarcli.engine.loop import StepLoss, TrainState


def make_console(quiet: bool = False, stderr: bool = True) -> Console:
    """Console on stderr for progress (stdout for results), printing text as written.

    Markup is off: a path or class name holding `[...]` is shown, not parsed. Text from files
    or the user still goes through `escape.terminal`, which escapes control characters.
    """
    return Console(stderr=stderr, quiet=quiet, highlight=False, markup=False, soft_wrap=True)  # paths stay whole


def make_reporter(quiet: bool = False) -> ConsoleReporter:
    """The reporter a command hands down: progress and messages on stderr, only warnings when `quiet`."""
    return ConsoleReporter(make_console(quiet))


def print_written(paths: Iterable[object]) -> None:
    """One `wrote PATH` line on stdout per file written."""
    for path in paths:
        typer.echo(f"wrote {escape.terminal(path)}")


class TrainingDisplay(TrainCallbacks):
    """Per-epoch progress (loss, LR, images/s, elapsed, left) as the reporter shows it, and one line per finished epoch.

    On a terminal that is a live bar; piped to a log, a heartbeat line every ~30 s (the
    reporter's `every_s`); with --quiet, nothing.
    """

    def __init__(self, reporter: ConsoleReporter, batch_size: int) -> None:
        self.reporter = reporter
        self.batch_size = batch_size
        self.task: Optional[Task] = None
        self.epochs = 0
        self.first_epoch = 0
        self.started = time.perf_counter()
        self.epoch_started = self.started
        self.loss_ema = math.nan
        self.state: Optional[TrainState] = None
        self.first_reported_step = 0  # global step when this process started the epoch
        self.last_reported_step = 0

    def on_train_start(self, state: TrainState, epochs: int, steps_per_epoch: int) -> None:
        self.epochs, self.first_epoch, self.state = epochs, state.epoch, state
        self.started = time.perf_counter()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self._close_task()
        self.epoch_started = time.perf_counter()
        done = 0
        if self.state is not None:  # a resumed epoch starts part-way through
            self.first_reported_step = self.last_reported_step = self.state.global_step
            done = self.state.batch_in_epoch
        self.loss_ema = math.nan
        self.task = self.reporter.task(f"epoch {epoch + 1}/{self.epochs}", total=steps, done=done)

    def on_step(self, step: int, lr: float) -> None:
        """Called every train.progress_every_steps steps, with the global step just finished."""
        if self.task is None:
            return
        elapsed = time.perf_counter() - self.epoch_started
        speed = (step - self.first_reported_step) * self.batch_size / elapsed if elapsed > 0 else 0.0
        loss = "-" if math.isnan(self.loss_ema) else f"{self.loss_ema:.4f}"
        self.task.advance(step - self.last_reported_step, loss=loss, lr=f"{lr:.3g}", speed=f"{speed:,.0f} img/s")
        self.last_reported_step = step

    def on_losses(self, losses: list[StepLoss]) -> None:
        """The losses read back at a sync (train.sync_every_steps): a smoothed loss for the bar."""
        for record in losses:
            self.loss_ema = record.loss if math.isnan(self.loss_ema) else 0.9 * self.loss_ema + 0.1 * record.loss

    def on_epoch_end(self, row: dict[str, float], is_best: bool) -> None:
        self._close_task()  # the bar goes before the epoch's line is printed
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
        self.reporter.message(line)
        sys.stderr.flush()

    def on_train_end(self) -> None:
        self._close_task()

    def _close_task(self) -> None:
        if self.task is not None:
            self.task.close()
            self.task = None


def titled_table(title: str, **options: object) -> Table:
    """A rich Table whose title never wraps: the table is at least as wide as its title."""
    shown = escape.terminal(title)
    return Table(title=shown, title_justify="left", min_width=cell_len(shown), **options)  # type: ignore[arg-type]


def metrics_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column table of headline figures."""
    table = titled_table(title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
