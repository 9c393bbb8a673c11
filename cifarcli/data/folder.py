"""`data.dataset: folder`: one sub-folder of images per class, read safely into S x S RGB arrays.

Layout: `data.path/train/<class>/...` and `data.path/test/<class>/...`, or, with
`data.test_fraction`, `data.path/<class>/...`. Every file inside a class folder (at any depth)
with an image suffix is decoded with PIL and fitted to `data.image_size` (`imported.fit_square`);
class names are the folder names, in sorted order. The folder is untrusted input:
- a symbolic link is followed only when its target lies inside `data.path`;
- hidden entries, FIFOs, devices and files without an image suffix are never opened (they are
  listed as ignored);
- an image with more pixels than PIL's decompression-bomb limit stops the conversion (an
  error, not PIL's warning);
- a file PIL cannot decode is listed and skipped.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cifarcli.data.imported import ImportedData, SkippedFile, fit_square, require_every_class, split_off_test
from cifarcli.errors import DataError

IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
SPLIT_FOLDERS = ("train", "test")
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit, used should PIL's be switched off
READ_WORKERS = min(8, os.cpu_count() or 1)  # PIL decodes outside the GIL, so threads overlap
PROGRESS_EVERY_IMAGES = 5000
LAYOUT_HINT = ("lay it out as train/<class>/*.png and test/<class>/*.png, "
               "or set data.test_fraction to split one folder of class folders")


@dataclass(frozen=True)
class ClassFolder:
    name: str                 # the folder's name: the class name
    files: tuple[Path, ...]   # its image files, sorted, at any depth


@dataclass(frozen=True)
class FolderScan:
    """What is in the folder, before any image is decoded."""

    root: Path                                       # data.path, resolved
    split_dirs: dict[str, Path]                      # "train" and "test", or "all" with data.test_fraction
    classes: dict[str, tuple[ClassFolder, ...]]      # per split, sorted by name
    ignored: tuple[SkippedFile, ...]
    fingerprint: str  # sha256 over every entry's path, size and mtime: changes when anything in the folder does


def display_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 become U+FFFD instead of unencodable surrogates."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Walker:
    """Walks the folder once, listing what it ignores and stamping what it takes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ignored: list[SkippedFile] = []
        self.stamps: list[str] = []
        self.seen_dirs = {os.path.realpath(root)}

    def relative(self, path: Path) -> str:
        return display_name(os.path.relpath(path, self.root))

    def ignore(self, path: Path, reason: str) -> None:
        self.ignored.append(SkippedFile(self.relative(path), reason))
        self.stamps.append(f"{self.relative(path)}\t{reason}")

    def follow(self, path: Path) -> Path | None:
        """`path`, or a symlink's target when it lies inside the root; None (and listed) otherwise."""
        if not path.is_symlink():
            return path
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(self.root):
            self.ignore(path, "a symbolic link to outside data.path, not followed")
            return None
        if not target.exists():
            self.ignore(path, "a broken symbolic link")
            return None
        return target

    def entries(self, folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as found:
                return sorted(found, key=lambda entry: entry.name)
        except OSError as exc:
            self.ignore(folder, f"an unreadable folder ({exc.strerror or exc})")
            return []

    def enter(self, path: Path) -> bool:
        """False (and listed) for a folder already walked: a link back into the tree."""
        real = os.path.realpath(path)
        if real in self.seen_dirs:
            self.ignore(path, "a link to a folder already read, not followed twice")
            return False
        self.seen_dirs.add(real)
        return True

    def visible(self, entry: os.DirEntry) -> tuple[Path, Path] | None:
        """(the entry's path, where it leads), or None (and listed) for a hidden entry or a link leaving the root."""
        path = Path(entry.path)
        if entry.name.startswith("."):
            self.ignore(path, "a hidden entry")
            return None
        target = self.follow(path)
        return (path, target) if target is not None else None

    def class_folders(self, split_dir: Path) -> tuple[ClassFolder, ...]:
        folders = []
        for entry in self.entries(split_dir):
            found = self.visible(entry)
            if found is None:
                continue
            path, target = found
            if not target.is_dir():
                self.ignore(path, "a file outside any class folder")
                continue
            if self.enter(path):
                folders.append(ClassFolder(display_name(entry.name), tuple(self.image_files(path))))
        return tuple(folders)

    def image_files(self, folder: Path) -> list[Path]:
        files: list[Path] = []
        for entry in self.entries(folder):
            found = self.visible(entry)
            if found is None:
                continue
            path, target = found
            try:
                info = target.stat()
            except OSError as exc:
                self.ignore(path, f"cannot be read ({exc.strerror or exc})")
                continue
            if stat.S_ISDIR(info.st_mode):
                if self.enter(path):
                    files += self.image_files(path)
            elif not stat.S_ISREG(info.st_mode):
                self.ignore(path, "not a regular file")
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                self.ignore(path, f"not an image file ({path.suffix or 'no suffix'})")
            else:
                self.stamps.append(f"{self.relative(path)}\t{info.st_size}\t{info.st_mtime_ns}")
                files.append(path)
        return files


def scan_image_folder(path: Path, split_folders: bool) -> FolderScan:
    """List the class folders and image files under `path` (with train/ and test/ when `split_folders`)."""
    if not Path(path).is_dir():
        raise DataError(f"data.path: {path} is not a folder", hint=LAYOUT_HINT)
    walker = _Walker(Path(os.path.realpath(path)))
    split_dirs: dict[str, Path] = {}
    for name in SPLIT_FOLDERS if split_folders else ():
        split_dir = walker.follow(walker.root / name)
        if split_dir is None or not split_dir.is_dir() or not walker.enter(split_dir):
            raise DataError(f"data.path: {path} has no {name}/ folder (or it leads outside data.path)", hint=LAYOUT_HINT)
        split_dirs[name] = walker.root / name
    if not split_folders:
        split_dirs["all"] = walker.root
    classes = {split: walker.class_folders(folder) for split, folder in split_dirs.items()}
    fingerprint = hashlib.sha256("\n".join(walker.stamps).encode("utf-8", "surrogateescape")).hexdigest()
    return FolderScan(walker.root, split_dirs, classes, tuple(walker.ignored), fingerprint)


def folder_fingerprint(path: Path, split_folders: bool) -> str:
    """The fingerprint of the folder as it is now (what the cache records it was built from)."""
    return scan_image_folder(path, split_folders).fingerprint


def read_image_folder(path: Path, image_size: int, test_fraction: float | None, split_seed: int,
                      say: Callable[[str], None]) -> tuple[ImportedData, str]:
    """Decode every image under `path` into the splits; returns the data and the folder's fingerprint."""
    scan = scan_image_folder(path, split_folders=test_fraction is None)
    class_names = _class_names(scan)
    index = {name: label for label, name in enumerate(class_names)}
    images, labels, skipped = {}, {}, []
    for split, folders in scan.classes.items():
        files = [(file, index[folder.name]) for folder in folders for file in folder.files]
        say(f"reading {len(files):,} image files of {len(folders)} classes from {scan.split_dirs[split]}")
        images[split], labels[split], problems = read_images(files, image_size, scan.root, say)
        skipped += problems
        require_every_class(labels[split], class_names, f"data.path: {scan.split_dirs[split]}",
                            "put readable images (png, jpeg, webp, bmp, ...) into every class folder, or remove the empty ones")
    if test_fraction is None:
        train_x, train_y, test_x, test_y = images["train"], labels["train"], images["test"], labels["test"]
        test_split = f"the folder {scan.split_dirs['test']}"
    else:
        train_x, train_y, test_x, test_y = split_off_test(images["all"], labels["all"], class_names, test_fraction,
                                                          split_seed, f"data.path: {path}")
        test_split = f"{test_fraction:g} of each class, drawn with data.split_seed={split_seed}"
    data = ImportedData(train_x, train_y, test_x, test_y, class_names, tuple(skipped), scan.ignored, test_split)
    return data, scan.fingerprint


def _class_names(scan: FolderScan) -> list[str]:
    first_split, *other_splits = scan.classes
    names = [folder.name for folder in scan.classes[first_split]]
    where = scan.split_dirs[first_split]
    if sorted(names) == sorted(SPLIT_FOLDERS):
        raise DataError(f"data.path: {where} holds train/ and test/ folders, not class folders",
                        hint="set data.test_fraction to null to use them as the splits")
    if len(names) < 2:
        raise DataError(f"data.path: {where} holds {len(names)} class folder(s); a classifier needs at least two", hint=LAYOUT_HINT)
    for split in other_splits:
        found = [folder.name for folder in scan.classes[split]]
        missing, extra = sorted(set(names) - set(found)), sorted(set(found) - set(names))
        if missing or extra:
            problem = f"lacks the class folder(s) {', '.join(map(repr, missing))}" if missing \
                else f"has class folder(s) {', '.join(map(repr, extra))} that {first_split}/ lacks"
            raise DataError(f"data.path: {scan.split_dirs[split]} {problem}",
                            hint=f"{split}/ and {first_split}/ must hold one folder for each class, with the same names")
    return names


def read_images(files: list[tuple[Path, int]], image_size: int, root: Path,
                say: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, list[SkippedFile]]:
    """(images N x S x S x 3 uint8, labels, skipped) for (file, label) pairs; unreadable files are skipped and listed."""
    from PIL import Image

    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.int64)
    skipped: list[SkippedFile] = []
    kept = 0
    pool = ThreadPoolExecutor(max_workers=READ_WORKERS)
    try:
        with warnings.catch_warnings():  # the filters are process-wide, so the workers raise it too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            decoded = pool.map(lambda item: _decode(item[0], image_size), files)
            for done, ((file, label), (pixels, problem)) in enumerate(zip(files, decoded), start=1):
                if pixels is None:
                    skipped.append(SkippedFile(display_name(os.path.relpath(file, root)), problem))
                else:
                    images[kept], labels[kept] = pixels, label
                    kept += 1
                if done % PROGRESS_EVERY_IMAGES == 0:
                    say(f"  {done:,} of {len(files):,} images read")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return images[:kept], labels[:kept], skipped


def _decode(path: Path, image_size: int) -> tuple[np.ndarray | None, str]:
    """(pixels, "") or (None, why it cannot be read); DataError for a decompression bomb."""
    try:
        return load_image(path, image_size), ""
    except DataError:
        raise
    except Exception as exc:  # PIL's plugins raise many kinds for a damaged file; each is one skipped file
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_image(path: Path, image_size: int) -> np.ndarray:
    """One image file as image_size x image_size x 3 uint8 RGB; DataError when it has bomb-sized dimensions."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            limit = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
            if width * height > limit:
                raise Image.DecompressionBombError(f"{width}x{height} = {width * height:,} pixels")
            image.draft(None, (image_size, image_size))  # JPEG: decode at the smallest scale still >= the size
            return fit_square(image, image_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        limit = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
        raise DataError(f"data.path: refusing {path}: more pixels than the decompression-bomb limit of {limit:,} ({exc})",
                        hint="shrink that image or remove it from the folder") from exc
