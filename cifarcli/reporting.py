"""How the library says what it is doing without printing: a `Reporter` the command layer hands down.

The library calls `reporter.message(...)`, `reporter.warning(...)` and `reporter.task(...)`;
the default, `SILENT`, drops all of it. `commands/console_reporter.py` decides, in one place,
what a person sees: a live bar on a terminal, heartbeat lines when piped to a log, and only
warnings and errors with --quiet. Nothing here imports more than the standard library.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sized, TypeVar

Item = TypeVar("Item")


class Task:
    """Progress of one piece of work (a transfer in bytes, a sweep in steps); this base shows nothing."""

    def advance(self, amount: float = 1, **fields: str) -> None:
        """`amount` more done; `fields` are labelled figures shown beside it (loss="1.234", lr="3e-4")."""

    def close(self) -> None:
        """The work ended (finished, failed or interrupted): take the bar down."""

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Reporter:
    """Where the library sends messages and progress; this base (`SILENT`) drops them."""

    def message(self, text: str) -> None:
        """A line saying what is happening (hidden with --quiet)."""

    def warning(self, text: str) -> None:
        """A line the user must see even with --quiet (a skipped file, a rebuilt cache)."""

    def task(self, label: str, total: float | None, *, done: float = 0, unit: str = "step") -> Task:
        """Progress of `total` units (None: unknown), `done` of them already there.

        `unit` is "step", "img" or "bytes"; a rate is shown for images and bytes.
        """
        return Task()


SILENT = Reporter()


def track(items: Iterable[Item], task: Task) -> Iterator[Item]:
    """Yield `items` (batches of (inputs, labels)), advancing `task` by each batch's label count."""
    for item in items:
        yield item
        labels = item[1] if isinstance(item, tuple) else item
        task.advance(len(labels) if isinstance(labels, Sized) else 1)
