"""What `cifar lr-find` writes: lr_find.csv, lr_find.json, lr_find.png and the suggestion table."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from rich.table import Table

from cifarcli import fileio, runs
from cifarcli.commands.progress import titled_table
from cifarcli.config import ExperimentConfig
from cifarcli.engine.lr_finder import LrFindResult
from cifarcli.plots.lr_find import plot_lr_find

from cifarcli.commands.lr_find import LR_FIND_JSON

LR_FIND_CSV = "lr_find.csv"
LR_FIND_PNG = "lr_find.png"


def lr_find_summary(cfg: ExperimentConfig, result: LrFindResult) -> dict[str, Any]:
    """What lr_find.json holds: the chosen suggestion, all suggestions, why it stopped, the config."""
    chosen = result.suggestions[cfg.lr_find.suggestion]
    return {
        "chosen": {"name": chosen.name, "lr": chosen.lr} if chosen.lr is not None else None,
        "suggestions": {
            name: {"lr": s.lr, "step": s.index, "note": s.note} for name, s in result.suggestions.items()
        },
        "stop_reason": result.stop_reason,
        "burn_in_steps": result.burn_in_steps,
        "warnings": list(result.warnings),
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
    notes = [*([] if chosen.lr is not None else [f"no {chosen.name} suggestion: {chosen.note}"]), *result.warnings]
    png_path = plot_lr_find(
        result.lrs, result.losses, result.smoothed_losses, {n: s.lr for n, s in result.suggestions.items()},
        run_dir / LR_FIND_PNG, chosen=chosen.name, title=title, note="\n".join(textwrap.fill(n, 70) for n in notes),
        burn_in_steps=result.burn_in_steps,
    )  # fmt: skip
    return [run_dir / runs.CONFIG_FILE, csv_path, json_path, png_path]


def suggestion_table(result: LrFindResult, chosen: str) -> Table:
    """The suggestions, one row each, the chosen one marked."""
    table = titled_table("suggested peak LR (optim.lr)")
    for column in ("", "suggestion", "lr", "how"):
        table.add_column(column, justify="right" if column == "lr" else "left")
    for name, suggestion in result.suggestions.items():
        value = f"{suggestion.lr:.3g}" if suggestion.lr is not None else "-"
        table.add_row("*" if name == chosen else "", name, value, suggestion.note)
    table.caption = f"* chosen by lr_find.suggestion={chosen}" + (
        f"; the first {result.burn_in_steps} steps are a burn-in the suggestions skip" if result.burn_in_steps else ""
    )
    return table
