"""`cifar download` end to end: CliRunner and one real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.data.cache import read_cache
from conftest import SUBSET_MD5, LoopbackServer, TinyArchive, subset_archive_path

runner = CliRunner()
OFFICIAL_CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def _download(root: Path, *args: str):
    return runner.invoke(app, ["download", *args, "--set", f"data.root={root}"])


def _no_archive_left(root: Path) -> bool:
    return not any(p.name.startswith("cifar-10-python.tar.gz") for p in root.glob("*")) if root.exists() else True


def test_download_from_archive_then_rerun_is_already_present(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> None:
    first = _download(tmp_path, "--source", str(tiny_cifar10_archive.path), "--md5", tiny_cifar10_archive.md5)
    assert first.exit_code == 0, first.output
    assert "cifar10: copied from the source archive and converted" in first.stdout
    assert f"cache:   {tmp_path / 'cifar10'} (200 train, 100 test images)" in first.stdout
    assert (tmp_path / "cifar10" / "manifest.json").is_file()
    second = _download(tmp_path, "--source", str(tiny_cifar10_archive.path), "--md5", tiny_cifar10_archive.md5)
    assert second.exit_code == 0, second.output
    assert "cifar10: already present and verified" in second.stdout
    plain = _download(tmp_path)  # the default config reuses what was prepared
    assert plain.exit_code == 0 and "already present and verified" in plain.stdout


def test_wrong_md5_exits_1_with_expected_and_got(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> None:
    result = _download(tmp_path, "--source", str(tiny_cifar10_archive.path), "--md5", "ab" * 16)
    assert result.exit_code == 1
    assert f"md5 {tiny_cifar10_archive.md5}, expected {'ab' * 16}" in result.stderr
    assert f"hint: if you trust this file, pass --md5 {tiny_cifar10_archive.md5}" in result.stderr
    assert "Traceback" not in result.output and _no_archive_left(tmp_path)


def test_official_checksum_refuses_other_archive_and_no_verify_accepts(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> None:
    refused = _download(tmp_path, "--source", str(tiny_cifar10_archive.path))
    assert refused.exit_code == 1
    assert f"expected {OFFICIAL_CIFAR10_MD5} (the official md5 of cifar-10-python.tar.gz)" in refused.stderr
    assert "--no-verify" in refused.stderr and "Traceback" not in refused.output
    accepted = _download(tmp_path, "--source", str(tiny_cifar10_archive.path), "--no-verify")
    assert accepted.exit_code == 0, accepted.output
    assert f"md5 {tiny_cifar10_archive.md5}" in accepted.stdout
    assert len(read_cache(tmp_path / "cifar10", "cifar10").test_images) == 100


def test_missing_source_path_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-here.tar.gz"
    result = _download(tmp_path / "root", "--source", str(missing))
    assert result.exit_code == 2
    assert f"error: source archive not found: {missing}" in result.stderr and "Traceback" not in result.output


def test_bad_dataset_exits_2_listing_choices(tmp_path: Path) -> None:
    result = _download(tmp_path, "--dataset", "cifar1000")
    assert result.exit_code == 2 and "cifar10, cifar100" in result.stderr and "Traceback" not in result.output


def test_cifar100_over_http_mirror(tmp_path: Path, tiny_cifar100_archive: TinyArchive, loopback_server: LoopbackServer) -> None:
    loopback_server.behaviour.payload = tiny_cifar100_archive.path.read_bytes()
    result = _download(tmp_path, "--dataset", "cifar100", "--source", loopback_server.url, "--md5", tiny_cifar100_archive.md5)
    assert result.exit_code == 0, result.output
    assert "cifar100: downloaded and converted" in result.stdout and f"source:  {loopback_server.url}" in result.stdout
    arrays = read_cache(tmp_path / "cifar100", "cifar100", verify_checksums=True)
    np.testing.assert_array_equal(arrays.test_coarse_labels, tiny_cifar100_archive.expected.test_coarse_labels)


def test_unreachable_mirror_exits_1_with_url_and_source_hint(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # the discard port: nothing listens there
    result = _download(tmp_path, "--source", url, "--set", "data.download_retries=0")
    assert result.exit_code == 1
    assert f"error: could not download {url} after 1 attempt(s)" in result.stderr
    assert "hint:" in result.stderr and "--source PATH" in result.stderr and "Traceback" not in result.output


def test_help_shows_summary_and_example() -> None:
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "Download CIFAR-10/100, verify its checksum" in top.output
    own = runner.invoke(app, ["download", "--help"])
    assert own.exit_code == 0 and "cifar download --dataset cifar100" in own.output and "--no-verify" in own.output


def test_subprocess_run(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "cifarcli", "download", "--source", str(tiny_cifar10_archive.path),
         "--md5", tiny_cifar10_archive.md5, "--set", f"data.root={tmp_path}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CIFAR_DEBUG": ""},
    )
    assert completed.returncode == 0, completed.stderr
    assert f"cache:   {tmp_path / 'cifar10'}" in completed.stdout
    assert "copying tiny-cifar-10-python.tar.gz" in completed.stderr  # plain progress lines off a terminal
    assert read_cache(tmp_path / "cifar10", "cifar10", verify_checksums=True).class_names[0] == "airplane"


@pytest.mark.skipif(not subset_archive_path().is_file(), reason="real CIFAR-10 subset archive not present")
def test_real_cifar10_subset(tmp_path: Path) -> None:
    archive = str(subset_archive_path())
    refused = _download(tmp_path, "--source", archive)
    assert refused.exit_code == 1 and f"expected {OFFICIAL_CIFAR10_MD5}" in refused.stderr
    assert _no_archive_left(tmp_path)
    result = _download(tmp_path, "--source", archive, "--md5", SUBSET_MD5)
    assert result.exit_code == 0, result.output
    arrays = read_cache(tmp_path / "cifar10", "cifar10", verify_checksums=True)
    assert (len(arrays.train_images), len(arrays.test_images)) == (5085, 1017)
    assert [arrays.class_names[i] for i in arrays.test_labels[:5]] == ["cat", "ship", "ship", "airplane", "frog"]
    assert arrays.train_images.dtype == np.uint8 and 40 < float(arrays.test_images[:100].mean()) < 200
