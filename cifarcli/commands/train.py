"""`cifar train`: one run, from config to checkpoints, metrics, TensorBoard and a test score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cifarcli import runs
from cifarcli.commands.lr_find import LrFromOption, config_with_lr_from
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, print_config_and_exit, resolve_config
from cifarcli.errors import UsageError

if TYPE_CHECKING:
    from cifarcli.config import ExperimentConfig


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
    if resume is not None:
        if config is not None or overrides or lr_from is not None:
            raise UsageError("--resume continues a run with its own config; drop --config/--set/--lr-from",
                             hint=f"config used: {resume / runs.CONFIG_FILE}")  # fmt: skip
        cfg = _resumed_config(resume)
    else:
        cfg = resolve_config(config, overrides, print_config and lr_from is None)
        if lr_from is not None:
            from cifarcli.commands.progress import make_console

            cfg = config_with_lr_from(cfg, lr_from, make_console(quiet))
            print_config_and_exit(cfg, print_config)

    # Imported once the config is known: --print-config and config errors answer without torch.
    from rich.console import Console

    from cifarcli import fileio
    from cifarcli.commands import compose
    from cifarcli.commands.evaluation import print_summary
    from cifarcli.commands.progress import TrainingDisplay, make_console
    from cifarcli.commands.training import train_and_score
    from cifarcli.config import config_to_yaml
    from cifarcli.engine.checkpoint import load_checkpoint
    from cifarcli.engine.trainer import restore_train_state
    from cifarcli.models import render_summary

    console = make_console(quiet)
    device = compose.device_for(cfg)
    data = compose.build_data(cfg, device, progress=not quiet)
    model = compose.prepare_model(cfg, data.labels.num_classes, device)
    state = compose.build_train_state(cfg, model, compose.steps_per_epoch(cfg, data), device)
    if resume is None:  # the folder is made only once everything above has validated
        run_dir = runs.create_run_dir(cfg.run.root, cfg.run.name)
        fileio.write_text_atomic(run_dir / runs.CONFIG_FILE, config_to_yaml(cfg))
        fileio.write_json(run_dir / runs.RUN_INFO_FILE, compose.run_info(cfg, data, device))
    else:
        run_dir = resume
        restore_train_state(state, load_checkpoint(runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT)))
        console.print(f"resuming at epoch {state.epoch + 1}, step {state.batch_in_epoch + 1}")
    console.print(f"run folder: {run_dir}")
    facts = compose.precision_facts(cfg, device)
    console.print(f"precision: {facts['precision']} ({facts['precision_reason']}); memory format: {facts['memory_format']}",
                  markup=False, soft_wrap=True)  # fmt: skip
    if not quiet:
        console.print(render_summary(compose.summary_at_start(cfg, state)))

    outcome = train_and_score(cfg, state, data, device, run_dir, TrainingDisplay(console, cfg.data.batch_size))
    print_summary(Console(highlight=False), outcome.test_summary, f"test set, best checkpoint ({outcome.fit.best_checkpoint.name})")
    files = [run_dir / runs.CONFIG_FILE, run_dir / runs.METRICS_FILE, outcome.fit.last_checkpoint, outcome.fit.best_checkpoint]
    for path in [*files, *outcome.written]:
        typer.echo(f"wrote {path}")
    if cfg.run.tensorboard:
        typer.echo(f"TensorBoard: tensorboard --logdir {run_dir / runs.TENSORBOARD_DIR}")


def _resumed_config(run_dir: Path) -> ExperimentConfig:
    from cifarcli.config import load_saved_config

    config_file = run_dir / runs.CONFIG_FILE
    if not config_file.is_file():
        raise UsageError(f"cannot resume {run_dir}: no {runs.CONFIG_FILE} there", hint="pass a folder created by `cifar train`")
    if not runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT).is_file():
        raise UsageError(f"cannot resume {run_dir}: it has no checkpoint yet", hint="start it again with `cifar train`")
    return load_saved_config(config_file)
