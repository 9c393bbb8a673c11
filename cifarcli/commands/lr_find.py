"""`cifar lr-find`: the LR range test, written to a run folder; and `train --lr-from`, which reads it back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from cifarcli import escape, fileio, runs
from cifarcli.commands import compose
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_config
from cifarcli.commands.progress import make_console, print_written
from cifarcli.config import ExperimentConfig, config_to_yaml, config_with
from cifarcli.engine.lr_finder import LrFindResult, find_lr
from cifarcli.engine.optim import build_optimizer
from cifarcli.engine.precision import make_grad_scaler
from cifarcli.errors import DamagedFileError, RunError, UsageError
from cifarcli.plots.lr_find import plot_lr_find

LR_FIND_CSV = "lr_find.csv"
LR_FIND_JSON = "lr_find.json"
LR_FIND_PNG = "lr_find.png"

LrFromOption = Annotated[
    Optional[Path],
    typer.Option(
        "--lr-from", metavar="LR_FIND_JSON", show_default=False,
        help="Set optim.lr (the schedule's peak) to the chosen suggestion in this lr_find.json from `cifar lr-find`.",
    ),
]  # fmt: skip


def lr_find(
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the suggestions and the files written.")] = False,
) -> None:
    """Find a peak learning rate with an LR range test (loss against a rising LR).

    Example: cifar lr-find -c cifar100-resnet34 --set lr_find.end_lr=1
    """
    console = make_console(quiet)
    cfg = resolve_config(config, overrides, print_config)
    device = compose.device_for(cfg)
    data = compose.build_data(cfg, device, progress=not quiet)
    model = compose.prepare_model(cfg, data.labels.num_classes, device)
    optimizer = build_optimizer(model, cfg.optim)
    with _sweep_progress(console) as progress:
        task = progress.add_task("sweep", total=cfg.lr_find.num_iter, lr="-", loss="-")
        result = find_lr(
            model, data.train, optimizer, compose.step_settings(cfg, device), cfg.lr_find,
            scaler=make_grad_scaler(device, cfg.train.amp),
            on_step=lambda step, lr, loss: progress.update(task, advance=1, lr=f"{lr:.2e}", loss=f"{loss:.4f}"),
        )  # fmt: skip
    run_dir = runs.create_run_dir(cfg.run.root, f"{cfg.run.name}-lr-find")  # only once there is something to keep
    fileio.write_text_atomic(run_dir / runs.CONFIG_FILE, config_to_yaml(cfg))
    written = write_lr_find(run_dir, cfg, result)
    stdout = make_console(stderr=False)
    stdout.print(suggestion_table(result, cfg.lr_find.suggestion))
    stdout.print(f"stopped after {result.steps} of {cfg.lr_find.num_iter} steps: {result.stop_reason}", soft_wrap=True)
    print_written(written)
    chosen = result.suggestions[cfg.lr_find.suggestion]
    if chosen.lr is None:
        fix = "lower lr_find.start_lr and lr_find.end_lr" if result.stopped_early else "raise lr_find.end_lr or lr_find.num_iter"
        raise RunError(
            f"lr-find: no {chosen.name!r} suggestion: {chosen.note} (see {run_dir / LR_FIND_PNG})",
            hint=f"{fix}, or pick another with --set lr_find.suggestion=...",
        )
    typer.echo(f"use it: cifar train --lr-from {escape.terminal(run_dir / LR_FIND_JSON)} (with the same -c/--set)")


def _sweep_progress(console: Console) -> Progress:
    """A transient progress bar on a terminal; disabled elsewhere and with --quiet."""
    return Progress(
        TextColumn("[bold]lr-find"), BarColumn(), MofNCompleteColumn(), TextColumn("lr {task.fields[lr]}  loss {task.fields[loss]}"),
        console=console, transient=True, disable=not console.is_terminal or console.quiet,
    )  # fmt: skip


def lr_find_summary(cfg: ExperimentConfig, result: LrFindResult) -> dict[str, Any]:
    """What lr_find.json holds: the chosen suggestion, all suggestions, why it stopped, the config."""
    chosen = result.suggestions[cfg.lr_find.suggestion]
    return {
        "chosen": {"name": chosen.name, "lr": chosen.lr} if chosen.lr is not None else None,
        "suggestions": {
            name: {"lr": s.lr, "step": s.index, "note": s.note} for name, s in result.suggestions.items()
        },
        "stop_reason": result.stop_reason,
        "stopped_early": result.stopped_early,
        "steps": result.steps,
        "lowest_smoothed_loss": float(min(result.smoothed_losses)) if result.steps else None,
        "config": cfg.model_dump(mode="json"),
    }


def write_lr_find(run_dir: Path, cfg: ExperimentConfig, result: LrFindResult) -> list[Path]:
    """Write lr_find.csv, lr_find.json and lr_find.png into `run_dir`; return their paths."""
    csv_path, json_path = run_dir / LR_FIND_CSV, run_dir / LR_FIND_JSON
    rows = zip(result.lrs.tolist(), result.losses.tolist(), result.smoothed_losses.tolist())
    fileio.write_csv(csv_path, ["lr", "loss", "smoothed_loss"], rows)
    fileio.write_json(json_path, lr_find_summary(cfg, result))
    title = f"LR range test: {cfg.model.name}, {cfg.optim.name}, {cfg.lr_find.mode} sweep ({result.steps} steps)\n{result.stop_reason}"
    chosen = result.suggestions[cfg.lr_find.suggestion]
    png_path = plot_lr_find(
        result.lrs, result.losses, result.smoothed_losses, {n: s.lr for n, s in result.suggestions.items()},
        run_dir / LR_FIND_PNG, chosen=chosen.name, title=title,
        note="" if chosen.lr is not None else f"no {chosen.name} suggestion: {chosen.note}",
    )  # fmt: skip
    return [run_dir / runs.CONFIG_FILE, csv_path, json_path, png_path]


def suggestion_table(result: LrFindResult, chosen: str) -> Table:
    """The suggestions, one row each, the chosen one marked."""
    table = Table(title="suggested peak LR (optim.lr)", title_justify="left")
    for column in ("", "suggestion", "lr", "how"):
        table.add_column(column, justify="right" if column == "lr" else "left")
    for name, suggestion in result.suggestions.items():
        value = f"{suggestion.lr:.3g}" if suggestion.lr is not None else "-"
        table.add_row("*" if name == chosen else "", name, value, suggestion.note)
    table.caption = f"* chosen by lr_find.suggestion={chosen}"
    return table


def config_with_lr_from(cfg: ExperimentConfig, path: Path, console: Console) -> ExperimentConfig:
    """`cfg` with optim.lr set to the chosen suggestion of the lr_find.json at `path` (recorded in lr_source)."""
    if not path.is_file():
        raise UsageError(f"--lr-from {path}: no such file", hint=f"pass the {LR_FIND_JSON} written by `cifar lr-find`")
    try:
        found = fileio.read_json(path)
    except (UsageError, DamagedFileError) as exc:
        raise UsageError(f"--lr-from {path}: not a readable JSON file", hint=f"pass the {LR_FIND_JSON} written by `cifar lr-find`") from exc
    chosen = found.get("chosen") if isinstance(found, dict) else None
    name = chosen.get("name") if isinstance(chosen, dict) else None
    lr = chosen.get("lr") if isinstance(chosen, dict) else None
    if not isinstance(name, str) or not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise UsageError(
            f"--lr-from {path}: holds no chosen LR suggestion",
            hint="run `cifar lr-find` again (e.g. with a wider lr_find.start_lr..end_lr) or set optim.lr with --set",
        )
    _warn_if_other_setup(found.get("config"), cfg, path, console)
    return config_with(cfg, {"optim.lr": float(lr), "lr_source": f"{path}#{name}"})


def _warn_if_other_setup(saved: Any, cfg: ExperimentConfig, path: Path, console: Console) -> None:
    """An LR found for another model, optimizer or batch size may not suit this run: say so."""
    if not isinstance(saved, dict):
        return
    now = cfg.model_dump(mode="json")
    keys = (("model", "name"), ("optim", "name"), ("data", "batch_size"), ("data", "dataset"))
    differ = [
        f"{section}.{key} {saved.get(section, {}).get(key)!r} there, {now[section][key]!r} here"
        for section, key in keys
        if isinstance(saved.get(section), dict) and saved[section].get(key) != now[section][key]
    ]
    if differ:
        console.print(escape.terminal(f"note: {path} was found with another setup ({'; '.join(differ)})"))
