"""`data.dataset: folder`: what a folder of class folders converts into, and every way it refuses one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifarcli.config import DataConfig
from cifarcli.data.custom import custom_cache_folder
from cifarcli.data.prepare import ALREADY_PRESENT, CONVERTED_OWN, load_dataset, prepare_dataset
from cifarcli.data.stats import compute_channel_stats
from cifarcli.errors import DataError
from custom_data import (
    CLASS_NAMES, CORRUPT_FILE, GREY_LEVEL, NOT_AN_IMAGE, FolderExpectation, build_flat_folder, build_image_folder,
    write_bomb_png,
)

SIDE = 16


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> FolderExpectation:
    """The generated folder (read-only: tests that change it copy it first)."""
    return build_image_folder(tmp_path_factory.mktemp("images") / "pets")


@pytest.fixture(scope="module")
def prepared(image_folder: FolderExpectation, tmp_path_factory: pytest.TempPathFactory):
    cfg = DataConfig(dataset="folder", path=image_folder.root, image_size=SIDE, root=tmp_path_factory.mktemp("data-root"))
    return cfg, prepare_dataset(cfg)


def _copy(folder: FolderExpectation, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder.root, tmp_path / "pets"))


def _config(path: Path, tmp_path: Path, **changes) -> DataConfig:
    return DataConfig(**{"dataset": "folder", "path": path, "image_size": SIDE, "root": tmp_path / "data", **changes})


def test_class_names_and_counts_come_from_the_folders(prepared, image_folder: FolderExpectation) -> None:
    cfg, result = prepared
    assert result.action == CONVERTED_OWN and result.dataset == "folder"
    assert list(result.class_names) == CLASS_NAMES
    assert list(result.train_class_counts) == image_folder.train_counts
    assert list(result.test_class_counts) == image_folder.test_counts
    arrays = load_dataset(cfg)
    assert arrays.train_images.shape == (sum(image_folder.train_counts), SIDE, SIDE, 3)
    assert arrays.test_images.shape == (6, SIDE, SIDE, 3) and arrays.train_images.dtype == np.uint8
    assert np.bincount(arrays.train_labels).tolist() == image_folder.train_counts


def test_the_corrupt_file_is_listed_and_the_text_file_ignored(prepared) -> None:
    cfg, result = prepared
    assert [entry.path for entry in result.skipped] == [CORRUPT_FILE]
    assert "cannot identify image file" in result.skipped[0].reason
    assert [(entry.path, entry.reason) for entry in result.ignored] == [(NOT_AN_IMAGE, "not an image file (.txt)")]
    manifest = json.loads((result.cache_dir / "manifest.json").read_text())
    assert [entry["path"] for entry in manifest["skipped"]] == [CORRUPT_FILE]


def test_greyscale_and_rgba_become_rgb(prepared, image_folder: FolderExpectation) -> None:
    arrays = load_dataset(prepared[0])
    assert (arrays.train_images[image_folder.grey_index] == GREY_LEVEL).all()  # grey copied into R, G and B
    rgba = arrays.train_images[image_folder.rgba_index].astype(int)  # half-transparent red over white
    assert np.abs(rgba - np.array([255, 127, 127])).max() <= 1


def test_the_manifest_records_the_training_images_channel_statistics(prepared) -> None:
    cfg, result = prepared
    arrays = load_dataset(cfg)
    manifest = json.loads((result.cache_dir / "manifest.json").read_text())
    pixels = np.asarray(arrays.train_images, dtype=np.float64).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(manifest["mean"], pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(manifest["std"], pixels.std(axis=0), atol=1e-6)
    assert (arrays.mean, arrays.std) == compute_channel_stats(arrays.train_images)
    assert manifest["image_size"] == SIDE and manifest["source"] == os.path.realpath(cfg.path)


def test_a_second_prepare_reuses_the_cache_and_a_changed_folder_is_converted_again(image_folder, tmp_path: Path) -> None:
    root = _copy(image_folder, tmp_path)
    cfg = _config(root, tmp_path)
    assert prepare_dataset(cfg).action == CONVERTED_OWN
    assert prepare_dataset(cfg).action == ALREADY_PRESENT
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "train" / "cat" / "new.png")
    assert load_dataset(cfg).train_images.shape[0] == sum(image_folder.train_counts) + 1
    shutil.rmtree(root)  # the source gone: its cache still serves (a trained run can be scored)
    assert load_dataset(cfg).train_images.shape[0] == sum(image_folder.train_counts) + 1


def test_another_image_size_gets_its_own_cache(image_folder: FolderExpectation, tmp_path: Path) -> None:
    small, large = _config(image_folder.root, tmp_path, image_size=8), _config(image_folder.root, tmp_path, image_size=24)
    assert custom_cache_folder(small) != custom_cache_folder(large)
    assert load_dataset(large).train_images.shape[1:] == (24, 24, 3)


def test_a_symlink_leaving_the_folder_is_not_followed(image_folder: FolderExpectation, tmp_path: Path) -> None:
    root = _copy(image_folder, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(outside / "secret.png")
    (root / "train" / "cat" / "link.png").symlink_to(outside / "secret.png")
    (root / "train" / "cat" / "linked-folder").symlink_to(outside, target_is_directory=True)
    (root / "train" / "dog" / "inside.png").symlink_to(root / "train" / "owl" / "p0.png")  # inside: followed
    result = prepare_dataset(_config(root, tmp_path))
    assert list(result.train_class_counts) == [7, 9, 8]
    refused = {entry.path: entry.reason for entry in result.ignored}
    assert refused["train/cat/link.png"] == refused["train/cat/linked-folder"] == "a symbolic link to outside data.path, not followed"


def test_a_decompression_bomb_is_refused(image_folder: FolderExpectation, tmp_path: Path) -> None:
    root = _copy(image_folder, tmp_path)
    bomb = write_bomb_png(root / "train" / "owl" / "huge.png")
    assert bomb.stat().st_size < 2000
    cfg = _config(root, tmp_path)
    with pytest.raises(DataError, match=r"refusing .*huge\.png: more pixels than the decompression-bomb limit"):
        prepare_dataset(cfg)
    assert not (custom_cache_folder(cfg) / "manifest.json").exists()


def test_a_class_folder_without_images_is_an_error_naming_it(image_folder: FolderExpectation, tmp_path: Path) -> None:
    root = _copy(image_folder, tmp_path)
    (root / "train" / "bird").mkdir()
    (root / "test" / "bird").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test" / "bird" / "0.png")
    with pytest.raises(DataError, match=r"train: no images of class 'bird'"):
        prepare_dataset(_config(root, tmp_path))


def test_test_and_train_must_hold_the_same_classes(image_folder: FolderExpectation, tmp_path: Path) -> None:
    root = _copy(image_folder, tmp_path)
    shutil.rmtree(root / "test" / "owl")
    with pytest.raises(DataError, match=r"test lacks the class folder\(s\) 'owl'"):
        prepare_dataset(_config(root, tmp_path))


def test_without_test_fraction_the_folder_needs_train_and_test(tmp_path: Path) -> None:
    flat = build_flat_folder(tmp_path / "flat")
    with pytest.raises(DataError, match=r"has no train/ folder") as info:
        prepare_dataset(_config(flat, tmp_path))
    assert "data.test_fraction" in info.value.hint


def test_one_folder_with_a_test_fraction_is_split_per_class(tmp_path: Path) -> None:
    flat = build_flat_folder(tmp_path / "flat", per_class=8)
    result = prepare_dataset(_config(flat, tmp_path, test_fraction=0.25))
    assert list(result.class_names) == CLASS_NAMES
    assert (list(result.train_class_counts), list(result.test_class_counts)) == ([6, 6, 6], [2, 2, 2])


def test_split_folders_are_not_taken_for_classes(image_folder: FolderExpectation, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds train/ and test/ folders, not class folders"):
        prepare_dataset(_config(image_folder.root, tmp_path, test_fraction=0.2))


def test_a_missing_folder_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path: .*nowhere does not exist"):
        prepare_dataset(_config(tmp_path / "nowhere", tmp_path))
