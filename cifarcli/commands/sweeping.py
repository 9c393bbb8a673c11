"""The work behind `cifar sweep`: open (or join) the sweep's study, train trials, write the summary.

Each trial is an ordinary `run_training` into `sweeps/<date>-<time>-<name>/<trial>/`, so
`cifar evaluate` and `cifar report` work on it; the study (sweeps.study) decides which trial
runs where and records what became of it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from cifarcli import fileio, runs
from cifarcli.commands.console_reporter import ConsoleReporter, format_seconds
from cifarcli.commands.progress import TrainingDisplay
from cifarcli.commands.sweep_pages import write_sweep_outputs
from cifarcli.commands.training import run_training
from cifarcli.config import ExperimentConfig, config_with, validate_saved_config
from cifarcli.data.prepare import load_dataset
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.callbacks import CallbackList, TrainCallbacks
from cifarcli.errors import ConfigError, Interrupted, UsageError
from cifarcli.sweeps import study as sweep_study
from cifarcli.sweeps import trials as sweep_trials
from cifarcli.sweeps.spec import SweepSpec, format_value
from cifarcli.sweeps.summary import TrialRecord, best_record, write_summary_csv

SWEEP_FILE = "sweep.json"  # what `--resume` needs: the study's name and storage, the sweep, the base config
SWEEP_FILE_FORMAT = 1


@dataclass(frozen=True)
class SweepOutcome:
    folder: Path
    ran: int  # trials this process trained
    counts: dict[str, int]  # trials per state, and total
    best: Optional[TrialRecord]
    written: list[Path]


def start_sweep(
    spec: SweepSpec, base: ExperimentConfig, root: Path, storage_url: Optional[str], console: Console, verbose: bool
) -> SweepOutcome:
    """A new sweep (default: its own SQLite study in a new folder), or, with a shared `storage_url`, the
    sweep of that name there: created by the first process started with this command, joined by the rest."""
    shared = sweep_study.open_storage(storage_url) if storage_url is not None else None  # a bad URL fails first
    load_dataset(base.data, reporter=ConsoleReporter(console))  # download once, before the first trial
    base_tree = base.model_dump(mode="json")

    def new_folder() -> Path:
        return runs.create_unique_dir(root, f"{runs.timestamp()}-{spec.name}", what="sweep", remedy="pass --root DIR")

    with sweep_study.quiet_optuna():
        if shared is None:
            folder = new_folder()
            store = sweep_study.open_storage(sweep_study.default_storage_url(folder))
            sweep = sweep_study.create_study(store, spec.name, spec, base_tree, folder)
        else:
            sweep, _ = sweep_study.join_or_create(shared, spec.name, spec, base_tree, new_folder, root)
        if not (sweep.folder / SWEEP_FILE).is_file():
            _write_sweep_file(sweep, storage_url)
        return _work(sweep, base, storage_url, console, verbose)


def resume_sweep(folder: Path, storage_url: Optional[str], console: Console, verbose: bool) -> SweepOutcome:
    """Continue the sweep in `folder`: trials no process is training any more, then the ones not started."""
    saved = read_sweep_file(folder)
    if storage_url is None:
        storage_url = saved["storage"]
        if saved.get("storage_has_password"):
            raise UsageError(f"{folder / SWEEP_FILE} does not keep the storage's password",
                             hint=f"pass it again: cifar sweep --resume {folder} --storage URL")  # fmt: skip
    try:
        base = validate_saved_config(saved["base_config"])  # a sweep begun before a setting was removed resumes too
    except ConfigError as exc:
        raise UsageError(f"{folder / SWEEP_FILE}: its base config no longer validates ({exc.message})") from exc
    store = sweep_study.open_storage(storage_url or sweep_study.default_storage_url(folder))
    load_dataset(base.data, reporter=ConsoleReporter(console))
    with sweep_study.quiet_optuna():
        sweep = sweep_study.reopen(store, saved["study_name"], folder)
        return _work(sweep, base, storage_url, console, verbose)


def read_sweep_file(folder: Path) -> dict[str, Any]:
    """A sweep folder's sweep.json, checked enough to resume from."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise UsageError(f"{folder} is not a sweep folder (no {SWEEP_FILE})", hint="pass a folder made by `cifar sweep`")
    saved = fileio.read_json(path)
    if not isinstance(saved, dict) or saved.get("format") != SWEEP_FILE_FORMAT or not isinstance(saved.get("study_name"), str) \
            or not isinstance(saved.get("base_config"), dict):  # fmt: skip
        raise UsageError(f"{path} is damaged or from another cifar version", hint="it is written by `cifar sweep`; restore it")
    return saved


def _write_sweep_file(sweep: sweep_study.Sweep, storage_url: Optional[str]) -> None:
    shown = None if storage_url is None else sweep_study.shown_url(storage_url)
    fileio.write_json(sweep.folder / SWEEP_FILE, {
        "format": SWEEP_FILE_FORMAT,
        "study_name": sweep.study.study_name,
        "storage": shown,  # null: the study.db beside this file
        "storage_has_password": shown is not None and shown != storage_url,
        "created": datetime.now().isoformat(timespec="seconds"),
        "sweep": sweep.spec.model_dump(mode="json"),
        "base_config": sweep.base_tree,
    })  # fmt: skip


def _work(sweep: sweep_study.Sweep, base: ExperimentConfig, storage_url: Optional[str], console: Console, verbose: bool) -> SweepOutcome:
    counts = sweep_study.counts(sweep)
    console.print(f"sweep folder: {sweep.folder}", markup=False, soft_wrap=True)
    console.print(f"{_describe(sweep.spec)}: {_tally(counts)}", markup=False, soft_wrap=True)
    events = _ConsoleEvents(console, sweep)
    try:
        ran = sweep_trials.work(sweep, lambda task, reporter: run_trial(base, task, reporter, console, verbose), events)
    except (Interrupted, KeyboardInterrupt) as exc:
        write_summary_csv(sweep.folder, sweep_study.records(sweep), sweep.spec.setting_columns())
        reason = exc.message if isinstance(exc, Interrupted) else "interrupted"
        raise Interrupted(f"sweep stopped: {reason}", hint=f"continue with: cifar sweep --resume {sweep.folder}") from exc
    records = sweep_study.records(sweep)
    counts = sweep_study.counts(sweep)
    storage_text = "SQLite file study.db in the sweep folder" if storage_url is None else sweep_study.shown_url(storage_url)
    written = write_sweep_outputs(sweep.folder, sweep.spec, base, records, _tally(counts), storage_text)
    return SweepOutcome(sweep.folder, ran, counts, best_record(records), written)


def _describe(spec: SweepSpec) -> str:
    if spec.kind == "grid":
        return f"grid {' x '.join(str(len(v)) for v in spec.grid.values())} over {', '.join(spec.grid)}"
    if spec.kind == "variants":
        return f"{spec.trials} variants"
    return f"search of {spec.trials} trials over {', '.join(spec.space)} (TPE, seed {spec.seed})"


def _tally(counts: dict[str, int]) -> str:
    shown = [f"{counts[state]} {state}" for state in ("complete", "pruned", "failed", "running", "waiting") if counts.get(state)]
    return f"{counts['total']} trials" + (f" ({', '.join(shown)})" if shown else "")


def trial_config(base: ExperimentConfig, task: sweep_trials.TrialTask) -> ExperimentConfig:
    """The base config with the trial's settings; its run folder is the trial's folder in the sweep."""
    return config_with(base, {**task.overrides, "run.root": str(task.folder.parent), "run.name": task.name})


class _ReportEpochs(TrainCallbacks):
    """Hands each epoch's validation accuracy to the study (which may prune the trial: fit stops after its checkpoint)."""

    def __init__(self, reporter: sweep_trials.EpochReporter) -> None:
        self.reporter = reporter

    def on_epoch_end(self, row: dict[str, float], is_best: bool) -> None:
        self.reporter.report(int(row["epoch"]), float(row["val_accuracy"]))


def run_trial(
    base: ExperimentConfig, task: sweep_trials.TrialTask, reporter: sweep_trials.EpochReporter, console: Console, verbose: bool
) -> sweep_trials.TrialResult:
    """Train one trial into its folder (continuing from its checkpoint if `task.resume`) and score it."""
    cfg = trial_config(base, task)
    display = TrainingDisplay(ConsoleReporter(console), cfg.data.batch_size) if verbose else TrainCallbacks()
    try:
        saved = load_checkpoint(runs.checkpoint_path(task.folder, runs.LAST_CHECKPOINT), for_resume=True) if task.resume else None
        outcome = run_training(cfg, lambda: task.folder, CallbackList([display, _ReportEpochs(reporter)]),
                               resume_from=saved)  # fmt: skip
    finally:
        display.on_train_end()  # a pruned trial leaves fit before its own on_train_end
    return sweep_trials.TrialResult(float(outcome.test_summary["top1"]))


class _ConsoleEvents(sweep_trials.SweepEvents):
    """A line as each trial starts and ends; summary.csv rewritten after each."""

    def __init__(self, console: Console, sweep: sweep_study.Sweep) -> None:
        self.console, self.sweep = console, sweep

    def on_trial_start(self, task: sweep_trials.TrialTask) -> None:
        settings = ", ".join(f"{k}={format_value(v, 4)}" for k, v in task.overrides.items()) or "the base config"
        again = " (continuing from its checkpoint)" if task.resume else ""
        self.console.print(f"trial {task.name}: {settings}{again}", markup=False, soft_wrap=True)

    def on_trial_end(self, record: TrialRecord, counts: dict[str, int], error: Optional[BaseException]) -> None:
        done = counts["complete"] + counts["pruned"] + counts["failed"]
        self.console.print(f"[{done}/{counts['total']}] {record.name}: {_result_text(record)}", markup=False, soft_wrap=True)
        if error is not None and os.environ.get("CIFAR_DEBUG", "") not in ("", "0"):
            self.console.print("".join(traceback.format_exception(error)), markup=False)
        write_summary_csv(self.sweep.folder, sweep_study.records(self.sweep), self.sweep.spec.setting_columns())


def _result_text(record: TrialRecord) -> str:
    seconds = format_seconds(record.seconds) if record.seconds is not None else "-"
    if record.state == "failed":
        return f"failed ({record.error}), {seconds}"
    text = f"{record.state}, best val {record.best_val_accuracy:.2%} (final {record.final_val_accuracy:.2%})"
    if record.state == "pruned":
        return f"{text}, pruned after epoch {record.epochs}, {seconds}"
    test = f", test {record.test_accuracy:.2%}" if record.test_accuracy is not None else ""
    return f"{text}{test}, {seconds}"
