"""The recipes (issue 12): every shipped config trains, the speedrun's ingredients do what they claim,
time to target and statistics over seeds."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.config import ExperimentConfig, ModelConfig, OptimConfig, builtin_config_names, load_config
from cifarcli.data.cache import read_cache
from cifarcli.data.loader import DeviceLoader
from cifarcli.engine.lookahead import Lookahead
from cifarcli.engine.optim import build_optimizer
from cifarcli.engine.target import time_to_target
from cifarcli.engine.tta import tta_logits
from cifarcli.models import build_model
from cifarcli.models.init import identity_init_, initialise_model

runner = CliRunner()
FAST = ["--set", "train.epochs=2", "--set", "schedule.peak_epoch=null", "--set", "train.overfit_batches=1", "--set", "data.batch_size=8",
        "--set", "data.eval_batch_size=64", "--set", "data.device=cpu", "--set", "run.tensorboard=false",
        "--set", "data.drop_last=false"]  # fmt: skip


def fixture_images(data_root: Path) -> torch.Tensor:
    """The tiny CIFAR-10 fixture's training images, normalised as the loader does: N x 3 x 32 x 32."""
    arrays = read_cache(data_root / "cifar10", "cifar10")
    loader = DeviceLoader(np.asarray(arrays.train_images), np.asarray(arrays.train_labels), batch_size=8, num_classes=10,
                          mean=arrays.mean, std=arrays.std, device="cpu")  # fmt: skip
    return loader.normalized_images(10_000)


@pytest.fixture(scope="module")
def resnet34_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageNet-layout resnet34 weights file with the right keys and shapes (values all zero, a tiny file)."""
    state = torchvision.models.resnet34(weights=None, num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save({key: torch.zeros(()).expand(t.shape) for key, t in state.items()}, path)
    return path


@pytest.mark.parametrize("name", builtin_config_names())
def test_every_shipped_config_trains_on_the_fixture_data(
    name: str, cifar10_data_root: Path, cifar100_data_root: Path, resnet34_file: Path, tmp_path: Path
) -> None:
    cfg = load_config(Path(name))
    root = cifar100_data_root if cfg.data.dataset == "cifar100" else cifar10_data_root
    extra = ["--set", f"model.pretrained={resnet34_file}"] if cfg.model.pretrained is not None else []
    result = runner.invoke(app, ["train", "-c", name, "--quiet", "--set", f"data.root={root}", "--set", f"run.root={tmp_path}", *FAST, *extra])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads(next((run_dir / "evaluations").glob("best-test*/evaluation.json")).read_text())
    assert summary["num_images"] > 0 and 0.0 <= summary["top1"] <= 1.0
    assert (summary["tta_flip"], summary["tta_shift"]) == (cfg.eval.tta_flip, cfg.eval.tta_shift)


def test_whitened_stem_decorrelates_the_fixture_images(cifar10_data_root: Path) -> None:
    images = fixture_images(cifar10_data_root)
    model = build_model(ModelConfig(name="speednet"), 10)
    initialise_model(model, ModelConfig(name="speednet", whiten_stem=True), images)
    stem = model.stem
    assert not stem.weight.requires_grad and stem.bias.requires_grad
    with torch.no_grad():
        outputs = nn.functional.conv2d(images.double(), stem.weight.double())  # the bias is zero anyway
    channels = outputs.permute(0, 2, 3, 1).reshape(-1, stem.out_channels)[:, :12]  # the 12 whitening filters
    covariance = torch.cov(channels.T)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    assert off_diagonal.abs().max() < 0.02
    assert torch.diag(covariance).min() > 0.9 and torch.diag(covariance).max() < 1.0 + 1e-6
    assert torch.allclose(stem.weight[12:], -stem.weight[:12])  # the negatives fill the other half


def test_identity_init_passes_its_input_through() -> None:
    conv = nn.Conv2d(8, 8, kernel_size=3, padding=1, bias=False)
    assert identity_init_(conv) == 1
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(conv(x), x)


def test_batchnorm_settings_and_frozen_scales() -> None:
    model = build_model(ModelConfig(name="resnet9"), 10)
    initialise_model(model, ModelConfig(name="resnet9", bn_momentum=0.4, bn_train_scale=False), None)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.4 and not m.weight.requires_grad and bool((m.weight == 1).all()) for m in norms)
    assert all(m.bias.requires_grad for m in norms)


@pytest.mark.parametrize("name", ["resnet9", "mlp"])
def test_logit_scale_multiplies_the_logits_and_keeps_the_state_dict(name: str) -> None:
    plain = build_model(ModelConfig(name=name, logit_scale=1.0), 10).eval()
    scaled = build_model(ModelConfig(name=name, logit_scale=0.125), 10).eval()
    assert scaled.state_dict().keys() == plain.state_dict().keys()
    scaled.load_state_dict(plain.state_dict())  # a checkpoint of either loads into the other
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scaled(images), plain(images) * 0.125, atol=1e-6)


def test_per_1024_image_units_give_torch_the_converted_lr_and_decay() -> None:
    model = build_model(ModelConfig(name="speednet"), 10)
    cfg = OptimConfig(name="sgd", units="per_1024_images", lr=10.0, weight_decay=0.01, momentum=0.8, nesterov=True,
                      decay_norm_and_bias=True, norm_bias_lr_scale=64.0)  # fmt: skip
    optimizer = build_optimizer(model, cfg, batch_size=512)
    groups = {g["name"]: g for g in optimizer.param_groups}
    torch_lr = 10.0 * 512 / 1024 / (1 + 1 / (1 - 0.8))
    assert math.isclose(groups["all"]["lr"], torch_lr)
    assert math.isclose(groups["all"]["lr"] * groups["all"]["weight_decay"], 0.01 * 512 / 1024 / 6)  # decay per step
    assert math.isclose(groups["norm_bias"]["lr"], 64 * torch_lr)
    assert math.isclose(groups["norm_bias"]["lr"] * groups["norm_bias"]["weight_decay"], 0.01 * 512 / 1024 / 6)


def test_lookahead_ends_as_its_average_and_resumes_it() -> None:
    model = nn.Linear(3, 2)
    lookahead = Lookahead(model, every_steps=2, decay=0.9, total_steps=4)
    assert lookahead.decay_at(0) == 0.0 and math.isclose(lookahead.decay_at(4), 0.9)
    for step in range(1, 4):
        with torch.no_grad():
            model.weight.add_(1.0)
        lookahead.after_step(step)
    saved = lookahead.state_dict()
    copy = Lookahead(model, every_steps=2, decay=0.9, total_steps=4)
    copy.load_state_dict(saved)
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.after_step(4)  # the last step: the weights become the average
    assert torch.equal(model.weight, lookahead.average[0])
    assert torch.equal(copy.average[0], saved["average"][0])


def test_tta_views_and_weights() -> None:
    seen: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x.mean(dim=(1, 2, 3))[:, None].repeat(1, 2)

    inputs = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    tta_logits(forward, inputs, flip=True, shift=True)
    assert len(seen) == 6
    symmetric = torch.ones(1, 3, 4, 4)
    assert torch.allclose(tta_logits(lambda x: x.sum(dim=(1, 2, 3))[:, None], symmetric, True, True), torch.tensor([[48.0]]))


def test_alternating_flip_shows_every_image_both_ways_every_two_epochs() -> None:
    images = np.zeros((64, 4, 4, 3), dtype=np.uint8)
    images[:, :, 0, :] = 255  # a bright left column: a flip moves it right
    augment = ExperimentConfig().augment.model_copy(update={
        "flip": ExperimentConfig().augment.flip.model_copy(update={"mode": "alternating"}),
        "crop": ExperimentConfig().augment.crop.model_copy(update={"enabled": False}),
        "cutout": ExperimentConfig().augment.cutout.model_copy(update={"enabled": False}),
    })  # fmt: skip
    loader = DeviceLoader(images, np.arange(64) % 10, batch_size=16, num_classes=10, mean=(0, 0, 0), std=(1, 1, 1),
                          device="cpu", augment=augment, seed=3)  # fmt: skip

    def flipped_by_label_order(epoch: int) -> dict[int, bool]:
        loader.set_epoch(epoch)
        order = loader.epoch_indices().tolist()
        batches = [x for x, _ in loader]
        right_bright = torch.cat(batches)[:, 0, 0, -1] > 0.5
        return dict(zip(order, right_bright.tolist()))

    even, odd, even_again = flipped_by_label_order(0), flipped_by_label_order(1), flipped_by_label_order(2)
    assert all(even[i] != odd[i] for i in range(64))  # each image the other way in the next epoch
    assert even == even_again
    assert 16 <= sum(even.values()) <= 48  # a random half, not all or none


def test_time_to_target_figures() -> None:
    history = [{"epoch": e, "val_accuracy": a, "wall_seconds": 10.0 * e} for e, a in
               [(1, 0.5), (2, 0.91), (3, 0.89), (4, 0.92), (5, 0.93)]]  # fmt: skip
    result = time_to_target(history, 0.9, "val")
    assert (result.first_epoch, result.first_wall_seconds, result.held_from_epoch) == (2, 20.0, 4)
    assert (result.best_accuracy, result.best_epoch) == (0.93, 5)
    never = time_to_target(history, 0.95, "val")
    assert not never.reached and never.held_from_epoch is None and "not reached (best 93.00% at epoch 5)" in never.describe()


def test_stop_at_target_ends_the_run_at_the_epoch_that_reached_it(cifar10_data_root: Path, tmp_path: Path) -> None:
    args = ["train", "-c", "smoke", "--set", f"data.root={cifar10_data_root}", "--set", f"run.root={tmp_path}",
            "--set", "train.epochs=3", "--set", "train.target_accuracy=0.001", "--set", "train.stop_at_target=true",
            "--set", "run.tensorboard=false"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and epoch 1: any accuracy reaches 0.1%
    target = json.loads((run_dir / "run_info.json").read_text())["time_to_target"]
    assert (target["first_epoch"], target["held_from_epoch"], target["reached"], target["split"]) == (1, 1, True, "val")
    assert target["first_wall_seconds"] > 0
    assert "target 0.10% val accuracy: first reached at epoch 1" in result.output
    assert list((run_dir / "evaluations").glob("best-test*/evaluation.json"))  # scored as usual
    report = runner.invoke(app, ["report", str(run_dir), "--quiet"])
    assert report.exit_code == 0, report.output
    page = next(run_dir.rglob("index.html")).read_text()
    assert "time to target" in page and "first reached at epoch 1" in page


def test_target_on_test_split_scores_test_every_epoch(cifar10_data_root: Path, tmp_path: Path) -> None:
    args = ["train", "-c", "smoke", "--quiet", "--set", f"data.root={cifar10_data_root}", "--set", f"run.root={tmp_path}",
            "--set", "train.target_accuracy=1.0", "--set", "train.target_split=test", "--set", "run.tensorboard=false"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    header, *rows = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    assert len(rows) == 2  # never reached: both epochs trained
    accuracies = [float(row[header.index("test_accuracy")]) for row in rows]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert "target 100.00% test accuracy: not reached" in result.output


def test_target_on_a_missing_validation_split_is_a_config_error() -> None:
    result = runner.invoke(app, ["train", "--set", "train.target_accuracy=0.9", "--set", "data.val_fraction=0", "--print-config"])
    assert result.exit_code == 2
    assert "data.val_fraction" in result.output and "Traceback" not in result.output


def test_seeds_train_one_run_each_and_summarise(cifar10_data_root: Path, tmp_path: Path) -> None:
    args = ["train", "-c", "smoke", "--quiet", "--seeds", "0,1", "--set", f"data.root={cifar10_data_root}",
            "--set", f"run.root={tmp_path}", "--set", "run.tensorboard=false"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = sorted(tmp_path.iterdir())
    assert [run.name.rsplit("-", 1)[-1] for run in runs] == ["seed0", "seed1"]
    top1 = [json.loads(next((run / "evaluations").glob("best-test*/evaluation.json")).read_text())["top1"] for run in runs]
    seeds = [json.loads((run / "run_info.json").read_text()).get("seed") for run in runs]
    assert "2 seeds" in result.output
    mean_line = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("mean"))
    assert f"{statistics.mean(top1):.2%}" in mean_line
    std_line = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("std"))
    assert f"{statistics.stdev(top1):.2%}" in std_line
    assert seeds in ([0, 1], [None, None])


@pytest.mark.parametrize("bad", ["x", "1,1", "-3", ""])
def test_bad_seeds_are_refused_before_anything_runs(bad: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--seeds", bad, "--set", f"run.root={tmp_path}"])
    assert result.exit_code == 2
    assert "--seeds" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())
