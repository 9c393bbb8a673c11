"""Time to target (`train.target_accuracy`): when a run's accuracy first reached a goal, and from when it held.

Read from the run's history (one row per epoch, as metrics.csv has it), so a resumed run and
a finished one give the same figures, and `cifar report` can recompute them from the files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

# The history column each target split is read from.
ACCURACY_COLUMNS = {"val": "val_accuracy", "test": "test_accuracy"}


@dataclass(frozen=True)
class TargetResult:
    """How a run did against its accuracy target; epochs count from 1, seconds are cumulative wall time."""

    target: float
    split: str
    first_epoch: Optional[int]  # the first epoch whose accuracy reached the target; None = never
    first_wall_seconds: Optional[float]  # the run's wall time at the end of that epoch
    held_from_epoch: Optional[int]  # the first epoch from which every later epoch stayed at or above it
    best_accuracy: Optional[float]
    best_epoch: Optional[int]

    @property
    def reached(self) -> bool:
        return self.first_epoch is not None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reached": self.reached}

    def describe(self) -> str:
        """One line for the console and the report."""
        goal = f"target {self.target:.2%} {self.split} accuracy"
        if not self.reached:
            best = f"best {self.best_accuracy:.2%} at epoch {self.best_epoch}" if self.best_accuracy is not None else "no epoch scored"
            return f"{goal}: not reached ({best})"
        held = f"held from epoch {self.held_from_epoch}" if self.held_from_epoch is not None else "not held to the end"
        when = f" ({self.first_wall_seconds:.0f} s)" if self.first_wall_seconds is not None else ""
        return f"{goal}: first reached at epoch {self.first_epoch}{when}, {held}"


def time_to_target(history: Sequence[dict[str, float]], target: float, split: str) -> TargetResult:
    """The target figures of `history` (rows with "epoch", "wall_seconds" and the split's accuracy column)."""
    column = ACCURACY_COLUMNS[split]
    scored = [(int(row["epoch"]), float(row.get(column, math.nan)), float(row.get("wall_seconds", math.nan))) for row in history]
    scored = [(epoch, accuracy, wall) for epoch, accuracy, wall in scored if math.isfinite(accuracy)]
    first = next(((epoch, wall) for epoch, accuracy, wall in scored if accuracy >= target), None)
    held: Optional[int] = None
    for epoch, accuracy, _ in reversed(scored):
        if accuracy < target:
            break
        held = epoch
    best = max(scored, key=lambda item: item[1], default=None)
    return TargetResult(
        target=target,
        split=split,
        first_epoch=first[0] if first else None,
        first_wall_seconds=first[1] if first and math.isfinite(first[1]) else None,
        held_from_epoch=held,
        best_accuracy=best[1] if best else None,
        best_epoch=best[0] if best else None,
    )
