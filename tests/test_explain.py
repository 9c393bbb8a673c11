"""Feature maps and Grad-CAM (engine/explain.py) and the figures that show them (plots/filters.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cifarcli.config import ModelConfig
from cifarcli.engine.explain import grad_cam, layer_activations
from cifarcli.errors import UsageError
from cifarcli.models import build_model, find_layer, last_conv_layer_name
from cifarcli.plots.filters import (
    ImageCaption,
    filter_tiles,
    grid_shape,
    mosaic,
    normalise_each,
    plot_feature_maps,
    plot_filters,
    plot_gradcam,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ColourNet(nn.Module):
    """Class 0 = mean redness, class 1 = mean greenness: `pick` (1x1 conv) copies R and G."""

    def __init__(self) -> None:
        super().__init__()
        self.pick = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)  # in place, right after the explained layer
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.pick.weight.zero_()
            self.pick.weight[0, 0] = 1.0  # channel 0 <- red
            self.pick.weight[1, 1] = 1.0  # channel 1 <- green
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.pick(images))).flatten(1))


def red_left_green_right(count: int = 2) -> torch.Tensor:
    """Images whose left half is red and right half green, the green a bit stronger."""
    images = torch.zeros(count, 3, 32, 32)
    images[:, 0, :, :16] = 1.0
    images[:, 1, :, 16:] = 1.5
    return images


def model_named(name: str, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name), num_classes)  # with the default recipe's logit-scale hook


def hooks_of(model: nn.Module) -> list[tuple[list, list]]:
    """Every module's forward and backward hooks, to check a function leaves them as they were."""
    return [(list(m._forward_hooks.values()), list(m._backward_hooks.values())) for m in model.modules()]


# --------------------------------------------------------------------------- Grad-CAM: known answers


def test_gradcam_lights_the_region_the_explained_class_comes_from() -> None:
    model, images = ColourNet(), red_left_green_right()
    red = grad_cam(model, model.pick, images, target_classes=torch.tensor([0, 0]))
    green = grad_cam(model, model.pick, images, target_classes=torch.tensor([1, 1]))
    assert red.heatmaps.shape == (2, 32, 32)
    # Away from the seam (bilinear upsampling blends a pixel or two), one half is 1, the other 0.
    assert np.allclose(red.heatmaps[:, :, :14], 1.0) and np.allclose(red.heatmaps[:, :, 18:], 0.0)
    assert np.allclose(green.heatmaps[:, :, 18:], 1.0) and np.allclose(green.heatmaps[:, :, :14], 0.0)
    assert red.target_classes.tolist() == [0, 0] and green.target_classes.tolist() == [1, 1]


def test_gradcam_explains_the_predicted_class_by_default() -> None:
    model, images = ColourNet(), red_left_green_right(3)  # green is stronger, so class 1 wins
    result = grad_cam(model, model.pick, images)
    assert result.target_classes.tolist() == [1, 1, 1] == result.predicted.tolist()
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert result.heatmaps[:, :, 20:].min() == pytest.approx(1.0) and result.heatmaps[:, :, :12].max() == 0.0


def test_gradcam_without_positive_evidence_is_all_zero_not_nan() -> None:
    model = ColourNet()
    with torch.no_grad():
        model.fc.weight.copy_(-torch.eye(2))  # more colour means a lower score for every class
    result = grad_cam(model, model.pick, red_left_green_right())
    assert np.isfinite(result.heatmaps).all()
    assert (result.heatmaps == 0).all()


def test_gradcam_works_under_no_grad_and_with_frozen_weights() -> None:
    model = ColourNet().requires_grad_(False)
    with torch.no_grad():
        result = grad_cam(model, model.pick, red_left_green_right(), target_classes=torch.tensor([0, 1]))
    assert result.heatmaps[0, :, :14].min() == pytest.approx(1.0)
    assert result.heatmaps[1, :, 18:].min() == pytest.approx(1.0)


# --------------------------------------------------------------------------- Grad-CAM on the zoo


@pytest.mark.parametrize("name", ["simple_cnn", "resnet9", "resnet18", "resnet50"])
def test_gradcam_on_registered_models_is_in_range_and_leaves_the_model_unchanged(name: str) -> None:
    model = model_named(name).train()  # the function switches to eval and back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = hooks_of(model)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layer = find_layer(model, last_conv_layer_name(model))
    result = grad_cam(model, layer, images)
    assert result.heatmaps.shape == (2, 32, 32) and result.heatmaps.dtype == np.float32
    assert np.isfinite(result.heatmaps).all()
    assert result.heatmaps.min() >= 0.0 and result.heatmaps.max() <= 1.0
    assert all(m.max() in (0.0, pytest.approx(1.0)) for m in result.heatmaps)  # each map: its own max is 1
    assert result.probabilities.shape == (2, 10)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert hooks_of(model) == hooks
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched


def test_gradcam_heatmap_matches_the_image_size() -> None:
    model = ColourNet()
    result = grad_cam(model, model.pick, torch.rand(1, 3, 40, 24))
    assert result.heatmaps.shape == (1, 40, 24)


# --------------------------------------------------------------------------- feature maps


@pytest.mark.parametrize(
    ("name", "layer", "shape"),
    [("simple_cnn", "conv2.0", (64, 16, 16)), ("resnet9", "res3.block2.conv", (512, 4, 4)), ("resnet9", "layer1.conv", (128, 32, 32))],
)
def test_feature_maps_have_the_layers_channels(name: str, layer: str, shape: tuple[int, int, int]) -> None:
    model = model_named(name)
    maps = layer_activations(model, find_layer(model, layer), torch.randn(3, 3, 32, 32))
    assert maps.shape == (3, *shape) and maps.dtype == np.float32


def test_feature_maps_are_the_layer_output_before_an_in_place_relu() -> None:
    model = model_named("simple_cnn").eval()
    hooks = hooks_of(model)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    maps = layer_activations(model, find_layer(model, "conv1.0"), images)
    with torch.no_grad():
        expected = model.conv1[0](images).numpy()
    assert np.allclose(maps, expected, atol=1e-6)
    assert maps.min() < 0  # the ReLU(inplace=True) that follows did not reach the captured tensor
    assert hooks_of(model) == hooks


def test_a_layer_without_feature_maps_is_a_usage_error() -> None:
    model = model_named("simple_cnn")
    hooks = hooks_of(model)
    with pytest.raises(UsageError, match=r"outputs shape \(2, 10\), not feature maps"):
        layer_activations(model, model.fc, torch.randn(2, 3, 32, 32))
    with pytest.raises(UsageError, match="did not run in the forward pass"):
        grad_cam(model, nn.Conv2d(3, 3, 1), torch.randn(2, 3, 32, 32))
    assert hooks_of(model) == hooks


# --------------------------------------------------------------------------- filter grid and figures


@pytest.mark.parametrize(("count", "shape"), [(1, (1, 1)), (7, (1, 7)), (32, (4, 8)), (64, (8, 8)), (100, (10, 10)), (512, (23, 23))])
def test_grid_shape(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count) == shape
    rows, cols = shape
    assert rows * cols >= count > (rows - 1) * cols


def test_filter_grid_has_one_rgb_tile_per_filter() -> None:
    weights = np.random.default_rng(0).normal(size=(32, 3, 5, 5))
    tiles = filter_tiles(weights)
    assert tiles.shape == (32, 5, 5, 3)
    assert np.allclose(tiles.reshape(32, -1).min(axis=1), 0.0) and np.allclose(tiles.reshape(32, -1).max(axis=1), 1.0)
    first = weights[0].transpose(1, 2, 0)
    assert np.allclose(tiles[0], (first - first.min()) / (first.max() - first.min()), atol=1e-6)
    grid = mosaic(tiles)
    assert (grid.count, grid.rows, grid.cols) == (32, 4, 8)
    assert grid.image.shape == (4 * 5 + 3, 8 * 5 + 7, 3)
    tile_spots = ~np.isnan(grid.image[..., 0])
    assert tile_spots.sum() == 32 * 5 * 5  # exactly 32 tiles, the rest is gap
    assert np.allclose(grid.image[6:11, 12:17], tiles[10])  # filter 10: row 1, column 2


def test_filter_tiles_grey_for_other_inputs_and_constant_filters_stay_finite() -> None:
    weights = np.random.default_rng(1).normal(size=(4, 2, 3, 3))
    weights[3] = 0.7
    tiles = filter_tiles(weights)
    assert tiles.shape == (4, 3, 3, 3)
    assert np.array_equal(tiles[..., 0], tiles[..., 1]) and np.array_equal(tiles[..., 1], tiles[..., 2])
    assert np.isfinite(tiles).all() and (tiles[3] == 0).all()
    assert np.allclose(normalise_each(np.array([[1.0, 3.0], [5.0, 5.0]])), [[0.0, 1.0], [0.0, 0.0]])


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_figures_are_written_as_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    captions = [ImageCaption(4, "cat", "cat", 0.9), ImageCaption(9, "dog", "cat", 0.55), ImageCaption(11, "ship", "ship", 0.7)]
    paths = [
        plot_filters(rng.normal(size=(16, 3, 3, 3)), tmp_path / "f" / "filters.png", "conv1"),
        plot_feature_maps(images, rng.normal(size=(3, 20, 8, 8)), captions, tmp_path / "maps.png", "conv3", max_maps=12),
        plot_gradcam(images, rng.random(size=(3, 32, 32)), captions, tmp_path / "cam.png", "conv3"),
    ]
    for path in paths:
        width, height = _png_size(path)
        assert width > 250 and height > 250
    assert not captions[1].correct and captions[0].correct


def test_gradcam_of_a_layer_the_scores_ignore_is_all_zero() -> None:
    class SideBranch(ColourNet):
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            self.unused(images)  # runs, but the logits never see it
            return super().forward(images)

    model = SideBranch()
    result = grad_cam(model, model.unused, red_left_green_right())
    assert result.heatmaps.shape == (2, 32, 32) and (result.heatmaps == 0).all()
