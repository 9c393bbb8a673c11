"""Make a data set ready: fetch and verify the archive, convert it once into the cache, load it.

`load_dataset` is what training and evaluation call; `prepare_dataset` is `cifar download` and
`cifar prepare`. Data sets of your own (folder, npz) are converted by `custom.py` into the same
kind of cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifarcli.config import CIFAR_IMAGE_SIZE, CUSTOM_DATASET_NAMES, DataConfig
from cifarcli.data import custom
from cifarcli.data.archive import SafeTarReader
from cifarcli.data.cache import CacheError, CifarArrays, cache_folder, read_cache, read_manifest, write_cache
from cifarcli.data.fetch import fetch_archive, file_md5, normalize_source
from cifarcli.data.imported import SkippedFile
from cifarcli.data.safe_pickle import load_batch
from cifarcli.data.sources import DatasetSource, get_source
from cifarcli.data.stats import dataset_stats
from cifarcli.errors import DataError
from cifarcli.fileio import exclusive_lock, lock_file_for
from cifarcli.reporting import SILENT, Reporter

DOWNLOAD_BACKOFF_BASE_S = 1.0  # first wait between download attempts; doubles each time

ALREADY_PRESENT = "already present and verified"
DOWNLOADED = "downloaded and converted"
COPIED = "copied from the source archive and converted"
CONVERTED = "converted from the archive already on disk"
REBUILT = "cache failed its check and was rebuilt"
CONVERTED_OWN = "converted from data.path"


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` did and where the data now is."""

    dataset: str
    action: str          # one of ALREADY_PRESENT, DOWNLOADED, COPIED, CONVERTED, REBUILT, CONVERTED_OWN
    cache_dir: Path
    archive_path: Path   # where the verified archive is (or was, if since removed by the user); data.path for your own
    source: str          # URL or absolute path the archive (or your data) came from
    archive_md5: str     # "" for your own data
    train_count: int
    test_count: int
    class_names: tuple[str, ...] = ()
    train_class_counts: tuple[int, ...] = ()    # images per class, in class_names order (fine labels)
    test_class_counts: tuple[int, ...] = ()
    image_size: int = CIFAR_IMAGE_SIZE
    skipped: tuple[SkippedFile, ...] = ()       # your own data: image files that could not be read
    ignored: tuple[SkippedFile, ...] = ()       # your own data: entries that are not images


def prepare_dataset(cfg: DataConfig, *, force: bool = False, reporter: Reporter = SILENT) -> PrepareResult:
    """Ensure a verified cache of `cfg.dataset` under `cfg.root`, downloading and converting as needed.

    An existing cache whose every file matches its manifest's sha256 is kept, unless `force`
    or the config asks for another source or md5 than it was built from; a cache that fails
    its check is rebuilt, never trusted. `force` also fetches the archive again. Processes
    preparing the same data set under one root take turns (a lock file in the temp folder).
    `reporter` hears what is done and the download's progress.
    """
    custom_data = cfg.dataset in CUSTOM_DATASET_NAMES
    name = custom.custom_cache_folder(cfg).name if custom_data else cfg.dataset
    with exclusive_lock(lock_file_for(Path(cfg.root), name)):  # outside the root: failing early leaves it untouched
        if custom_data:
            return _prepare_custom(cfg, force=force, reporter=reporter)
        return _prepare(cfg, force=force, reporter=reporter)


def _prepare_custom(cfg: DataConfig, *, force: bool, reporter: Reporter) -> PrepareResult:
    """Convert data.path into its cache unless a current one is there (or `force`)."""
    arrays = None if force else custom.current_cache(cfg, reporter.message)
    action = ALREADY_PRESENT if arrays is not None else CONVERTED_OWN
    if arrays is None:
        arrays = custom.convert(cfg, reporter.message, warn=reporter.warning)  # skipped files are said even when quiet
    folder = custom.custom_cache_folder(cfg)
    return _result(cfg.dataset, action, folder, Path(str(cfg.path)), read_manifest(folder), arrays)


def _prepare(cfg: DataConfig, *, force: bool, reporter: Reporter) -> PrepareResult:
    source = get_source(cfg.dataset)
    folder = cache_folder(cfg.root, cfg.dataset)
    broken = False
    if not force:
        try:
            arrays = read_cache(folder, cfg.dataset, verify_checksums=True)
            manifest = read_manifest(folder)
            if _cache_matches_request(manifest, cfg):
                return _result(cfg.dataset, ALREADY_PRESENT, folder, Path(cfg.root) / source.archive_name,
                               manifest, arrays)
        except CacheError as exc:
            broken = folder.is_dir() and any(folder.iterdir())
            if broken:
                reporter.warning(f"the cache at {folder} failed its check ({exc.message}); rebuilding it")
    archive_path, archive_md5, origin, how = _obtain_archive(cfg, source, force=force, reporter=reporter)
    reporter.message(f"converting {archive_path} into {folder}")
    try:
        arrays = read_cifar_archive(archive_path, source)
    except DataError:
        if how != CONVERTED:  # just fetched: an unusable archive must not stay under the official name
            archive_path.unlink(missing_ok=True)
        raise
    write_cache(folder, arrays, source=origin, archive_md5=archive_md5)
    arrays = read_cache(folder, cfg.dataset)
    return _result(cfg.dataset, REBUILT if broken else how, folder, archive_path, read_manifest(folder), arrays)


def load_dataset(cfg: DataConfig, *, reporter: Reporter = SILENT) -> CifarArrays:
    """The memory-mapped arrays of `cfg.dataset`, preparing the cache first if it is missing or fails its check.

    The check includes every file's sha256: a flipped byte in a pixel keeps the file's size,
    and training must never run on silently damaged images (hashing costs ~0.2 s for CIFAR).
    """
    if cfg.dataset in CUSTOM_DATASET_NAMES:
        arrays = custom.current_cache(cfg, reporter.message)
        return arrays if arrays is not None else _reread(prepare_dataset(cfg, reporter=reporter))
    folder = cache_folder(cfg.root, cfg.dataset)
    try:
        arrays = read_cache(folder, cfg.dataset, verify_checksums=True)
        if _cache_matches_request(read_manifest(folder), cfg):
            return arrays
    except CacheError:
        pass
    return _reread(prepare_dataset(cfg, reporter=reporter))


def _reread(result: PrepareResult) -> CifarArrays:
    return read_cache(result.cache_dir, result.dataset)


def _cache_matches_request(manifest: dict[str, Any], cfg: DataConfig) -> bool:
    """False when the config names a source or md5 other than the one the cache was built from."""
    if cfg.md5 is not None and manifest.get("archive_md5") != cfg.md5.lower():
        return False
    return cfg.source is None or manifest.get("source") == normalize_source(cfg.source)


def _obtain_archive(cfg: DataConfig, source: DatasetSource, *, force: bool, reporter: Reporter) -> tuple[Path, str, str, str]:
    """(archive path, its md5, where it came from, action) for a verified archive in the data root."""
    archive_path = Path(cfg.root) / source.archive_name
    expected_md5 = (cfg.md5 or source.md5).lower() if cfg.verify else None
    wanted = cfg.source or source.url
    if not force and archive_path.is_file():
        on_disk_md5 = file_md5(archive_path)
        if on_disk_md5 == expected_md5:
            return archive_path, on_disk_md5, normalize_source(wanted), CONVERTED
        if expected_md5 is None and cfg.source is None:
            return archive_path, on_disk_md5, str(archive_path.resolve()), CONVERTED
    fetched = fetch_archive(
        wanted, archive_path, expected_md5=expected_md5, timeout_s=cfg.download_timeout_s,
        retries=cfg.download_retries, backoff_base_s=DOWNLOAD_BACKOFF_BASE_S, reporter=reporter,
        md5_origin="your --md5 / data.md5" if cfg.md5 else f"the official md5 of {source.archive_name}",
    )
    return fetched.path, fetched.md5, fetched.source, DOWNLOADED if fetched.downloaded else COPIED


def read_cifar_archive(archive: Path, source: DatasetSource) -> CifarArrays:
    """Read a CIFAR archive in the official layout into in-memory arrays (images HWC uint8)."""
    with SafeTarReader(archive) as tar:
        meta = _load_member(tar, source, source.meta_file)
        class_names = _names(meta, source.class_names_key, source.num_classes, source.member(source.meta_file))
        superclass_names = None
        if source.superclass_names_key is not None and source.num_superclasses is not None:
            superclass_names = _names(meta, source.superclass_names_key, source.num_superclasses,
                                      source.member(source.meta_file))
        train = _read_split(tar, source, source.train_files)
        test = _read_split(tar, source, source.test_files)
    coarse = source.coarse_label_key is not None
    return CifarArrays(
        dataset=source.name, train_images=train["images"], train_labels=train["labels"],
        test_images=test["images"], test_labels=test["labels"],
        train_coarse_labels=train["coarse"] if coarse else None, test_coarse_labels=test["coarse"] if coarse else None,
        class_names=class_names, superclass_names=superclass_names, mean=dataset_stats(source.name)[0],
        std=dataset_stats(source.name)[1],
    )


def _read_split(tar: SafeTarReader, source: DatasetSource, files: tuple[str, ...]) -> dict[str, np.ndarray]:
    images, labels, coarse = [], [], []
    for file_name in files:
        batch = _load_member(tar, source, file_name)
        where = source.member(file_name)
        data = batch.get(b"data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{where}: b'data' must be a uint8 array of shape (N, 3072), found {found}")
        # Each row is the red plane, then green, then blue, each 32x32 row-major: CHW -> HWC.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(_labels(batch, source.label_key, len(data), source.num_classes, where))
        if source.coarse_label_key is not None and source.num_superclasses is not None:
            coarse.append(_labels(batch, source.coarse_label_key, len(data), source.num_superclasses, where))
    return {
        "images": np.ascontiguousarray(np.concatenate(images)),
        "labels": np.concatenate(labels),
        "coarse": np.concatenate(coarse) if coarse else np.empty(0, np.int64),
    }


def _load_member(tar: SafeTarReader, source: DatasetSource, file_name: str) -> dict[bytes, Any]:
    name = source.member(file_name)
    with tar.open_member(name) as stream:
        return load_batch(stream, f"{tar.archive}:{name}")


def _labels(batch: dict[bytes, Any], key: bytes, count: int, num_classes: int, where: str) -> np.ndarray:
    raw = batch.get(key)
    if not isinstance(raw, (list, np.ndarray)):
        raise DataError(f"{where}: missing label list {key!r}")
    # Checked before any conversion: np.asarray of a list of lists would copy every shared reference.
    if isinstance(raw, list) and (len(raw) != count or not all(type(v) is int for v in raw)):
        raise DataError(f"{where}: {key!r} must be a list of {count} integers, one per image")
    labels = np.asarray(raw)
    if labels.shape != (count,) or (count and labels.dtype.kind not in "iu"):
        raise DataError(f"{where}: {key!r} must hold {count} integer labels, found {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: {key!r} holds labels outside 0..{num_classes - 1}")
    return labels


def _names(meta: dict[bytes, Any], key: bytes, expected_count: int, where: str) -> list[str]:
    raw = meta.get(key)
    if not isinstance(raw, list) or not all(isinstance(n, (bytes, str)) for n in raw):
        raise DataError(f"{where}: missing the list of names {key!r}")
    if len(raw) != expected_count:
        raise DataError(f"{where}: {key!r} lists {len(raw)} names, expected {expected_count}",
                        hint="is it the archive of the chosen data set? check --dataset")
    # Text that is not valid Unicode (a lone surrogate from a Python 3 pickle) could not be written
    # to the cache's JSON, a CSV or a figure: it becomes U+FFFD, as undecodable bytes do.
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for n in raw]


def _result(dataset: str, action: str, folder: Path, archive: Path, manifest: dict[str, Any],
            arrays: CifarArrays) -> PrepareResult:
    classes = arrays.num_classes
    return PrepareResult(
        dataset=dataset, action=action, cache_dir=folder, archive_path=archive,
        source=str(manifest.get("source") or ""), archive_md5=str(manifest.get("archive_md5") or ""),
        train_count=len(arrays.train_images), test_count=len(arrays.test_images),
        class_names=tuple(arrays.class_names),
        train_class_counts=tuple(int(n) for n in np.bincount(np.asarray(arrays.train_labels), minlength=classes)),
        test_class_counts=tuple(int(n) for n in np.bincount(np.asarray(arrays.test_labels), minlength=classes)),
        image_size=arrays.image_size,
        skipped=custom.skipped_entries(manifest, "skipped"), ignored=custom.skipped_entries(manifest, "ignored"),
    )
