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
    run_dir: Annotated[Path, typer.Argument(help="The run folder to report on (made by `cifar train`).", show_default=False)],
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the files written.")] = False,
) -> None:
    """Write a run's report: confusion matrix, curves, misclassified images, per-class table, index.html.

    Example: cifar report runs/20261121-093000-resnet9-cifar10
    """
    from cifarcli.commands import compose
    from cifarcli.commands.console_reporter import ConsoleReporter
    from cifarcli.commands.progress import make_console, print_written
    from cifarcli.commands.report_inputs import read_run_records
    from cifarcli.commands.report_pages import write_report
    from cifarcli.data.prepare import load_dataset

    _check_is_run_folder(run_dir)
    trained = resolve_trained_run(run_dir, config, overrides, print_config)
    checkpoint_path, checkpoint, cfg = trained.path, trained.checkpoint, trained.cfg
    console = make_console(quiet)
    written: list[Path] = []
    with runs.locked(run_dir):
        # Everything the run folder must already hold is checked before anything is scored or written.
        fileio.refuse_file_in_the_way(run_dir / runs.REPORT_DIR)
        run_records = read_run_records(run_dir)
        reason = _evaluation_needed(run_dir, cfg)
        if reason:
            console.print(f"scoring {escape.terminal(checkpoint_path)} on the {cfg.eval.split} split first: {reason}")
            arrays, labels, written = _score(cfg, checkpoint_path, checkpoint, quiet)
        else:
            arrays = load_dataset(cfg.data, reporter=ConsoleReporter(console))
            labels = compose.select_labels(arrays, cfg.data.label_mode)
            compose.check_checkpoint_classes(checkpoint, labels, checkpoint_path)
        paths = write_report(cfg, run_dir, checkpoint_path, checkpoint, arrays, labels, run_records)
    print_written([*written, *paths])
    console.print(f"open {escape.terminal(paths[-1])} in a browser (it is self-contained)")


def _score(
    cfg: ExperimentConfig, checkpoint_path: Path, checkpoint: dict[str, Any], quiet: bool
) -> tuple[CifarArrays, LabelSet, list[Path]]:
    """Score the checkpoint exactly as `cifar evaluate` does and write its files into the run folder."""
    from cifarcli.commands import compose
    from cifarcli.commands.evaluation import build_eval_data, evaluate_split, write_evaluation
    from cifarcli.commands.progress import make_reporter

    device = compose.device_for(cfg)
    data = build_eval_data(cfg, device, reporter=make_reporter(quiet))
    compose.check_checkpoint_classes(checkpoint, data.labels, checkpoint_path)
    run = compose.load_trained_model(checkpoint_path, cfg, device, checkpoint=checkpoint)
    summary, matrix, rows = evaluate_split(run, data, cfg.eval)
    summary["ema"] = False
    written = write_evaluation(runs.run_dir_of(checkpoint_path), summary, matrix, rows, data.labels.class_names)
    return data.arrays, data.labels, written


def _check_is_run_folder(run_dir: Path) -> None:
    if run_dir.is_file():
        raise UsageError(
            f"{run_dir} is a file, but cifar report takes a run folder", hint=f"try: cifar report {runs.run_dir_of(run_dir)}"
        )
    if not run_dir.is_dir():
        raise UsageError(f"no such run folder: {run_dir}", hint="pass a folder under runs/ made by `cifar train`")


def _evaluation_needed(run_dir: Path, cfg: ExperimentConfig) -> str:
    """Why the run must be scored again ("" when its saved evaluation can be used)."""
    from cifarcli.commands.evaluation import read_evaluation_summary

    files = (runs.EVALUATION_FILE, runs.CONFUSION_FILE, runs.PREDICTIONS_FILE)
    missing = [name for name in files if not (run_dir / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    summary = read_evaluation_summary(run_dir / runs.EVALUATION_FILE)
    scored = (summary["split"], summary["tta_flip"], summary.get("tta_shift", False), summary.get("ema", False))
    wanted = (cfg.eval.split, cfg.eval.tta_flip, cfg.eval.tta_shift, False)
    if scored != wanted:  # e.g. `cifar evaluate --set eval.split=val` left a validation score behind
        return f"the saved evaluation is of split={scored[0]}, tta_flip={scored[1]}, tta_shift={scored[2]}, ema={scored[3]}"
    return ""
