"""`cifar report`: a run's figures, classification report and one self-contained index.html."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cifarcli import escape, fileio, runs
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_trained_run
from cifarcli.errors import UsageError

if TYPE_CHECKING:
    from cifarcli.commands.compose import LabelSet
    from cifarcli.config import ExperimentConfig
    from cifarcli.data.cache import CifarArrays


def report(
    target: Annotated[Path, typer.Argument(help="A run folder, `latest`, the start of a run's name, or a checkpoint file.", show_default=False)],
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    ema: Annotated[bool, typer.Option("--ema", help="Report on the EMA weights' evaluation (runs trained with train.ema_decay).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the files written.")] = False,
) -> None:
    """Write a run's report: confusion matrix, curves, misclassified images, per-class table, index.html.

    Shows the run's most recent evaluation, or, given a checkpoint, --ema or eval settings, the
    one that matches them (scored first, into its own folder, if there is none yet).

    Example: cifar report runs/20261121-093000-resnet9-cifar10
    """
    from cifarcli.commands import compose
    from cifarcli.commands.console_reporter import ConsoleReporter
    from cifarcli.commands.progress import make_console, print_written
    from cifarcli.commands.report_inputs import read_run_records
    from cifarcli.commands.report_pages import write_report
    from cifarcli.data.prepare import load_dataset

    target = runs.resolve_run(target)
    run_dir = runs.run_dir_of(target) if target.is_file() else target
    _check_is_run_folder(run_dir)
    chosen = target.is_file() or ema or config is not None or bool(overrides)
    recent = None if chosen else _most_recent_evaluation(run_dir)
    if recent is not None:  # show what was last evaluated: its checkpoint and settings, as they were
        target, overrides, ema = _settings_of(run_dir, recent)
    trained = resolve_trained_run(target, config, overrides, print_config, ema)
    checkpoint_path, checkpoint, cfg = trained.path, trained.checkpoint, trained.cfg
    key = runs.evaluation_key(checkpoint_path.name, cfg.eval.split, cfg.eval.tta_flip, cfg.eval.tta_shift, ema)
    console = make_console(quiet)
    written: list[Path] = []
    with runs.locked(run_dir):
        # Everything the run folder must already hold is checked before anything is scored or written.
        fileio.refuse_file_in_the_way(run_dir / runs.REPORT_DIR)
        run_records = read_run_records(run_dir)
        eval_dir, reason = _evaluation_folder(run_dir, key)
        if reason:
            console.print(f"scoring {escape.terminal(checkpoint_path)} on the {cfg.eval.split} split first: {reason}")
            arrays, labels, written = _score(cfg, checkpoint_path, checkpoint, ema, quiet)
        else:
            arrays = load_dataset(cfg.data, reporter=ConsoleReporter(console))
            labels = compose.select_labels(arrays, cfg.data.label_mode)
            compose.check_checkpoint_classes(checkpoint, labels, checkpoint_path)
        console.print(f"evaluation: {escape.terminal(eval_dir)}")
        paths = write_report(cfg, run_dir, eval_dir, checkpoint_path, checkpoint, arrays, labels, run_records)
    print_written([*written, *paths])
    console.print(f"open {escape.terminal(paths[-1])} in a browser (it is self-contained)")


def _score(
    cfg: ExperimentConfig, checkpoint_path: Path, checkpoint: dict[str, Any], ema: bool, quiet: bool
) -> tuple[CifarArrays, LabelSet, list[Path]]:
    """Score the checkpoint exactly as `cifar evaluate` does and write its files into its evaluations/ folder."""
    from cifarcli.commands import compose
    from cifarcli.commands.evaluation import build_eval_data, evaluate_split, write_evaluation
    from cifarcli.commands.progress import make_reporter

    device = compose.device_for(cfg)
    data = build_eval_data(cfg, device, reporter=make_reporter(quiet))
    compose.check_checkpoint_classes(checkpoint, data.labels, checkpoint_path)
    run = compose.load_trained_model(checkpoint_path, cfg, device, use_ema=ema, checkpoint=checkpoint)
    summary, matrix, rows = evaluate_split(run, data, cfg.eval)
    summary["ema"] = ema
    written = write_evaluation(runs.run_dir_of(checkpoint_path), summary, matrix, rows, data.labels.class_names)
    return data.arrays, data.labels, written


def _check_is_run_folder(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise UsageError(f"no such run folder: {run_dir}", hint="pass a folder under runs/ made by `cifar train`")
    if not (run_dir / runs.CONFIG_FILE).is_file() and not (run_dir / runs.CHECKPOINT_DIR).is_dir():
        raise UsageError(f"{run_dir} is not a run folder (no {runs.CONFIG_FILE})", hint="pass a folder under runs/ made by `cifar train`")


def _most_recent_evaluation(run_dir: Path) -> dict | None:
    """The summary of the run's most recent evaluation (None when it has none)."""
    from cifarcli.commands.evaluation import read_evaluation_summary

    folders = runs.evaluation_dirs(run_dir)
    return read_evaluation_summary(folders[0] / runs.EVALUATION_FILE) if folders else None


def _settings_of(run_dir: Path, summary: dict) -> tuple[Path, list[str], bool]:
    """The checkpoint, eval settings and EMA choice that made an evaluation, to report it again."""
    name = Path(summary["checkpoint"]).name
    scored = [path for path in (runs.checkpoint_path(run_dir, name), run_dir / name) if path.is_file()]
    target = scored[0] if scored else run_dir  # a checkpoint since deleted: the run's best
    overrides = [f"eval.split={summary['split']}", f"eval.tta_flip={str(summary['tta_flip']).lower()}",
                 f"eval.tta_shift={str(bool(summary.get('tta_shift'))).lower()}"]  # fmt: skip
    return target, overrides, bool(summary.get("ema"))


def _evaluation_folder(run_dir: Path, key: str) -> tuple[Path, str]:
    """The folder holding the evaluation `key`, and why it must be scored first ("" when it need not).

    A run folder of an older cifar holds its one evaluation at the top: used when it is of `key`.
    """
    from cifarcli.commands.evaluation import evaluation_key_of, read_evaluation_summary

    files = (runs.EVALUATION_FILE, runs.CONFUSION_FILE, runs.PREDICTIONS_FILE)
    keyed = runs.evaluation_dir(run_dir, key)
    legacy = run_dir / runs.EVALUATION_FILE
    if not (keyed / runs.EVALUATION_FILE).is_file() and legacy.is_file():
        if all((run_dir / name).is_file() for name in files) and evaluation_key_of(read_evaluation_summary(legacy)) == key:
            return run_dir, ""
    missing = [name for name in files if not (keyed / name).is_file()]
    return keyed, f"{', '.join(missing)} missing in {keyed}" if missing else ""
