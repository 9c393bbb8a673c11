"""Opt-in (`pytest --run-slow -m slow`): training learns real CIFAR-10 images from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarcli.cli import app
from conftest import SUBSET_MD5, subset_archive_path


@pytest.mark.slow
@pytest.mark.skipif(not subset_archive_path().is_file(), reason="the real CIFAR-10 subset is not beside the repository")
def test_smoke_recipe_learns_real_images(tmp_path: Path) -> None:
    args = [
        "train", "-c", "smoke", "--quiet",
        "--set", f"data.root={tmp_path / 'data'}", "--set", f"data.source={subset_archive_path()}",
        "--set", f"data.md5={SUBSET_MD5}", "--set", f"run.root={tmp_path / 'runs'}",
        "--set", "train.epochs=4", "--set", "data.batch_size=64", "--set", "run.tensorboard=false",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())
    assert summary["num_images"] == 1017
    assert summary["top1"] > 0.35, summary["top1"]  # chance is 0.10
