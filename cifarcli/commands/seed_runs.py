"""`cifar train --seeds 0,1,2`: one recipe trained once per seed, and its accuracy as a distribution."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from rich.table import Table

from cifarcli import escape
from cifarcli.commands.progress import titled_table
from cifarcli.config import MAX_SEED
from cifarcli.errors import UsageError

MAX_SEEDS = 100  # runs one --seeds may start

# (label, evaluation.json key, format) of the figures summarised over the seeds
SUMMARISED = (("test top-1", "top1", "{:.2%}"), ("test top-5", "top5", "{:.2%}"), ("test loss", "loss", "{:.4f}"), ("macro F1", "macro_f1", "{:.4f}"))


def parse_seeds(text: str) -> list[int]:
    """`--seeds` as a list of distinct seeds: comma-separated integers and ranges, e.g. "0,1,2" or "0-4"."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        try:
            values = range(int(low), int(high) + 1) if dash and low else [int(part)]
        except ValueError:
            raise UsageError(f"--seeds {text!r}: {part!r} is not a seed", hint="give integers and ranges, e.g. --seeds 0,1,2 or --seeds 0-4") from None
        seeds.extend(values)
    if not seeds or len(seeds) > MAX_SEEDS or any(not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: give 1 to {MAX_SEEDS} distinct seeds between 0 and {MAX_SEED}", hint="e.g. --seeds 0,1,2")
    return seeds


@dataclass(frozen=True)
class SeedRun:
    seed: int
    run_dir: Path
    summary: dict  # the run's test evaluation (evaluation.json)
    target_epoch: Optional[int] = None  # first epoch at train.target_accuracy, when set


def describe(values: Sequence[float]) -> dict[str, float]:
    """mean, std (sample; NaN for one value), min and max."""
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else math.nan,
        "min": min(values),
        "max": max(values),
    }


def seeds_table(runs: Sequence[SeedRun], with_target: bool) -> Table:
    """Each seed's headline figures, then their mean, standard deviation, min and max."""
    table = titled_table(f"{len(runs)} seeds")
    table.add_column("seed", justify="right")
    for label, _, _ in SUMMARISED:
        table.add_column(label, justify="right")
    if with_target:
        table.add_column("target epoch", justify="right")
    table.add_column("run folder")
    for run in runs:
        target = ["-" if run.target_epoch is None else str(run.target_epoch)] if with_target else []
        table.add_row(str(run.seed), *(fmt.format(run.summary[key]) for _, key, fmt in SUMMARISED), *target, escape.terminal(run.run_dir.name))
    table.add_section()
    for name in ("mean", "std", "min", "max"):
        cells = []
        for _, key, fmt in SUMMARISED:
            value = describe([run.summary[key] for run in runs])[name]
            cells.append("-" if math.isnan(value) else fmt.format(value))
        if with_target:
            reached = [run.target_epoch for run in runs if run.target_epoch is not None]
            cells.append(f"{describe(reached)[name]:.1f}" if reached and not (name == "std" and len(reached) < 2) else "-")
        table.add_row(name, *cells, "")
    return table
