"""Per-channel mean and standard deviation of each data set's training images, in [0, 1] units."""

from __future__ import annotations

from cifarcli.config import DATASET_NAMES
from cifarcli.errors import ConfigError

ChannelStats = tuple[float, float, float]

# Computed over the 50,000 training images, RGB order, pixel values divided by 255.
DATASET_STATS: dict[str, tuple[ChannelStats, ChannelStats]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def dataset_stats(dataset_name: str) -> tuple[ChannelStats, ChannelStats]:
    """Return `(mean, std)` per RGB channel of `dataset_name`'s training images."""
    if dataset_name not in DATASET_STATS:
        raise ConfigError(f"data.dataset: no channel statistics for {dataset_name!r}; use one of {', '.join(DATASET_NAMES)}")
    return DATASET_STATS[dataset_name]
