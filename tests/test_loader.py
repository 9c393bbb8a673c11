"""Contracts of the device loader: order, sharding, batch counts, outputs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarcli.config import AugmentConfig
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.stats import dataset_stats
from cifarcli.errors import ConfigError, DataError, UsageError

MEAN, STD = dataset_stats("cifar10")


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def _index_loader(count: int, **kwargs) -> DeviceLoader:
    """Labels are the image indices, so the yielded targets show the order served."""
    kwargs.setdefault("batch_size", 16)
    return DeviceLoader(_images(count), np.arange(count), num_classes=count, mean=MEAN, std=STD, device="cpu", **kwargs)


def _served(loader: DeviceLoader) -> list[int]:
    return [i for _, targets in loader for i in targets.tolist()]


def test_dataset_stats_for_both_datasets_and_an_unknown_name() -> None:
    assert dataset_stats("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert dataset_stats("cifar100") == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    with pytest.raises(ConfigError, match="cifar10, cifar100"):
        dataset_stats("svhn")


def test_evaluation_batches_are_only_normalised_and_in_order() -> None:
    images, labels = _images(40), np.arange(40) % 10
    loader = DeviceLoader(images, labels, batch_size=16, num_classes=10, mean=MEAN, std=STD, device="cpu")
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [16, 16, 8] and len(loader) == 3
    pixels = torch.cat([b[0] for b in batches])
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD
    ).view(1, 3, 1, 1)
    assert torch.allclose(pixels, expected, atol=1e-6)
    targets = torch.cat([b[1] for b in batches])
    assert targets.dtype == torch.int64 and torch.equal(targets, torch.from_numpy(labels))


def test_same_seed_and_epoch_same_order_other_epoch_other_order() -> None:
    loader = _index_loader(100, augment=AugmentConfig(), seed=3)
    first = _served(loader)
    assert sorted(first) == list(range(100)) and first != list(range(100))
    assert _served(loader) == first
    loader.set_epoch(1)
    second = _served(loader)
    assert sorted(second) == list(range(100)) and second != first
    resumed = _index_loader(100, augment=AugmentConfig(), seed=3)
    resumed.set_epoch(1)
    assert _served(resumed) == second
    other_seed = _index_loader(100, augment=AugmentConfig(), seed=4)
    assert _served(other_seed) != first


def test_resumed_loader_repeats_the_augmented_batches_of_that_epoch() -> None:
    cfg = AugmentConfig.model_validate({"rotation": {"enabled": True}, "mix": {"cutmix_alpha": 1.0}})
    batches = []
    for _ in range(2):
        loader = DeviceLoader(_images(64), np.arange(64) % 10, batch_size=32, num_classes=10, mean=MEAN, std=STD, device="cpu", augment=cfg)
        loader.set_epoch(5)
        batches.append(list(loader))
    for (pixels_a, targets_a), (pixels_b, targets_b) in zip(*batches):
        assert torch.equal(pixels_a, pixels_b) and torch.equal(targets_a, targets_b)


def test_order_does_not_depend_on_augmentation_settings() -> None:
    plain = _index_loader(50, augment=AugmentConfig(), seed=1)
    jittered = _index_loader(50, augment=AugmentConfig.model_validate({"color_jitter": {"enabled": True}}), seed=1)
    assert torch.equal(plain.epoch_indices(), jittered.epoch_indices())
    assert _served(plain) == _served(jittered)


def test_rank_shards_are_disjoint_and_cover_the_epoch() -> None:
    shards = []
    for rank in range(3):
        loader = _index_loader(100, augment=AugmentConfig(), seed=2, rank=rank, world_size=3)
        loader.set_epoch(4)
        served = _served(loader)
        assert len(served) == loader.num_images and len(loader) == -(-loader.num_images // 16)
        shards.append(served)
    assert [len(s) for s in shards] == [34, 33, 33]
    assert sorted(sum(shards, [])) == list(range(100))
    single = _index_loader(100, augment=AugmentConfig(), seed=2)
    single.set_epoch(4)
    assert shards[1] == _served(single)[1::3]


def test_drop_last_gives_every_rank_the_same_full_batches() -> None:
    counts, served_all = [], []
    for rank in range(3):
        loader = _index_loader(100, augment=AugmentConfig(), drop_last=True, rank=rank, world_size=3, batch_size=8)
        batches = list(loader)
        assert all(images.shape[0] == 8 for images, _ in batches)
        assert len(batches) == len(loader) == 4 and loader.num_images == 32
        counts.append(len(batches))
        served_all += [i for _, targets in batches for i in targets.tolist()]
    assert counts == [4, 4, 4] and len(set(served_all)) == 96


def test_drop_last_drops_only_the_partial_batch() -> None:
    kept = _index_loader(100, augment=AugmentConfig(), batch_size=32)
    dropped = _index_loader(100, augment=AugmentConfig(), batch_size=32, drop_last=True)
    assert [t.shape[0] for _, t in kept] == [32, 32, 32, 4] and len(kept) == 4
    assert [t.shape[0] for _, t in dropped] == [32, 32, 32] and len(dropped) == 3
    assert _served(dropped) == _served(kept)[:96]


def test_dtype_and_channels_last_are_respected() -> None:
    loader = _index_loader(20, augment=AugmentConfig(), dtype=torch.bfloat16, channels_last=True)
    images, _ = next(iter(loader))
    assert images.dtype == torch.bfloat16 and images.shape == (16, 3, 32, 32)
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    plain, _ = next(iter(_index_loader(20)))
    assert plain.dtype == torch.float32 and plain.is_contiguous()


def test_mixing_epochs_yield_soft_targets_in_every_batch() -> None:
    cfg = AugmentConfig.model_validate({"mix": {"mixup_alpha": 0.5, "probability": 0.5, "off_epoch": 1}})
    loader = DeviceLoader(_images(70), np.arange(70) % 10, batch_size=32, num_classes=10, mean=MEAN, std=STD, device="cpu", augment=cfg)
    for _, targets in loader:
        assert targets.dtype == torch.float32 and targets.shape[1] == 10
        assert torch.allclose(targets.sum(1), torch.ones(targets.shape[0]), atol=1e-5)
    loader.set_epoch(1)
    assert all(targets.dtype == torch.int64 for _, targets in loader)


def test_tensor_input_gives_the_same_batches_as_numpy() -> None:
    images = _images(24)
    from_numpy = DeviceLoader(images, np.arange(24) % 10, batch_size=8, num_classes=10, mean=MEAN, std=STD, device="cpu")
    from_tensor = DeviceLoader(
        torch.from_numpy(images), torch.arange(24) % 10, batch_size=8, num_classes=10, mean=MEAN, std=STD, device="cpu"
    )
    for (a, ta), (b, tb) in zip(from_numpy, from_tensor):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    assert from_numpy.images.shape == (24, 3, 32, 32) and from_numpy.images.dtype == torch.uint8


def test_bad_inputs_raise_errors_that_name_the_thing(monkeypatch: pytest.MonkeyPatch) -> None:
    common = dict(batch_size=8, num_classes=10, mean=MEAN, std=STD, device="cpu")
    with pytest.raises(DataError, match="images"):
        DeviceLoader(_images(4).transpose(0, 3, 1, 2), np.zeros(4, dtype=np.int64), **common)
    with pytest.raises(DataError, match="images"):
        DeviceLoader(_images(4).astype(np.float32), np.zeros(4, dtype=np.int64), **common)
    with pytest.raises(DataError, match="labels"):
        DeviceLoader(_images(4), np.zeros(3, dtype=np.int64), **common)
    with pytest.raises(DataError, match="outside 0..9"):
        DeviceLoader(_images(4), np.array([0, 1, 2, 10]), **common)
    with pytest.raises(UsageError, match="rank"):
        DeviceLoader(_images(4), np.zeros(4, dtype=np.int64), **common, rank=2, world_size=2)
    with pytest.raises(UsageError, match="batch_size"):
        DeviceLoader(_images(4), np.zeros(4, dtype=np.int64), **{**common, "batch_size": 0})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="data.device"):
        DeviceLoader(_images(4), np.zeros(4, dtype=np.int64), **{**common, "device": "cuda"})
    loader = DeviceLoader(_images(4), np.zeros(4, dtype=np.int64), **{**common, "device": None})
    assert loader.device.type == "cpu"
