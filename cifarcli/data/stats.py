"""Per-channel mean and standard deviation of a data set's training images, in [0, 1] units.

CIFAR's come from the table below (the full official training sets, so a partial mirror
normalises like the real data); a data set of your own gets them computed from its training
images when it is converted. Either way they are stored in the cache's manifest, which is
where the loader reads them.
"""

from __future__ import annotations

import numpy as np

from cifarcli.config import CIFAR_DATASET_NAMES
from cifarcli.errors import ConfigError

ChannelStats = tuple[float, float, float]

# Computed over the 50,000 training images, RGB order, pixel values divided by 255.
DATASET_STATS: dict[str, tuple[ChannelStats, ChannelStats]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

STATS_CHUNK_IMAGES = 4096  # images summed at a time, so a large data set is never copied whole
FLAT_CHANNEL_STD = 1.0  # the std used for a channel that never varies (dividing by ~0 would blow up test images)


def dataset_stats(dataset_name: str) -> tuple[ChannelStats, ChannelStats]:
    """Return `(mean, std)` per RGB channel of `dataset_name`'s training images."""
    if dataset_name not in DATASET_STATS:
        raise ConfigError(f"data.dataset: no channel statistics for {dataset_name!r}; use one of {', '.join(CIFAR_DATASET_NAMES)}")
    return DATASET_STATS[dataset_name]


def compute_channel_stats(images: np.ndarray) -> tuple[ChannelStats, ChannelStats]:
    """`(mean, std)` per RGB channel of N x H x W x 3 uint8 `images`, exact (integer sums), in [0, 1] units.

    The std is the population std; a channel with (nearly) no variation gets FLAT_CHANNEL_STD.
    """
    if len(images) == 0:
        raise ValueError("compute_channel_stats: no images")
    total = np.zeros(3, dtype=np.int64)
    squares = np.zeros(3, dtype=np.int64)
    for start in range(0, len(images), STATS_CHUNK_IMAGES):
        chunk = np.asarray(images[start:start + STATS_CHUNK_IMAGES], dtype=np.int64).reshape(-1, 3)
        total += chunk.sum(axis=0)
        squares += (chunk * chunk).sum(axis=0)
    count = len(images) * images.shape[1] * images.shape[2]
    mean = total / count / 255.0
    variance = np.maximum(squares / count / 255.0**2 - mean**2, 0.0)
    std = np.where(np.sqrt(variance) < 1.0 / 255.0, FLAT_CHANNEL_STD, np.sqrt(variance))
    return tuple(float(round(v, 6)) for v in mean), tuple(float(round(v, 6)) for v in std)  # type: ignore[return-value]
