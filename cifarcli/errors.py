"""Errors a user can cause or meet, each carrying its exit code.

`cli.py` turns them into one line (plus at most one hint line); everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class CifarError(Exception):
    """A failure the user can act on. `hint` is an optional second line."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(CifarError):
    """Bad usage: a wrong argument, a missing file the user named."""

    exit_code = 2


class ConfigError(UsageError):
    """A config that does not validate; the message starts with the dotted path."""


class DataError(CifarError):
    """A download, archive or cache that cannot be trusted or read."""


class CheckpointError(CifarError):
    """A checkpoint or weights file that is missing, corrupted or unsafe."""


class RunError(CifarError):
    """A run that failed while working: NaN loss, out of memory, disk full."""


class Interrupted(CifarError):
    """The user stopped the run (Ctrl-C or SIGTERM); state was saved."""

    exit_code = 130
