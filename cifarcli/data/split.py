"""The stratified train/validation split of the training set, by index."""

from __future__ import annotations

import numpy as np

from cifarcli.errors import ConfigError, DataError


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return `(train_indices, val_indices)`: sorted, disjoint int64 arrays covering `range(len(labels))`.

    Each class `c` with `n_c` images gives `round(n_c * val_fraction)` of them (halves rounded
    up), picked at random with `seed`, to the validation split; `val_fraction == 0` gives an
    empty validation split.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"split labels: expected a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}; rebuild the data cache")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: {val_fraction} is outside [0, 1); e.g. --set data.val_fraction=0.1")
    rng = np.random.default_rng(seed)
    val_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        val_count = int(np.floor(len(members) * val_fraction + 0.5))
        val_parts.append(rng.permutation(members)[:val_count])
    val_indices = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_indices] = True
    return np.flatnonzero(~is_val).astype(np.int64), val_indices.astype(np.int64)
