"""The `cifar` Typer app: registers the commands and turns known errors into one-line messages.

Importing this module must stay cheap (`cifar --help` answers in well under a second): the
command modules import torch, torchvision, matplotlib, tensorboard, optuna and PIL (and the
config schema) inside the commands that use them, never at their top. `cifarcli.entry.main` is where the process starts.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from cifarcli import __version__, escape, fileio
from cifarcli.entry import INTERRUPTED_EXIT_CODE, debug_enabled, note_interrupt_reported, report_interrupted
from cifarcli.entry import main as main  # the console script of older installs names cifarcli.cli:main
from cifarcli.errors import CifarError

app = typer.Typer(
    name="cifar",
    help="Train, diagnose and explain CIFAR-10/100 image classifiers.\n\n"
    "Everyday path: cifar download -> cifar lr-find -> cifar train -> cifar evaluate -> cifar report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def one_line(text: str) -> str:
    """`text` as one printable line: newlines become spaces, control characters are escaped."""
    return " ".join(escape.terminal(line) for line in str(text).split("\n"))


def _print_error(exc: CifarError) -> None:
    typer.echo(f"error: {one_line(exc.message)}", err=True)
    if exc.hint:
        typer.echo(f"hint: {one_line(exc.hint)}", err=True)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so a CifarError becomes `error: ...` on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            fileio.ignore_file_size_signal()  # a write past `ulimit -f` then fails with EFBIG, reported below
            return command(*args, **kwargs)
        except CifarError as exc:
            if debug_enabled():
                raise
            _print_error(exc)
            if exc.exit_code == INTERRUPTED_EXIT_CODE:  # e.g. "stopped by SIGINT ..., state saved"
                note_interrupt_reported()
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a file-system fault no reader or writer turned into a CifarError
            if debug_enabled():
                raise
            error = fileio.storage_error(exc, Path(str(exc.filename)) if exc.filename else Path("."), doing="use")
            _print_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            report_interrupted()
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cifar {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (same as CIFAR_DEBUG=1).")] = False,
) -> None:
    if debug:
        os.environ["CIFAR_DEBUG"] = "1"


def register(name: str, command: Callable[..., Any]) -> None:
    """Add a command; `cifar --help` shows its docstring's first line and its `Example:` line."""
    lines = [line.strip() for line in (command.__doc__ or "").strip().splitlines()]
    example = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Example:")), "")
    summary = lines[0] if lines else name
    app.command(name, short_help=f"{summary}  Example: {example}" if example else summary)(friendly_errors(command))


def _register_all() -> None:
    # Each module owns one subcommand and imports only typer at its top (see the module docstring).
    from cifarcli.commands import compare, download, evaluate, landscape, lr_find, prepare, report, runs_list, sweep, train, visualize_filters

    register("download", download.download)
    register("prepare", prepare.prepare)
    register("train", train.train)
    register("evaluate", evaluate.evaluate)
    register("lr-find", lr_find.lr_find)
    register("report", report.report)
    register("runs", runs_list.runs_list)
    register("visualize-filters", visualize_filters.visualize_filters)
    register("sweep", sweep.sweep)
    register("compare", compare.compare)
    register("landscape", landscape.landscape)


_register_all()
