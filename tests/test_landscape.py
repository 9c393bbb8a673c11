"""Loss landscapes: filter-normalised directions, the grid evaluation, and `cifar landscape` on the smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.commands import compose
from cifarcli.commands.loss_landscape import evaluation_batches
from cifarcli.config import load_config
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.landscape import filter_normalized_directions, grid_coordinates, loss_surface, mean_loss
from cifarcli.models import build_model


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_directions_have_the_weights_filter_norms_and_leave_biases_and_norms_alone() -> None:
    model = tiny_model()
    d1, d2 = filter_normalized_directions(model, seed=3)
    for (name, w), x, y in zip(model.named_parameters(), d1, d2):
        assert x.shape == w.shape == y.shape, name
        if w.dim() <= 1:  # conv/linear biases, BatchNorm weight and bias
            assert torch.count_nonzero(x) == 0 and torch.count_nonzero(y) == 0, name
            continue
        expected = w.detach().flatten(1).norm(dim=1)
        assert torch.allclose(x.flatten(1).norm(dim=1), expected, rtol=1e-5), name  # per filter (output channel / row)
        assert torch.allclose(y.flatten(1).norm(dim=1), expected, rtol=1e-5), name
        assert not torch.allclose(x, y)
    again, _ = filter_normalized_directions(model, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(d1, again))  # the seed fixes them


def test_surface_centre_is_the_models_loss_and_weights_come_back() -> None:
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 3, 8, 8, generator=generator), torch.tensor([0, 1, 2, 0, 1])) for _ in range(2)]
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    coordinates = grid_coordinates(3, 0.5)
    assert coordinates.tolist() == [-0.5, 0.0, 0.5]
    seen = []
    losses = loss_surface(model, batches, filter_normalized_directions(model, 0), coordinates, on_point=lambda d, t: seen.append((d, t)))
    assert losses.shape == (3, 3) and np.isfinite(losses).all()
    model.eval()
    assert losses[1, 1] == pytest.approx(mean_loss(model, batches), rel=1e-9)
    assert len(set(losses.ravel().round(9))) > 1  # the loss changes away from the centre
    assert seen[-1] == (9, 9) and len(seen) == 9
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.train()
    assert model.training  # its mode is restored too


def test_cli_landscape_around_trained_and_initial_weights(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "land"
    sets = ["landscape.points=3", "landscape.batches=1", "landscape.from_init=true", "data.eval_batch_size=32"]
    result = CliRunner().invoke(app, ["landscape", str(smoke_run), "--out", str(out), *sum((["--set", s] for s in sets), [])])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "landscape.json").read_text())
    trained, initial = np.array(saved["trained"]), np.array(saved["initial"])
    assert trained.shape == initial.shape == (3, 3) and np.isfinite(trained).all() and np.isfinite(initial).all()
    assert saved["images"] == 32 and saved["coordinates"] == [-1.0, 0.0, 1.0] and "train.seed" in saved["initial_weights"]

    cfg = load_config(smoke_run / "config.yaml", ["data.eval_batch_size=32", "landscape.batches=1"])
    checkpoint = load_checkpoint(smoke_run / "checkpoints" / "best.pt")
    model = build_model(cfg.model, 10)  # the run's own model settings (logit scale included)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    batches = evaluation_batches(cfg, torch.device("cpu"))
    with torch.no_grad():
        expected = sum(float(nn.functional.cross_entropy(model(x), y, reduction="sum")) for x, y in batches) / 32
    assert trained[1, 1] == pytest.approx(expected, rel=1e-6)  # the centre is the trained model itself
    fresh = compose.prepare_model(cfg, 10, torch.device("cpu")).eval()
    with torch.no_grad():
        at_init = sum(float(nn.functional.cross_entropy(fresh(x), y, reduction="sum")) for x, y in batches) / 32
    assert initial[1, 1] == pytest.approx(at_init, rel=1e-6) and initial[1, 1] != pytest.approx(trained[1, 1])
    for name in ("landscape_1d.png", "landscape_contour.png", "landscape_surface.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "loss at the trained weights" in result.output and "rebuilt from train.seed=0" in result.output


def test_landscape_settings_are_checked(smoke_run: Path) -> None:
    result = CliRunner().invoke(app, ["landscape", str(smoke_run), "--set", "landscape.points=4"])
    assert result.exit_code == 2 and "landscape.points" in result.output and "odd" in result.output
    result = CliRunner().invoke(app, ["landscape", str(smoke_run), "--set", "model.name=resnet9"])
    assert result.exit_code == 2 and "model.name" in result.output
