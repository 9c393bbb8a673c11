"""The work behind `cifar train`: fit with logging, then score the best checkpoint on the test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cifarcli import runs
from cifarcli.commands import compose
from cifarcli.commands.evaluation import eval_data_of, evaluate_split, write_evaluation
from cifarcli.config import ExperimentConfig
from cifarcli.engine.loop import TrainState
from cifarcli.engine.tensorboard import TensorBoardLogger
from cifarcli.engine.callbacks import CallbackList, TrainCallbacks
from cifarcli.engine.trainer import FitResult, FitSettings, fit
from cifarcli.plots.confusion import plot_confusion_matrix


@dataclass(frozen=True)
class TrainingOutcome:
    fit: FitResult
    test_summary: dict
    written: list[Path]  # evaluation files and figures, besides the checkpoints and metrics


def fit_settings(cfg: ExperimentConfig, device: torch.device) -> FitSettings:
    return FitSettings(
        epochs=cfg.train.epochs,
        step=compose.step_settings(cfg, device),
        overfit_batches=cfg.train.overfit_batches,
        before_epoch=compose.backbone_freezer(cfg.model.freeze_backbone_epochs),
    )


def train_and_score(
    cfg: ExperimentConfig, state: TrainState, data: compose.DataBundle, device: torch.device, run_dir: Path,
    display: TrainCallbacks,
) -> TrainingOutcome:  # fmt: skip
    """Train to the end (TensorBoard logging if configured), then score the best checkpoint on the test set."""
    logger = TensorBoardLogger(run_dir / runs.TENSORBOARD_DIR, cfg.train.tensorboard_every_steps) if cfg.run.tensorboard else None
    try:
        if logger is not None:
            logger.log_image_grid("augmented_train_batch", compose.preview_augmented(cfg, data, count=32))
        callbacks = CallbackList([display, *([logger] if logger else [])])
        extra = {"config": cfg.model_dump(mode="json"), "num_classes": data.labels.num_classes, "class_names": data.labels.class_names}
        with compose.out_of_memory_as_error(cfg.data.batch_size, "data.batch_size"):
            result = fit(state, data.train, data.val, fit_settings(cfg, device), compose.run_files(run_dir), extra, callbacks)
        best = compose.load_trained_model(result.best_checkpoint, cfg, device)
        with compose.out_of_memory_as_error(cfg.data.eval_batch_size, "data.eval_batch_size"):
            summary, matrix, rows = evaluate_split(best, eval_data_of(data, "test"), cfg.eval)
        written = write_evaluation(run_dir, summary, matrix, rows, data.labels.class_names)
        figure = plot_confusion_matrix(matrix, data.labels.class_names, run_dir / "confusion_matrix.png")
        written.append(figure)
        if logger is not None:
            logger.log_png("confusion_matrix", figure)
    finally:
        if logger is not None:
            logger.close()
    return TrainingOutcome(result, summary, written)
