"""Tiny data sets of your own, made by the tests: an image folder, .npz files, a PNG that is a decompression bomb.

Imported by the test modules that need them (like run_fixtures); nothing here is a test.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ["cat", "dog", "owl"]
CLASS_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}
GREY_LEVEL = 100                 # the greyscale image in dog/ is this grey everywhere
RGBA_PIXEL = (255, 0, 0, 128)    # the RGBA image in owl/: half-transparent red, over white -> (255, 127, 127)
CORRUPT_FILE = "train/cat/broken.png"
NOT_AN_IMAGE = "train/cat/notes.txt"


@dataclass(frozen=True)
class FolderExpectation:
    root: Path
    train_counts: list[int]   # per class of CLASS_NAMES, readable images only
    test_counts: list[int]
    grey_index: int           # where the greyscale image lands in the training arrays (sorted by class, then path)
    rgba_index: int


def _noisy(colour: tuple[int, int, int], height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour) + rng.integers(-25, 26, size=(height, width, 3)), 0, 255).astype(np.uint8)


def build_image_folder(root: Path) -> FolderExpectation:
    """train/ and test/ with 3 classes: PNGs 40x30 and JPEGs 24x36, one greyscale, one RGBA, one corrupt file, one text file."""
    seed = 0
    for split, (pngs, jpegs) in (("train", (4, 3)), ("test", (1, 1))):
        for name in CLASS_NAMES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(pngs):
                seed += 1
                Image.fromarray(_noisy(CLASS_COLOURS[name], 30, 40, seed)).save(folder / f"p{i}.png")
            for i in range(jpegs):
                seed += 1
                Image.fromarray(_noisy(CLASS_COLOURS[name], 36, 24, seed)).save(folder / f"j{i}.jpg", quality=95)
    Image.new("L", (30, 30), GREY_LEVEL).save(root / "train" / "dog" / "0_grey.png")
    Image.new("RGBA", (32, 20), RGBA_PIXEL).save(root / "train" / "owl" / "0_rgba.png")
    (root / CORRUPT_FILE).write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / NOT_AN_IMAGE).write_text("notes about the cats\n")
    return FolderExpectation(root, train_counts=[7, 8, 8], test_counts=[2, 2, 2], grey_index=7, rgba_index=15)


def build_flat_folder(root: Path, per_class: int = 8) -> Path:
    """One folder of class folders (no train/ and test/), PNGs only: for data.test_fraction."""
    for label, name in enumerate(CLASS_NAMES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_noisy(CLASS_COLOURS[name], 20, 20, 100 * label + i)).save(root / name / f"{i:02d}.png")
    return root


def npz_arrays(per_class: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): `per_class` images per class of CLASS_NAMES, side x side, classes in blocks."""
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class).astype(np.int64)
    images = np.stack([_noisy(CLASS_COLOURS[CLASS_NAMES[y]], side, side, seed + i) for i, y in enumerate(labels)])
    return images, labels


def write_npz_pair(folder: Path, side: int = 20) -> tuple[Path, Path]:
    """train.npz (8 images per class, with class_names) and test.npz (3 per class, without)."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = npz_arrays(8, side, seed=0)
    test_x, test_y = npz_arrays(3, side, seed=1000)
    np.savez(folder / "train.npz", x=train_x, y=train_y, class_names=np.array(CLASS_NAMES))
    np.savez(folder / "test.npz", x=test_x, y=test_y)
    return folder / "train.npz", folder / "test.npz"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, side: int = 10_000) -> Path:
    """A few-hundred-byte PNG whose header claims side x side pixels (10,000 x 10,000 = 100 M > PIL's limit)."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    pixels = zlib.compress(row * 16)  # far fewer rows than claimed: decoding would fail, but opening it must already refuse it
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b""))
    return path
