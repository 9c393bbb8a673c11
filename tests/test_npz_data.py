"""`data.dataset: npz`: arrays in, the same cache out; nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cifarcli.config import DataConfig
from cifarcli.data.prepare import CONVERTED_OWN, load_dataset, prepare_dataset
from cifarcli.errors import DataError
from custom_data import CLASS_NAMES, npz_arrays, write_npz_pair


def _config(tmp_path: Path, path: Path, **changes) -> DataConfig:
    return DataConfig(**{"dataset": "npz", "path": path, "root": tmp_path / "data", "image_size": 20, **changes})


def test_two_files_keep_their_images_labels_and_names(tmp_path: Path) -> None:
    train, test = write_npz_pair(tmp_path / "arrays")
    result = prepare_dataset(_config(tmp_path, train, test_path=test))
    assert result.action == CONVERTED_OWN and list(result.class_names) == CLASS_NAMES
    assert (list(result.train_class_counts), list(result.test_class_counts)) == ([8, 8, 8], [3, 3, 3])
    arrays = load_dataset(_config(tmp_path, train, test_path=test))
    with np.load(train) as stored:
        np.testing.assert_array_equal(arrays.train_images, stored["x"])  # the right size already: stored as is
        np.testing.assert_array_equal(arrays.train_labels, stored["y"])
    manifest = json.loads((result.cache_dir / "manifest.json").read_text())
    assert manifest["dataset"] == "npz" and manifest["test_split"] == f"the file {test}"


def test_one_file_with_a_test_fraction_and_default_class_names(tmp_path: Path) -> None:
    x, y = npz_arrays(10, 24, seed=0)
    np.savez(tmp_path / "all.npz", x=x, y=y)
    result = prepare_dataset(_config(tmp_path, tmp_path / "all.npz", test_fraction=0.2, image_size=12))
    assert list(result.class_names) == ["0", "1", "2"]
    assert (list(result.train_class_counts), list(result.test_class_counts)) == ([8, 8, 8], [2, 2, 2])
    assert result.image_size == 12  # 24x24 images resized to data.image_size


def test_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"payload": 1}, None], dtype=object), y=np.arange(2))
    with pytest.raises(DataError, match=r"x is an object array, refused: loading it would unpickle"):
        prepare_dataset(_config(tmp_path, path, test_fraction=0.5))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((6, 8, 8, 3), np.float32), "y": np.arange(6) % 2}, r"x is float32 \(6, 8, 8, 3\), expected uint8"),
        ({"x": np.zeros((6, 8, 8, 3), np.uint8), "y": np.zeros(5, np.int64)}, r"y is int64 \(5,\), expected 6 integer labels"),
        ({"x": np.zeros((6, 8, 8, 3), np.uint8)}, r"has no array 'y' \(it holds x\)"),
        ({"x": np.zeros((6, 8, 8, 3), np.uint8), "y": np.array([0, 0, 0, 2, 2, 2])}, r"no images of class '1'"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.array([0, 1, 0, 1]), "class_names": np.array(["a"])},
         r"a label is 1, but there are 1 class names"),
    ],
)
def test_malformed_arrays_are_one_error_each(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        prepare_dataset(_config(tmp_path, path, test_fraction=0.5))


def test_a_file_that_is_not_an_npz_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"cannot read .*broken\.npz as \.npz"):
        prepare_dataset(_config(tmp_path, path, test_fraction=0.5))
