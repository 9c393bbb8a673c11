"""The Typer app itself: version, help, command registration, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cifarcli import __version__
from cifarcli.cli import app, one_line

runner = CliRunner()
COMMANDS = ["download", "train", "evaluate", "lr-find", "report", "visualize-filters"]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cifar {__version__}"


def test_help_lists_every_command_with_an_example() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # undo the help box's wrapping
    for name in COMMANDS:
        assert f"Example: cifar {name} " in text, name


def test_every_command_has_the_shared_config_options() -> None:
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, name
        for option in ("--config", "--set", "--print-config"):
            assert option in result.output, (name, option)


def test_one_line_flattens_and_escapes() -> None:
    assert one_line("a\nb") == "a b"
    assert one_line("bell\x07 esc\x1b[31m") == "bell\\x07 esc\\x1b[31m"


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "cifarcli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"cifar {__version__}"
