"""`cifar evaluate`: score a trained checkpoint and write what `cifar report` reads."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cifarcli import escape, runs
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_trained_run

if TYPE_CHECKING:
    from rich.table import Table


def evaluate(
    target: Annotated[Path, typer.Argument(help="A run folder (uses checkpoints/best.pt), `latest`, the start of a run's name, or a checkpoint file.", show_default=False)],
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    ema: Annotated[bool, typer.Option("--ema", help="Score the EMA weights (runs trained with train.ema_decay).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the headline table.")] = False,
) -> None:
    """Score a trained model: loss, top-1/top-5, per-class precision/recall/F1, confusion matrix.

    Example: cifar evaluate runs/20261121-093000-resnet9-cifar10 --set eval.tta_flip=true
    """
    from cifarcli.commands import compose
    from cifarcli.commands.evaluation import build_eval_data, evaluate_split, print_summary, write_evaluation
    from cifarcli.commands.progress import make_console, make_reporter, print_written
    from cifarcli.reporting import SILENT, track

    trained = resolve_trained_run(target, config, overrides, print_config, ema)
    path, checkpoint, cfg = trained.path, trained.checkpoint, trained.cfg
    run_dir = runs.run_dir_of(path)
    # Under torchrun each process scores a share of the split and rank 0 writes (see engine.distributed).
    with compose.joined_ranks(cfg) as ranks, runs.locked(run_dir) if ranks.is_main else contextlib.nullcontext():
        device = compose.device_for(cfg)
        reporter = make_reporter(quiet) if ranks.is_main else SILENT
        data = build_eval_data(cfg, device, reporter=reporter)
        compose.check_checkpoint_classes(checkpoint, data.labels, path)
        run = compose.load_trained_model(path, cfg, device, use_ema=ema, checkpoint=checkpoint)
        with compose.out_of_memory_as_error(cfg.data.eval_batch_size, "data.eval_batch_size"), \
                reporter.task(f"evaluate {data.split}", total=len(data.indices), unit="img") as task:
            # under torchrun each rank slices the loader by batch count, so it stays the loader itself there
            loader = data.loader if ranks.is_distributed else track(data.loader, task)
            summary, matrix, rows = evaluate_split(run, replace(data, loader=loader), cfg.eval)
        summary["ema"] = ema
        if not ranks.is_main:
            return
        written = write_evaluation(run_dir, summary, matrix, rows, data.labels.class_names)
    stdout = make_console(stderr=False)
    if not quiet and len(data.labels.class_names) <= 20:
        stdout.print(_per_class_table(summary))
    print_summary(stdout, summary, f"{cfg.eval.split} split, {path.name} (epoch {summary['epoch']})")
    make_console(quiet).print(f"most confused: {_top_pairs(summary)}")
    print_written(written)


def _per_class_table(summary: dict) -> Table:
    from cifarcli.commands.progress import titled_table

    table = titled_table("per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in summary["per_class"]:
        table.add_row(escape.terminal(row["class"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    return table


def _top_pairs(summary: dict) -> str:
    pairs = summary["most_confused"][:3]
    return ", ".join(f"{escape.terminal(p['true'])} -> {escape.terminal(p['predicted'])} ({p['images']})" for p in pairs) or "none"
