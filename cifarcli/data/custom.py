"""Data sets of your own (`folder`, `npz`): where their cache lives, whether it is current, converting them.

The cache folder's name carries everything that decides its contents (data.path, test_path,
test_fraction, split_seed, image_size), so two configs never share one by mistake. Its manifest
records a fingerprint of the source (every file's path, size and modification time): a source
that changed since is converted again. A source that is gone leaves its cache in use, with a
note, so a trained run can still be scored after its images moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from cifarcli.config import DataConfig
from cifarcli.data.cache import CacheError, CifarArrays, read_cache, read_manifest, write_cache
from cifarcli.data.folder import folder_fingerprint, read_image_folder
from cifarcli.data.imported import ImportedData, SkippedFile
from cifarcli.data.npz import npz_fingerprint, read_npz_dataset
from cifarcli.errors import DataError

Say = Callable[[str], None]
SHOWN_SKIPPED = 20  # unreadable files listed on the terminal; the manifest lists all of them
SHOWN_IGNORED = 5


def custom_cache_folder(cfg: DataConfig) -> Path:
    """`<data.root>/<dataset>-<name of data.path>-<key>`: the key hashes what decides the cache's contents."""
    request = {
        "dataset": cfg.dataset, "path": _real(cfg.path), "test_path": _real(cfg.test_path),
        "test_fraction": cfg.test_fraction, "split_seed": cfg.split_seed, "image_size": cfg.image_size,
    }
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(cfg.path)).stem)[:40].strip("._") or "data"
    return Path(cfg.root) / f"{cfg.dataset}-{name}-{key}"


def _real(path: Path | None) -> str | None:
    return os.path.realpath(path) if path is not None else None


def source_fingerprint(cfg: DataConfig) -> str | None:
    """The fingerprint of data.path (and test_path) as they are now; None when one of them is gone."""
    if not all(p is None or Path(p).exists() for p in (cfg.path, cfg.test_path)):
        return None
    if cfg.dataset == "folder":
        return folder_fingerprint(Path(cfg.path), split_folders=cfg.test_fraction is None)
    return npz_fingerprint(cfg.path, cfg.test_path)


def current_cache(cfg: DataConfig, say: Say) -> CifarArrays | None:
    """The verified cache of `cfg`'s data set when it matches its source (or the source is gone); else None."""
    folder = custom_cache_folder(cfg)
    try:
        arrays = read_cache(folder, cfg.dataset, verify_checksums=True)
        manifest = read_manifest(folder)
    except CacheError as exc:
        if folder.is_dir() and any(folder.iterdir()):
            say(f"the cache at {folder} failed its check ({exc.message}); converting {cfg.path} again")
        return None
    fingerprint = source_fingerprint(cfg)
    if fingerprint is None:
        say(f"note: {cfg.path} is gone; using the cache converted from it at {manifest.get('created_utc')} ({folder})")
        return arrays
    if manifest.get("source_fingerprint") != fingerprint:
        say(f"{cfg.path} changed since it was converted; converting it again")
        return None
    return arrays


def convert(cfg: DataConfig, say: Say, warn: Say) -> CifarArrays:
    """Read data.path into the cache (replacing what is there) and return the cached arrays.

    `say` hears the progress and the images found per class; `warn` (which a quiet command
    keeps on) hears every file that was skipped or ignored.
    """
    folder = custom_cache_folder(cfg)
    for field, path in (("data.path", cfg.path), ("data.test_path", cfg.test_path)):
        if path is not None and not Path(path).exists():
            raise DataError(f"{field}: {path} does not exist, and no cache was converted from it",
                            hint=f"a relative path is read from the current folder ({os.getcwd()}); give the full path")
    say(f"converting {cfg.path} into {folder} ({cfg.image_size}x{cfg.image_size} RGB)")
    data, fingerprint = _read_source(cfg, say)
    arrays = CifarArrays(
        dataset=cfg.dataset, train_images=data.train_images, train_labels=data.train_labels,
        test_images=data.test_images, test_labels=data.test_labels, train_coarse_labels=None,
        test_coarse_labels=None, class_names=data.class_names, superclass_names=None,
    )  # mean and std: write_cache computes them from the training images
    write_cache(folder, arrays, source=str(_real(cfg.path)), archive_md5=None, extra={
        "source_fingerprint": fingerprint,
        "test_split": data.test_split,
        "skipped": [asdict(entry) for entry in data.skipped],
        "ignored": [asdict(entry) for entry in data.ignored],
    })
    cached = read_cache(folder, cfg.dataset)
    say(describe_counts(cached))
    for line in describe_skipped(data.skipped, data.ignored):
        warn(line)
    return cached


def _read_source(cfg: DataConfig, say: Say) -> tuple[ImportedData, str]:
    path = Path(cfg.path)  # the schema requires data.path for folder and npz
    if cfg.dataset == "folder":
        return read_image_folder(path, cfg.image_size, cfg.test_fraction, cfg.split_seed, say)
    fingerprint = npz_fingerprint(path, cfg.test_path)
    return read_npz_dataset(path, cfg.test_path, cfg.test_fraction, cfg.split_seed, cfg.image_size), fingerprint


def skipped_entries(manifest: dict, key: str) -> tuple[SkippedFile, ...]:
    """The `skipped` or `ignored` list a manifest records (empty for CIFAR)."""
    return tuple(SkippedFile(str(e.get("path")), str(e.get("reason"))) for e in manifest.get(key) or () if isinstance(e, dict))


def describe_counts(arrays: CifarArrays) -> str:
    """One line: the classes found and the images of each, train/test."""
    train = np.bincount(np.asarray(arrays.train_labels), minlength=arrays.num_classes)
    test = np.bincount(np.asarray(arrays.test_labels), minlength=arrays.num_classes)
    counts = ", ".join(f"{name} {a}/{b}" for name, a, b in zip(arrays.class_names, train, test))
    return f"found {arrays.num_classes} classes, {int(train.sum()):,} train / {int(test.sum()):,} test images: {counts}"


def describe_skipped(skipped: tuple[SkippedFile, ...], ignored: tuple[SkippedFile, ...]) -> list[str]:
    """Lines listing every unreadable file (up to a screenful) and what was ignored."""
    lines = []
    if skipped:
        lines.append(f"skipped {_count(len(skipped), 'unreadable file')}:")
        lines += [f"  {entry.path}: {entry.reason}" for entry in skipped[:SHOWN_SKIPPED]]
        if len(skipped) > SHOWN_SKIPPED:
            lines.append(f"  ... and {len(skipped) - SHOWN_SKIPPED} more (all listed in the cache's manifest.json)")
    if ignored:
        shown = "; ".join(f"{entry.path} ({entry.reason})" for entry in ignored[:SHOWN_IGNORED])
        more = f"; and {len(ignored) - SHOWN_IGNORED} more" if len(ignored) > SHOWN_IGNORED else ""
        lines.append(f"ignored {_count(len(ignored), 'entry', 'entries')} that are not images: {shown}{more}")
    return lines


def _count(number: int, noun: str, plural: str = "") -> str:
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
