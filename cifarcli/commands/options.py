"""The options every subcommand shares, and the one function that turns them into a config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifarcli.config import ExperimentConfig, config_to_yaml, load_config

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


def resolve_config(config: Path | None, overrides: list[str] | None, print_config: bool) -> ExperimentConfig:
    """Load and validate the config; with --print-config, print it and exit 0."""
    cfg = load_config(config, overrides or [])
    if print_config:
        typer.echo(config_to_yaml(cfg), nl=False)
        raise typer.Exit(0)
    return cfg
