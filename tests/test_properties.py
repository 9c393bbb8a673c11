"""Property tests: the config loader and `--set` parser never fail with anything but a clean
one-line ConfigError, and every augmentation keeps shapes, dtypes and ranges for any valid settings.

(tests/test_augment.py already runs the whole `augment_batch` on a fixed batch of 12; these add
each augmentation on its own, random batch sizes including 1, and what the soft targets may hold.)
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cifarcli.config import (
    AugmentConfig,
    ExperimentConfig,
    load_config,
    validate_config,
)
from cifarcli.data.augment import (
    augment_batch,
    color_jitter,
    cutout,
    mixup_cutmix,
    random_crop,
    random_flip,
    random_rotation,
    sample_beta,
)
from cifarcli.errors import ConfigError

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _dotted_fields(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every settable path of the schema, e.g. `augment.flip.probability`."""
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _dotted_fields(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


FIELDS = _dotted_fields()
SECTIONS = sorted({path.rsplit(".", 1)[0] for path in FIELDS if "." in path})

# Keys: real fields, real sections, near misses and junk (empty parts, spaces, newlines, unicode).
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(SECTIONS),
    st.builds(lambda path, suffix: path + suffix, st.sampled_from(FIELDS), st.sampled_from([".x", "x", ".", "..", " "])),
    st.builds(  # a real path with a stray character typed (or pasted) into it
        lambda path, at, char: path[:at] + char + path[at:],
        st.sampled_from(FIELDS), st.integers(0, 12), st.sampled_from(["\n", "\r", "\t", "\x1b", "\u2028", "é", "="]),
    ),
    st.text(max_size=30),
    st.lists(st.text(st.characters(codec="utf-8"), max_size=8), min_size=1, max_size=4).map(".".join),
)
# Values: what a person types after `=`, parsed as YAML: numbers, words, lists, maps, tags, anchors, junk.
yaml_values = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "no", "null", "~", "", ".nan", "-.inf", "[1, 2", "{a: 1}", "[[1]]", "!!float x", "&a 1",
                     "*a", "!!python/name:os.system", "'quoted", "0x1F", "1e400", "- 1", ": x", "%YAML 1.2"]),
    st.lists(st.floats(allow_nan=False, width=32), max_size=3).map(str),
    st.text(max_size=40),
)


def _assert_clean(error: ConfigError) -> None:
    assert error.exit_code == 2
    # Printed as one line by cli.py: no newline, and no other control character (a key from a YAML
    # file could otherwise move the cursor or recolour the terminal).
    assert error.message and error.message.isprintable(), error.message
    assert error.hint is None or error.hint.isprintable()


@FAST
@given(key=keys, value=yaml_values)
def test_any_set_override_either_validates_or_is_one_clean_config_error(key: str, value: str) -> None:
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as error:
        _assert_clean(error)
    else:
        assert isinstance(cfg, ExperimentConfig)


@FAST
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_any_set_text_at_all_is_accepted_or_a_config_error(texts: list[str]) -> None:
    try:
        load_config(None, texts)
    except ConfigError as error:
        _assert_clean(error)


yaml_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True),
                        st.text(max_size=10))  # fmt: skip
yaml_trees = st.recursive(
    yaml_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(["data", "optim", "lr", "name", "train", "epochs", "mix"]), st.text(max_size=6)),
                        children, max_size=4),
    ),
    max_leaves=12,
)  # fmt: skip


@FAST
@given(tree=st.dictionaries(st.sampled_from([f.split(".")[0] for f in FIELDS] + ["extra"]), yaml_trees, max_size=4))
def test_any_yaml_tree_validates_or_is_one_clean_config_error(tree: dict) -> None:
    try:
        cfg = validate_config(tree)
    except ConfigError as error:
        _assert_clean(error)
    else:
        assert validate_config(cfg.model_dump(mode="json")) == cfg  # what validates also round-trips


@FAST
@given(text=st.one_of(st.text(max_size=200), yaml_trees.map(lambda t: yaml.safe_dump(t, allow_unicode=True))))
def test_any_config_file_loads_or_is_one_clean_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "exp.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as error:
            _assert_clean(error)


# --------------------------------------------------------------------------- augmentations


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(count: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), generator=_generator(seed), dtype=torch.uint8)


@FAST
@given(count=st.integers(1, 6), size=st.integers(4, 32), padding=st.integers(0, 16), mode=st.sampled_from(["zeros", "reflect"]),
       seed=st.integers(0, 2**31))  # fmt: skip
def test_random_crop_keeps_shape_dtype_and_only_moves_pixels(count: int, size: int, padding: int, mode: str, seed: int) -> None:
    padding = min(padding, size - 1) if mode == "reflect" else padding  # reflect needs padding < side
    images = _images(count, size, seed)
    out = random_crop(images, padding, mode, _generator(seed))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for k in range(count):
        allowed = set(images[k].unique().tolist()) | ({0} if mode == "zeros" and padding else set())
        assert set(out[k].unique().tolist()) <= allowed


@FAST
@given(count=st.integers(1, 6), probability=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_flip_gives_each_image_or_its_mirror(count: int, probability: float, seed: int) -> None:
    images = _images(count, 8, seed)
    out = random_flip(images, probability, _generator(seed))
    for k in range(count):
        assert torch.equal(out[k], images[k]) or torch.equal(out[k], images[k].flip(2))


@FAST
@given(count=st.integers(1, 6), size=st.integers(1, 32), squares=st.integers(1, 16), probability=st.floats(0, 1),
       seed=st.integers(0, 2**31))  # fmt: skip
def test_cutout_only_zeroes_whole_pixels_within_its_budget(count: int, size: int, squares: int, probability: float, seed: int) -> None:
    images = 0.01 + torch.rand(count, 3, 32, 32, generator=_generator(seed))  # no pixel is 0 before
    out = cutout(images, size, squares, probability, _generator(seed))
    assert out.shape == images.shape and out.dtype == images.dtype
    erased = out == 0
    assert torch.equal(erased, erased[:, :1].expand_as(erased))  # all channels of a pixel together
    assert torch.equal(out[~erased], images[~erased])
    per_image = erased[:, 0].flatten(1).sum(1)
    assert torch.all((per_image == 0) | ((per_image >= size * size) & (per_image <= squares * size * size)))
    if probability == 1.0:
        assert torch.all(per_image >= size * size)


@FAST
@given(count=st.integers(1, 6), b=st.floats(0, 1), c=st.floats(0, 1), s=st.floats(0, 1), h=st.floats(0, 0.5),
       probability=st.floats(0, 1), seed=st.integers(0, 2**31))  # fmt: skip
def test_color_jitter_stays_in_range(count: int, b: float, c: float, s: float, h: float, probability: float, seed: int) -> None:
    images = torch.rand(count, 3, 8, 8, generator=_generator(seed))
    out = color_jitter(images, b, c, s, h, probability, _generator(seed))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@FAST
@given(count=st.integers(1, 6), degrees=st.floats(0.01, 45), probability=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_rotation_stays_in_range(count: int, degrees: float, probability: float, seed: int) -> None:
    images = torch.rand(count, 3, 16, 16, generator=_generator(seed))
    out = random_rotation(images, degrees, probability, _generator(seed))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1 + 1e-6


@FAST
@given(alpha=st.floats(1e-3, 50), count=st.integers(1, 200), seed=st.integers(0, 2**31))
def test_beta_draws_are_finite_and_in_the_unit_interval(alpha: float, count: int, seed: int) -> None:
    draws = sample_beta(alpha, count, _generator(seed))
    assert draws.shape == (count,) and torch.isfinite(draws).all() and draws.min() >= 0 and draws.max() <= 1


alphas = st.one_of(st.just(0.0), st.floats(1e-3, 8))


@FAST
@given(count=st.integers(1, 8), mixup=alphas, cutmix=alphas, probability=st.floats(0, 1), share=st.floats(0, 1),
       seed=st.integers(0, 2**31))  # fmt: skip
def test_mixing_keeps_pixels_in_range_and_soft_targets_a_distribution_over_the_batch(
    count: int, mixup: float, cutmix: float, probability: float, share: float, seed: int
) -> None:
    images = torch.rand(count, 3, 16, 16, generator=_generator(seed))
    labels = torch.randint(0, 10, (count,), generator=_generator(seed + 1))
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    out, targets = mixup_cutmix(images, one_hot, mixup, cutmix, probability, share, _generator(seed))
    assert out.shape == images.shape and targets.shape == (count, 10)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(targets.sum(1), torch.ones(count), atol=1e-5) and targets.min() >= 0
    present = torch.zeros(10, dtype=torch.bool)
    present[labels] = True
    assert torch.all(targets[:, ~present] == 0)  # partners come from the same batch only
    if probability == 0 or (mixup == 0 and cutmix == 0):
        assert torch.equal(out, images) and torch.equal(targets, one_hot)


augment_settings = st.fixed_dictionaries({
    "crop": st.fixed_dictionaries({"enabled": st.booleans(), "padding": st.integers(0, 16),
                                   "padding_mode": st.sampled_from(["zeros", "reflect"])}),
    "flip": st.fixed_dictionaries({"enabled": st.booleans(), "probability": st.floats(0, 1)}),
    "cutout": st.fixed_dictionaries({"enabled": st.booleans(), "size": st.integers(1, 32), "count": st.integers(1, 16),
                                     "probability": st.floats(0, 1)}),
    "color_jitter": st.fixed_dictionaries({"enabled": st.booleans(), "hue": st.floats(0, 0.5), "probability": st.floats(0, 1)}),
    "rotation": st.fixed_dictionaries({"enabled": st.booleans(), "max_degrees": st.floats(0.01, 45)}),
    "mix": st.fixed_dictionaries({"mixup_alpha": alphas, "cutmix_alpha": alphas, "probability": st.floats(0, 1),
                                  "cutmix_share": st.floats(0, 1), "off_epoch": st.one_of(st.none(), st.integers(0, 3))}),
})  # fmt: skip


@FAST
@given(tree=augment_settings, count=st.integers(1, 8), epoch=st.integers(0, 4), seed=st.integers(0, 2**31))
def test_augment_batch_for_any_settings_batch_size_and_epoch(tree: dict, count: int, epoch: int, seed: int) -> None:
    cfg = AugmentConfig.model_validate(tree)
    images, labels = _images(count, 32, seed), torch.randint(0, 10, (count,), generator=_generator(seed))
    pixels, targets = augment_batch(images, labels, cfg, epoch, 10, _generator(seed))
    assert pixels.shape == (count, 3, 32, 32) and pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1 + 1e-6
    mixing = (cfg.mix.mixup_alpha > 0 or cfg.mix.cutmix_alpha > 0) and (cfg.mix.off_epoch is None or epoch < cfg.mix.off_epoch)
    if mixing:
        assert targets.dtype == torch.float32 and targets.shape == (count, 10)
        assert torch.allclose(targets.sum(1), torch.ones(count), atol=1e-5) and targets.min() >= 0
    else:
        assert targets.dtype == torch.int64 and torch.equal(targets, labels)
    again, again_targets = augment_batch(images, labels, cfg, epoch, 10, _generator(seed))
    assert torch.equal(pixels, again) and torch.equal(targets, again_targets)  # a seed fixes every draw


def test_property_strategies_reach_real_fields() -> None:
    assert "augment.flip.probability" in FIELDS and "optim.lr" in FIELDS and len(FIELDS) > 80
    assert not math.isnan(load_config(None, ["optim.lr=0.5"]).optim.lr)
    with pytest.raises(ConfigError):
        load_config(None, ["optim.lr=.nan"])
