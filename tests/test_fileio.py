"""fileio's one wrapper for writes: every OSError becomes one StorageError whose hint is true for its errno."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cifarcli import fileio
from cifarcli.errors import StorageError


def _refusal(write, *args) -> StorageError:
    with pytest.raises(StorageError) as caught:
        write(*args)
    return caught.value


def test_a_file_where_a_folder_should_be_is_named_and_disk_space_is_not_mentioned(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("x")
    for write, target in ((fileio.write_text_atomic, blocker / "sub" / "f.txt"), (fileio.make_folder, blocker)):
        error = _refusal(write, *((target, "text") if write is fileio.write_text_atomic else (target,)))
        assert error.hint == f"{blocker} is a file, not a folder; move it away", error.hint
        assert "disk space" not in error.hint
    assert blocker.read_text() == "x"


def test_a_folder_where_a_file_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "evaluation.json").mkdir()
    error = _refusal(fileio.write_json, tmp_path / "evaluation.json", {"a": 1})
    assert error.message.startswith(f"cannot write {tmp_path / 'evaluation.json'}: ")
    assert error.hint == f"{tmp_path / 'evaluation.json'} is a folder, not a file; move it away"
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]  # no temporary file left


def test_a_name_too_long_for_the_file_system(tmp_path: Path) -> None:
    error = _refusal(fileio.write_text_atomic, tmp_path / ("n" * 300) / "f.txt", "x")
    assert "longer than the file system allows" in error.hint


def test_dev_null_as_an_output_folder(tmp_path: Path) -> None:
    error = _refusal(fileio.write_text_atomic, Path("/dev/null") / "filters.png", "x")
    assert error.hint == "/dev/null is a file, not a folder; move it away"


@pytest.mark.parametrize(
    "code, hint",
    [
        (errno.ENOSPC, "free some disk space"),
        (errno.EROFS, "{folder} is on a read-only file system"),
        (errno.EACCES, "you have no permission to write in {folder}"),
        (errno.EFBIG, "the file is larger than this process may write (see `ulimit -f`); raise that limit"),
    ],
)
def test_each_errno_gets_its_own_true_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, hint: str) -> None:
    def failing_replace(source, target):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    error = _refusal(fileio.write_text_atomic, tmp_path / "f.txt", "x")
    assert error.message == f"cannot write {tmp_path / 'f.txt'}: {os.strerror(code)}"
    assert error.hint == hint.format(folder=tmp_path)
    assert error.exit_code == 1 and list(tmp_path.iterdir()) == []


def test_a_remedy_ends_the_hint_and_with_hint_adds_to_it(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")
    error = _refusal(fileio.make_folder, blocker / "runs", "set run.root to another folder")
    assert error.message.startswith(f"cannot create {blocker / 'runs'}: ")
    assert error.hint == f"{blocker} is a file, not a folder; move it away, or set run.root to another folder"
    assert error.with_hint("the previous checkpoint is intact").hint.endswith("folder; the previous checkpoint is intact")


def test_a_file_size_limit_is_an_error_not_a_killed_process(tmp_path: Path) -> None:
    """Without SIGXFSZ ignored, the kernel kills a process that writes past `ulimit -f`."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from cifarcli import fileio
        from cifarcli.errors import StorageError
        fileio.ignore_file_size_signal()
        try:
            fileio.write_atomic(Path({str(tmp_path / 'big.bin')!r}), b"x" * 100_000)
        except StorageError as exc:
            print(exc.message, "|", exc.hint)
    """)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=limit, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "File too large | the file is larger than this process may write" in done.stdout
    assert not (tmp_path / "big.bin").exists() and list(tmp_path.iterdir()) == []
