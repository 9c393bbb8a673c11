"""A sweep's trials as plain records: summary.csv, the best trial, the cells of a heatmap.

Everything here works on `TrialRecord`s (read from the study by `sweeps.study.records`), so
it needs neither Optuna nor the trials' folders, which may live on other machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifarcli.fileio import write_csv
from cifarcli.sweeps.spec import format_value

SUMMARY_FILE = "summary.csv"
RESULT_COLUMNS = ["final_val_accuracy", "best_val_accuracy", "test_accuracy", "seconds", "epochs", "state", "error"]


@dataclass(frozen=True)
class TrialRecord:
    number: int
    name: str  # its folder inside the sweep folder
    state: str  # complete, pruned, failed, running
    settings: dict[str, Any]  # dotted key (or "variant") -> value
    val_curve: list[float]  # validation accuracy after each epoch, in [0, 1]
    test_accuracy: Optional[float]  # of its best checkpoint; complete trials only
    seconds: Optional[float]  # wall-clock, over all the processes that worked on it
    error: str  # failed trials: what went wrong
    host: str  # the machine that ran it last

    @property
    def best_val_accuracy(self) -> float:
        return max(self.val_curve) if self.val_curve else math.nan

    @property
    def final_val_accuracy(self) -> float:
        return self.val_curve[-1] if self.val_curve else math.nan

    @property
    def epochs(self) -> int:
        return len(self.val_curve)


def _cell(value: Any) -> Any:
    """A CSV cell: numbers stay numbers (6 decimals), true/false/null and lists in YAML spelling, nothing as ""."""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else round(value, 6)
    if isinstance(value, (bool, list)):
        return format_value(value)
    return "" if value is None else value


def summary_header(setting_keys: list[str]) -> list[str]:
    return ["trial", *setting_keys, *RESULT_COLUMNS]


def summary_rows(records: list[TrialRecord], setting_keys: list[str]) -> list[list[Any]]:
    """One row per trial, in summary.csv's columns."""
    return [
        [r.name, *("null" if r.settings.get(k) is None else _cell(r.settings.get(k)) for k in setting_keys),
         *map(_cell, (r.final_val_accuracy, r.best_val_accuracy, r.test_accuracy, r.seconds, r.epochs, r.state, r.error))]
        for r in records
    ]  # fmt: skip


def write_summary_csv(folder: Path, records: list[TrialRecord], setting_keys: list[str]) -> Path:
    """summary.csv: trial, its settings, final and best validation accuracy, test accuracy, seconds, epochs, state, error."""
    path = folder / SUMMARY_FILE
    write_csv(path, summary_header(setting_keys), summary_rows(records, setting_keys))
    return path


def best_record(records: list[TrialRecord]) -> Optional[TrialRecord]:
    """The complete trial with the highest best validation accuracy (the lowest number on a tie)."""
    done = [r for r in records if r.state == "complete" and r.val_curve]
    return max(done, key=lambda r: (r.best_val_accuracy, -r.number)) if done else None


def pair_matrix(records: list[TrialRecord], key_a: str, values_a: list[Any], key_b: str, values_b: list[Any]) -> np.ndarray:
    """Mean best validation accuracy of the complete trials at each (a, b); NaN where none finished.

    Rows follow `values_a`, columns `values_b`; with more than two axes, each cell averages over the rest.
    """
    cells = np.full((len(values_a), len(values_b)), np.nan)
    for i, a in enumerate(values_a):
        for j, b in enumerate(values_b):
            scores = [r.best_val_accuracy for r in records
                      if r.state == "complete" and r.settings.get(key_a) == a and r.settings.get(key_b) == b]  # fmt: skip
            if scores:
                cells[i, j] = float(np.mean(scores))
    return cells
