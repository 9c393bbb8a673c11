"""The run directory: where a run's config, metrics, checkpoints, logs and reports live.

    runs/<date>-<time>-<name>/
        config.yaml            the resolved config that produced everything below
        run_info.json          data set, classes, split sizes, steps per epoch, device
        metrics.csv            one row per epoch
        checkpoints/last.pt    resumable state after the latest epoch (or interruption)
        checkpoints/best.pt    the epoch with the best validation accuracy
        tensorboard/           event files
        evaluation.json, confusion_matrix.csv, predictions.csv   from `cifar evaluate`
        report/                from `cifar report`
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ContextManager

from cifarcli.errors import RunError, UsageError
from cifarcli.fileio import exclusive_lock, lock_file_for, make_folder, storage_error

CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run_info.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TENSORBOARD_DIR = "tensorboard"
EVALUATION_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.csv"
PREDICTIONS_FILE = "predictions.csv"
LR_TRACE_FILE = "lr_schedule.csv"
REPORT_DIR = "report"


def timestamp(now: datetime | None = None) -> str:
    """`<date>-<time>` as run folder names start: 20261121-093000."""
    return (now or datetime.now()).strftime("%Y%m%d-%H%M%S")


def create_run_dir(root: Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a new, empty run folder; never reuses one (a suffix keeps names unique)."""
    return create_unique_dir(root, f"{timestamp(now)}-{name}")


def create_unique_dir(root: Path, base: str, what: str = "run", remedy: str = "set run.root to another folder") -> Path:
    """Create and return `root/base`, or `root/base-2`, `-3`, ... when taken: always a new, empty folder.

    `what` names the folder in messages ("run", "sweep"); `remedy` says how to pick another root.
    """
    make_folder(root, remedy)
    for attempt in range(1, 1000):
        suffix = "" if attempt == 1 else f"-{attempt}"
        path = root / f"{base}{suffix}"
        try:
            path.mkdir()  # atomic: two runs started in the same second cannot both get one name
        except FileExistsError:
            continue
        except OSError as exc:
            raise storage_error(exc, path, remedy, doing="create") from exc
        return path
    raise RunError(f"could not find a free {what} folder name under {root} for {base}")


def locked(run_dir: Path) -> ContextManager[None]:
    """Hold the run folder for one command: a second process that writes it (train, --resume,
    evaluate, report, visualize-filters) stops at once with an error naming this one."""
    return exclusive_lock(lock_file_for(run_dir, "run"), wait=False, what=f"run folder {run_dir}")


def checkpoint_path(run_dir: Path, which: str = LAST_CHECKPOINT) -> Path:
    return run_dir / CHECKPOINT_DIR / which


def find_checkpoint(run_or_checkpoint: Path, prefer: str = BEST_CHECKPOINT) -> Path:
    """Resolve a run folder or a checkpoint file to a checkpoint file (best, else last)."""
    if run_or_checkpoint.is_file():
        return run_or_checkpoint
    if not run_or_checkpoint.exists():
        raise UsageError(f"no such run folder or checkpoint: {run_or_checkpoint}", hint="pass a folder under runs/ or a .pt file")
    for which in (prefer, LAST_CHECKPOINT, BEST_CHECKPOINT):
        candidate = checkpoint_path(run_or_checkpoint, which)
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"{run_or_checkpoint} holds no checkpoint ({CHECKPOINT_DIR}/{BEST_CHECKPOINT} or {LAST_CHECKPOINT})",
        hint="pass the folder of a run that finished at least one epoch",
    )


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (its grandparent when it sits in checkpoints/)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
