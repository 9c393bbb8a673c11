"""Claiming and running a sweep's trials, in as many processes as share its study.

A process claims a WAITING trial by moving it to RUNNING, which every Optuna storage does
atomically (`set_trial_state_values` refuses a trial that is no longer waiting; an SQLite
file adds a lock), so processes sharing one SQLite file, database or journal never run a
trial twice. A trial stays RUNNING while its process trains it, holding a lock in its folder;
a RUNNING trial whose lock is free lost its process (Ctrl-C, a kill, a crash) and is taken
over by the next process that finds it, continuing from its checkpoint. Nothing here prints:
each trial's start and end go to `SweepEvents`.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cifarcli.errors import CifarError, Interrupted
from cifarcli.fileio import exclusive_lock
from cifarcli.sweeps.spec import SweepSpec, trial_name
from cifarcli.sweeps.study import Sweep, counts, record, sampler, val_curve
from cifarcli.sweeps.summary import TrialRecord

TRIAL_LOCK_FILE = ".trial.lock"  # held by the process training the trial


class TrialPruned(Exception):
    """Raised by a trial's epoch hook when the pruner stops the trial; its checkpoints stay."""


@dataclass(frozen=True)
class TrialTask:
    """One trial to train: a normal run folder at `folder`, the base config with `overrides`."""

    number: int
    name: str
    overrides: dict[str, Any]
    folder: Path
    resume: bool  # continue from the folder's last checkpoint (the trial's earlier process stopped)


@dataclass(frozen=True)
class TrialResult:
    test_accuracy: Optional[float]


class EpochReporter:
    """Passes each epoch's validation accuracy to Optuna and raises TrialPruned when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def report(self, epoch: int, val_accuracy: float) -> None:
        if math.isfinite(val_accuracy):  # a NaN never reaches Optuna or its pruner
            self.trial.report(val_accuracy, epoch)
            if self.trial.should_prune():
                raise TrialPruned(f"pruned after epoch {epoch}: validation accuracy {val_accuracy:.2%} is below the median")


RunTrial = Callable[[TrialTask, EpochReporter], TrialResult]


class SweepEvents:
    """What the sweep loop reports; the command layer prints it."""

    def on_trial_start(self, task: TrialTask) -> None: ...
    def on_trial_end(self, record: TrialRecord, counts: dict[str, int], error: Optional[BaseException]) -> None: ...


@dataclass
class _Claim:
    trial_id: int
    trial: optuna.Trial
    task: TrialTask
    lock: "_FolderLock"


class _FolderLock:
    """An exclusive advisory lock on a file, taken without waiting; the OS drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # no advisory locks (Windows): never treat another process's trial as abandoned
            return False
        handle = open(self.path, "a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the lock
            self._handle = None


def work(sweep: Sweep, run_trial: RunTrial, events: SweepEvents) -> int:
    """Claim and run trials until none is left to claim; returns how many this process ran.

    A failed trial is recorded (state failed, its error in the user attribute `error`) and the
    loop goes on; Interrupted or KeyboardInterrupt leaves the running trial RUNNING, to be
    taken over by the next `cifar sweep --resume`, and propagates.
    """
    ran = 0
    while (claim := _claim_abandoned(sweep) or _claim_waiting(sweep)) is not None:
        try:
            _run(sweep, claim, run_trial, events)
        finally:
            claim.lock.release()
        ran += 1
    return ran


def _trial_id(sweep: Sweep, number: int) -> int:
    return sweep.storage.get_trial_id_from_study_id_trial_number(sweep.study_id, number)


def _claim_waiting(sweep: Sweep) -> Optional[_Claim]:
    lock = exclusive_lock(sweep.store.claim_lock) if sweep.store.claim_lock else contextlib.nullcontext()
    with lock:
        found = _move_to_running(sweep)
    if found is None:
        return None
    trial_id, number = found
    trial = _trial(sweep, trial_id, number)
    params = _suggest(trial, sweep.spec)
    name = trial_name(number, sweep.spec, params)
    folder = sweep.folder / name
    folder.mkdir(parents=True, exist_ok=True)
    folder_lock = _FolderLock(folder / TRIAL_LOCK_FILE)
    folder_lock.acquire()  # nobody else knows this folder yet
    overrides = sweep.spec.overrides_for(params)
    for key, value in (("folder", name), ("overrides", overrides), ("host", socket.gethostname()), ("pid", os.getpid())):
        trial.set_user_attr(key, value)
    return _Claim(trial_id, trial, TrialTask(number, name, overrides, folder, resume=False), folder_lock)


def _move_to_running(sweep: Sweep) -> Optional[tuple[int, int]]:
    """Move the first WAITING trial this process can get to RUNNING: (trial id, number), or None when none is left."""
    for frozen in sweep.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = _trial_id(sweep, frozen.number)
        try:
            if sweep.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return trial_id, frozen.number
        except UpdateFinishedTrialError:
            pass  # another process claimed it first, and has finished it already
    return None


def _claim_abandoned(sweep: Sweep) -> Optional[_Claim]:
    """A RUNNING trial whose process is gone (its folder's lock is free), to continue from its checkpoint."""
    for frozen in sweep.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name = frozen.user_attrs.get("folder")
        folder = sweep.folder / str(name)
        if not name or not folder.is_dir():  # just claimed, or trained on another machine
            continue
        lock = _FolderLock(folder / TRIAL_LOCK_FILE)
        if not lock.acquire():
            continue
        trial_id = _trial_id(sweep, frozen.number)
        if sweep.storage.get_trial(trial_id).state != TrialState.RUNNING:  # it finished as we looked
            lock.release()
            continue
        trial = _trial(sweep, trial_id, frozen.number)
        params = _suggest(trial, sweep.spec)  # the values it was given before
        resume = (folder / "checkpoints" / "last.pt").is_file()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        return _Claim(trial_id, trial, TrialTask(frozen.number, str(name), sweep.spec.overrides_for(params), folder, resume), lock)
    return None


def _trial(sweep: Sweep, trial_id: int, number: int) -> optuna.Trial:
    sweep.study.sampler = sampler(sweep.spec, number)
    return optuna.Trial(sweep.study, trial_id)


def _suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """The trial's values for the sweep's keys (drawn now, or the ones it was given before)."""
    if spec.kind != "search":
        return {key: trial.suggest_categorical(key, values) for key, values in spec.grid_axes().items()}
    params: dict[str, Any] = {}
    for key, rng in spec.space.items():
        if rng.type == "categorical":
            params[key] = trial.suggest_categorical(key, rng.choices or [])
        elif rng.type == "int":
            params[key] = trial.suggest_int(key, int(rng.low or 0), int(rng.high or 0), step=rng.step or 1)
        else:
            params[key] = trial.suggest_float(key, float(rng.low or 0), float(rng.high or 0), log=rng.type == "log_uniform")
    return params


def _run(sweep: Sweep, claim: _Claim, run_trial: RunTrial, events: SweepEvents) -> None:
    trial, task = claim.trial, claim.task
    events.on_trial_start(task)
    started = time.perf_counter()
    error: Optional[BaseException] = None
    result = TrialResult(None)
    try:
        result = run_trial(task, EpochReporter(trial))
        state = TrialState.COMPLETE
    except TrialPruned:
        state = TrialState.PRUNED
    except (Interrupted, KeyboardInterrupt):
        _add_seconds(trial, started)
        raise
    except Exception as exc:  # any failure of one trial is recorded, and the sweep goes on
        state, error = TrialState.FAIL, exc
    _add_seconds(trial, started)
    curve = val_curve(sweep.storage.get_trial(claim.trial_id))
    if state == TrialState.COMPLETE and not curve:
        state, error = TrialState.FAIL, RuntimeError("the trial finished without a validation accuracy")
    if error is not None:
        trial.set_user_attr("error", error_text(error))
    if result.test_accuracy is not None:
        trial.set_user_attr("test_accuracy", result.test_accuracy)
    if state == TrialState.COMPLETE:
        sweep.study.tell(trial, max(curve))
    else:
        sweep.study.tell(trial, state=state)
    events.on_trial_end(record(sweep, sweep.storage.get_trial(claim.trial_id)), counts(sweep), error)


def _add_seconds(trial: optuna.Trial, started: float) -> None:
    before = float(trial.user_attrs.get("seconds", 0.0))
    trial.set_user_attr("seconds", round(before + time.perf_counter() - started, 3))


def error_text(error: BaseException) -> str:
    """One line for a failed trial: a cifar error's message, else the exception's type and text."""
    text = error.message if isinstance(error, CifarError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


