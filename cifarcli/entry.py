"""Where `cifar` and `python -m cifarcli` start: signal handling first, then the CLI is imported.

Ctrl-C (SIGINT) and SIGTERM can arrive while the imports are still running; they end the
process with one line, `stopped by Ctrl-C` (or `stopped by SIGTERM`), and exit code 130,
never a traceback: an interruption is not an error. Nothing here imports more than the
standard library until the handlers are in place.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED_EXIT_CODE = 130
_reported = {"interrupted": False}
_stopped_by = {"signal": "Ctrl-C"}  # SIGTERM's handler says when it was that one


def debug_enabled() -> bool:
    """Full tracebacks are shown when CIFAR_DEBUG=1 (set by `cifar --debug`)."""
    return os.environ.get("CIFAR_DEBUG", "") not in ("", "0")


def note_interrupt_reported() -> None:
    """Record that the user was told about the interrupt (`main` then adds no second line)."""
    _reported["interrupted"] = True


def interrupted_message() -> str:
    """`stopped by Ctrl-C`, or `stopped by SIGTERM` after a SIGTERM."""
    return f"stopped by {_stopped_by['signal']}"


def report_interrupted() -> None:
    """Print `stopped by Ctrl-C` (or SIGTERM) on stderr."""
    note_interrupt_reported()
    sys.stderr.write(interrupted_message() + "\n")
    sys.stderr.flush()


def _terminate(signum: int, frame: object) -> None:
    _stopped_by["signal"] = "SIGTERM"
    raise KeyboardInterrupt  # SIGTERM ends like Ctrl-C; `cifar train` installs its own handlers while it trains


def main() -> None:
    """Console-script entry point: install the handlers, import the Typer app, run it."""
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started with SIGINT ignored (nohup, &): leave it so
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from cifarcli.cli import app

        app()
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        if not _reported["interrupted"]:
            report_interrupted()
        sys.exit(INTERRUPTED_EXIT_CODE)
    except SystemExit as exc:
        if exc.code == INTERRUPTED_EXIT_CODE and not _reported["interrupted"]:  # typer: a Ctrl-C while it parses is a silent 130
            report_interrupted()
        raise
