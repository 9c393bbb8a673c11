"""The device loader: a whole split held on the training device as uint8, served in batches.

No DataLoader workers and no PIL: each epoch is one seeded permutation on the device, and
each batch is gathered, augmented and normalised with tensor ops.

Sharding for distributed training: every rank draws the same permutation and takes the
positions `rank::world_size` of it, so the shards are disjoint, and batch j of each rank holds
its share of the global batch j of one process (`batch_size` is the per-rank share).
- `drop_last=False`: the shards together cover every image exactly once; ranks' image counts
  differ by at most one, so their batch counts differ when the last global batch holds fewer
  images than there are ranks (training refuses that case: every rank must take each step).
- `drop_last=True`: every rank yields the same number of full batches,
  `(N // world_size) // batch_size`; the few images left over (fewer than
  world_size * (batch_size + 1)) are skipped, different ones each epoch.
Evaluation loaders are not sharded: each rank predicts a contiguous run of whole batches of
the full, in-order loader (engine.distributed.predict_across_ranks).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from cifarcli.config import AugmentConfig
from cifarcli.data.augment import augment_batch, images_to_chw, normalize, to_unit_float
from cifarcli.errors import DataError, UsageError

# Distinct seed streams, so the epoch order does not depend on the augmentation settings.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_HOST_STREAM = 2  # the CPU generator of the MixUp/CutMix Beta draws
_FLIP_STREAM = 3  # which images the alternating flip mirrors in even epochs (drawn once per run)


def epoch_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A well-mixed 64-bit seed for one (seed, epoch, stream, rank): the same inputs give the same seed."""
    return int(np.random.SeedSequence([seed, epoch, stream, rank]).generate_state(1, dtype=np.uint64)[0])


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _labels_to_tensor(labels: np.ndarray | torch.Tensor, image_count: int, num_classes: int, device: torch.device) -> torch.Tensor:
    tensor = torch.tensor(labels) if isinstance(labels, np.ndarray) else labels  # a copy: the cache is read-only
    if tensor.ndim != 1 or tensor.shape[0] != image_count or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise DataError(
            f"labels: expected {image_count} integer class indices (one per image), got shape {tuple(tensor.shape)} dtype {tensor.dtype}",
            hint="pass the labels array stored beside the images in the data cache",
        )
    tensor = tensor.to(device=device, dtype=torch.int64)
    if image_count and (int(tensor.min()) < 0 or int(tensor.max()) >= num_classes):
        raise DataError(
            f"labels: values span {int(tensor.min())}..{int(tensor.max())}, outside 0..{num_classes - 1} for {num_classes} classes",
            hint="check data.dataset and data.label_mode match the cache",
        )
    return tensor


class DeviceLoader:
    """Shuffled, augmented, normalised batches of a split that lives on one device."""

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        num_classes: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device | str | None = None,
        augment: AugmentConfig | None = None,
        shuffle: bool | None = None,
        drop_last: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """`images`: N x H x W x 3 uint8; `augment=None` means evaluation (normalise only, no
        shuffle unless `shuffle=True`); `device=None` picks CUDA when present."""
        if batch_size < 1:
            raise UsageError(f"batch_size: {batch_size} must be at least 1; e.g. --set data.batch_size=512")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} of world_size {world_size}: need world_size >= 1 and 0 <= rank < world_size")
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("data.device: cuda was asked for but no CUDA device is visible", hint="use --set data.device=cpu or auto")
        self.images = images_to_chw(images, self.device)  # N x 3 x H x W uint8, moved once
        self.labels = _labels_to_tensor(labels, self.images.shape[0], num_classes, self.device)
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.mean, self.std = tuple(mean), tuple(std)
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device)
        self._std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device)
        self.augment = augment
        # augment.flip.mode=alternating: the loader mirrors by image index and epoch parity; the
        # per-batch augmentation then runs with its random flip off.
        self._alternating_flip = augment is not None and augment.flip.enabled and augment.flip.mode == "alternating"
        self._batch_augment = (
            augment.model_copy(update={"flip": augment.flip.model_copy(update={"enabled": False})})
            if augment is not None and self._alternating_flip
            else augment
        )
        self._flip_even: torch.Tensor | None = None
        self.shuffle = augment is not None if shuffle is None else shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.dtype = dtype
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (0-based) whose order and augmentation the next iteration uses."""
        if epoch < 0:
            raise UsageError(f"epoch {epoch}: epochs count from 0")
        self.epoch = epoch

    @property
    def num_images(self) -> int:
        """Images this rank sees per epoch."""
        total = self.images.shape[0]
        if self.drop_last:
            return (total // self.world_size) // self.batch_size * self.batch_size
        return len(range(self.rank, total, self.world_size))

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return -(-self.num_images // self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """This rank's image indices for the current epoch, in the order they are served."""
        total = self.images.shape[0]
        if self.shuffle:
            generator = self._generator(_SHUFFLE_STREAM, rank=0)  # every rank draws the same permutation
            order = torch.randperm(total, generator=generator, device=self.device)
        else:
            order = torch.arange(total, device=self.device)
        return order[self.rank :: self.world_size][: self.num_images]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield `(images, targets)`: images in `dtype` (channels_last if asked), targets int64
        labels or, in an epoch with MixUp/CutMix on, float soft targets N x num_classes."""
        order = self.epoch_indices()
        generator = self._generator(_AUGMENT_STREAM, rank=self.rank) if self.augment is not None else None
        host_generator = self._generator(_HOST_STREAM, rank=self.rank, device=torch.device("cpu"))
        for start in range(0, order.shape[0], self.batch_size):
            batch_indices = order[start : start + self.batch_size]
            images, labels = self.images[batch_indices], self.labels[batch_indices]
            if self._alternating_flip:
                images = torch.where(self._flipped_in_epoch(batch_indices)[:, None, None, None], images.flip(3), images)
            if self._batch_augment is not None:
                pixels, targets = augment_batch(
                    images, labels, self._batch_augment, self.epoch, self.num_classes, generator, host_generator
                )
            else:
                pixels, targets = to_unit_float(images), labels
            yield self._finish(pixels), targets

    def _flipped_in_epoch(self, indices: torch.Tensor) -> torch.Tensor:
        """Alternating flip: whether each image (by index) is mirrored this epoch; a seeded half in even
        epochs, the other half in odd ones, so each image is seen both ways every two epochs."""
        if self._flip_even is None:
            generator = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, 0, _FLIP_STREAM))
            self._flip_even = torch.rand(self.images.shape[0], generator=generator, device=self.device) < 0.5
        return self._flip_even[indices] ^ bool(self.epoch % 2)

    def normalized_images(self, count: int) -> torch.Tensor:
        """The split's first `count` images, unaugmented and normalised: float32 N x 3 x H x W on the device."""
        return normalize(to_unit_float(self.images[:count]), self._mean_t, self._std_t)

    def _finish(self, pixels: torch.Tensor) -> torch.Tensor:
        out = normalize(pixels, self._mean_t, self._std_t).to(self.dtype)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def _generator(self, stream: int, rank: int, device: torch.device | None = None) -> torch.Generator:
        seed = epoch_seed(self.seed, self.epoch, stream, rank)
        return torch.Generator(device=device or self.device).manual_seed(seed)
