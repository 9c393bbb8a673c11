"""Safe archive reading: members are checked before any byte is read, and unsafe ones are refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cifarcli.data import archive as archive_module
from cifarcli.data.archive import SafeTarReader
from cifarcli.errors import DataError
from conftest import TinyArchive


def _tar_with(path: Path, *infos: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_reads_members_straight_from_the_archive(tiny_cifar10_archive: TinyArchive, tmp_path: Path) -> None:
    with SafeTarReader(tiny_cifar10_archive.path) as tar:
        assert "cifar-10-batches-py/test_batch" in tar.members
        assert "cifar-10-batches-py" in tar.members  # the folder entry is allowed
        with tar.open_member("cifar-10-batches-py/test_batch") as stream:
            assert stream.read() == tiny_cifar10_archive.members["cifar-10-batches-py/test_batch"]
    assert list(tmp_path.iterdir()) == []  # nothing was extracted anywhere


@pytest.mark.parametrize("info, data, problem", [
    (_member("../evil"), b"x", "outside the archive folder"),
    (_member("cifar-10-batches-py/../../evil"), b"x", "outside the archive folder"),
    (_member("/tmp/evil-absolute"), b"x", "absolute path"),
    (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), None, "symbolic link"),
    (_member("cifar-10-batches-py/rel-link", tarfile.SYMTYPE, "../../x"), None, "symbolic link"),
    (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "cifar-10-batches-py/batches.meta"), None, "hard link"),
    (_member("cifar-10-batches-py/dev", tarfile.CHRTYPE), None, "device or special file"),
    (_member("cifar-10-batches-py/fifo", tarfile.FIFOTYPE), None, "device or special file"),
])
def test_unsafe_member_is_refused_naming_member_and_archive(tmp_path: Path, info, data, problem: str) -> None:
    path = _tar_with(tmp_path / "evil.tar.gz", (info, data))
    with pytest.raises(DataError) as caught:
        SafeTarReader(path)
    message = caught.value.message
    assert problem in message and repr(info.name) in message and str(path) in message
    assert caught.value.exit_code == 1
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil-absolute").exists()


def test_member_above_the_size_limit_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(archive_module, "MAX_MEMBER_BYTES", 100)
    path = _tar_with(tmp_path / "bomb.tar.gz", (_member("cifar-10-batches-py/data_batch_1"), bytes(101)))
    with pytest.raises(DataError, match=r"'cifar-10-batches-py/data_batch_1' is 101 bytes, above the 100 byte limit"):
        SafeTarReader(path)


def test_members_above_the_total_limit_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(archive_module, "MAX_TOTAL_BYTES", 150)
    path = _tar_with(tmp_path / "many.tar.gz", (_member("a/one"), bytes(100)), (_member("a/two"), bytes(100)))
    with pytest.raises(DataError, match="decompression bomb"):
        SafeTarReader(path)


def test_missing_member_and_non_archive_are_clear_errors(tiny_cifar10_archive: TinyArchive, tmp_path: Path) -> None:
    with SafeTarReader(tiny_cifar10_archive.path) as tar, pytest.raises(DataError, match="has no file 'cifar-100-python/meta'"):
        tar.open_member("cifar-100-python/meta")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(DataError, match="cannot open archive"):
        SafeTarReader(junk)


def test_truncated_archive_is_reported_as_damaged(tiny_cifar10_archive: TinyArchive, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tiny_cifar10_archive.path.read_bytes()[: tiny_cifar10_archive.path.stat().st_size // 2])
    with pytest.raises(DataError, match="damaged|cannot open"):
        SafeTarReader(cut)
