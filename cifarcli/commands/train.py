"""`cifar train`: one run, from config to checkpoints, metrics, TensorBoard and a test score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cifarcli import fileio, runs
from cifarcli.commands import compose
from cifarcli.commands.evaluation import evaluate_split, print_summary, write_evaluation
from cifarcli.commands.lr_find import LrFromOption, config_with_lr_from
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_config
from cifarcli.commands.progress import TrainingDisplay, make_console
from cifarcli.config import ExperimentConfig, config_to_yaml, load_config
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.tensorboard import TensorBoardLogger
from cifarcli.engine.trainer import CallbackList, FitSettings, fit, restore_train_state
from cifarcli.errors import UsageError
from cifarcli.models import render_summary, summarize_model
from cifarcli.plots.confusion import plot_confusion_matrix


def train(
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this folder where it stopped.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final results.")] = False,
    lr_from: LrFromOption = None,
) -> None:
    """Train a model (downloads the data first if missing).

    Example: cifar train -c cifar100-resnet34 --set train.epochs=30
    """
    console = make_console(quiet)
    if resume is not None:
        if lr_from is not None:
            raise UsageError("--lr-from sets the LR of a new run; a resumed run keeps its own", hint="drop --lr-from or --resume")
        if config is not None or overrides:
            raise UsageError("--resume continues a run with its own config; drop --config/--set", hint=f"config used: {resume / runs.CONFIG_FILE}")
        cfg, run_dir = _resumed_config(resume), resume
    else:
        cfg = resolve_config(config, overrides, print_config and lr_from is None)
        if lr_from is not None:
            cfg = config_with_lr_from(cfg, lr_from, console)
            if print_config:
                typer.echo(config_to_yaml(cfg), nl=False)
                raise typer.Exit(0)
        run_dir = runs.create_run_dir(cfg.run.root, cfg.run.name)
        fileio.write_text_atomic(run_dir / runs.CONFIG_FILE, config_to_yaml(cfg))
    console.print(f"run folder: {run_dir}")

    device = compose.device_for(cfg)
    data = compose.build_data(cfg, device, progress=not quiet)
    model = compose.prepare_model(cfg, data.labels.num_classes, device)
    if not quiet:
        console.print(render_summary(summarize_model(model, max_depth=2)))
    state = compose.build_train_state(cfg, model, len(data.train), device)
    if resume is None:
        fileio.write_json(run_dir / runs.RUN_INFO_FILE, compose.run_info(cfg, data, device))
    if resume is not None:
        restore_train_state(state, load_checkpoint(runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT)))
        console.print(f"resuming at epoch {state.epoch + 1}, step {state.batch_in_epoch + 1}")

    display = TrainingDisplay(console, cfg.data.batch_size)
    logger = TensorBoardLogger(run_dir / runs.TENSORBOARD_DIR, cfg.train.log_every_steps) if cfg.run.tensorboard else None
    if logger is not None:
        logger.log_image_grid("augmented_train_batch", compose.preview_augmented(cfg, data, count=32))
    settings = FitSettings(
        epochs=cfg.train.epochs, step=compose.step_settings(cfg, device), overfit_batches=cfg.train.overfit_batches,
        before_epoch=compose.backbone_freezer(cfg.model.freeze_backbone_epochs),
    )  # fmt: skip
    extra = {"config": cfg.model_dump(mode="json"), "num_classes": data.labels.num_classes, "class_names": data.labels.class_names}
    try:
        callbacks = CallbackList([display] + ([logger] if logger else []))
        with compose.out_of_memory_as_error(cfg.data.batch_size, "data.batch_size"):
            result = fit(state, data.train, data.val, settings, compose.run_files(run_dir), extra, callbacks)
        best = compose.load_trained_model(result.best_checkpoint, cfg, device)
        summary, matrix, rows = evaluate_split(best, data, cfg.eval.model_copy(update={"split": "test"}))
        written = write_evaluation(run_dir, summary, matrix, rows, data.labels.class_names)
        if logger is not None:
            figure = plot_confusion_matrix(matrix, data.labels.class_names, run_dir / "confusion_matrix.png")
            logger.log_png("confusion_matrix", figure)
            written.append(figure)
    finally:
        if logger is not None:
            logger.close()
    print_summary(Console(highlight=False), summary, f"test set, best checkpoint ({result.best_checkpoint.name})")
    for path in [run_dir / runs.CONFIG_FILE, run_dir / runs.METRICS_FILE, result.last_checkpoint, result.best_checkpoint, *written]:
        typer.echo(f"wrote {path}")
    if logger is not None:
        typer.echo(f"TensorBoard: tensorboard --logdir {run_dir / runs.TENSORBOARD_DIR}")


def _resumed_config(run_dir: Path) -> ExperimentConfig:
    config_file = run_dir / runs.CONFIG_FILE
    if not config_file.is_file():
        raise UsageError(f"cannot resume {run_dir}: no {runs.CONFIG_FILE} there", hint="pass a folder created by `cifar train`")
    if not runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT).is_file():
        raise UsageError(f"cannot resume {run_dir}: it has no checkpoint yet", hint="start it again with `cifar train`")
    return load_config(config_file)
