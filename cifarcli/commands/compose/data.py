"""The data a command works on: labels, the train/validation split and the device loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from cifarcli.commands.compose.device import use_channels_last
from cifarcli.config import ExperimentConfig
from cifarcli.data.augment import augment_preview
from cifarcli.data.cache import CifarArrays
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.prepare import load_dataset
from cifarcli.data.split import stratified_split
from cifarcli.engine.distributed import SINGLE, DistContext, check_even_last_batch, rank_batch_size
from cifarcli.reporting import SILENT, Reporter


@dataclass(frozen=True)


class LabelSet:
    """The labels a run trains on: fine or coarse, with their names and the superclass map."""

    train: np.ndarray
    test: np.ndarray
    class_names: list[str]
    fine_to_coarse: Optional[np.ndarray]  # CIFAR-100 fine labels only
    superclass_names: Optional[list[str]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def select_labels(arrays: CifarArrays, label_mode: str) -> LabelSet:
    """Fine or coarse labels of the cached data set, per `data.label_mode`."""
    if arrays.train_coarse_labels is None or arrays.superclass_names is None:
        return LabelSet(np.array(arrays.train_labels), np.array(arrays.test_labels), list(arrays.class_names), None, None)
    if label_mode == "coarse":
        return LabelSet(
            np.array(arrays.train_coarse_labels), np.array(arrays.test_coarse_labels), list(arrays.superclass_names), None, None
        )
    mapping = np.zeros(len(arrays.class_names), dtype=np.int64)
    mapping[np.asarray(arrays.train_labels)] = np.asarray(arrays.train_coarse_labels)
    return LabelSet(
        np.array(arrays.train_labels), np.array(arrays.test_labels), list(arrays.class_names), mapping, list(arrays.superclass_names)
    )


@dataclass(frozen=True)


class DataBundle:
    arrays: CifarArrays
    labels: LabelSet
    train_indices: np.ndarray
    val_indices: np.ndarray
    train: DeviceLoader
    val: Optional[DeviceLoader]
    test: DeviceLoader


def eval_loader(
    cfg: ExperimentConfig, arrays: CifarArrays, images: Any, targets: np.ndarray, num_classes: int, device: torch.device
) -> DeviceLoader:
    """An evaluation loader (normalise only, in order) over `images` with the run's batch size and memory format,
    normalised with the data set's own statistics (`arrays`, from its manifest)."""
    return DeviceLoader(np.asarray(images), targets, batch_size=cfg.data.eval_batch_size, num_classes=num_classes,
                        mean=arrays.mean, std=arrays.std, device=device, channels_last=use_channels_last(cfg))  # fmt: skip


def build_data(cfg: ExperimentConfig, device: torch.device, reporter: Reporter = SILENT, ranks: DistContext = SINGLE) -> DataBundle:
    """Load (downloading if needed) the data set and build the train, validation and test loaders.

    With several `ranks` the training loader serves this rank's shard of every epoch, in batches
    of its share of `data.batch_size` (the global batch); the evaluation loaders hold every image.
    """
    arrays = load_dataset(cfg.data, reporter=reporter)
    labels = select_labels(arrays, cfg.data.label_mode)
    train_idx, val_idx = stratified_split(labels.train, cfg.data.val_fraction, cfg.data.split_seed)
    images = np.asarray(arrays.train_images)
    batch_size = rank_batch_size(cfg.data.batch_size, ranks)
    check_even_last_batch(len(train_idx), cfg.data.batch_size, cfg.data.drop_last, ranks)
    train = DeviceLoader(
        images[train_idx], labels.train[train_idx], batch_size=batch_size, augment=cfg.augment,
        shuffle=True, drop_last=cfg.data.drop_last, seed=cfg.train.seed, num_classes=labels.num_classes,
        mean=arrays.mean, std=arrays.std, device=device, channels_last=use_channels_last(cfg),
        rank=ranks.rank, world_size=ranks.world_size,
    )  # fmt: skip
    val = eval_loader(cfg, arrays, images[val_idx], labels.train[val_idx], labels.num_classes, device) if len(val_idx) else None
    test = eval_loader(cfg, arrays, arrays.test_images, labels.test, labels.num_classes, device)
    return DataBundle(arrays, labels, train_idx, val_idx, train, val, test)


def steps_per_epoch(cfg: ExperimentConfig, data: DataBundle) -> int:
    """Optimizer steps per epoch: every training batch, or the fixed ones of an overfitting run."""
    batches = len(data.train)
    return min(cfg.train.overfit_batches, batches) if cfg.train.overfit_batches else batches


def preview_augmented(cfg: ExperimentConfig, data: DataBundle, count: int) -> torch.Tensor:
    """`count` training images as the augmentation pipeline sees them, floats in [0, 1], N x 3 x S x S."""
    images = np.asarray(data.arrays.train_images)[np.sort(data.train_indices[:count])]
    return augment_preview(images, cfg.augment, cfg.train.seed)


@dataclass(frozen=True)


class PickedImages:
    raw: np.ndarray  # N x S x S x 3 uint8, for display
    labels: np.ndarray  # N true class indices
    inputs: torch.Tensor  # N x 3 x S x S, normalised exactly as the test loader does


def test_images(
    cfg: ExperimentConfig, arrays: CifarArrays, labels: LabelSet, indices: np.ndarray, device: torch.device
) -> PickedImages:
    """A few test images by index, raw and as model inputs (without moving the whole data set)."""
    raw = np.asarray(arrays.test_images)[indices]
    loader = DeviceLoader(raw, labels.test[indices], batch_size=max(1, len(indices)), num_classes=labels.num_classes,
                          mean=arrays.mean, std=arrays.std, device=device, channels_last=use_channels_last(cfg))  # fmt: skip
    inputs, _ = next(iter(loader))
    return PickedImages(raw, labels.test[indices], inputs)
