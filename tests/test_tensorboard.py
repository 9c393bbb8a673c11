"""What a run writes for TensorBoard, read back from its event files: images per epoch, HParams, resumes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.engine.tensorboard import TensorBoardLogger
from run_fixtures import copy_run

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def events(log_dir: Path) -> list[EventAccumulator]:
    """Every event file of `log_dir`, loaded with nothing sampled away."""
    loaded = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        accumulator.Reload()
        loaded.append(accumulator)
    return loaded


def image_steps(log_dir: Path, tag: str) -> list[int]:
    """The steps of every `tag` image over all event files (a resume appends a file)."""
    return sorted(e.step for acc in events(log_dir) if tag in acc.Tags()["images"] for e in acc.Images(tag))


def test_each_epoch_logs_a_class_labelled_validation_confusion_matrix(smoke_run: Path) -> None:
    log_dir = smoke_run / "tensorboard"
    assert image_steps(log_dir, "confusion_matrix/val") == [1, 2]  # one per epoch, at step = epoch
    assert image_steps(log_dir, "confusion_matrix/test") == [2]
    (acc,) = events(log_dir)
    image = acc.Images("confusion_matrix/val")[0]
    assert image.width >= 300 and image.height >= 300  # large enough for the class names on its axes


def test_hparams_hold_the_resolved_config_and_the_final_metrics(smoke_run: Path) -> None:
    (acc,) = events(smoke_run / "tensorboard")
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.name"].string_value == "simple_cnn"
    assert start.hparams["train.epochs"].number_value == 2 and start.hparams["optim.lr"].number_value == pytest.approx(0.003)
    assert start.hparams["lr_source"].string_value == "null"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {
        "hparam/test_accuracy", "hparam/test_loss", "hparam/best_val_accuracy", "hparam/final_train_loss",
    }  # fmt: skip
    top1 = json.loads((smoke_run / "evaluations" / "best-test" / "evaluation.json").read_text())["top1"]
    assert acc.Scalars("hparam/test_accuracy")[0].value == pytest.approx(top1)


def test_a_resumed_run_logs_no_second_preview(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    assert image_steps(run / "tensorboard", "augmented_train_batch") == [0]
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert image_steps(run / "tensorboard", "augmented_train_batch") == [0]
    assert image_steps(run / "tensorboard", "confusion_matrix/val") == [1, 2]


def test_the_preview_is_logged_only_when_training_starts_at_step_0(tmp_path: Path) -> None:
    calls = []

    def preview() -> torch.Tensor:
        calls.append(1)
        return torch.rand(4, 3, 8, 8)

    logger = TensorBoardLogger(tmp_path, every_steps=1, preview=preview)
    logger.on_train_start(SimpleNamespace(epoch=1, global_step=5), epochs=2, steps_per_epoch=5)  # a resume
    assert calls == []
    logger.on_train_start(SimpleNamespace(epoch=0, global_step=0), epochs=2, steps_per_epoch=5)
    logger.close()
    assert calls == [1] and image_steps(tmp_path, "augmented_train_batch") == [0]
    assert events(tmp_path)[0].Images("augmented_train_batch")[0].width == 4 * (8 + 2) + 2  # one row of 4, padded
