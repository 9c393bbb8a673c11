"""`cifar visualize-filters` end to end on the smoke run (simple_cnn on tiny CIFAR-10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_fixtures import copy_run
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.commands.visualize_filters import pick_test_images
from cifarcli.config import ModelConfig, VisualizeConfig
from cifarcli.engine.checkpoint import load_checkpoint, save_checkpoint
from cifarcli.errors import UsageError
from cifarcli.models import build_model

SMOKE_LAYERS = ["conv1.0", "conv2.0", "conv3.0"]  # simple_cnn's conv layers; the last is the default
OUTPUTS = ("filters.png", "feature_maps.png", "gradcam.png")


def visualize(*args: object) -> object:
    return CliRunner().invoke(app, ["visualize-filters", *map(str, args)])


def assert_png(path: Path) -> tuple[int, int]:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_writes_the_three_figures_into_the_run_folder(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    result = visualize(run, "--quiet")
    assert result.exit_code == 0, result.output
    for name in OUTPUTS:
        path = run / "visualize" / name
        width, height = assert_png(path)
        assert width > 250 and height > 250
        assert f"wrote {path}" in result.stdout


def test_out_folder_layer_and_chosen_images(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    result = visualize(
        smoke_run, "--out", out, "--layer", "conv1.0",
        "--set", "visualize.image_indices=[0, 5, 99]", "--set", "visualize.max_feature_maps=6",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    for name in OUTPUTS:
        assert_png(out / name)
    assert "layer conv1.0, test images 0, 5, 99" in result.output
    assert not (smoke_run / "visualize").exists()  # --out keeps the run folder untouched


def test_list_layers_prints_the_conv_layers_and_exits_0(smoke_run: Path) -> None:
    result = visualize(smoke_run, "--list-layers")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == SMOKE_LAYERS
    assert "default: conv3.0" in result.output
    assert not (smoke_run / "visualize").exists()


def test_unknown_layer_exits_2_listing_valid_names(smoke_run: Path, tmp_path: Path) -> None:
    result = visualize(smoke_run, "--layer", "conv9", "--out", tmp_path)
    assert result.exit_code == 2
    assert "error: layer 'conv9' not found" in result.output
    assert all(name in result.output for name in SMOKE_LAYERS)
    assert "--list-layers" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_layer_without_feature_maps_exits_2(smoke_run: Path, tmp_path: Path) -> None:
    result = visualize(smoke_run, "--set", "visualize.layer=fc", "--out", tmp_path)
    assert result.exit_code == 2
    assert "error: layer 'fc'" in result.output and "not feature maps" in result.output
    assert "Traceback" not in result.output


def test_image_index_outside_the_test_set_exits_2(smoke_run: Path, tmp_path: Path) -> None:
    result = visualize(smoke_run, "--set", "visualize.image_indices=[3, 100]", "--out", tmp_path)
    assert result.exit_code == 2
    assert "visualize.image_indices: [100] not valid for a test set of 100 images" in result.output


def test_a_trained_setting_cannot_be_overridden(smoke_run: Path) -> None:
    result = visualize(smoke_run, "--set", "model.name=resnet9")
    assert result.exit_code == 2
    assert "cannot change a trained run's setting" in result.output


def mlp_run(smoke_run: Path, tmp_path: Path) -> Path:
    """A copy of the smoke run whose best checkpoint holds an (untrained) MLP and its config."""
    run = copy_run(smoke_run, tmp_path)
    path = run / "checkpoints" / "best.pt"
    state = load_checkpoint(path)
    state["config"]["model"]["name"] = "mlp"
    state["model"] = build_model(ModelConfig(name="mlp"), int(state["num_classes"])).state_dict()
    state["ema"] = None
    save_checkpoint(path, state)
    return run


def test_mlp_run_is_a_clean_one_line_error(smoke_run: Path, tmp_path: Path) -> None:
    run = mlp_run(smoke_run, tmp_path)
    result = visualize(run)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has no conv layer" in errors[0] and "simple_cnn" in errors[0]
    assert "Traceback" not in result.output
    assert not (run / "visualize").exists()
    listed = visualize(run, "--list-layers")
    assert listed.exit_code == 2 and "has no conv layer" in listed.output


def test_pick_test_images() -> None:
    drawn = pick_test_images(100, VisualizeConfig(num_images=5, image_seed=3))
    assert len(drawn) == 5 and len(set(drawn.tolist())) == 5
    assert drawn.tolist() == sorted(drawn.tolist()) and drawn.min() >= 0 and drawn.max() < 100
    assert np.array_equal(drawn, pick_test_images(100, VisualizeConfig(num_images=5, image_seed=3)))
    assert not np.array_equal(drawn, pick_test_images(100, VisualizeConfig(num_images=5, image_seed=4)))
    assert pick_test_images(3, VisualizeConfig(num_images=8)).tolist() == [0, 1, 2]
    assert pick_test_images(100, VisualizeConfig(image_indices=[7, 2])).tolist() == [7, 2]
    with pytest.raises(UsageError, match=r"\[150\]"):  # a negative index is refused by the schema already
        pick_test_images(100, VisualizeConfig(image_indices=[150, 2]))
