"""`data.dataset: npz`: images and labels from NumPy `.npz` files, never unpickling anything.

Each file holds `x` (N x H x W x 3 uint8 images), `y` (N integer labels from 0) and, optionally,
`class_names` (one string per class). The training file is `data.path`; the test split is
`data.test_path` (a second file of the same form) or `data.test_fraction` of each class.
Images of another size than `data.image_size` are resized and centre-cropped like a folder's.
Arrays are read with `allow_pickle=False`: an object array is refused, not loaded.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cifarcli.data.imported import ImportedData, fit_arrays, require_every_class, split_off_test
from cifarcli.errors import DataError

IMAGES_KEY, LABELS_KEY, NAMES_KEY = "x", "y", "class_names"
MAX_ARRAY_BYTES = 32 * 2**30  # an array's declared size past this is refused before anything is allocated
SAVE_HINT = "save it with np.savez(path, x=images, y=labels, class_names=names): x uint8 (N, H, W, 3), y integers (N,)"


def npz_fingerprint(*paths: Path | None) -> str:
    """sha256 over each file's resolved path, size and modification time."""
    parts = []
    for path in paths:
        if path is not None:
            info = Path(path).stat()
            parts.append(f"{os.path.realpath(path)}\t{info.st_size}\t{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def read_npz_dataset(path: Path, test_path: Path | None, test_fraction: float | None, split_seed: int,
                     image_size: int) -> ImportedData:
    """The training (and test) arrays of the .npz file(s), fitted to `image_size`, with class names."""
    train_x, train_y, names = read_npz(path, "data.path")
    test = read_npz(test_path, "data.test_path") if test_path is not None else None
    if test is not None and names is not None and test[2] is not None and test[2] != names:
        raise DataError(f"data.test_path: {test_path} names other classes than {path}",
                        hint="store the same class_names in both files, or in the training file only")
    all_labels = [train_y] + ([test[1]] if test is not None else [])
    highest = max(int(labels.max()) for labels in all_labels if len(labels)) if any(len(y) for y in all_labels) else -1
    class_names = names or [str(label) for label in range(highest + 1)]
    if highest >= len(class_names):
        raise DataError(f"data.path: a label is {highest}, but there are {len(class_names)} class names",
                        hint="labels count from 0 and index class_names")
    if len(class_names) < 2:
        raise DataError(f"data.path: {path} holds {len(class_names)} class(es); a classifier needs at least two")
    require_every_class(train_y, class_names, f"data.path: {path}", "every class needs training images; check y")
    if test is None:
        assert test_fraction is not None  # the schema asks for exactly one of the two
        train_x, train_y, test_x, test_y = split_off_test(train_x, train_y, class_names, test_fraction, split_seed,
                                                          f"data.path: {path}")
        test_split = f"{test_fraction:g} of each class, drawn with data.split_seed={split_seed}"
    else:
        test_x, test_y = test[0], test[1]
        test_split = f"the file {test_path}"
    return ImportedData(fit_arrays(train_x, image_size), train_y, fit_arrays(test_x, image_size), test_y,
                        class_names, (), (), test_split)


def read_npz(path: Path, field: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(x, y, class_names or None) of one .npz file, each checked for dtype and shape before it is read."""
    if not Path(path).is_file():
        raise DataError(f"{field}: {path} is not a file", hint=SAVE_HINT)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{field}: cannot read {path} as .npz ({exc})", hint=SAVE_HINT) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{field}: {path} holds one array, not the arrays of an .npz", hint=SAVE_HINT)
    with archive:
        missing = [key for key in (IMAGES_KEY, LABELS_KEY) if key not in archive.files]
        if missing:
            raise DataError(f"{field}: {path} has no array {missing[0]!r} (it holds {', '.join(archive.files) or 'nothing'})",
                            hint=SAVE_HINT)
        images = _array(archive, IMAGES_KEY, path, field)
        labels = _array(archive, LABELS_KEY, path, field)
        names = _array(archive, NAMES_KEY, path, field) if NAMES_KEY in archive.files else None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or min(images.shape[1:3], default=0) < 1:
        raise DataError(f"{field}: {path}: x is {images.dtype} {images.shape}, expected uint8 (N, H, W, 3)", hint=SAVE_HINT)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise DataError(f"{field}: {path}: y is {labels.dtype} {labels.shape}, expected {len(images)} integer labels (N,)",
                        hint=SAVE_HINT)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{field}: {path}: y holds the negative label {int(labels.min())}; labels count from 0")
    return images, labels.astype(np.int64), _names(names, path, field)


def _names(names: np.ndarray | None, path: Path, field: str) -> list[str] | None:
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise DataError(f"{field}: {path}: class_names is {names.dtype} {names.shape}, expected a list of strings",
                        hint="e.g. class_names=np.array(['cat', 'dog'])")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]


def _array(archive: Any, key: str, path: Path, field: str) -> np.ndarray:
    """One member, refused by its header when it is an object array or too large, and read without pickle."""
    member = f"{key}.npy"
    try:
        declared = archive.zip.getinfo(member).file_size
        if declared > MAX_ARRAY_BYTES:
            raise DataError(f"{field}: {path}: {key} would take {declared:,} bytes, over the limit of {MAX_ARRAY_BYTES:,}")
        dtype = _header_dtype(archive.zip, member)
        if dtype is not None and dtype.hasobject:
            raise DataError(f"{field}: {path}: {key} is an object array, refused: loading it would unpickle Python objects",
                            hint=SAVE_HINT)
        return archive[key]
    except DataError:
        raise
    except ValueError as exc:  # numpy's own refusal of an object array it could not see in the header
        raise DataError(f"{field}: {path}: {key} cannot be read without unpickling ({exc})", hint=SAVE_HINT) from exc
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, MemoryError) as exc:
        raise DataError(f"{field}: {path}: {key} is damaged or unreadable ({type(exc).__name__}: {exc})", hint=SAVE_HINT) from exc


def _header_dtype(zip_file: zipfile.ZipFile, member: str) -> np.dtype | None:
    """The dtype a .npy member declares, read from its header alone (None for a header version this does not parse)."""
    with zip_file.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)[2]
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream)[2]
    return None
