"""What a person sees of progress, decided once: a live bar on a terminal, heartbeat lines in a log, quiet.

`ConsoleReporter` is the `reporting.Reporter` every command hands down to the library. On a
terminal a task is a transient rich bar whose two times are labelled (elapsed, left); piped to
a file it prints a heartbeat line, like timm's log lines, when a task starts, every
HEARTBEAT_EVERY_S seconds (a transfer also every 10% of its size) and, if it printed any, when
it ends; with --quiet only warnings are printed (errors are printed by cli.py).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn, TransferSpeedColumn

from cifarcli import escape
from cifarcli.reporting import Reporter, Task

HEARTBEAT_EVERY_S = 30.0  # a piped run prints a progress line at least this often ...
BYTES_LINE_EVERY_FRACTION = 0.1  # ... and a transfer also at every 10% of its size
UNIT_NAMES = {"step": "steps", "img": "images"}  # how a count of each unit is written
Clock = Callable[[], float]


def format_seconds(seconds: float) -> str:
    """`1h02m03s`, `2m05s`; `-` for an unknown (infinite, NaN or negative) time."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _fields_text(fields: dict[str, str]) -> str:
    return "  ".join(f"{name} {value}" for name, value in fields.items())


class LiveTask(Task):
    """A transient rich bar: label, bar, count (or MB and MB/s), fields, `elapsed` and `left` times."""

    def __init__(self, console: Console, label: str, total: float | None, done: float, unit: str) -> None:
        amount = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
        self.bar = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), *amount,
            TextColumn("{task.fields[info]}", markup=False),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=console, transient=True,
        )  # fmt: skip
        self.bar.start()
        self.task_id = self.bar.add_task(escape.terminal(label), total=total, completed=done, info="")

    def advance(self, amount: float = 1, **fields: str) -> None:
        info = {"info": escape.terminal(_fields_text(fields))} if fields else {}
        self.bar.update(self.task_id, advance=amount, **info)

    def close(self) -> None:
        self.bar.stop()


class HeartbeatTask(Task):
    """Plain progress lines for a log: `label done/total  fields  rate  elapsed ..  left ..`."""

    def __init__(self, say: Callable[[str], None], label: str, total: float | None, done: float, unit: str,
                 every_s: float, clock: Clock) -> None:  # fmt: skip
        self.say, self.label, self.total, self.done, self.unit = say, escape.terminal(label), total, done, unit
        self.every_s, self.clock = every_s, clock
        self.every_amount = total * BYTES_LINE_EVERY_FRACTION if total and unit == "bytes" else None
        self.started_at = self.last_at = clock()
        self.start_done = self.last_done = done
        self.fields: dict[str, str] = {}
        self.closed = self.printed = False
        resumed = f", resuming at {self._amount(done)}" if done else ""
        self.say(f"{self.label}: {self._amount(total) if total else 'size unknown'}{resumed}")

    def advance(self, amount: float = 1, **fields: str) -> None:
        self.done += amount
        self.fields.update(fields)
        now = self.clock()
        by_amount = self.every_amount is not None and self.done - self.last_done >= self.every_amount
        if by_amount or now - self.last_at >= self.every_s:
            self.say(self.line(now))
            self.last_at, self.last_done, self.printed = now, self.done, True

    def close(self) -> None:
        # A task that printed heartbeats ends on a line of its last stretch (unless one just said it);
        # a short one stays at its opening line: training's epoch line, or the result, follows.
        if not self.closed and self.printed and self.done != self.last_done:
            self.say(self.line(self.clock()))
        self.closed = True

    def line(self, now: float) -> str:
        """The heartbeat line at time `now`."""
        elapsed_s = max(now - self.started_at, 1e-9)
        rate = (self.done - self.start_done) / elapsed_s
        left_s = (self.total - self.done) / rate if self.total and rate > 0 else math.inf
        count = f"{self._amount(self.done)} of {self._amount(self.total)}" if self.unit == "bytes" else f"{self.done:g}"
        if self.total and self.unit != "bytes":
            count += f"/{self.total:g}"
        parts = [f"{self.label} {count}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        if self.fields:
            parts.append(escape.terminal(_fields_text(self.fields)))
        if self.unit == "bytes":
            parts.append(f"{rate / 1e6:.1f} MB/s")
        elif self.unit != "step":
            parts.append(f"{rate:,.0f} {self.unit}/s")
        parts.append(f"elapsed {format_seconds(now - self.started_at)}  left {format_seconds(left_s)}")
        return "  ".join(parts)

    def _amount(self, value: float | None) -> str:
        if value is None:
            return "?"
        return f"{value / 1e6:.1f} MB" if self.unit == "bytes" else f"{value:g} {UNIT_NAMES.get(self.unit, self.unit)}"


class ConsoleReporter(Reporter):
    """The reporter of one command: `console` (made by `progress.make_console(quiet)`) says where and how much."""

    def __init__(self, console: Console, *, every_s: float = HEARTBEAT_EVERY_S, clock: Clock = time.monotonic) -> None:
        self.console = console
        self.every_s, self.clock = every_s, clock  # a test passes its own clock

    @property
    def quiet(self) -> bool:
        return bool(self.console.quiet)

    @property
    def live(self) -> bool:
        """True when progress is drawn as a live bar (a terminal, not --quiet)."""
        return self.console.is_terminal and not self.quiet

    def message(self, text: str) -> None:
        self.console.print(escape.terminal(text), soft_wrap=True)

    def warning(self, text: str) -> None:
        if self.quiet:  # --quiet hides messages, never warnings
            sys.stderr.write(escape.terminal(text) + "\n")
            sys.stderr.flush()
        else:
            self.message(text)

    def task(self, label: str, total: float | None, *, done: float = 0, unit: str = "step") -> Task:
        """A live bar on a terminal, heartbeat lines elsewhere, nothing with --quiet."""
        if self.quiet:
            return Task()
        if self.live:
            return LiveTask(self.console, label, total, done, unit)
        return HeartbeatTask(self.message, label, total, done, unit, self.every_s, self.clock)

