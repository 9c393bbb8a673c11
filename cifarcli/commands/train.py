"""`cifar train`: one run, from config to checkpoints, metrics, TensorBoard and a test score."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cifarcli import escape, runs
from cifarcli.commands.lr_find import LrFromOption, config_with_lr_from
from cifarcli.commands.options import (
    ConfigOption, PrintConfigOption, SetOption, print_config_and_exit, resolve_config, saved_config,
)  # fmt: skip
from cifarcli.errors import ConfigError, DamagedFileError, UsageError

EXTEND_SCHEDULES = ("stretch", "continue")  # --extend-schedule: see _extended

if TYPE_CHECKING:
    from cifarcli.config import ExperimentConfig
    from cifarcli.commands.training import TrainingOutcome
    from cifarcli.engine.distributed import DistContext
    from cifarcli.engine.loop import TrainState


def train(
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", metavar="RUN_DIR", help="Continue the run in this folder (or `latest`, or the start of its name) where it stopped; with --set train.epochs=N, train a finished run on to N epochs.")] = None,
    extend_schedule: Annotated[Optional[str], typer.Option("--extend-schedule", metavar="|".join(EXTEND_SCHEDULES), help="How --resume --set train.epochs=N extends the LR schedule: stretch (redrawn over N epochs, resumed at the current step) or continue (the extra epochs at the schedule's final LR).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final results.")] = False,
    lr_from: LrFromOption = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", metavar="SEEDS", help="Train once per seed (e.g. 0,1,2 or 0-4), each in its own run folder, and print the mean, std, min and max.")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, max=1024, metavar="N", help="Train as N processes under torchrun (DistributedDataParallel; one GPU each on CUDA). data.batch_size is the global batch.")] = None,
) -> None:
    """Train a model (downloads the data first if missing).

    Example: cifar train -c cifar100-resnet34 --set train.epochs=30
    """
    if nproc is not None and not print_config:
        _train_in_processes(nproc, config, overrides, resume, seeds)
    if seeds is not None:
        if resume is not None:
            raise UsageError("--seeds starts new runs; it cannot be combined with --resume",
                             hint="resume each seed's run folder on its own: cifar train --resume RUN_DIR")  # fmt: skip
        from cifarcli.commands.seed_runs import parse_seeds

        seed_list = parse_seeds(seeds)  # a bad list fails before anything is loaded
    with contextlib.ExitStack() as held:  # the run folder stays locked until training and scoring end
        if resume is not None:
            resume = runs.resolve_run(resume)
            epochs = _epochs_to_extend_to(resume, config, overrides, lr_from)
            if _is_main_process():  # under torchrun rank 0 holds the lock for the job
                held.enter_context(runs.locked(resume))
            cfg, saved = _resumed_run(resume)
            extended = epochs is not None and epochs != cfg.train.epochs
            if extended:
                cfg = _extended(cfg, saved, epochs, extend_schedule)
            elif extend_schedule is not None:
                raise UsageError("--extend-schedule applies only when --resume extends a run",
                                 hint=f"add --set train.epochs=N with N above {cfg.train.epochs}, or drop --extend-schedule")  # fmt: skip
            print_config_and_exit(cfg, print_config)
            if not extended and _is_complete(resume, cfg, saved):
                if not _is_main_process():  # under torchrun rank 0 alone says so
                    return
                typer.echo(f"{escape.terminal(resume)} is already complete ({saved['epoch']} of {cfg.train.epochs} epochs); "
                           "nothing was changed")  # fmt: skip
                typer.echo(f"to train it longer: cifar train --resume {escape.terminal(resume)} --set train.epochs=N "
                           f"--extend-schedule {'|'.join(EXTEND_SCHEDULES)}")  # fmt: skip
                return
        else:
            cfg = resolve_config(config, overrides, print_config and lr_from is None)
            if lr_from is not None:
                from cifarcli.commands.progress import make_console

                cfg = config_with_lr_from(cfg, lr_from, make_console(quiet or not _is_main_process()))
                print_config_and_exit(cfg, print_config)
            saved, extended = None, False

        ranks = _join_ranks(cfg, held, seeds)
        if seeds is not None:
            _train_seeds(cfg, seed_list, quiet)
            return
        _train_and_print(cfg, quiet, resume, saved, extend_schedule if resume is not None and extended else None, ranks)


def _train_and_print(
    cfg: ExperimentConfig, quiet: bool, resume: Optional[Path] = None, saved: Optional[dict[str, Any]] = None,
    extension: Optional[str] = None, ranks: DistContext | None = None,
) -> TrainingOutcome:
    """One run (a new one, or `resume` continued from `saved`, extended with the `extension`
    schedule when given) with its console output, start to summary."""
    # Imported once the config is known: --print-config and config errors answer without torch.
    from cifarcli.commands import compose
    from cifarcli.commands.evaluation import print_summary
    from cifarcli.commands.console_reporter import ConsoleReporter
    from cifarcli.commands.progress import TrainingDisplay, make_console, print_written
    from cifarcli.commands.training import run_training
    from cifarcli.engine.distributed import SINGLE
    from cifarcli.models import render_summary

    ranks = ranks or SINGLE
    quiet = quiet or not ranks.is_main  # under torchrun rank 0 alone prints
    console = make_console(quiet)

    def announce(run_dir: Path, state: TrainState) -> None:
        if extension is not None:
            console.print(f"extending to {cfg.train.epochs} epochs ({extension} schedule)")
        if resume is not None:
            console.print(f"resuming at epoch {state.epoch + 1}, step {state.batch_in_epoch + 1}")
        console.print(f"run folder: {escape.terminal(run_dir)}")
        facts = compose.precision_facts(cfg, compose.device_for(cfg))
        console.print(f"precision: {facts['precision']} ({facts['precision_reason']}); memory format: {facts['memory_format']}")
        if not quiet:
            console.print(render_summary(compose.summary_at_start(cfg, state)))

    new_run_dir = (lambda: resume) if resume is not None else (lambda: runs.create_run_dir(cfg.run.root, cfg.run.name))
    reporter = ConsoleReporter(console)
    outcome = run_training(cfg, new_run_dir, TrainingDisplay(reporter, cfg.data.batch_size), resume_from=saved,
                           reporter=reporter, on_start=announce, lock_run_dir=resume is None,
                           extended=extension is not None, ranks=ranks)  # fmt: skip
    if not ranks.is_main:
        return outcome
    run_dir = outcome.run_dir
    print_summary(make_console(stderr=False), outcome.test_summary, f"test set, best checkpoint ({outcome.fit.best_checkpoint.name})")
    if outcome.target is not None:
        typer.echo(outcome.target.describe())
    files = [run_dir / runs.CONFIG_FILE, run_dir / runs.METRICS_FILE, outcome.fit.last_checkpoint, outcome.fit.best_checkpoint]
    print_written([*files, *outcome.written])
    typer.echo(f"next: cifar report {escape.terminal(run_dir)}")
    if cfg.run.tensorboard:
        typer.echo(f"      tensorboard --logdir {escape.terminal(run_dir / runs.TENSORBOARD_DIR)}")
    return outcome


def _is_main_process() -> bool:
    from cifarcli.engine.distributed import env_rank

    return env_rank() == 0


def _join_ranks(cfg: ExperimentConfig, held: contextlib.ExitStack, seeds: Optional[str]) -> DistContext:
    """Under torchrun: join its process group for the rest of the command (world 1 otherwise)."""
    from cifarcli.commands import compose
    from cifarcli.commands.multiprocess import quiet_interruption
    from cifarcli.engine.distributed import launched_by_torchrun

    if launched_by_torchrun() and seeds is not None:
        raise UsageError("--seeds trains runs one after another; under torchrun train one run (one seed) per job",
                         hint="drop --seeds and set the seed: --set train.seed=S")  # fmt: skip
    ranks = held.enter_context(compose.joined_ranks(cfg))
    held.enter_context(quiet_interruption(ranks.is_main))
    return ranks


def _train_in_processes(
    nproc: int, config: Optional[Path], overrides: Optional[list[str]], resume: Optional[Path], seeds: Optional[str]
) -> None:
    """`--nproc N`: this command line again as N torchrun processes; exits with their exit code."""
    import sys

    from cifarcli.commands.multiprocess import check_nproc, run_under_torchrun

    check_nproc(nproc, seeds)
    if resume is None:  # a config error or a setting N processes cannot train with is told once, before they start
        from cifarcli.commands import compose

        cfg = resolve_config(config, overrides, False)
        compose.check_for_ranks(cfg, compose.device_for(cfg), nproc)
    raise typer.Exit(run_under_torchrun(nproc, sys.argv[1:]))


def _train_seeds(cfg: ExperimentConfig, seeds: list[int], quiet: bool) -> None:
    """The recipe once per seed, each in its own run folder (named ...-seedN), then the figures over the seeds."""
    from cifarcli.commands.progress import make_console
    from cifarcli.commands.seed_runs import SeedRun, seeds_table
    from cifarcli.config import config_with

    finished: list[SeedRun] = []
    for number, seed in enumerate(seeds, start=1):
        typer.echo(f"seed {seed} ({number} of {len(seeds)})")
        seeded = config_with(cfg, {"train.seed": seed, "run.name": f"{cfg.run.name}-seed{seed}"[:80]})
        outcome = _train_and_print(seeded, quiet)
        epoch = outcome.target.first_epoch if outcome.target is not None else None
        finished.append(SeedRun(seed, outcome.run_dir, outcome.test_summary, epoch))
    make_console(stderr=False).print(seeds_table(finished, with_target=cfg.train.target_accuracy is not None))


def _resumed_run(run_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and checkpoint to resume `run_dir` from, both checked before anything is built.

    The checkpoint is the truth: its config is the one trained with. RUN/config.yaml must say
    the same; an edited one is refused, naming the keys that differ, since training on with it
    would crash on a size mismatch or silently change the recipe part-way. Both are read past
    settings a newer cifar removed (`validate_saved_config`), so a run from before still resumes.
    """
    from cifarcli.config import config_differences, load_saved_config
    from cifarcli.engine.checkpoint import load_checkpoint

    config_file, last = run_dir / runs.CONFIG_FILE, runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT)
    if not config_file.is_file():
        raise UsageError(f"cannot resume {run_dir}: no {runs.CONFIG_FILE} there", hint="pass a folder created by `cifar train`")
    if not last.is_file():
        raise UsageError(f"cannot resume {run_dir}: it has no checkpoint yet", hint="start it again with `cifar train`")
    saved = load_checkpoint(last, for_resume=True)
    cfg = saved_config(saved, last)
    try:
        written = load_saved_config(config_file)
    except ConfigError as exc:
        raise DamagedFileError(f"cannot resume {run_dir}: {config_file} does not validate ({exc.message})",
                               hint=f"undo the edit to {runs.CONFIG_FILE}: --resume trains on with the checkpoint's config") from exc  # fmt: skip
    differ = config_differences(cfg, written)
    if differ:
        shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        raise DamagedFileError(
            f"cannot resume {run_dir}: {config_file} differs from the config saved in {last.name} ({shown})",
            hint=f"--resume trains on with the checkpoint's config: undo the edit to {runs.CONFIG_FILE}, "
            "or start a new run with `cifar train -c ...`",
        )
    return cfg, saved


def _epochs_to_extend_to(run_dir: Path, config: Optional[Path], overrides: Optional[list[str]], lr_from: Optional[Path]) -> Any:
    """The N of `--set train.epochs=N` given with --resume (None without); any other setting is a UsageError."""
    from cifarcli.config import parse_override

    parsed = [parse_override(text) for text in overrides or []]
    if config is not None or lr_from is not None or any(parts != ["train", "epochs"] for parts, _ in parsed):
        raise UsageError("--resume continues a run with its own config; drop --config/--lr-from and every --set but train.epochs",
                         hint=f"config used: {run_dir / runs.CONFIG_FILE}")  # fmt: skip
    return parsed[-1][1] if parsed else None


def _extended(cfg: ExperimentConfig, saved: dict[str, Any], epochs: Any, schedule: Optional[str]) -> ExperimentConfig:
    """The config of a run trained on to `epochs`, its LR schedule stretched over them or continued at its final LR."""
    from cifarcli.config import config_with

    extended = config_with(cfg, {"train.epochs": epochs})
    if extended.train.epochs < cfg.train.epochs:
        raise UsageError(f"--set train.epochs={epochs}: a resumed run is only extended, and this one is planned for "
                         f"{cfg.train.epochs} epochs ({saved['epoch']} done)", hint=f"pass more than {cfg.train.epochs}")  # fmt: skip
    if schedule not in EXTEND_SCHEDULES:
        given = "is needed" if schedule is None else f"{escape.value(schedule, 40)} is not one of them"
        raise UsageError(f"--extend-schedule {given} to extend a run from {cfg.train.epochs} to {extended.train.epochs} epochs: "
                         "stretch (the LR schedule redrawn over the new total) or continue (the extra epochs at its final LR)",
                         hint="add --extend-schedule stretch or --extend-schedule continue")  # fmt: skip
    span = None if schedule == "stretch" else (cfg.schedule.span_epochs or cfg.train.epochs)
    return config_with(extended, {"schedule.span_epochs": span})


def _is_complete(run_dir: Path, cfg: ExperimentConfig, saved: dict[str, Any]) -> bool:
    """Whether the run trained every epoch it was planned for (or stopped at its target) and was scored."""
    from cifarcli.engine.target import time_to_target

    if saved["batch_in_epoch"]:
        return False
    stopped_at_target = (cfg.train.stop_at_target and cfg.train.target_accuracy is not None
                         and time_to_target(saved["history"], cfg.train.target_accuracy, cfg.train.target_split).reached)  # fmt: skip
    trained = saved["epoch"] >= cfg.train.epochs or stopped_at_target
    return trained and runs.training_evaluation(run_dir, cfg.eval.tta_flip, cfg.eval.tta_shift) is not None
