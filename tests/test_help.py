"""Help and usage errors that follow the conventions: Click's metavars, one-line `error:` usage errors, `cifar config`."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.config import ExperimentConfig, OptimConfig, builtin_config_names, resolve_config_path

runner = CliRunner()
COMMANDS = ["download", "prepare", "train", "evaluate", "lr-find", "report", "visualize-filters", "sweep", "compare",
            "landscape", "config keys", "config show"]  # fmt: skip
USAGE = {"evaluate": "TARGET", "report": "TARGET", "visualize-filters": "TARGET", "landscape": "TARGET",
         "compare": "TARGETS...", "config show": "NAME", "config keys": "[PREFIX]"}  # fmt: skip


@pytest.mark.parametrize("command", [*COMMANDS, "", "config"])
def test_help_shows_no_bool_metavar_and_arguments_in_capitals(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "{" not in result.output.splitlines()[1]
    usage = next(line for line in result.output.splitlines() if "Usage:" in line).split()
    if command in USAGE:
        assert usage[-2:] == ["[OPTIONS]", USAGE[command]], usage


def _one_error_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", result.output  # no usage block, no box
    return lines[0]


def test_unknown_option_is_one_error_line_with_the_suggestion() -> None:
    line = _one_error_line(["train", "--quite"])
    assert line.startswith("error: no such option: --quite") and "--quiet" in line and line.endswith("train --help)")


def test_unknown_command_is_one_error_line_with_did_you_mean() -> None:
    line = _one_error_line(["trian"])
    assert line.startswith("error: no such command 'trian'. Did you mean 'train'?")


def test_missing_argument_names_it_as_usage_does() -> None:
    line = _one_error_line(["evaluate"])
    assert line.startswith("error: missing argument 'TARGET'") and "evaluate --help" in line


def test_usage_errors_in_a_real_process_exit_2_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "cifarcli", "lr-find", "--num-iter", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: no such option: --num-iter")


def _schema_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.extend(_schema_keys(field.annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def test_config_keys_lists_every_schema_field_with_type_default_and_description() -> None:
    result = runner.invoke(app, ["config", "keys"])
    assert result.exit_code == 0, result.output
    listed = [line.split(":")[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert listed == _schema_keys(ExperimentConfig)  # every field, in schema order, nothing else
    lines = result.stdout.splitlines()
    lr_line = next(i for i, line in enumerate(lines) if line.startswith("optim.lr:"))
    assert lines[lr_line] == f"optim.lr: float = {OptimConfig().lr}"
    assert lines[lr_line + 1] == "    " + OptimConfig.model_fields["lr"].description
    assert "optim.name: sgd | adam | adamw | rmsprop = " in result.stdout
    assert typing.get_args(OptimConfig.model_fields["name"].annotation) == ("sgd", "adam", "adamw", "rmsprop")


def test_config_keys_of_one_section_and_an_unknown_one() -> None:
    optim = runner.invoke(app, ["config", "keys", "optim."])
    keys = [line.split(":")[0] for line in optim.stdout.splitlines() if not line.startswith(" ")]
    assert optim.exit_code == 0 and keys == [k for k in _schema_keys(ExperimentConfig) if k.startswith("optim.")]
    unknown = runner.invoke(app, ["config", "keys", "optimizer"])
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: no config key starts with 'optimizer'")


@pytest.mark.parametrize("name", builtin_config_names())
def test_config_show_prints_the_built_in_config(name: str) -> None:
    result = runner.invoke(app, ["config", "show", name])
    assert result.exit_code == 0 and result.stdout == resolve_config_path(Path(name)).read_text(encoding="utf-8")


def test_config_show_of_an_unknown_name_lists_the_built_ins() -> None:
    result = runner.invoke(app, ["config", "show", "smok"])
    assert result.exit_code == 2 and result.stderr.startswith("error: no built-in config named 'smok'")
    assert "smoke" in result.stderr


def test_a_reader_that_goes_away_is_not_an_error() -> None:
    process = subprocess.Popen([sys.executable, "-m", "cifarcli", "config", "keys"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    process.stdout.close()  # `| head -0`: gone long before the child has imported anything
    _, err = process.communicate(timeout=120)
    assert err == "" and process.returncode == 1
