"""Contracts of the stratified train/validation split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cifarcli.data.split import stratified_split
from cifarcli.errors import ConfigError, DataError


def _labels(per_class: list[int], seed: int = 0) -> np.ndarray:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    return np.random.default_rng(seed).permutation(labels)


def test_split_is_disjoint_sorted_and_covers_every_index() -> None:
    labels = _labels([100] * 10)
    train, val = stratified_split(labels, 0.1, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))


def test_each_class_holds_out_its_rounded_share() -> None:
    per_class = [100, 50, 25, 5, 1]  # 0.1 * 25 = 2.5 and 0.1 * 5 = 0.5 round up
    labels = _labels(per_class)
    train, val = stratified_split(labels, 0.1, seed=3)
    assert np.bincount(labels[val], minlength=5).tolist() == [10, 5, 3, 1, 0]
    assert np.bincount(labels[train], minlength=5).tolist() == [90, 45, 22, 4, 1]


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = _labels([200] * 10)
    first = stratified_split(labels, 0.2, seed=7)
    again = stratified_split(labels, 0.2, seed=7)
    other = stratified_split(labels, 0.2, seed=8)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])
    assert len(first[1]) == len(other[1]) == 400


def test_zero_fraction_gives_an_empty_validation_split() -> None:
    labels = _labels([30, 30])
    train, val = stratified_split(labels, 0.0, seed=0)
    assert val.size == 0
    np.testing.assert_array_equal(train, np.arange(60))


def test_bad_inputs_raise_errors_that_name_the_thing() -> None:
    with pytest.raises(DataError, match="1-D integer"):
        stratified_split(np.zeros((4, 2), dtype=np.int64), 0.1, seed=0)
    with pytest.raises(DataError, match="1-D integer"):
        stratified_split(np.zeros(4, dtype=np.float32), 0.1, seed=0)
    with pytest.raises(ConfigError, match="data.val_fraction"):
        stratified_split(np.zeros(4, dtype=np.int64), 1.0, seed=0)


@settings(max_examples=25, deadline=None)
@given(
    per_class=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
    fraction=st.floats(min_value=0.0, max_value=0.95),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_any_split_is_a_stratified_partition(per_class: list[int], fraction: float, seed: int) -> None:
    labels = _labels(per_class, seed=seed)
    train, val = stratified_split(labels, fraction, seed=seed)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    expected = [int(np.floor(n * fraction + 0.5)) for n in per_class]
    assert np.bincount(labels[val], minlength=len(per_class)).tolist() == expected
