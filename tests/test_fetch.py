"""Fetching: local copies and HTTP downloads are verified, atomic, retried and resumed."""

from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path

import pytest

from cifarcli.data import fetch as fetch_module
from cifarcli.data.fetch import fetch_archive, file_md5, partial_path, retry_delay_s
from cifarcli.errors import DataError, UsageError
from conftest import LoopbackServer, TinyArchive


def _fetch(source: str, destination: Path, md5: str | None, **kwargs):
    options = {"timeout_s": 5.0, "retries": 2, "backoff_base_s": 0.0, **kwargs}
    return fetch_archive(source, destination, expected_md5=md5, **options)


def _nothing_complete_left(destination: Path) -> bool:
    return not destination.exists() and not partial_path(destination).exists()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


@pytest.mark.parametrize("as_uri", [False, True])
def test_local_path_and_file_url_are_copied_verified(tiny_cifar10_archive: TinyArchive, tmp_path: Path, as_uri: bool) -> None:
    source = tiny_cifar10_archive.path.as_uri() if as_uri else str(tiny_cifar10_archive.path)
    result = _fetch(source, tmp_path / "out" / "a.tar.gz", tiny_cifar10_archive.md5.upper())
    assert result.path.read_bytes() == tiny_cifar10_archive.path.read_bytes()
    assert result.md5 == tiny_cifar10_archive.md5 and result.downloaded is False
    assert result.source == str(tiny_cifar10_archive.path.resolve())
    assert not partial_path(result.path).exists()


def test_missing_local_source_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(UsageError, match="nowhere.tar.gz") as caught:
        _fetch(str(missing), tmp_path / "a.tar.gz", None)
    assert caught.value.exit_code == 2


def test_wrong_md5_leaves_nothing_that_looks_complete(tiny_cifar10_archive: TinyArchive, tmp_path: Path) -> None:
    destination = tmp_path / "a.tar.gz"
    with pytest.raises(DataError) as caught:
        _fetch(str(tiny_cifar10_archive.path), destination, "0" * 32)
    assert f"md5 {tiny_cifar10_archive.md5}, expected {'0' * 32}" in caught.value.message
    assert f"--md5 {tiny_cifar10_archive.md5}" in caught.value.hint and "--no-verify" in caught.value.hint
    assert _nothing_complete_left(destination)


def test_no_expected_md5_accepts_and_reports_the_md5(tiny_cifar10_archive: TinyArchive, tmp_path: Path) -> None:
    result = _fetch(str(tiny_cifar10_archive.path), tmp_path / "a.tar.gz", None)
    assert result.md5 == tiny_cifar10_archive.md5 == file_md5(result.path)


def test_http_download(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    loopback_server.behaviour.payload = payload = bytes(range(256)) * 1000
    result = _fetch(loopback_server.url, tmp_path / "a.tar.gz", file_md5_of(payload))
    assert result.path.read_bytes() == payload and result.downloaded is True
    assert len(loopback_server.requests) == 1 and "range" not in loopback_server.requests[0]


def test_dropped_connection_resumes_with_range(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    loopback_server.behaviour.payload = payload
    loopback_server.behaviour.drop_first_at_fraction = 0.5
    result = _fetch(loopback_server.url, tmp_path / "a.tar.gz", file_md5_of(payload))
    assert result.path.read_bytes() == payload
    assert len(loopback_server.requests) == 2
    assert loopback_server.requests[1]["range"] == f"bytes={len(payload) // 2}-"


def test_server_without_range_support_restarts_from_zero(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    loopback_server.behaviour.payload = payload
    loopback_server.behaviour.drop_first_at_fraction = 0.3
    loopback_server.behaviour.supports_range = False
    result = _fetch(loopback_server.url, tmp_path / "a.tar.gz", file_md5_of(payload))
    assert result.path.read_bytes() == payload
    assert len(loopback_server.requests) == 2 and "range" in loopback_server.requests[1]


def test_part_file_from_an_earlier_run_is_resumed(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    loopback_server.behaviour.payload = payload
    destination = tmp_path / "a.tar.gz"
    partial_path(destination).write_bytes(payload[:12345])
    result = _fetch(loopback_server.url, destination, file_md5_of(payload))
    assert result.path.read_bytes() == payload
    assert [r.get("range") for r in loopback_server.requests] == ["bytes=12345-"]


def test_wrong_bytes_are_refused_and_nothing_is_left(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 100
    loopback_server.behaviour.payload = payload
    loopback_server.behaviour.wrong_bytes = True
    destination = tmp_path / "a.tar.gz"
    with pytest.raises(DataError, match=f"expected {file_md5_of(payload)}"):
        _fetch(loopback_server.url, destination, file_md5_of(payload))
    assert _nothing_complete_left(destination) and list(tmp_path.iterdir()) == []


def test_timeout_is_retried(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    payload = b"cifar" * 1000
    loopback_server.behaviour.payload = payload
    loopback_server.behaviour.delay_first_s = 0.6
    result = _fetch(loopback_server.url, tmp_path / "a.tar.gz", file_md5_of(payload), timeout_s=0.15, retries=1)
    assert result.path.read_bytes() == payload and len(loopback_server.requests) == 2


def test_server_error_is_retried_but_not_found_is_not(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    loopback_server.behaviour.payload = payload = b"x" * 5000
    loopback_server.behaviour.first_status = 503
    assert _fetch(loopback_server.url, tmp_path / "a.tar.gz", file_md5_of(payload)).path.read_bytes() == payload
    loopback_server.requests.clear()
    loopback_server.behaviour.first_status, loopback_server.behaviour.status = None, 404
    with pytest.raises(DataError, match="HTTP 404") as caught:
        _fetch(loopback_server.url, tmp_path / "b.tar.gz", None)
    assert len(loopback_server.requests) == 1 and "--source" in caught.value.hint


def test_network_failure_after_retries_names_url_and_backs_off(tmp_path: Path, monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(fetch_module.time, "sleep", slept.append)
    url = _closed_port_url()
    with pytest.raises(DataError) as caught:
        _fetch(url, tmp_path / "a.tar.gz", None, retries=3, backoff_base_s=0.25)
    assert url in caught.value.message and "after 4 attempt(s)" in caught.value.message
    assert "--source" in caught.value.hint
    assert slept == [0.25, 0.5, 1.0]
    assert [retry_delay_s(a, 2.0) for a in range(3)] == [2.0, 4.0, 8.0]


def file_md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
