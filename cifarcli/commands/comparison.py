"""The work behind `cifar compare`: several run folders read back, tabled side by side, overlaid in figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifarcli import fileio, runs
from cifarcli import report_tables as tables
from cifarcli.config import ExperimentConfig, config_to_yaml, load_saved_config
from cifarcli.engine.schedules import lr_trace
from cifarcli.errors import ConfigError, UsageError
from cifarcli.plots.html import Figure, ReportPage, Table, write_report_html
from cifarcli.plots.overlays import Series, plot_overlaid, plot_run_curves
from cifarcli.sweeps.spec import format_value

SWEEP_MARKER = "sweep.json"  # a folder holding it is a sweep: compare every trial in it
IGNORED_KEYS = ("run.name", "run.root")  # differ between any two runs; the folder names show them
HEADLINE_COLUMNS = ["run", "model", "dataset", "epochs", "best_val_accuracy", "best_epoch", "final_val_accuracy",
                    "final_train_loss", "test_accuracy", "test_loss", "train_seconds"]  # fmt: skip
# The terminal table: fewer columns, short names (the page and metrics.csv have them all).
TERMINAL_COLUMNS = {"run": "run", "epochs": "epochs", "best_val_accuracy": "best val", "final_val_accuracy": "final val",
                    "test_accuracy": "test", "test_loss": "test loss", "train_seconds": "train s"}  # fmt: skip


@dataclass(frozen=True)
class ComparedRun:
    label: str
    path: Path
    cfg: ExperimentConfig
    metrics: dict[str, np.ndarray]  # metrics.csv, one array per column
    steps_per_epoch: Optional[int]  # from run_info.json, for the LR schedule
    evaluation: Optional[dict[str, Any]]  # evaluation.json, when it scored the test split


def run_folders(targets: list[Path]) -> list[Path]:
    """The run folders to compare: each target itself, or every trial of a sweep folder; each once, in order."""
    folders: list[Path] = []
    for target in targets:
        if not target.is_dir():
            raise UsageError(f"no such run folder: {target}", hint="pass run folders (runs/...) or sweep folders (sweeps/...)")
        if (target / SWEEP_MARKER).is_file():
            trials = sorted(p for p in target.iterdir() if p.is_dir() and (p / runs.METRICS_FILE).is_file())
            if not trials:
                raise UsageError(f"sweep {target} has no trial with metrics yet", hint="run or resume it first: cifar sweep --resume DIR")
            folders.extend(trials)
        else:
            folders.append(target)
    unique = list(dict.fromkeys(p.resolve() for p in folders))
    if len(unique) < 2:
        raise UsageError("cifar compare needs at least two runs", hint="pass two or more run folders, or a sweep folder with two trials")
    return unique


def load_run(path: Path, label: str) -> ComparedRun:
    """A run folder's config, metrics, steps per epoch and test evaluation (the last two when present)."""
    for name in (runs.CONFIG_FILE, runs.METRICS_FILE):
        if not (path / name).is_file():
            raise UsageError(f"{path} is not a run folder (no {name})", hint="pass folders made by `cifar train` or `cifar sweep`")
    try:
        cfg = load_saved_config(path / runs.CONFIG_FILE)  # runs from before a setting was removed compare too
    except ConfigError as exc:
        raise UsageError(f"{path / runs.CONFIG_FILE}: {exc.message}", hint="it is written by `cifar train`; restore it") from exc
    info = fileio.read_json(path / runs.RUN_INFO_FILE) if (path / runs.RUN_INFO_FILE).is_file() else {}
    steps = info.get("steps_per_epoch") if isinstance(info, dict) else None
    scored = runs.training_evaluation(path, cfg.eval.tta_flip, cfg.eval.tta_shift)
    evaluation = fileio.read_json(scored) if scored is not None else None
    if not isinstance(evaluation, dict) or evaluation.get("split") != "test":
        evaluation = None
    return ComparedRun(label, path, cfg, tables.read_metrics(path / runs.METRICS_FILE),
                       steps if isinstance(steps, int) and steps > 0 else None, evaluation)  # fmt: skip


def load_runs(targets: list[Path]) -> list[ComparedRun]:
    folders = run_folders(targets)
    names = [p.name for p in folders]
    labels = [p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in folders]
    return [load_run(path, label) for path, label in zip(folders, labels)]


def headline(run: ComparedRun) -> dict[str, Any]:
    """One run's headline figures (NaN where it has none, e.g. no validation split)."""
    m = run.metrics
    val = m.get("val_accuracy", np.array([]))
    has_val = bool(np.isfinite(val).any())
    best = int(np.nanargmax(val)) if has_val else -1
    evaluation = run.evaluation or {}
    return {
        "run": run.label, "model": run.cfg.model.name, "dataset": run.cfg.data.dataset,
        "epochs": f"{len(m['epoch'])}/{run.cfg.train.epochs}",
        "best_val_accuracy": float(val[best]) if has_val else math.nan, "best_epoch": int(m["epoch"][best]) if has_val else "",
        "final_val_accuracy": float(val[-1]) if len(val) else math.nan,
        "final_train_loss": float(m["train_loss"][-1]) if len(m["train_loss"]) else math.nan,
        "test_accuracy": float(evaluation.get("top1", math.nan)), "test_loss": float(evaluation.get("loss", math.nan)),
        "train_seconds": float(np.nansum(m["seconds"])) if "seconds" in m else math.nan,
    }  # fmt: skip


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(compared: list[ComparedRun]) -> list[tuple[str, list[Any]]]:
    """The dotted config keys whose values are not the same in every run, with each run's value."""
    flats = [_flatten(run.cfg.model_dump(mode="json")) for run in compared]
    keys = [k for k in flats[0] if k not in IGNORED_KEYS and any(f.get(k) != flats[0].get(k) for f in flats[1:])]
    return [(key, [f.get(key) for f in flats]) for key in keys]


def _text(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def headline_cells(compared: list[ComparedRun], columns: list[str] = HEADLINE_COLUMNS) -> list[list[str]]:
    return [[_text(headline(run)[c]) for c in columns] for run in compared]


def difference_cells(compared: list[ComparedRun]) -> tuple[list[str], list[list[str]]]:
    """The config-difference table: a row per differing key, a column per run."""
    return ["key", *(run.label for run in compared)], [[key, *map(format_value, values)] for key, values in config_differences(compared)]


def write_comparison(compared: list[ComparedRun], out_dir: Path) -> list[Path]:
    """curves.png, lr_schedules.png, metrics.csv, config_diff.csv and index.html (last) in `out_dir`."""
    curves = plot_run_curves([(run.label, run.metrics) for run in compared], out_dir / "curves.png",
                             f"{len(compared)} runs: loss and accuracy per epoch")  # fmt: skip
    lr_series = [Series(run.label, np.arange(len(trace)) / run.steps_per_epoch, np.asarray(trace))
                 for run in compared if run.steps_per_epoch
                 for trace in [lr_trace(run.cfg.schedule, run.cfg.optim.lr, run.steps_per_epoch, run.cfg.train.epochs)]]  # fmt: skip
    schedules = plot_overlaid(lr_series, out_dir / "lr_schedules.png", "Learning rate per step", "epoch", "learning rate")
    rows = [[_csv_value(headline(run)[c]) for c in HEADLINE_COLUMNS] for run in compared]
    metrics_csv = out_dir / "metrics.csv"
    fileio.write_csv(metrics_csv, HEADLINE_COLUMNS, rows)
    diff_header, diff_rows = difference_cells(compared)
    diff_csv = out_dir / "config_diff.csv"
    fileio.write_csv(diff_csv, diff_header, diff_rows)
    numeric = frozenset(HEADLINE_COLUMNS[4:])
    page_tables = [
        Table("Headline metrics", HEADLINE_COLUMNS, headline_cells(compared), numeric),
        Table("Config keys that differ", diff_header, diff_rows, frozenset(), "" if diff_rows else "The runs' configs are the same."),
    ]  # fmt: skip
    facts = [("runs", str(len(compared))), *((run.label, str(run.path)) for run in compared)]
    figures = [Figure("Learning curves", curves), Figure("Learning-rate schedules", schedules,
                                                         "Each run's schedule as its config defines it, step by step.")]  # fmt: skip
    page = ReportPage(f"cifar compare: {len(compared)} runs", facts, best_lines(compared), figures, page_tables,
                      "\n".join(f"# {run.label}\n{config_to_yaml(run.cfg)}" for run in compared))  # fmt: skip
    index = write_report_html(page, out_dir / "index.html")
    return [curves, schedules, metrics_csv, diff_csv, index]


def best_lines(compared: list[ComparedRun]) -> list[tuple[str, str]]:
    """Which run is best by validation and by test accuracy (among those that have one)."""
    lines = []
    for column, what in (("best_val_accuracy", "best validation accuracy"), ("test_accuracy", "best test accuracy")):
        scored = [(headline(run)[column], run.label) for run in compared if math.isfinite(headline(run)[column])]
        if scored:
            value, label = max(scored)
            lines.append((what, f"{value:.2%} ({label})"))
    return lines or [("best run", "no run has a validation or test accuracy")]


def _csv_value(value: Any) -> Any:
    return "" if isinstance(value, float) and not math.isfinite(value) else value
