"""Contracts of the batch augmentations: shapes, ranges, per-image draws, exact areas and weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from cifarcli.config import AugmentConfig
from cifarcli.data import augment as augment_module
from cifarcli.data.augment import (
    augment_batch,
    augment_preview,
    color_jitter,
    cutout,
    mixup_cutmix,
    normalize,
    random_crop,
    random_flip,
    random_rotation,
    rotate_hue,
    sample_beta,
)
from cifarcli.errors import DataError


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_pixels(count: int, size: int = 8) -> torch.Tensor:
    """`count` copies of one uint8 image whose pixels are all different."""
    image = torch.arange(3 * size * size, dtype=torch.uint8).view(1, 3, size, size)
    return image.repeat(count, 1, 1, 1)


def _random_uint8(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), generator=_generator(seed), dtype=torch.uint8)


@pytest.mark.parametrize("mode, pad_mode", [("zeros", "constant"), ("reflect", "reflect")])
def test_random_crop_is_a_window_of_the_padded_image_drawn_per_image(mode: str, pad_mode: str) -> None:
    images = _distinct_pixels(64)
    cropped = random_crop(images, 2, mode, _generator())
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    padded = F.pad(images[:1].float(), (2, 2, 2, 2), mode=pad_mode)[0]
    windows = [padded[:, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
    offsets = set()
    for crop in cropped.float():
        matches = [k for k, window in enumerate(windows) if torch.equal(window, crop)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # one draw per image, not one per batch


def test_random_crop_without_padding_is_the_identity() -> None:
    images = _random_uint8(4)
    assert torch.equal(random_crop(images, 0, "reflect", _generator()), images)


def test_flip_frequency_matches_probability_and_each_image_is_drawn_alone() -> None:
    images = _distinct_pixels(2000)
    flipped = random_flip(images, 0.3, _generator())
    was_flipped = (flipped == images.flip(3)).flatten(1).all(1)
    unchanged = (flipped == images).flatten(1).all(1)
    assert torch.all(was_flipped ^ unchanged)
    assert abs(was_flipped.float().mean().item() - 0.3) < 0.04
    assert torch.equal(random_flip(images, 0.0, _generator()), images)
    assert torch.equal(random_flip(images, 1.0, _generator()), images.flip(3))


def test_cutout_erases_exactly_one_inside_square_per_image() -> None:
    images = torch.ones(200, 3, 32, 32)
    erased = cutout(images, 8, 1, 1.0, _generator())
    zero = erased[:, 0] == 0
    assert torch.equal(zero, (erased == 0).all(1))  # all channels erased together
    assert zero.flatten(1).sum(1).tolist() == [64] * 200
    rows = zero.any(2).float().argmax(1)
    cols = zero.any(1).float().argmax(1)
    for k in range(200):
        assert zero[k, rows[k] : rows[k] + 8, cols[k] : cols[k] + 8].all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 50
    assert rows.max() <= 24 and cols.max() <= 24


def test_cutout_probability_and_count() -> None:
    images = torch.ones(400, 3, 32, 32)
    assert torch.equal(cutout(images, 8, 2, 0.0, _generator()), images)
    zeros = (cutout(images, 4, 3, 0.5, _generator())[:, 0] == 0).flatten(1).sum(1)
    hit = zeros > 0
    assert torch.all(zeros[hit] >= 16) and torch.all(zeros[hit] <= 48)
    assert abs(hit.float().mean().item() - 0.5) < 0.1


def test_color_jitter_brightness_scales_each_image_by_its_own_factor() -> None:
    images = torch.full((50, 3, 4, 4), 0.4)
    out = color_jitter(images, 0.5, 0.0, 0.0, 0.0, 1.0, _generator())
    factors = out[:, 0, 0, 0] / 0.4
    assert torch.allclose(out, factors.view(-1, 1, 1, 1) * images, atol=1e-6)
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6
    assert len(set(factors.tolist())) == 50


def test_color_jitter_keeps_range_and_probability_zero_is_identity() -> None:
    images = torch.rand(64, 3, 16, 16, generator=_generator())
    out = color_jitter(images, 0.8, 0.8, 0.8, 0.5, 1.0, _generator(1))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)
    assert torch.equal(color_jitter(images, 0.8, 0.8, 0.8, 0.5, 0.0, _generator(1)), images)


def test_hue_rotation_keeps_luma_and_grays_and_a_full_turn_is_identity() -> None:
    images = 0.3 + 0.4 * torch.rand(8, 3, 8, 8, generator=_generator())
    turns = torch.linspace(-0.1, 0.1, 8)
    luma_weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    rotated = rotate_hue(images, turns)
    assert torch.allclose((rotated * luma_weights).sum(1), (images * luma_weights).sum(1), atol=1e-5)
    assert not torch.allclose(rotated[0], images[0], atol=1e-3)
    gray = torch.full((8, 3, 4, 4), 0.5)
    assert torch.allclose(rotate_hue(gray, turns), gray, atol=1e-6)
    assert torch.allclose(rotate_hue(images, torch.ones(8)), images, atol=1e-5)


def test_rotation_keeps_the_centre_blackens_corners_and_varies_per_image() -> None:
    images = torch.ones(32, 3, 32, 32)
    rotated = random_rotation(images, 30.0, 1.0, _generator())
    assert rotated.shape == images.shape and rotated.min() >= 0 and rotated.max() <= 1 + 1e-6
    assert torch.allclose(rotated[:, :, 10:22, 10:22], torch.ones(1), atol=1e-5)
    corner_mass = rotated[:, 0, 0, 0] + rotated[:, 0, 0, 31] + rotated[:, 0, 31, 0] + rotated[:, 0, 31, 31]
    assert (corner_mass < 3.5).float().mean() > 0.8  # all but the smallest angles cut the corners
    assert len(set(rotated.sum((1, 2, 3)).round(decimals=2).tolist())) > 20  # one angle per image
    plain = torch.rand(4, 3, 32, 32, generator=_generator())
    assert torch.equal(random_rotation(plain, 30.0, 0.0, _generator()), plain)


def _constant_images(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image k is filled with value k / count and labelled k (one class per image)."""
    values = torch.arange(count, dtype=torch.float32) / count
    images = values.view(-1, 1, 1, 1).expand(count, 3, 16, 16).clone()
    return images, torch.eye(count), values


def test_cutmix_targets_match_the_pasted_area_exactly() -> None:
    images, one_hot, values = _constant_images(64)
    out, targets = mixup_cutmix(images, one_hot, 0.0, 1.0, 1.0, 0.5, _generator())
    assert torch.allclose(targets.sum(1), torch.ones(64), atol=1e-6)
    for k in range(64):
        pixel_values, pixel_counts = out[k, 0].unique(return_counts=True)
        assert len(pixel_values) <= 2
        for value, pixels in zip(pixel_values, pixel_counts):
            source = int(torch.argmin((values - value).abs()))
            assert targets[k, source].item() == pytest.approx(pixels.item() / 256, abs=1e-6)
    assert (targets.max(1).values < 1).float().mean() > 0.5  # most images really got a patch


def test_mixup_images_are_the_target_weighted_blend() -> None:
    images, one_hot, values = _constant_images(64)
    out, targets = mixup_cutmix(images, one_hot, 0.4, 0.0, 1.0, 0.5, _generator())
    assert torch.allclose(out[:, 0, 0, 0], targets @ values, atol=1e-6)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))  # blended, not pasted
    assert torch.allclose(targets.sum(1), torch.ones(64), atol=1e-6)


def test_mix_with_both_methods_and_partial_probability() -> None:
    images, one_hot, values = _constant_images(128)
    out, targets = mixup_cutmix(images, one_hot, 0.4, 1.0, 0.5, 0.5, _generator())
    assert torch.allclose(out.mean((1, 2, 3)), targets @ values, atol=1e-5)
    changed = (out != images).flatten(1).any(1)
    assert 0.3 < changed.float().mean() < 0.7
    assert torch.equal(targets[~changed], one_hot[~changed])
    same, same_targets = mixup_cutmix(images, one_hot, 0.4, 1.0, 0.0, 0.5, _generator())
    assert torch.equal(same, images) and torch.equal(same_targets, one_hot)


def test_beta_samples_have_the_right_moments() -> None:
    for alpha in (0.4, 2.0):
        draws = sample_beta(alpha, 20000, _generator())
        assert draws.min() >= 0 and draws.max() <= 1
        assert draws.mean().item() == pytest.approx(0.5, abs=0.02)
        assert draws.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.06)
    assert torch.isfinite(sample_beta(0.001, 500, _generator())).all()


class ForbidReadBack(TorchDispatchMode):
    """Fails on any op that copies a tensor's value to the host (`.item()`, `bool(t)`, `.tolist()`)."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        assert func not in self.READS, f"{func} reads a value back from the device"
        return func(*args, **(kwargs or {}))


def test_mixing_on_the_device_reads_nothing_back_and_beta_draws_use_the_host_generator(monkeypatch) -> None:
    images, one_hot = _random_uint8(16).float() / 255, F.one_hot(torch.arange(16) % 10, 10).float()
    device_generator, host_generator = _generator(1), _generator(2)
    seen: list[torch.Generator] = []
    real_sample_beta = augment_module.sample_beta

    def recording_sample_beta(alpha: float, count: int, generator: torch.Generator) -> torch.Tensor:
        seen.append(generator)
        return real_sample_beta(alpha, count, generator)

    monkeypatch.setattr(augment_module, "sample_beta", recording_sample_beta)
    draws = augment_module._beta_draws((0.4, 1.0), 16, host_generator, images.device)  # the host part, on its own
    assert draws.shape == (2, 16) and seen == [host_generator, host_generator]
    monkeypatch.setattr(augment_module, "_beta_draws", lambda alphas, count, gen, device: draws)
    with ForbidReadBack():
        out, targets = mixup_cutmix(images, one_hot, 0.4, 1.0, 1.0, 0.5, device_generator, host_generator)
    assert out.shape == images.shape and torch.allclose(targets.sum(1), torch.ones(16))


def test_the_read_back_guard_catches_a_sync_like_the_old_rejection_loop() -> None:
    with pytest.raises(AssertionError, match="reads a value back"), ForbidReadBack():
        bool(torch.ones(3).any())  # what `while pending.any()` did once per round


def test_beta_draws_refuse_a_device_generator() -> None:
    on_a_gpu = SimpleNamespace(device=torch.device("cuda"))  # a CUDA generator needs a GPU; its device is what counts
    with pytest.raises(ValueError, match="CPU generator"):
        augment_module._beta_draws((0.4,), 4, on_a_gpu, torch.device("cpu"))


def test_same_seeds_same_mixed_batch() -> None:
    images, one_hot = _random_uint8(16).float() / 255, F.one_hot(torch.arange(16) % 10, 10).float()
    first = mixup_cutmix(images, one_hot, 0.4, 1.0, 0.8, 0.5, _generator(1), _generator(2))
    again = mixup_cutmix(images, one_hot, 0.4, 1.0, 0.8, 0.5, _generator(1), _generator(2))
    other_host = mixup_cutmix(images, one_hot, 0.4, 1.0, 0.8, 0.5, _generator(1), _generator(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other_host[1])


def test_normalize_is_per_channel() -> None:
    images = torch.rand(2, 3, 4, 4, generator=_generator())
    out = normalize(images, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert torch.allclose(out[:, 1], (images[:, 1] - 0.2) / 0.25)
    assert torch.allclose(out[:, 2], (images[:, 2] - 0.3) / 2.0)


def test_augment_batch_soft_targets_follow_the_mix_schedule() -> None:
    images, labels = _random_uint8(16), torch.arange(16) % 10
    cfg = AugmentConfig.model_validate({"mix": {"mixup_alpha": 0.2, "probability": 0.0, "off_epoch": 2}})
    pixels, targets = augment_batch(images, labels, cfg, 1, 10, _generator())
    assert pixels.dtype == torch.float32 and targets.shape == (16, 10) and targets.dtype == torch.float32
    assert torch.equal(targets, F.one_hot(labels, 10).float())  # no image mixed, still soft
    _, late_targets = augment_batch(images, labels, cfg, 2, 10, _generator())
    assert late_targets.dtype == torch.int64 and torch.equal(late_targets, labels)


def test_augment_batch_is_reproducible_by_generator_seed() -> None:
    images, labels = _random_uint8(8), torch.arange(8)
    cfg = AugmentConfig.model_validate({"color_jitter": {"enabled": True, "hue": 0.1}, "rotation": {"enabled": True}})
    first = augment_batch(images, labels, cfg, 0, 10, _generator(5))[0]
    again = augment_batch(images, labels, cfg, 0, 10, _generator(5))[0]
    other = augment_batch(images, labels, cfg, 0, 10, _generator(6))[0]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_augment_preview_takes_cache_layout_and_is_seeded() -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    cfg = AugmentConfig()
    preview = augment_preview(images, cfg, seed=1)
    assert preview.shape == (6, 3, 32, 32) and preview.dtype == torch.float32
    assert preview.min() >= 0 and preview.max() <= 1
    assert torch.equal(preview, augment_preview(torch.from_numpy(images), cfg, seed=1))
    assert not torch.equal(preview, augment_preview(images, cfg, seed=2))
    plain = AugmentConfig.model_validate({k: {"enabled": False} for k in ("crop", "flip", "cutout")})
    assert torch.equal(augment_preview(images, plain, seed=1) * 255, torch.from_numpy(images).permute(0, 3, 1, 2).float())
    with pytest.raises(DataError, match=r"\(N, H, W, 3\)"):
        augment_preview(images.transpose(0, 3, 1, 2), cfg, seed=1)


_AUGMENT_SETTINGS = st.fixed_dictionaries(
    {
        "crop": st.fixed_dictionaries({"enabled": st.booleans(), "padding": st.integers(0, 16), "padding_mode": st.sampled_from(["zeros", "reflect"])}),
        "flip": st.fixed_dictionaries({"enabled": st.booleans(), "probability": st.floats(0, 1)}),
        "cutout": st.fixed_dictionaries(
            {"enabled": st.booleans(), "size": st.integers(1, 32), "count": st.integers(1, 16), "probability": st.floats(0, 1)}
        ),
        "color_jitter": st.fixed_dictionaries(
            {
                "enabled": st.booleans(),
                "brightness": st.floats(0, 1),
                "contrast": st.floats(0, 1),
                "saturation": st.floats(0, 1),
                "hue": st.floats(0, 0.5),
                "probability": st.floats(0, 1),
            }
        ),
        "rotation": st.fixed_dictionaries({"enabled": st.booleans(), "max_degrees": st.floats(0.01, 45), "probability": st.floats(0, 1)}),
        "mix": st.fixed_dictionaries(
            {
                "mixup_alpha": st.floats(0, 4),
                "cutmix_alpha": st.floats(0, 4),
                "probability": st.floats(0, 1),
                "cutmix_share": st.floats(0, 1),
            }
        ),
    }
)


@settings(max_examples=25, deadline=None)
@given(settings_tree=_AUGMENT_SETTINGS, seed=st.integers(0, 2**32))
def test_any_valid_settings_keep_shape_dtype_and_range(settings_tree: dict, seed: int) -> None:
    cfg = AugmentConfig.model_validate(settings_tree)
    images, labels = _random_uint8(12, seed=seed % 1000), torch.arange(12) % 10
    pixels, targets = augment_batch(images, labels, cfg, 0, 10, _generator(seed))
    assert pixels.shape == (12, 3, 32, 32) and pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1 + 1e-6
    if cfg.mix.mixup_alpha > 0 or cfg.mix.cutmix_alpha > 0:
        assert targets.shape == (12, 10) and torch.isfinite(targets).all()
        assert torch.allclose(targets.sum(1), torch.ones(12), atol=1e-5) and targets.min() >= 0
    else:
        assert targets.dtype == torch.int64 and torch.equal(targets, labels)
