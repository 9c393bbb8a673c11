"""The epoch loop: train, validate, write metrics and checkpoints, stop cleanly on a signal."""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
from torch import nn

from cifarcli.engine.callbacks import TrainCallbacks
from cifarcli.engine.checkpoint import capture_rng_state, copy_checkpoint, restore_rng_state, save_checkpoint
from cifarcli.engine.distributed import SINGLE, AgreedStop, DistContext, barrier, combine_epoch_stats, combine_totals, predict_across_ranks
from cifarcli.engine.loop import Batches, EpochStats, EpochTotals, StepSettings, TrainState, train_one_epoch
from cifarcli.engine.predict import Predictions
from cifarcli.engine.target import time_to_target
from cifarcli import escape
from cifarcli.errors import CheckpointError, Interrupted, StorageError
from cifarcli.fileio import write_csv

METRIC_COLUMNS = [
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "ema_val_loss", "ema_val_accuracy", "lr", "seconds", "images_per_second", "wall_seconds", "test_accuracy",
]  # fmt: skip
EMA_COLUMNS = ("ema_val_loss", "ema_val_accuracy")  # in metrics.csv only when train.ema_decay is set
TEST_COLUMNS = ("test_accuracy",)  # in metrics.csv only when train.target_split is test
# Added after the first releases: a checkpoint's history may lack them (read as NaN).
LATER_METRIC_COLUMNS = ("wall_seconds", "test_accuracy")


def metric_columns(ema: bool, test: bool = False) -> list[str]:
    """The metrics.csv columns of a run: every one, less the EMA ones without EMA weights and the
    per-epoch test accuracy unless the accuracy target watches the test split."""
    return [c for c in METRIC_COLUMNS if (ema or c not in EMA_COLUMNS) and (test or c not in TEST_COLUMNS)]


class EpochLoader(Protocol):
    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    step: StepSettings
    overfit_batches: int = 0
    before_epoch: Optional[Callable[[int, nn.Module], None]] = None  # e.g. freeze the backbone early on
    target_accuracy: Optional[float] = None  # train.target_accuracy
    target_split: str = "val"  # "val", or "test": then the test loader is scored after every epoch
    stop_at_target: bool = False
    # The ranks of a torchrun job: rank 0 alone writes; stop flags, epoch figures and predictions are
    # combined over all of them.
    dist: DistContext = SINGLE


@dataclass(frozen=True)
class RunFiles:
    """Where fit writes: the run folder (named in messages), checkpoints and the metrics table."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    metrics_csv: Path


@dataclass(frozen=True)
class FitResult:
    last_checkpoint: Path
    best_checkpoint: Path
    history: list[dict[str, float]]


def checkpoint_state(state: TrainState, extra: dict[str, Any]) -> dict[str, Any]:
    """The dict saved in a checkpoint: full training state plus `extra` (config, class names)."""
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "lookahead": state.lookahead.state_dict() if state.lookahead is not None else None,
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "epoch_totals": dataclasses.asdict(state.epoch_totals),
        "global_step": state.global_step,
        "best_val_accuracy": state.best_val_accuracy,
        "history": state.history,
        "rng": capture_rng_state(),
        **extra,
    }


def restore_train_state(state: TrainState, saved: dict[str, Any], source: Path) -> None:
    """Put a checkpoint's model, optimizer, scheduler, scaler, EMA, counters and RNG into `state`.

    `saved` comes from `load_checkpoint(source, for_resume=True)`; state that does not fit the
    model and optimizer built from its config is a CheckpointError naming `source`.
    """
    try:
        _restore(state, saved)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(f"{source} does not fit the model and optimizer of its own config ({escape.clip(detail)})",
                              hint="the checkpoint is damaged or from another run; start a new run with `cifar train`") from exc  # fmt: skip


def _restore(state: TrainState, saved: dict[str, Any]) -> None:
    # LambdaLR.load_state_dict copies whatever it is given into the scheduler: check it is a state of this kind.
    if set(saved["scheduler"]) != set(state.scheduler.state_dict()) or not isinstance(saved["scheduler"].get("last_epoch"), int):
        raise KeyError("the scheduler state is of another kind")
    history = [{**{c: math.nan for c in LATER_METRIC_COLUMNS}, **row} for row in saved.get("history", [])]
    for row in history:  # every metrics column present and a number, as metrics.csv is rewritten from it
        [float(row[column]) for column in METRIC_COLUMNS]
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    if state.ema is not None and saved.get("ema") is not None:
        state.ema.load_state_dict(saved["ema"])
    if state.lookahead is not None:
        if saved.get("lookahead") is None:
            raise KeyError("the checkpoint has no lookahead average, but train.lookahead_every_steps is set")
        state.lookahead.load_state_dict(saved["lookahead"])
    state.epoch = int(saved["epoch"])
    state.batch_in_epoch = int(saved.get("batch_in_epoch", 0))
    state.epoch_totals = EpochTotals(**(saved.get("epoch_totals") or {}))
    state.global_step = int(saved["global_step"])
    state.best_val_accuracy = float(saved["best_val_accuracy"])
    state.history = history
    if "rng" in saved:
        restore_rng_state(saved["rng"])


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a run can save and stop cleanly."""

    def __init__(self, second_stops_now: bool = True) -> None:
        # Under torchrun a Ctrl-C reaches a rank twice (from the terminal, then forwarded by torchrun,
        # which kills what is left after 30 s): there the repeat is not a request to stop at once.
        self.second_stops_now = second_stops_now
        self.signal_name: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None and self.second_stops_now:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __call__(self) -> bool:
        return self.signal_name is not None

    @property
    def label(self) -> str:
        """How the user stopped the run: `Ctrl-C` for SIGINT, else the signal's name."""
        return "Ctrl-C" if self.signal_name == "SIGINT" else str(self.signal_name)


def fit(
    state: TrainState,
    train_loader: EpochLoader,
    val_loader: Optional[Batches],
    settings: FitSettings,
    files: RunFiles,
    checkpoint_extra: dict[str, Any],
    callbacks: TrainCallbacks = TrainCallbacks(),
    test_loader: Optional[Batches] = None,
) -> FitResult:
    """Train from `state.epoch` to `settings.epochs`, validating and checkpointing every epoch.

    With `settings.target_split == "test"`, `test_loader` is scored after every epoch too (the
    `test_accuracy` column); with `settings.stop_at_target` the run ends after the first epoch
    whose accuracy on the target split reaches `settings.target_accuracy`.
    """
    last, best = files.last_checkpoint, files.best_checkpoint
    wall_started = time.perf_counter() - _wall_seconds_so_far(state)
    fixed_batches = _take_batches(train_loader, settings.overfit_batches) if settings.overfit_batches else None
    steps_per_epoch = len(fixed_batches) if fixed_batches is not None else len(train_loader)
    callbacks.on_train_start(state, settings.epochs, steps_per_epoch)
    ranks, main = settings.dist, settings.dist.is_main
    with StopRequest(second_stops_now=not ranks.is_distributed) as signalled:
        every = 1 if settings.step.skip_nonfinite else settings.step.sync_every_steps
        stop = AgreedStop(signalled, ranks, every, lambda: state.global_step)
        for epoch in range(state.epoch, settings.epochs):
            if _target_stops_run(state, settings):  # reached before an interruption: nothing left to train
                break
            state.forward.train()  # before the hook, which may put frozen norm layers back in eval mode
            if settings.before_epoch is not None:
                settings.before_epoch(epoch, state.model)
            train_loader.set_epoch(epoch)
            batches: Batches = fixed_batches if fixed_batches is not None else train_loader
            if state.batch_in_epoch:
                batches = itertools.islice(batches, state.batch_in_epoch, None)
            callbacks.on_epoch_start(epoch, steps_per_epoch)
            stats = train_one_epoch(state, batches, settings.step, callbacks.on_step, stop, callbacks.on_losses)
            if stats.interrupted:
                state.batch_in_epoch = stats.batches_done
                state.epoch_totals = combine_totals(state.epoch_totals, ranks)  # the checkpoint keeps every rank's sums
                if main:
                    save_checkpoint(last, checkpoint_state(state, checkpoint_extra))
                callbacks.on_train_end()
                by = signalled.label if signalled.signal_name else "a signal to another process"  # under torchrun: to another rank
                raise Interrupted(
                    f"stopped by {by} at epoch {epoch + 1}, step {stats.batches_done} of {steps_per_epoch}; "
                    f"state saved to {last}",
                    hint=f"continue with: cifar train --resume {files.run_dir}",
                )
            state.batch_in_epoch = 0
            state.epoch = epoch + 1
            stats = combine_epoch_stats(stats, ranks)
            row, is_best, val = _finish_epoch(state, stats, val_loader, settings, test_loader, time.perf_counter() - wall_started)
            if main:
                _write_metrics(files, state.history, metric_columns(state.ema is not None, _watches_test(settings)))
                if is_best:  # best.pt first: a kill before last.pt replays this epoch, which writes both again
                    save_checkpoint(best, checkpoint_state(state, checkpoint_extra))
                    copy_checkpoint(best, last)
                else:
                    save_checkpoint(last, checkpoint_state(state, checkpoint_extra))
            if val is not None:
                callbacks.on_validation(state.epoch, val)
            callbacks.on_epoch_end(row, is_best)
            if _target_stops_run(state, settings):
                break
    callbacks.on_train_end()
    barrier(ranks)  # rank 0's checkpoints are written before any rank reads best.pt back
    return FitResult(last_checkpoint=last, best_checkpoint=best if best.exists() else last, history=state.history)


def _wall_seconds_so_far(state: TrainState) -> float:
    """Wall time the run had spent before this `fit` call: the last finished epoch's, plus a resumed epoch's part."""
    last = float(state.history[-1].get("wall_seconds", math.nan)) if state.history else 0.0
    return (last if math.isfinite(last) else 0.0) + (state.epoch_totals.seconds if state.batch_in_epoch else 0.0)


def _watches_test(settings: FitSettings) -> bool:
    """Whether the accuracy target watches the test split (scored after every epoch, a metrics.csv column)."""
    return settings.target_accuracy is not None and settings.target_split == "test"


def _target_stops_run(state: TrainState, settings: FitSettings) -> bool:
    if not settings.stop_at_target or settings.target_accuracy is None or not state.history:
        return False
    return time_to_target(state.history, settings.target_accuracy, settings.target_split).reached


def _finish_epoch(
    state: TrainState, stats: EpochStats, val_loader: Optional[Batches], settings: FitSettings,
    test_loader: Optional[Batches], wall_seconds: float,
) -> tuple[dict[str, float], bool, Optional[Predictions]]:  # fmt: skip
    """Validate (and score the test split when the target watches it), record the epoch's row in the
    history; returns it, whether it is the best so far, and the validation predictions."""
    autocast, ranks = settings.step.autocast, settings.dist
    val = predict_across_ranks(state.forward, val_loader, ranks, autocast) if val_loader is not None else None
    watched = _watches_test(settings) and test_loader is not None
    test = predict_across_ranks(state.forward, test_loader, ranks, autocast) if watched else None
    ema_val = predict_across_ranks(state.ema.module, val_loader, ranks, autocast) if (val_loader is not None and state.ema) else None
    row = {
        "epoch": state.epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "val_loss": _or_nan(val, "loss"),
        "val_accuracy": _or_nan(val, "accuracy"),
        "ema_val_loss": _or_nan(ema_val, "loss"),
        "ema_val_accuracy": _or_nan(ema_val, "accuracy"),
        "lr": state.lr,
        "seconds": stats.seconds,
        "images_per_second": stats.images_per_second,
        "wall_seconds": wall_seconds,
        "test_accuracy": _or_nan(test, "accuracy"),
    }
    state.history.append(row)
    # Without a validation split every epoch counts as the best: best.pt is then the last epoch.
    score = row["val_accuracy"] if val is not None else float(state.epoch)
    is_best = math.isfinite(score) and score > state.best_val_accuracy
    if is_best:
        state.best_val_accuracy = score
    return row, is_best, val


def _write_metrics(files: RunFiles, history: list[dict[str, float]], columns: list[str]) -> None:
    """Rewrite metrics.csv from the history; the hint says a checkpoint is intact only when there is one."""
    try:
        write_csv(files.metrics_csv, columns, ([row[c] for c in columns] for row in history))
    except StorageError as exc:
        raise exc.with_hint("the previous checkpoint is intact") if files.last_checkpoint.is_file() else exc


def _or_nan(predictions: Optional[Predictions], attribute: str) -> float:
    return float(getattr(predictions, attribute)) if predictions is not None and len(predictions.targets) else math.nan


def _take_batches(loader: EpochLoader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` batches of epoch 0, kept fixed for an overfitting sanity run."""
    loader.set_epoch(0)
    return list(itertools.islice(loader, count))
