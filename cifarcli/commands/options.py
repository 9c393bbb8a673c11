"""The options every subcommand shares, and the one function that turns them into a config.

Only typer is imported at the top: the command modules import these option types while
`cifar --help` is being built, so the config schema (pydantic) and torch load on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cifarcli import runs
from cifarcli.errors import CheckpointError, ConfigError, UsageError

if TYPE_CHECKING:
    from cifarcli.config import ExperimentConfig

ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        "-c",
        help="Experiment YAML, or a built-in name (default, smoke, cifar100-resnet34, ...). Default: the built-in default.",
        show_default=False,
    ),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="Override one config field: --set optim.lr=0.01 (dotted key; value parsed as YAML). Repeatable.",
        metavar="KEY=VALUE",
        show_default=False,
    ),
]
PrintConfigOption = Annotated[
    bool,
    typer.Option("--print-config", help="Print the resolved config as YAML and exit."),
]


def resolve_config(
    config: Path | None, overrides: list[str] | None, print_config: bool, flags: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load the config, apply `--set` and then a command's own flags (dotted key -> value, None = unset), validate once.

    Validating once lets flags and `--set` change fields that must agree (data.dataset and
    data.path). With --print-config, print the result and exit 0.
    """
    from cifarcli.config import apply_override, parse_override, read_yaml_mapping, resolve_config_path, validate_config

    tree = read_yaml_mapping(resolve_config_path(config))
    for text in overrides or []:
        apply_override(tree, *parse_override(text))
    for key, value in (flags or {}).items():
        if value is not None:
            apply_override(tree, key.split("."), value)
    cfg = validate_config(tree)
    print_config_and_exit(cfg, print_config)
    return cfg


def print_config_and_exit(cfg: ExperimentConfig, print_config: bool) -> None:
    """For --print-config: print the resolved config as YAML and exit 0 (no-op otherwise)."""
    from cifarcli.config import config_to_yaml

    if print_config:
        typer.echo(config_to_yaml(cfg), nl=False)
        raise typer.Exit(0)


# Settings that change how a trained model is scored or shown, never what was trained.
EVALUATION_SETTINGS = (
    "eval.", "report.", "visualize.", "landscape.", "data.eval_batch_size", "data.device", "data.root",
    "data.source", "data.md5", "data.verify", "train.amp",
)  # fmt: skip


def _allowed(dotted: str) -> bool:
    return any(dotted == key or (key.endswith(".") and dotted.startswith(key)) for key in EVALUATION_SETTINGS)


def resolve_saved_config(
    saved: ExperimentConfig, config: Path | None, overrides: list[str] | None, print_config: bool
) -> ExperimentConfig:
    """A trained run's config with evaluation-only settings taken from `-c` and `--set`.

    From a `-c` file only the evaluation settings are read; a `--set` of anything else is an
    error, because it would describe a model other than the one in the checkpoint.
    """
    from cifarcli.config import config_with, flatten_tree, parse_override, read_yaml_mapping, resolve_config_path

    changes: dict[str, Any] = {}
    if config is not None:
        tree = read_yaml_mapping(resolve_config_path(config))
        changes.update({k: v for k, v in flatten_tree(tree).items() if _allowed(k)})
    for text in overrides or []:
        parts, value = parse_override(text)
        dotted = ".".join(parts)
        if not _allowed(dotted):
            raise ConfigError(
                f"--set {dotted}: cannot change a trained run's setting here",
                hint="allowed: " + ", ".join(k + ("*" if k.endswith(".") else "") for k in EVALUATION_SETTINGS),
            )
        changes[dotted] = value
    cfg = config_with(saved, changes)
    print_config_and_exit(cfg, print_config)
    return cfg


def saved_config(checkpoint: dict[str, Any], path: Path) -> ExperimentConfig:
    """The config a checkpoint of `cifar train` was trained with, validated; CheckpointError if this cifar cannot read it.

    Settings since removed (train.amp_on_cpu, train.log_every_steps) are read past, so older runs still load.
    """
    from cifarcli.config import validate_saved_config

    if "num_classes" not in checkpoint:
        raise CheckpointError(f"{path} is damaged: 'num_classes' is missing", hint="pass a checkpoint written by `cifar train`")
    try:
        return validate_saved_config(checkpoint["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds a config this cifar cannot read: {exc.message}") from exc


@dataclass(frozen=True)
class TrainedRun:
    """A checkpoint chosen on the command line, loaded safely, with its resolved config."""

    path: Path
    checkpoint: dict[str, Any]
    cfg: ExperimentConfig


def resolve_trained_run(
    target: Path, config: Path | None, overrides: list[str] | None, print_config: bool, ema: bool = False
) -> TrainedRun:
    """Find and load the checkpoint of a run folder (or file, `latest`, a run name's start), and resolve its evaluation settings."""
    from cifarcli.engine.checkpoint import load_checkpoint

    path = runs.find_checkpoint(runs.resolve_run(target))
    checkpoint = load_checkpoint(path)
    cfg = resolve_saved_config(saved_config(checkpoint, path), config, overrides, print_config)
    if ema and not checkpoint.get("ema"):
        raise UsageError(f"{path} has no EMA weights", hint="train with --set train.ema_decay=0.999, or drop --ema")
    return TrainedRun(path, checkpoint, cfg)
