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


class StorageError(CifarError):
    """A file or folder that cannot be written (or read): disk full, read-only, no permission,
    a file where a folder should be. Built by `fileio.storage_error`, whose hint fits the errno."""

    def with_hint(self, extra: str) -> "StorageError":
        """The same error with `extra` appended to its hint (e.g. that the previous checkpoint is intact)."""
        return StorageError(self.message, hint=f"{self.hint}; {extra}" if self.hint else extra)


class DamagedFileError(CifarError):
    """A file cifar wrote earlier (in a run folder: evaluation.json, predictions.csv, ...) that is
    damaged, foreign or in the way; the message names it and how to re-create it."""


class InUseError(CifarError):
    """A run folder (or data root) another cifar process is writing; the message names that process."""


class Interrupted(CifarError):
    """The user stopped the run (Ctrl-C or SIGTERM); state was saved."""

    exit_code = 130
