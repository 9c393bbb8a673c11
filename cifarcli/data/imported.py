"""What a reader of your own data (an image folder, an .npz file) hands over, and the shared steps.

Every image becomes size x size RGB uint8 the same way (`fit_square`), a data set without a
test split of its own gets one stratified by class (`split_off_test`), and a class without
images is an error naming it (`require_every_class`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cifarcli.data.split import stratified_split
from cifarcli.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not used, and why (listed in the manifest and printed, never dropped silently)."""

    path: str    # relative to data.path for a folder, the file itself for an .npz
    reason: str


@dataclass(frozen=True)
class ImportedData:
    """Your own data set, converted: images N x S x S x 3 uint8, int64 labels indexing `class_names`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    skipped: tuple[SkippedFile, ...]  # image files that could not be read
    ignored: tuple[SkippedFile, ...]  # entries that are not images: other suffixes, links leaving the folder, ...
    test_split: str                   # where the test split came from, for the manifest and the summary


def fit_square(image: "Image.Image", size: int) -> np.ndarray:
    """`image` as size x size x 3 uint8 RGB: turned upright (EXIF), alpha composited on white,
    resized so its shorter side is `size` (antialiased) and centre-cropped."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    fitted = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(fitted, dtype=np.uint8)


def fit_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """N x H x W x 3 uint8 `images` as N x size x size x 3 through `fit_square` (unchanged when already that size)."""
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        out[index] = fit_square(Image.fromarray(np.ascontiguousarray(image)), size)
    return out


def require_every_class(labels: np.ndarray, class_names: Sequence[str], where: str, fix: str) -> None:
    """DataError naming the classes of `class_names` that `labels` never uses."""
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        shown = ", ".join(repr(name) for name in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise DataError(f"{where}: no images of class {shown}", hint=fix)


def split_off_test(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], fraction: float,
                   seed: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): `fraction` of each class, drawn with `seed`, is the test split."""
    train_index, test_index = stratified_split(labels, fraction, seed)
    require_every_class(labels[train_index], class_names, f"{where} after holding out data.test_fraction={fraction}",
                        "add images of that class, or lower data.test_fraction")
    return images[train_index], labels[train_index], images[test_index], labels[test_index]
