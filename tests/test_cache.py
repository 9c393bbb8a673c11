"""The on-disk cache: exactly what went in comes out, memory-mapped; a cache failing its check is rebuilt."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cifarcli.config import DataConfig
from cifarcli.data import prepare as prepare_module
from cifarcli.data.cache import MANIFEST_NAME, CacheError, CifarArrays, file_sha256, read_cache, write_cache
from cifarcli.data.prepare import ALREADY_PRESENT, CONVERTED, COPIED, REBUILT, load_dataset, prepare_dataset
from cifarcli.errors import DataError
from conftest import TinyArchive


def _assert_same(actual: CifarArrays, expected: CifarArrays) -> None:
    for field in ("train_images", "train_labels", "test_images", "test_labels", "train_coarse_labels", "test_coarse_labels"):
        want, got = getattr(expected, field), getattr(actual, field)
        if want is None:
            assert got is None, field
        else:
            assert got.dtype == want.dtype and got.shape == want.shape, field
            np.testing.assert_array_equal(got, want, err_msg=field)
    assert actual.class_names == expected.class_names
    assert actual.superclass_names == expected.superclass_names
    assert actual.dataset == expected.dataset


def _config(root: Path, archive: TinyArchive, **changes) -> DataConfig:
    fields = {"dataset": archive.dataset, "root": root, "source": str(archive.path), "md5": archive.md5}
    return DataConfig(**{**fields, **changes})


@pytest.fixture
def fresh_root(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> Path:
    prepare_dataset(_config(tmp_path, tiny_cifar10_archive))
    return tmp_path


def test_cifar10_cache_holds_exactly_what_went_in(cifar10_data_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    arrays = read_cache(cifar10_data_root / "cifar10", "cifar10")
    _assert_same(arrays, tiny_cifar10_archive.expected)
    assert isinstance(arrays.train_images, np.memmap) and arrays.train_images.shape == (200, 32, 32, 3)
    assert arrays.num_classes == 10 and np.bincount(arrays.train_labels).tolist() == [20] * 10


def test_channel_order_is_red_green_blue_in_hwc(cifar10_data_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    arrays = read_cache(cifar10_data_root / "cifar10", "cifar10")
    rows = tiny_cifar10_archive.train_rows
    for channel in range(3):  # the official row holds the red plane, then green, then blue
        planes = rows[:, channel * 1024:(channel + 1) * 1024].reshape(-1, 32, 32)
        np.testing.assert_array_equal(arrays.train_images[..., channel], planes)


def test_cifar100_cache_has_coarse_labels_and_superclass_names(cifar100_data_root: Path, tiny_cifar100_archive: TinyArchive) -> None:
    arrays = read_cache(cifar100_data_root / "cifar100", "cifar100")
    _assert_same(arrays, tiny_cifar100_archive.expected)
    assert arrays.superclass_names is not None and len(arrays.superclass_names) == 20
    assert arrays.train_coarse_labels is not None and arrays.train_coarse_labels.dtype == np.int64


def test_manifest_records_source_md5_counts_and_checksums(cifar10_data_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    folder = cifar10_data_root / "cifar10"
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 1 and manifest["dataset"] == "cifar10"
    assert manifest["source"] == str(tiny_cifar10_archive.path.resolve())
    assert manifest["archive_md5"] == tiny_cifar10_archive.md5
    assert manifest["counts"] == {"train": 200, "test": 100}
    assert set(manifest["files"]) == {"train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"}
    entry = manifest["files"]["train_images.npy"]
    assert entry["shape"] == [200, 32, 32, 3] and entry["dtype"] == "uint8"
    assert entry["sha256"] == file_sha256(folder / "train_images.npy")
    assert not list(folder.glob(".*.tmp"))


def test_rerun_is_already_present_and_load_is_fast(fresh_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    cfg = _config(fresh_root, tiny_cifar10_archive)
    assert prepare_dataset(cfg).action == ALREADY_PRESENT
    started = time.perf_counter()
    arrays = load_dataset(cfg)
    assert time.perf_counter() - started < 1.0
    _assert_same(arrays, tiny_cifar10_archive.expected)


def test_tampered_cache_file_fails_the_full_check_and_is_rebuilt(fresh_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    images = fresh_root / "cifar10" / "train_images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # same size: only the checksum notices
    images.write_bytes(bytes(data))
    read_cache(fresh_root / "cifar10", "cifar10")  # the cheap check passes
    with pytest.raises(CacheError, match="sha256"):
        read_cache(fresh_root / "cifar10", "cifar10", verify_checksums=True)
    result = prepare_dataset(_config(fresh_root, tiny_cifar10_archive))
    assert result.action == REBUILT
    _assert_same(read_cache(fresh_root / "cifar10", "cifar10", verify_checksums=True), tiny_cifar10_archive.expected)


@pytest.mark.parametrize("damage", ["truncate", "drop_manifest", "old_format", "garbage_manifest"])
def test_load_rebuilds_a_cache_failing_its_cheap_check(fresh_root: Path, tiny_cifar10_archive: TinyArchive, damage: str) -> None:
    folder = fresh_root / "cifar10"
    manifest_path = folder / MANIFEST_NAME
    if damage == "truncate":
        path = folder / "test_labels.npy"
        path.write_bytes(path.read_bytes()[:-8])
    elif damage == "drop_manifest":
        manifest_path.unlink()
    elif damage == "old_format":
        manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "format_version": 0}))
    else:
        manifest_path.write_text("{not json")
    with pytest.raises(CacheError):
        read_cache(folder, "cifar10")
    _assert_same(load_dataset(_config(fresh_root, tiny_cifar10_archive)), tiny_cifar10_archive.expected)
    read_cache(folder, "cifar10", verify_checksums=True)


def test_missing_cache_is_prepared_by_load(tmp_path: Path, tiny_cifar100_archive: TinyArchive) -> None:
    arrays = load_dataset(_config(tmp_path, tiny_cifar100_archive))
    _assert_same(arrays, tiny_cifar100_archive.expected)
    assert (tmp_path / "cifar-100-python.tar.gz").is_file()


def test_cache_from_the_archive_on_disk_and_force(fresh_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    shutil.rmtree(fresh_root / "cifar10")
    cfg = _config(fresh_root, tiny_cifar10_archive)
    assert prepare_dataset(cfg).action == CONVERTED  # no second copy of the archive
    assert prepare_dataset(cfg, force=True).action == COPIED


def test_a_different_requested_md5_is_not_served_from_the_old_cache(fresh_root: Path, tiny_cifar10_archive: TinyArchive) -> None:
    cfg = _config(fresh_root, tiny_cifar10_archive, md5="0" * 32)
    with pytest.raises(DataError, match="expected 00000000"):
        load_dataset(cfg)
    read_cache(fresh_root / "cifar10", "cifar10", verify_checksums=True)  # the old cache is left intact


def test_default_config_uses_whatever_cache_was_prepared(cifar10_data_root: Path, tiny_cifar10_archive: TinyArchive, monkeypatch) -> None:
    monkeypatch.setattr(prepare_module, "fetch_archive", lambda *a, **k: pytest.fail("must not download"))
    arrays = load_dataset(DataConfig(root=cifar10_data_root))
    assert len(arrays.train_images) == 200


def test_write_cache_refuses_inconsistent_arrays(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> None:
    good = tiny_cifar10_archive.expected
    bad = CifarArrays(**{**good.__dict__, "train_labels": good.train_labels[:-1]})
    with pytest.raises(DataError, match="train_labels"):
        write_cache(tmp_path / "cifar10", bad, source="x", archive_md5="y")
    assert not (tmp_path / "cifar10" / MANIFEST_NAME).exists()
