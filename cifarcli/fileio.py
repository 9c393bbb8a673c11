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
import signal
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from cifarcli import escape
from cifarcli.errors import DamagedFileError, StorageError, UsageError


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


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if needed) for the `with` block.

    Two processes preparing the same data root then take turns instead of writing one
    `.part` file at once. Where advisory locks do not exist (Windows), it does nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
