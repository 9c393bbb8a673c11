"""The run directory: where a run's config, metrics, checkpoints, logs and reports live.

    runs/<date>-<time>-<name>/
        config.yaml            the resolved config that produced everything below
        run_info.json          data set, classes, split sizes, steps per epoch, device
        metrics.csv            one row per epoch
        checkpoints/last.pt    resumable state after the latest epoch (or interruption)
        checkpoints/best.pt    the epoch with the best validation accuracy
        tensorboard/           event files
        evaluations/<key>/     one scoring each (checkpoint, split, TTA, EMA), never replaced by another:
            evaluation.json, confusion_matrix.csv, predictions.csv (+ confusion_matrix.png from train)
            key e.g. best-test (train's), last-test-tta_flip, best-val-ema
        evaluation.json, ...   the same, at the top, in run folders of older cifars (still read)
        status.json            running / finished / interrupted / failed, kept by `cifar train`
        report/                from `cifar report`
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import ContextManager, Iterator

from cifarcli import fileio
from cifarcli.errors import CifarError, Interrupted, RunError, UsageError
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
EVALUATIONS_DIR = "evaluations"
STATUS_FILE = "status.json"
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


def in_use(run_dir: Path) -> bool:
    """Whether a command holds the run folder now (`locked`): `cifar train` does while it trains."""
    return fileio.lock_is_held(lock_file_for(run_dir, "run"))


# status.json: what `cifar train` is doing or last did; "running" in a folder nobody holds was killed
STATUSES = ("running", "finished", "interrupted", "failed")


@contextlib.contextmanager
def status_kept(run_dir: Path) -> Iterator[None]:
    """Record in status.json that the run trains, then how the `with` block ended: finished,
    interrupted (a signal, Ctrl-C) or failed. A failure to write the last is not allowed to hide the error."""
    fileio.write_json(run_dir / STATUS_FILE, {"status": "running", "pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds")})
    ended = "failed"
    try:
        yield
        ended = "finished"
    except (Interrupted, KeyboardInterrupt):
        ended = "interrupted"
        raise
    finally:
        with contextlib.suppress(CifarError, OSError):
            fileio.write_json(run_dir / STATUS_FILE, {"status": ended, "ended": datetime.now().isoformat(timespec="seconds")})


def run_status(run_dir: Path, epochs_done: int, epochs_planned: int) -> str:
    """running / finished / interrupted / failed, from status.json and the run lock; a run of an
    older cifar (no status.json) is finished when every planned epoch is done and scored."""
    try:
        recorded = fileio.read_json(run_dir / STATUS_FILE).get("status")
    except (CifarError, AttributeError):
        recorded = None
    if recorded == "running" or (recorded is None and in_use(run_dir)):
        return "running" if in_use(run_dir) else "interrupted"  # killed: it could not say so
    if recorded in STATUSES:
        return recorded
    return "finished" if epochs_done >= epochs_planned and evaluation_dirs(run_dir) else "interrupted"


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


LATEST = "latest"  # names the newest run folder wherever a command takes one


def default_root() -> Path:
    """Where `cifar train` puts run folders unless run.root says otherwise (the schema's default)."""
    from cifarcli.config import RunConfig

    return Path(RunConfig.model_fields["root"].default)


def is_run_dir(path: Path) -> bool:
    """A folder `cifar train` made: it writes run_info.json there before the first step."""
    return path.is_dir() and (path / RUN_INFO_FILE).is_file()


def list_run_dirs(root: Path) -> list[Path]:
    """The run folders directly under `root`, newest first (names start with their date and time)."""
    if not root.is_dir():
        return []
    found = [path for path in root.iterdir() if is_run_dir(path)]
    return sorted(found, key=lambda path: (path.name[:15], path.stat().st_mtime, path.name), reverse=True)


def resolve_run(target: Path, root: Path | None = None) -> Path:
    """The run folder or file `target` names: itself when it exists, else `latest` or a unique
    prefix of a run folder's name, looked up in its parent folder (or `root`, default runs/).

    An ambiguous prefix is a UsageError (exit 2) listing the matches.
    """
    if target.exists():
        return target
    name = target.name
    folder = target.parent if target.parent != Path(".") else (root if root is not None else default_root())
    candidates = list_run_dirs(folder)
    if name == LATEST:
        if not candidates:
            raise UsageError(f"no run folders under {folder} to take as {LATEST}", hint="train one with `cifar train`, or pass a run folder")
        return candidates[0]
    matches = [path for path in candidates if path.name.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(path.name for path in matches[:8]) + (f" and {len(matches) - 8} more" if len(matches) > 8 else "")
        raise UsageError(f"{target} matches {len(matches)} run folders: {shown}", hint="type more of the name")
    raise UsageError(f"no such run folder or checkpoint: {target}",
                     hint=f"pass a folder under {folder}, `{LATEST}`, the start of a run's name, or a .pt file")  # fmt: skip


def evaluation_key(checkpoint: str, split: str, tta_flip: bool = False, tta_shift: bool = False, ema: bool = False) -> str:
    """The folder name of one evaluation under evaluations/: best-test, last-test-tta_flip, best-val-ema, ..."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(checkpoint).stem).strip("._") or "checkpoint"
    flags = [name for name, on in (("tta_flip", tta_flip), ("tta_shift", tta_shift), ("ema", ema)) if on]
    return "-".join([stem, split, *flags])


def evaluation_dir(run_dir: Path, key: str) -> Path:
    return run_dir / EVALUATIONS_DIR / key


def evaluation_dirs(run_dir: Path) -> list[Path]:
    """Every folder of `run_dir` holding an evaluation.json, most recent first; an older cifar's
    top-level one (the run folder itself) counts too."""
    keyed = run_dir / EVALUATIONS_DIR
    found = [path for path in keyed.iterdir() if (path / EVALUATION_FILE).is_file()] if keyed.is_dir() else []
    if (run_dir / EVALUATION_FILE).is_file():
        found.append(run_dir)
    return sorted(found, key=lambda path: (path / EVALUATION_FILE).stat().st_mtime_ns, reverse=True)


def training_evaluation(run_dir: Path, tta_flip: bool = False, tta_shift: bool = False) -> Path | None:
    """The evaluation.json of the test scoring `cifar train` made at the end (best checkpoint,
    the run's eval.tta_* settings); at the top in runs of an older cifar; None when there is none."""
    keyed = evaluation_dir(run_dir, evaluation_key(BEST_CHECKPOINT, "test", tta_flip, tta_shift)) / EVALUATION_FILE
    if keyed.is_file():
        return keyed
    legacy = run_dir / EVALUATION_FILE  # an older cifar's evaluate wrote over it: only a test scoring of best.pt counts
    return legacy if legacy.is_file() and _scores_best_on_test(legacy) else None


def _scores_best_on_test(path: Path) -> bool:
    try:
        summary = fileio.read_json(path)
    except (CifarError, OSError):
        return False
    if not isinstance(summary, dict):
        return False
    checkpoint = summary.get("checkpoint")
    return summary.get("split") == "test" and (not isinstance(checkpoint, str) or Path(checkpoint).stem == Path(BEST_CHECKPOINT).stem)
