"""Durable file writes: a reader sees the old file or the new one, never a half-written one.

Every write to a run folder, the data root or `--out` goes through this module, which turns an
OSError into one StorageError whose hint is true for its errno (`storage_error`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from cifarcli import escape
from cifarcli.errors import DamagedFileError, InUseError, StorageError, UsageError


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest of `path` and its parents that exists and is not a folder (a file where a folder should be)."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return None if candidate.is_dir() else candidate
        except OSError:
            return None
    return None


def _errno_hint(exc: OSError, path: Path) -> str:
    """What to do about `exc`, for its errno only: "free disk space" is said for a full disk, never for a file in the way."""
    code = exc.errno
    folder = path.parent
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "free some disk space"
    if code == errno.EFBIG:
        return "the file is larger than this process may write (see `ulimit -f`); raise that limit"
    if code == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"you have no permission to write in {folder}"
    if code == errno.ENAMETOOLONG:
        return "a file or folder name in the path is longer than the file system allows; use a shorter one"
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(Path(exc.filename) if exc.filename else path)
        return f"{blocker} is a file, not a folder; move it away" if blocker is not None else f"check {folder}"
    if code == errno.EISDIR:
        return f"{path} is a folder, not a file; move it away"
    if code == errno.ELOOP:
        return f"a symbolic link in {folder} points to itself"
    return f"check that {folder} is a writable folder"


def storage_error(exc: OSError, path: Path, remedy: str = "", doing: str = "write") -> StorageError:
    """One line for an OSError met while `doing` `path`; `remedy` (e.g. "set data.root elsewhere") ends the hint."""
    hint = _errno_hint(exc, Path(path))
    return StorageError(f"cannot {doing} {path}: {exc.strerror or exc}", hint=f"{hint}, or {remedy}" if remedy else hint)


@contextlib.contextmanager
def writing(path: Path, remedy: str = "") -> Iterator[None]:
    """Turn an OSError inside the block into `storage_error(exc, path, remedy)`."""
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, path, remedy) from exc


def make_folder(path: Path, remedy: str = "") -> Path:
    """`mkdir -p path`, or a StorageError (a file in the way, no permission, ...); returns `path`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, path, remedy, doing="create") from exc
    return path


def ignore_file_size_signal() -> None:
    """Let a write past the file-size limit (`ulimit -f`) fail with EFBIG instead of killing the process."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` so readers see the old file or the new one, never a half-written one."""
    write_atomic_with(path, lambda handle: handle.write(data))


def write_atomic_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run `write(handle)` on a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    Raises StorageError (never OSError) when it cannot; `path` is then unchanged.
    """
    with writing(path):
        _write_atomic_with(path, write)


def _write_atomic_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give the usual permissions instead
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def file_digest(path: Path, algorithm: str) -> str:
    """The `algorithm` ("md5", "sha256") digest of the file at `path`, lower-case hex, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, max_bytes: int = 64 << 20) -> Any:
    """The parsed JSON file at `path`; DamagedFileError (exit 1) if it is unreadable or not JSON."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"missing file: {path}") from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise DamagedFileError(f"cannot read {path}: {escape.clip(escape.terminal(exc))}",
                               hint="the file is damaged; re-create it with the command that wrote it") from exc  # fmt: skip


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """Write a whole CSV file atomically, quoted by `csv.writer` (a class name may hold a comma or a quote)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_csv_cell(v) for v in row] for row in rows)
    write_text_atomic(path, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    # repr of a Python float round-trips exactly; numpy's float64 repr is "np.float64(...)" under numpy 2.
    return repr(float(value)) if isinstance(value, float) else value


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts keyed by its header."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def refuse_file_in_the_way(folder: Path) -> None:
    """StorageError if `folder` exists as something other than a folder (checked before any work is done)."""
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        raise storage_error(FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(folder)), folder)


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new, empty folder beside `target` for the block to fill; then it replaces `target`.

    Readers see the previous folder or the complete new one: the new one is renamed into
    place only when the block succeeds, and removed (leaving `target` as it was) when it fails.
    """
    refuse_file_in_the_way(target)
    make_folder(target.parent)
    with writing(target):
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders
    try:
        yield staging
        with writing(target):
            _publish_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish_folder(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; a previous `target` is moved aside first and removed after."""
    previous = None
    if target.is_dir():
        previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, previous / target.name)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def lock_file_for(folder: Path, kind: str) -> Path:
    """Where the lock of `folder` lives: in the temp folder, keyed by its absolute path, so that
    taking it creates nothing in `folder` itself (and works before `folder` exists)."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cifar-{kind}-{key}.lock"


def _this_process() -> str:
    return escape.clip(escape.terminal(f"pid {os.getpid()} ({' '.join(sys.argv)})"), 200)


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool = True, what: str = "") -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if needed) for the `with` block.

    With `wait`, processes take turns (two preparing one data root never write one `.part`
    file at once). Without it, a lock another process holds is an InUseError naming `what`
    and that process, whose pid and command line the holder writes into the lock file.
    Where advisory locks do not exist (Windows), it does nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    make_folder(path.parent)
    with writing(path):
        handle = open(path, "a+b")  # noqa: SIM115 - closed below, after the lock is released
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = escape.terminal(handle.read(400).decode("utf-8", "replace").strip()) or "another process"
            raise InUseError(f"{what or path} is in use by {holder}",
                             hint="wait for that command to finish, or stop it; one cifar command at a time writes there") from None  # fmt: skip
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(_this_process().encode("utf-8"))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def lock_is_held(path: Path) -> bool:
    """Whether some process holds the `exclusive_lock` on `path` now (False where advisory locks do not exist)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; never created here
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False
