"""The work behind `cifar train` and every sweep trial: build, fit with logging, score the best checkpoint."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from cifarcli import fileio, runs
from cifarcli.commands import compose
from cifarcli.commands.evaluation import eval_data_of, evaluate_split, scored_label, write_evaluation
from cifarcli.config import ExperimentConfig, config_to_yaml
from cifarcli.engine.loop import TrainState
from cifarcli.engine.schedules import sync_lr
from cifarcli.commands.tensorboard_views import TEST_CONFUSION_TAG, ConfusionPerEpoch, final_metrics, hparam_values
from cifarcli.engine.target import TargetResult, time_to_target
from cifarcli.engine.tensorboard import TensorBoardLogger
from cifarcli.engine.callbacks import CallbackList, TrainCallbacks
from cifarcli.engine.distributed import SINGLE, DistContext, from_main, local_share, main_first
from cifarcli.engine.trainer import FitResult, FitSettings, fit, restore_train_state
from cifarcli.errors import CheckpointError
from cifarcli.reporting import SILENT, Reporter
from cifarcli.plots.confusion import plot_confusion_matrix


@dataclass(frozen=True)
class TrainingOutcome:
    run_dir: Path
    fit: FitResult
    test_summary: dict
    written: list[Path]  # evaluation files and figures, besides the checkpoints and metrics
    target: Optional[TargetResult] = None  # train.target_accuracy's figures, when set


def fit_settings(cfg: ExperimentConfig, device: torch.device, ranks: DistContext = SINGLE) -> FitSettings:
    return FitSettings(
        dist=ranks,
        epochs=cfg.train.epochs,
        step=compose.step_settings(cfg, device),
        overfit_batches=cfg.train.overfit_batches,
        before_epoch=compose.epoch_hooks(cfg),
        target_accuracy=cfg.train.target_accuracy,
        target_split=cfg.train.target_split,
        stop_at_target=cfg.train.stop_at_target,
    )


def train_and_score(
    cfg: ExperimentConfig, state: TrainState, data: compose.DataBundle, device: torch.device, run_dir: Path,
    display: TrainCallbacks, ranks: DistContext = SINGLE,
) -> TrainingOutcome:  # fmt: skip
    """Train to the end (TensorBoard logging if configured), then score the best checkpoint on the test set.

    Every rank trains and scores; rank 0 alone logs and writes (the others return no files)."""
    logger = None
    if cfg.run.tensorboard and ranks.is_main:
        logger = TensorBoardLogger(run_dir / runs.TENSORBOARD_DIR, cfg.train.tensorboard_every_steps,
                                   preview=lambda: compose.preview_augmented(cfg, data, count=32))  # fmt: skip
    try:
        with runs.status_kept(run_dir) if ranks.is_main else contextlib.nullcontext():  # status.json: running, then finished / interrupted / failed
            views = [logger, ConfusionPerEpoch(logger, data.labels.class_names)] if logger is not None else []
            callbacks = CallbackList([display, *views])
            extra = {"config": cfg.model_dump(mode="json"), "num_classes": data.labels.num_classes, "class_names": data.labels.class_names}
            with compose.out_of_memory_as_error(cfg.data.batch_size, "data.batch_size"):
                result = fit(state, data.train, data.val, fit_settings(cfg, device, ranks), compose.run_files(run_dir), extra, callbacks,
                             test_loader=data.test)  # fmt: skip
            best = compose.load_trained_model(result.best_checkpoint, cfg, device)
            with compose.out_of_memory_as_error(cfg.data.eval_batch_size, "data.eval_batch_size"):
                summary, matrix, rows = evaluate_split(best, eval_data_of(data, "test"), cfg.eval)
            if not ranks.is_main:
                return TrainingOutcome(run_dir, result, summary, [])
            written = write_evaluation(run_dir, summary, matrix, rows, data.labels.class_names)
            figure = plot_confusion_matrix(matrix, data.labels.class_names, written[0].parent / "confusion_matrix.png",
                                           f"Confusion matrix: {scored_label(summary)}")  # fmt: skip
            written.append(figure)
            if logger is not None:
                logger.log_png(TEST_CONFUSION_TAG, figure, state.epoch)
                logger.log_hparams(hparam_values(cfg), final_metrics(summary, result.history), state.epoch)
            target = record_target(cfg, run_dir, result.history)
    finally:
        if logger is not None:
            logger.close()
    return TrainingOutcome(run_dir, result, summary, written, target)


def record_target(cfg: ExperimentConfig, run_dir: Path, history: list[dict[str, float]]) -> Optional[TargetResult]:
    """With train.target_accuracy set: its figures, also written into run_info.json as "time_to_target"."""
    if cfg.train.target_accuracy is None:
        return None
    target = time_to_target(history, cfg.train.target_accuracy, cfg.train.target_split)
    info_file = run_dir / runs.RUN_INFO_FILE
    info = fileio.read_json(info_file) if info_file.is_file() else {}
    fileio.write_json(info_file, {**(info if isinstance(info, dict) else {}), "time_to_target": target.as_dict()})
    return target


def run_training(
    cfg: ExperimentConfig, new_run_dir: Callable[[], Path], display: TrainCallbacks,
    resume_from: Optional[dict[str, Any]] = None, reporter: Reporter = SILENT,
    on_start: Optional[Callable[[Path, TrainState], None]] = None, lock_run_dir: bool = True, extended: bool = False,
    ranks: DistContext = SINGLE,
) -> TrainingOutcome:  # fmt: skip
    """Turn a resolved config into a finished run folder; `cifar train` and each sweep trial call this.

    Data, model and training state are built first; only then is `new_run_dir()` called, so a
    setting that fails to build leaves no folder behind. A fresh run gets config.yaml and
    run_info.json there; `resume_from` (the folder's last checkpoint, loaded with
    `for_resume=True`) is restored instead, after checking it fits the data and the epoch.
    The run folder stays locked until training and scoring end (`lock_run_dir=False` when the
    caller holds the lock already). `on_start(run_dir, state)` is called just before training.
    `extended`: `cfg` trains the resumed run for more epochs than its checkpoint's config; its
    config.yaml is rewritten and the LR set from the schedule `cfg` draws.
    Under torchrun (several `ranks`) rank 0 loads the data first (a download lands once), makes,
    locks and writes the run folder, and tells the others its path.
    """
    device = compose.device_for(cfg)
    with main_first(ranks):
        data = compose.build_data(cfg, device, reporter=reporter if ranks.is_main else SILENT, ranks=ranks)
    model = compose.prepare_model(cfg, data.labels.num_classes, device, data)
    state = compose.build_train_state(cfg, model, compose.steps_per_epoch(cfg, data), device, ranks)
    with contextlib.ExitStack() as held:
        run_dir = from_main(new_run_dir, ranks)
        if lock_run_dir and ranks.is_main:
            held.enter_context(runs.locked(run_dir))
        if resume_from is not None:
            _restore_checked(cfg, state, data, resume_from, runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT))
            state.epoch_totals = local_share(state.epoch_totals, ranks)
            if extended:
                sync_lr(state.optimizer, state.scheduler)
                if ranks.is_main:
                    fileio.write_text_atomic(run_dir / runs.CONFIG_FILE, config_to_yaml(cfg))
        elif ranks.is_main:
            fileio.write_text_atomic(run_dir / runs.CONFIG_FILE, config_to_yaml(cfg))
            fileio.write_json(run_dir / runs.RUN_INFO_FILE, compose.run_info(cfg, data, device))
        if on_start is not None:
            on_start(run_dir, state)
        return train_and_score(cfg, state, data, device, run_dir, display, ranks)


def _restore_checked(
    cfg: ExperimentConfig, state: TrainState, data: compose.DataBundle, saved: dict[str, Any], last: Path
) -> None:
    """Put a checkpoint's state into `state` once it is known to fit this data set and epoch length."""
    compose.check_checkpoint_classes(saved, data.labels, last)
    steps = compose.steps_per_epoch(cfg, data)
    if saved["batch_in_epoch"] > steps:  # equal: stopped after the epoch's last step, before its bookkeeping
        raise CheckpointError(f"{last} is damaged: it stopped after step {saved['batch_in_epoch']} of an epoch of "
                              f"{steps} steps", hint="start a new run with `cifar train`")  # fmt: skip
    restore_train_state(state, saved, last)
