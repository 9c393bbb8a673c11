"""The `cifar` Typer app: registers the commands and turns known errors into one-line messages.

Typer's own usage errors (an unknown option or command, a missing argument) are turned into
the same one-line `error:` style by `CifarGroup.main`, and the help is written as Click writes
it (no `<bool>` after a flag, `TARGET` in the usage line) by `CifarCommand`.

Importing this module must stay cheap (`cifar --help` answers in well under a second): the
command modules import torch, torchvision, matplotlib, tensorboard, optuna and PIL (and the
config schema) inside the commands that use them, never at their top. `cifarcli.entry.main` is where the process starts.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Sequence

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer 0.24+ vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer uses click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from cifarcli import __version__, escape, fileio
from cifarcli.entry import INTERRUPTED_EXIT_CODE, debug_enabled, note_interrupt_reported, report_interrupted
from cifarcli.entry import main as main  # the console script of older installs names cifarcli.cli:main
from cifarcli.errors import CifarError


def _conventional_params(params: list[Any]) -> list[Any]:
    """Parameters shown as Click shows them: a flag has no `<bool>` metavar, an argument is named in capitals."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""  # typer's rich help shows the metavar in place of the `<bool>` type
        elif param.param_type_name == "argument" and param.metavar is None and param.name:
            param.metavar = param.name.upper()
    return params


class CifarCommand(TyperCommand):
    """A subcommand whose help and usage line follow Click's conventions: `cifar evaluate [OPTIONS] TARGET`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as {TARGET}; Click (and every man page) writes TARGET
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


class CifarGroup(TyperGroup):
    """The `cifar` group: Click's help conventions, and usage errors as one `error: ...` line with exit code 2."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional_params(super().get_params(ctx))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                typer.echo(usage_error_line(exc), err=True)
            if not standalone_mode:
                raise
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("stopped: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)  # a command returns None; typer.Exit(n) comes back as n


def usage_error_line(exc: Exception) -> str:
    """Click's message for a usage error (with its did-you-mean) as one `error:` line naming the command's help."""
    message = one_line(getattr(exc, "format_message", lambda: str(exc))()).rstrip(".")
    message = message[:1].lower() + message[1:] if message[1:2].islower() else message
    ctx = getattr(exc, "ctx", None)
    where = f" (see: {ctx.command_path} --help)" if ctx is not None and ctx.command.get_help_option(ctx) is not None else ""
    return f"error: {message}{where}"


app = typer.Typer(
    name="cifar",
    cls=CifarGroup,
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
    interrupted = exc.exit_code == INTERRUPTED_EXIT_CODE  # "stopped by Ctrl-C ..., state saved": not a mistake
    typer.echo(f"{'' if interrupted else 'error: '}{one_line(exc.message)}", err=True)
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
        except BrokenPipeError:  # `cifar config keys | head`: the reader has gone, which is not an error
            _silence_stdout()
            raise typer.Exit(1) from None
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test runner's buffer)
        pass


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


def register(name: str, command: Callable[..., Any], group: typer.Typer = app) -> None:
    """Add a command to `group`; its help lists the docstring's first line and its `Example:` line."""
    lines = [line.strip() for line in (command.__doc__ or "").strip().splitlines()]
    example = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Example:")), "")
    summary = lines[0] if lines else name
    short_help = f"{summary}  Example: {example}" if example else summary
    group.command(name, short_help=short_help, cls=CifarCommand)(friendly_errors(command))


def _register_all() -> None:
    # Each module owns one subcommand and imports only typer at its top (see the module docstring).
    from cifarcli.commands import compare, config_cmd, download, evaluate, landscape, lr_find, prepare, report, runs_list
    from cifarcli.commands import sweep, train, visualize_filters

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
    config = typer.Typer(cls=CifarGroup, no_args_is_help=True, help="The config schema's keys, and the built-in configs.")
    register("keys", config_cmd.keys, config)
    register("show", config_cmd.show, config)
    app.add_typer(config, name="config", short_help="List every config key (type, default, description), or print a built-in config.  Example: cifar config keys optim")


_register_all()
