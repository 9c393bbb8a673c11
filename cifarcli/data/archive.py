"""Read members of a tar archive safely, straight from the archive, without extracting to disk.

Every member is checked before anything is read: it must be a plain file or folder whose
name stays inside the archive's own tree, and no larger than a sane limit, so a crafted
archive can neither write outside a folder nor exhaust memory or disk.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from cifarcli.errors import DataError

MAX_MEMBER_BYTES = 512 * 2**20      # the largest official member (CIFAR-100 train) is ~155 MB
MAX_TOTAL_BYTES = 2 * 2**30         # all members together; the official archives hold ~180 MB
MAX_MEMBERS = 10_000                # the official archives hold fewer than 10


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Raise DataError, naming the member and the archive, unless `member` is safe to read."""
    name = member.name
    problem = _name_problem(name)
    if problem is None and not (member.isreg() or member.isdir()):
        kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "a device or special file"
        problem = f"is {kind}"
    if problem is None and member.size > MAX_MEMBER_BYTES:
        problem = f"is {member.size} bytes, above the {MAX_MEMBER_BYTES} byte limit (a decompression bomb?)"
    if problem is None:
        problem = _tarfile_filter_problem(member, archive)
    if problem is not None:
        raise DataError(
            f"refusing archive {archive}: member {name!r} {problem}",
            hint="the archive is not an intact CIFAR archive; delete it and download it again",
        )


def _name_problem(name: str) -> str | None:
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "points outside the archive folder ('..')"
    return None


def _tarfile_filter_problem(member: tarfile.TarInfo, archive: Path) -> str | None:
    """Second opinion from tarfile's own "data" extraction filter (Python 3.12+, 3.11.4+, 3.10.12+)."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return None
    try:
        data_filter(member, str(archive.parent / (archive.name + ".members")))
    except tarfile.FilterError as exc:
        return f"is rejected by tarfile's data filter ({exc})"
    return None


def _first_line(exc: BaseException) -> str:
    """tarfile's "r:*" errors list every method tried, one per line; an error message is one line."""
    lines = [line.strip().rstrip(":") for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class SafeTarReader:
    """An open tar archive whose members have all been checked; read them with `open_member`."""

    def __init__(self, archive: Path) -> None:
        self.archive = Path(archive)
        try:
            self._tar = tarfile.open(self.archive, mode="r:*")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(
                f"cannot open archive {self.archive}: {_first_line(exc)}",
                hint="the file is not a readable .tar.gz; delete it and download it again",
            ) from exc
        try:
            self.members = self._check_all()
        except BaseException:
            self._tar.close()
            raise

    def _check_all(self) -> dict[str, tarfile.TarInfo]:
        members: dict[str, tarfile.TarInfo] = {}
        total_bytes = 0
        try:
            for member in self._tar:  # reads headers one by one, so the limits apply before memory grows
                check_member(member, self.archive)
                total_bytes += member.size
                if len(members) >= MAX_MEMBERS or total_bytes > MAX_TOTAL_BYTES:
                    raise DataError(
                        f"refusing archive {self.archive}: more than {MAX_MEMBERS} members or "
                        f"{MAX_TOTAL_BYTES} bytes in all (a decompression bomb?)",
                        hint="the archive is not an intact CIFAR archive; delete it and download it again",
                    )
                members[member.name.rstrip("/")] = member
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(
                f"archive {self.archive} is damaged: {_first_line(exc)}",
                hint="delete it and download it again",
            ) from exc
        return members

    def open_member(self, name: str) -> IO[bytes]:
        """A binary stream of the regular file `name` inside the archive."""
        member = self.members.get(name)
        if member is None or not member.isreg():
            raise DataError(
                f"archive {self.archive} has no file {name!r}",
                hint="is it the archive of the chosen data set? check --dataset, --source and --md5",
            )
        stream = self._tar.extractfile(member)
        if stream is None:  # only for non-regular members, excluded above
            raise DataError(f"archive {self.archive}: cannot read {name!r}")
        return stream

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> "SafeTarReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
