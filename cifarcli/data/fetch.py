"""Fetch an archive from a URL or a local path: resumable, retried, md5-verified, atomic.

The bytes go to `<destination>.part`; only a file whose md5 checks out is renamed to
`<destination>`, so a killed or corrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cifarcli import escape
from cifarcli.errors import DataError, UsageError
from cifarcli.fileio import file_digest, fsync_dir, make_folder, writing
from cifarcli.reporting import SILENT, Reporter

CHUNK_BYTES = 1 << 16
USER_AGENT = "cifarcli (+https://www.cs.toronto.edu/~kriz/cifar.html)"
REMOTE_SCHEMES = ("http", "https", "ftp")
RETRYABLE_HTTP_CODES = (408, 425, 429)  # plus every 5xx
DATA_ROOT_REMEDY = "set data.root to another folder"
SOURCE_HINT = "check the network connection, or download the archive another way and pass --source PATH"
URL_HINT = "give a full address such as https://example.org/cifar-10-python.tar.gz, or a path to the archive"


@dataclass(frozen=True)
class FetchResult:
    """A verified archive now at `path`."""

    path: Path
    md5: str          # md5 of the bytes at `path`, lower-case hex
    size_bytes: int
    source: str       # the normalised URL or absolute path it came from
    downloaded: bool  # True for http(s)/ftp, False for a local copy


class _RetryableError(Exception):
    """One attempt failed in a way another attempt may fix."""


def fetch_archive(
    source: str,
    destination: Path,
    *,
    expected_md5: str | None,
    timeout_s: float,
    retries: int,
    backoff_base_s: float = 1.0,
    reporter: Reporter = SILENT,
    md5_origin: str = "",
) -> FetchResult:
    """Copy or download `source` to `destination`, verifying `expected_md5` (None: no check).

    `md5_origin` says where the expected md5 comes from, for the mismatch message.
    Remote sources are retried `retries` times, waiting backoff_base_s * 2**attempt between
    attempts, and resume a partial `.part` file with an HTTP Range request; a host name that
    does not resolve fails at once. A failure leaves no empty `.part` file and no folder it
    created behind (a `.part` holding bytes stays, for the next attempt to resume).
    """
    destination = Path(destination)
    local = local_source_path(source)
    if local is not None:
        _require_local_file(local)  # before creating anything: a typo in --source leaves no folder behind
    created = _missing_folders(destination.parent)
    make_folder(destination.parent, remedy=DATA_ROOT_REMEDY)
    part = partial_path(destination)
    try:
        if local is None:
            _download(source, part, timeout_s, retries, backoff_base_s, reporter)
        else:
            _copy_local(local, part, reporter)
        md5 = _verify_and_publish(part, destination, expected_md5, normalize_source(source), md5_origin)
    except BaseException:
        _remove_leftovers(part, created)
        raise
    return FetchResult(destination, md5, destination.stat().st_size, normalize_source(source), local is None)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_leftovers(part: Path, created: list[Path]) -> None:
    """After a failed fetch: an empty `.part`, then the folders this fetch created, if they are empty."""
    try:
        if part.is_file() and part.stat().st_size == 0:
            part.unlink()
        for folder in created:
            folder.rmdir()  # only succeeds when empty
    except OSError:
        pass  # something else is there now: leave it


def partial_path(destination: Path) -> Path:
    """Where the bytes of `destination` are written until they are verified."""
    return destination.with_name(destination.name + ".part")


def local_source_path(source: str) -> Path | None:
    """The local file `source` names (a path or file:// URL), or None for a well-formed remote URL.

    A malformed URL (no host, a bad port, `[` without `]`, spaces) is bad usage, refused before
    any attempt, never retried as a network failure.
    """
    shown = escape.value(source)
    try:
        parsed = urllib.parse.urlsplit(source)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise UsageError(f"source {shown}: not a valid URL ({exc})", hint=URL_HINT) from exc
    scheme = parsed.scheme.lower()
    if scheme in REMOTE_SCHEMES:
        if not parsed.hostname:
            raise UsageError(f"source {shown}: the URL names no host", hint=URL_HINT)
        if any(ch.isspace() or not ch.isprintable() for ch in source):
            raise UsageError(f"source {shown}: a URL cannot hold spaces or control characters", hint="percent-encode them (%20)")
        return None
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"source {shown}: file:// URLs must name a local file (host {escape.value(parsed.netloc)} given)")
        return Path(urllib.request.url2pathname(parsed.path))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise UsageError(
            f"source {shown}: unsupported URL scheme {escape.value(scheme)}",
            hint="use an http(s):// or ftp:// mirror, a file:// URL or a plain path to the archive",
        )
    return Path(source).expanduser()


def normalize_source(source: str) -> str:
    """A stable description of `source`: the URL as given, or the absolute path of a local file."""
    local = local_source_path(source)
    return source if local is None else str(local.resolve())


def file_md5(path: Path) -> str:
    """The md5 of the file at `path`, lower-case hex."""
    return file_digest(path, "md5")


def retry_delay_s(attempt: int, backoff_base_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based): exponential back-off."""
    return backoff_base_s * 2**attempt


def _require_local_file(path: Path) -> None:
    if not path.is_file():
        raise UsageError(
            f"source archive not found: {path}",
            hint="check the path given to --source (data.source), or leave it out to download the official archive",
        )


def _copy_local(path: Path, part: Path, reporter: Reporter) -> None:
    try:
        with open(path, "rb") as source, _open_part(part, "wb") as out:
            reporter.message(f"copying {path.name} ({path.stat().st_size / 1e6:.1f} MB) from {path.parent}")
            while chunk := source.read(CHUNK_BYTES):  # a local copy takes seconds: one line, no bar
                _write_chunk(out, chunk, part)
            _sync(out, part)
    except OSError as exc:
        raise DataError(f"cannot read source archive {path}: {exc.strerror or exc}") from exc


def _download(url: str, part: Path, timeout_s: float, retries: int, backoff_base_s: float, reporter: Reporter) -> None:
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            _download_once(url, part, timeout_s, reporter)
            return
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, socket.gaierror):  # no retry fixes a name the resolver does not know
                host = urllib.parse.urlsplit(url).hostname
                raise DataError(f"could not download {url}: the host name {host} could not be resolved ({exc.reason})",
                                hint="check the host name in the address and the network connection, "
                                "or download the archive another way and pass --source PATH") from exc  # fmt: skip
            if isinstance(exc, urllib.error.HTTPError):
                reason = _http_failure(url, exc)
            else:
                reason = _describe_failure(exc)
        except (_RetryableError, http.client.HTTPException, OSError) as exc:
            reason = _describe_failure(exc)
        if attempt + 1 < attempts:
            delay_s = retry_delay_s(attempt, backoff_base_s)
            reporter.message(f"download of {url} failed ({reason}); retrying in {delay_s:.1f} s "
                             f"(attempt {attempt + 2} of {attempts})")  # fmt: skip
            time.sleep(delay_s)
    raise DataError(f"could not download {url} after {attempts} attempt(s): {reason}", hint=SOURCE_HINT)


def _http_failure(url: str, exc: urllib.error.HTTPError) -> str:
    """The reason to retry after an HTTP error answer; a DataError for one no retry can fix (404, 403, ...)."""
    if exc.code < 500 and exc.code not in RETRYABLE_HTTP_CODES:
        raise DataError(
            f"{url}: the server answered HTTP {exc.code} {exc.reason}",
            hint="check the address, or fetch the archive another way and pass --source PATH",
        ) from exc
    return f"HTTP {exc.code} {exc.reason}"


def _download_once(url: str, part: Path, timeout_s: float, reporter: Reporter) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part file is not a prefix the server can continue
            part.unlink(missing_ok=True)
            raise _RetryableError("the server refused to resume; starting over") from exc
        raise
    with response:
        start = _resume_start(response, offset, part)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        with _open_part(part, "ab" if start else "wb") as out, reporter.task(
            f"downloading {url.rsplit('/', 1)[-1]}", total, done=start, unit="bytes"
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                _write_chunk(out, chunk, part)
                bar.advance(len(chunk))
            _sync(out, part)
    size = part.stat().st_size
    if total is not None and size != total:
        raise _RetryableError(f"connection closed after {size} of {total} bytes")


def _resume_start(response: http.client.HTTPResponse, offset: int, part: Path) -> int:
    """Byte offset the response body starts at: `offset` for a matching 206, else 0 (start over)."""
    if response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    if offset and content_range.startswith(f"bytes {offset}-"):
        return offset
    part.unlink(missing_ok=True)
    raise _RetryableError(f"the server resumed at the wrong place ({content_range or 'no Content-Range'})")


def _verify_and_publish(part: Path, destination: Path, expected_md5: str | None, source: str, md5_origin: str) -> str:
    actual = file_md5(part)
    if expected_md5 is not None and actual != expected_md5.lower():
        part.unlink(missing_ok=True)
        raise DataError(
            f"archive from {source} failed its checksum: md5 {actual}, expected {expected_md5.lower()}"
            + (f" ({md5_origin})" if md5_origin else ""),
            hint=f"if you trust this file, pass --md5 {actual} (data.md5); or skip the check with --no-verify (data.verify=false)",
        )
    with writing(destination, remedy=DATA_ROOT_REMEDY):
        os.replace(part, destination)
    fsync_dir(destination.parent)
    return actual


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _open_part(part: Path, mode: str) -> BinaryIO:
    with writing(part, remedy=DATA_ROOT_REMEDY):
        return open(part, mode)  # noqa: SIM115 - closed by the caller's `with`


def _write_chunk(out: BinaryIO, chunk: bytes, part: Path) -> None:
    with writing(part, remedy=DATA_ROOT_REMEDY):
        out.write(chunk)


def _sync(out: BinaryIO, part: Path) -> None:
    with writing(part, remedy=DATA_ROOT_REMEDY):
        out.flush()
        os.fsync(out.fileno())
