"""The converted data set on disk: `.npy` arrays plus a `manifest.json`, loaded memory-mapped.

Layout of the cache folder (`<root>/<dataset>/` for CIFAR, `<root>/<folder|npz>-<name>-<key>/`
for your own data): train_images.npy (N, S, S, 3) uint8 HWC (S = 32 for CIFAR, data.image_size
otherwise), train_labels.npy (N,) int64 fine labels, the same for test,
train/test_coarse_labels.npy for CIFAR-100, and manifest.json (format version, source, archive
md5, counts, class names, image size, the per-channel mean and std of the training images, and
per file its shape, dtype, size and sha256). The manifest is written last and removed first, so
a cache that was being rewritten when a process died is never taken as complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cifarcli.config import CIFAR_DATASET_NAMES, CIFAR_IMAGE_SIZE
from cifarcli.data.stats import ChannelStats, compute_channel_stats, dataset_stats
from cifarcli.errors import DataError
from cifarcli.fileio import file_digest, write_atomic, write_atomic_with, writing

FORMAT_VERSION = 1  # image_size, mean and std were added later; a CIFAR manifest without them reads as 32x32 with the table's stats
MANIFEST_NAME = "manifest.json"
CHANNELS = 3  # every cached image is RGB
MAX_CLASS_NAME_CHARS = 200  # the official names have at most 20


@dataclass(frozen=True)
class CifarArrays:
    """One data set in memory or memory-mapped from the cache."""

    dataset: str                 # "cifar10" | "cifar100" | "folder" | "npz"
    train_images: np.ndarray     # (N, S, S, 3) uint8, memory-mapped
    train_labels: np.ndarray     # (N,) int64, fine labels
    test_images: np.ndarray
    test_labels: np.ndarray
    train_coarse_labels: np.ndarray | None   # CIFAR-100 only
    test_coarse_labels: np.ndarray | None
    class_names: list[str]
    superclass_names: list[str] | None       # CIFAR-100 only
    mean: ChannelStats | None = None         # per RGB channel of the training images, [0, 1] units;
    std: ChannelStats | None = None          # None until written: write_cache computes them

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """Pixels per side of every image."""
        return int(self.train_images.shape[1])


class CacheError(DataError):
    """The cache is missing, incomplete, or fails its check; `prepare_dataset` rebuilds it."""


def cache_folder(root: Path, dataset: str) -> Path:
    """Where the cache of `dataset` lives under the data root."""
    return Path(root) / dataset


def _array_fields(dataset: str) -> tuple[str, ...]:
    fields = ("train_images", "train_labels", "test_images", "test_labels")
    return fields + (("train_coarse_labels", "test_coarse_labels") if dataset == "cifar100" else ())


def check_arrays(arrays: CifarArrays) -> str | None:
    """What is wrong with `arrays` (shapes, dtypes, label ranges, names), or None if nothing."""
    coarse = arrays.train_coarse_labels is not None
    if coarse != (arrays.dataset == "cifar100") or coarse != (arrays.test_coarse_labels is not None) \
            or coarse != (arrays.superclass_names is not None):
        return "coarse labels and superclass names must be present for cifar100 only"
    side = arrays.train_images.shape[1] if arrays.train_images.ndim == 4 else 0
    if arrays.dataset in CIFAR_DATASET_NAMES and side != CIFAR_IMAGE_SIZE:
        return f"{arrays.dataset} images are {CIFAR_IMAGE_SIZE}x{CIFAR_IMAGE_SIZE}, not {side}x{side}"
    for split in ("train", "test"):
        images = getattr(arrays, f"{split}_images")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (side, side, CHANNELS) or side < 1:
            return f"{split}_images is {images.dtype} {images.shape}, expected uint8 (N, S, S, 3) with one side S for both splits"
        for kind, names in (("labels", arrays.class_names), ("coarse_labels", arrays.superclass_names)):
            labels = getattr(arrays, f"{split}_{kind}")
            if labels is None or names is None:
                continue
            if labels.dtype != np.int64 or labels.shape != (len(images),):
                return f"{split}_{kind} is {labels.dtype} {labels.shape}, expected int64 ({len(images)},)"
            if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
                return f"{split}_{kind} holds values outside 0..{len(names) - 1}"
    for kind, names in (("class_names", arrays.class_names), ("superclass_names", arrays.superclass_names or [])):
        problem = _names_problem(names)
        if problem is not None:
            return f"{kind}: {problem}"
    return None


def _names_problem(names: object) -> str | None:
    """Why `names` cannot serve as class names (shown in tables, figures, CSV and HTML), or None."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "must be a list of strings"
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS:
            return f"a name is {len(name)} characters long, above the limit of {MAX_CLASS_NAME_CHARS}"
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return f"the name {name!r} is not valid Unicode"
    return None


def write_cache(folder: Path, arrays: CifarArrays, *, source: str, archive_md5: str | None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `arrays` and their manifest into `folder` (replacing any cache there); return the manifest.

    The manifest records `arrays.mean`/`std`, computed from the training images when None;
    `extra` adds keys of its own (what a data set of your own was converted from).
    """
    problem = check_arrays(arrays)
    if problem is not None:
        raise DataError(f"refusing to write the {arrays.dataset} cache: {problem}")
    mean, std = (arrays.mean, arrays.std) if arrays.mean is not None and arrays.std is not None \
        else compute_channel_stats(arrays.train_images)
    folder = Path(folder)
    with writing(folder, remedy="set data.root to another folder"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST_NAME).unlink(missing_ok=True)
        files = {}
        for field in _array_fields(arrays.dataset):
            path = folder / f"{field}.npy"
            array = getattr(arrays, field)
            write_atomic_with(path, lambda handle, array=array: np.save(handle, array, allow_pickle=False))
            files[path.name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": arrays.dataset,
            "source": source,
            "archive_md5": archive_md5,
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "counts": {"train": len(arrays.train_images), "test": len(arrays.test_images)},
            "class_names": list(arrays.class_names),
            "superclass_names": list(arrays.superclass_names) if arrays.superclass_names is not None else None,
            "image_size": arrays.image_size,
            "mean": list(mean),
            "std": list(std),
            **(extra or {}),
            "files": files,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        write_atomic(folder / MANIFEST_NAME, text.encode("utf-8"))
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The parsed manifest of the cache in `folder`; CacheError if missing, unreadable or of another format."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise CacheError(f"no cache at {folder} (missing {MANIFEST_NAME})", hint="run `cifar download`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"unreadable cache manifest {path}: {exc}", hint="run `cifar download --force`") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{path}: cache format {manifest.get('format_version') if isinstance(manifest, dict) else '?'}"
                         f" is not the current format {FORMAT_VERSION}", hint="run `cifar download` to rebuild it")
    return manifest


def read_cache(folder: Path, dataset: str, *, verify_checksums: bool = False) -> CifarArrays:
    """Memory-map the cache of `dataset` in `folder` after checking it against its manifest.

    The cheap check (always) compares each file's size, shape and dtype and the label ranges;
    `verify_checksums` also compares every file's sha256. Raises CacheError when anything is off.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        if manifest["dataset"] != dataset:
            raise CacheError(f"{folder} holds {manifest['dataset']!r}, not {dataset!r}")
        loaded = {field: _load_array(folder, field, manifest["files"], verify_checksums)
                  for field in _array_fields(dataset)}
        mean, std = _channel_stats(manifest, dataset)
        arrays = CifarArrays(
            dataset=dataset, **{f: loaded.get(f) for f in _array_fields("cifar100")},
            class_names=manifest["class_names"], superclass_names=manifest["superclass_names"],
            mean=mean, std=std,
        )
        counts = (len(arrays.train_images), len(arrays.test_images))
        if counts != (manifest["counts"]["train"], manifest["counts"]["test"]):
            raise CacheError(f"{folder}: image counts {counts} differ from the manifest's {manifest['counts']}")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CacheError(f"{folder / MANIFEST_NAME} is incomplete ({type(exc).__name__}: {exc})") from exc
    problem = check_arrays(arrays)
    if problem is not None:
        raise CacheError(f"cache {folder} fails its check: {problem}")
    return arrays


def _channel_stats(manifest: dict[str, Any], dataset: str) -> tuple[ChannelStats, ChannelStats]:
    """The manifest's mean and std (three positive floats each); CIFAR caches written before they were recorded use the table."""
    if "mean" not in manifest and "std" not in manifest and dataset in CIFAR_DATASET_NAMES:
        return dataset_stats(dataset)
    mean, std = tuple(float(v) for v in manifest["mean"]), tuple(float(v) for v in manifest["std"])
    if len(mean) != CHANNELS or len(std) != CHANNELS or not all(np.isfinite(mean + std)) or min(std) <= 0:
        raise ValueError(f"mean {list(mean)} / std {list(std)} are not three finite values (std > 0)")
    return mean, std  # type: ignore[return-value]


def _load_array(folder: Path, field: str, files: dict[str, Any], verify_checksum: bool) -> np.ndarray:
    name = f"{field}.npy"
    entry, path = files[name], folder / name
    if not path.is_file() or path.stat().st_size != entry["bytes"]:
        raise CacheError(f"cache file {path} is missing or has the wrong size")
    if verify_checksum and file_sha256(path) != entry["sha256"]:
        raise CacheError(f"cache file {path} fails its sha256 check")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheError(f"cache file {path} is unreadable: {exc}") from exc
    if list(array.shape) != list(entry["shape"]) or str(array.dtype) != entry["dtype"]:
        raise CacheError(f"cache file {path} is {array.dtype} {array.shape}, the manifest says {entry['dtype']} {entry['shape']}")
    return array


def file_sha256(path: Path) -> str:
    """The sha256 of the file at `path`, lower-case hex."""
    return file_digest(path, "sha256")
