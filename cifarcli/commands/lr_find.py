"""`cifar lr-find`: the LR range test, written to a run folder (`--lr-from` of `cifar train` reads it back)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cifarcli import escape, fileio
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_config
from cifarcli.errors import DamagedFileError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from cifarcli.config import ExperimentConfig

LR_FIND_JSON = "lr_find.json"  # written by lr-find, read back by `cifar train --lr-from`

LrFromOption = Annotated[
    Optional[Path],
    typer.Option(
        "--lr-from", metavar="LR_FIND_JSON", show_default=False,
        help="Set optim.lr (the schedule's peak) to the chosen suggestion in this lr_find.json from `cifar lr-find` (or its folder).",
    ),
]  # fmt: skip


def _refuse_torchrun() -> None:
    from cifarcli.engine.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise UsageError("lr-find runs in one process, not under torchrun",
                         hint="run `cifar lr-find` without torchrun, with data.batch_size set to the global batch you will train with")  # fmt: skip


def lr_find(
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the suggestions and the files written.")] = False,
) -> None:
    """Find a peak learning rate with an LR range test (loss against a rising LR).

    Example: cifar lr-find -c cifar100-resnet34 --set lr_find.end_lr=1
    """
    cfg = resolve_config(config, overrides, print_config)  # before the heavy imports: --print-config stays fast
    _refuse_torchrun()
    from cifarcli import runs
    from cifarcli.commands import compose
    from cifarcli.commands.lr_find_results import LR_FIND_PNG, suggestion_table, write_lr_find
    from cifarcli.commands.progress import make_console, make_reporter, print_written
    from cifarcli.config import config_to_yaml
    from cifarcli.engine.lr_finder import find_lr
    from cifarcli.engine.optim import build_optimizer
    from cifarcli.engine.precision import make_grad_scaler
    from cifarcli.errors import RunError

    if cfg.optim.units != "torch":
        raise UsageError(
            f"optim.units: lr-find sweeps torch's learning rates; it does not convert {cfg.optim.units!r}",
            hint="run lr-find with --set optim.units=torch (and the recipe's other settings), then train in those units",
        )
    reporter = make_reporter(quiet)
    device = compose.device_for(cfg)
    data = compose.build_data(cfg, device, reporter=reporter)
    model = compose.prepare_model(cfg, data.labels.num_classes, device, data)
    optimizer = build_optimizer(model, cfg.optim, cfg.data.batch_size)
    with reporter.task("lr-find", total=cfg.lr_find.num_iter) as task:
        result = find_lr(
            model, data.train, optimizer, compose.step_settings(cfg, device), cfg.lr_find,
            scaler=make_grad_scaler(compose.run_precision(cfg, device)),
            on_step=lambda step, lr, loss: task.advance(1, lr=f"{lr:.2e}", loss=f"{loss:.4f}"),
        )  # fmt: skip
    run_dir = runs.create_run_dir(cfg.run.root, f"{cfg.run.name}-lr-find")  # only once there is something to keep
    fileio.write_text_atomic(run_dir / runs.CONFIG_FILE, config_to_yaml(cfg))
    written = write_lr_find(run_dir, cfg, result)
    stdout = make_console(stderr=False)
    stdout.print(suggestion_table(result, cfg.lr_find.suggestion))
    stdout.print(f"stopped after {result.steps} of {cfg.lr_find.num_iter} steps: {result.stop_reason}", soft_wrap=True)
    for warning in result.warnings:  # shown with --quiet too: it says the suggestions may mislead
        stdout.print(f"warning: {warning}", soft_wrap=True)
    print_written(written)
    chosen = result.suggestions[cfg.lr_find.suggestion]
    if chosen.lr is None:
        fix = "lower lr_find.start_lr and lr_find.end_lr" if result.stopped_early else "raise lr_find.end_lr or lr_find.num_iter"
        raise RunError(
            f"lr-find: no {chosen.name!r} suggestion: {chosen.note} (see {run_dir / LR_FIND_PNG})",
            hint=f"{fix}, or pick another with --set lr_find.suggestion=...",
        )
    typer.echo(f"use it: cifar train --lr-from {escape.terminal(run_dir / LR_FIND_JSON)} (with the same -c/--set)")


def config_with_lr_from(cfg: ExperimentConfig, path: Path, console: Console) -> ExperimentConfig:
    """`cfg` with optim.lr set to the chosen suggestion of the lr_find.json at `path` (recorded in lr_source)."""
    from cifarcli.config import config_with

    if path.is_dir():  # the lr-find folder: its result file
        path = path / LR_FIND_JSON
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
    console.print(escape.terminal(f"optim.lr = {_short(float(lr))} ({name}, from {path})"))
    return config_with(cfg, {"optim.lr": float(lr), "lr_source": f"{path}#{name}"})


def _warn_if_other_setup(saved: Any, cfg: ExperimentConfig, path: Path, console: Console) -> None:
    """An LR found for another model, optimizer or batch size may not suit this run: say so."""
    if not isinstance(saved, dict):
        return
    now = cfg.model_dump(mode="json")
    keys = (("model", "name"), ("model", "logit_scale"), ("optim", "name"), ("optim", "units"), ("data", "batch_size"),
            ("data", "dataset"))
    differ = [
        f"{section}.{key} {saved.get(section, {}).get(key)!r} there, {now[section][key]!r} here"
        for section, key in keys
        if isinstance(saved.get(section), dict) and saved[section].get(key) != now[section][key]
    ]
    if differ:
        console.print(escape.terminal(f"note: {path} was found with another setup ({'; '.join(differ)})"))


def _short(lr: float) -> str:
    """An LR as people write it: 3.6e-4, 0.02 -> 2e-2, three significant digits at most."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
