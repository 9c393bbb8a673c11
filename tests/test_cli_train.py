"""`cifar train` and `cifar evaluate` end to end through the CLI on the tiny fixture archives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.engine.checkpoint import load_checkpoint, save_checkpoint
from cifarcli.fileio import read_csv
from run_fixtures import copy_run, train_smoke

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_train_writes_the_run_folder(smoke_run: Path) -> None:
    for name in ["config.yaml", "run_info.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                 "evaluations/best-test/evaluation.json", "evaluations/best-test/confusion_matrix.csv",
                 "evaluations/best-test/predictions.csv", "evaluations/best-test/confusion_matrix.png"]:  # fmt: skip
        assert (smoke_run / name).is_file(), name
    rows = read_csv(smoke_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= float(row["train_accuracy"]) <= 1.0 and np.isfinite(float(row["train_loss"]))
        assert float(row["images_per_second"]) > 0
    assert list((smoke_run / "tensorboard").glob("events.out.tfevents.*"))
    config = yaml.safe_load((smoke_run / "config.yaml").read_text())
    assert config["model"]["name"] == "simple_cnn" and config["train"]["epochs"] == 2
    info = json.loads((smoke_run / "run_info.json").read_text())
    assert (info["train_images"], info["val_images"], info["test_images"]) == (160, 40, 100)
    assert info["steps_per_epoch"] == 5  # 160 images / batch 32


def test_checkpoint_holds_the_full_training_state(smoke_run: Path) -> None:
    state = torch.load(smoke_run / "checkpoints" / "last.pt", weights_only=True)
    for key in ["model", "optimizer", "scheduler", "scaler", "ema", "epoch", "rng", "config", "history"]:
        assert key in state, key
    assert state["epoch"] == 2 and state["global_step"] == 10 and len(state["history"]) == 2


def test_evaluation_is_consistent_with_its_confusion_matrix(smoke_run: Path) -> None:
    summary = json.loads((smoke_run / "evaluations" / "best-test" / "evaluation.json").read_text())
    rows = read_csv(smoke_run / "evaluations" / "best-test" / "confusion_matrix.csv")
    matrix = np.array([[int(v) for k, v in row.items() if k != "true\\predicted"] for row in rows])
    assert matrix.shape == (10, 10) and matrix.sum() == summary["num_images"] == 100
    assert np.isclose(summary["top1"], np.trace(matrix) / matrix.sum())
    assert [c["support"] for c in summary["per_class"]] == matrix.sum(axis=1).tolist()
    predictions = read_csv(smoke_run / "evaluations" / "best-test" / "predictions.csv")
    assert len(predictions) == 100
    assert np.isclose(np.mean([p["true"] == p["predicted"] for p in predictions]), summary["top1"])
    assert all(0.0 <= float(p["confidence"]) <= 1.0 for p in predictions)


def test_evaluate_keeps_one_evaluation_per_checkpoint_split_and_tta(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    trained = run / "evaluations" / "best-test"
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in trained.iterdir()}
    result = cli("evaluate", str(run), "--set", "eval.tta_flip=true", "--set", "data.eval_batch_size=7")
    assert result.exit_code == 0, result.output
    after = json.loads((run / "evaluations" / "best-test-tta_flip" / "evaluation.json").read_text())
    assert after["tta_flip"] is True and after["num_images"] == 100
    assert "top-1 accuracy" in result.output and f"wrote {run / 'evaluations' / 'best-test-tta_flip'}" in result.output

    result = cli("evaluate", str(run / "checkpoints" / "last.pt"), "--set", "eval.split=val")
    assert result.exit_code == 0, result.output
    val = json.loads((run / "evaluations" / "last-val" / "evaluation.json").read_text())
    assert val["split"] == "val" and val["num_images"] == 40
    # the scoring train made is still there, byte for byte
    assert {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in trained.iterdir()} == before
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["best-test", "best-test-tta_flip", "last-val"]


def test_evaluate_refuses_to_change_what_was_trained(smoke_run: Path) -> None:
    result = cli("evaluate", str(smoke_run), "--set", "model.name=resnet9")
    assert result.exit_code == 2
    assert "model.name" in result.output and "Traceback" not in result.output


def test_evaluate_missing_run_folder(tmp_path: Path) -> None:
    result = cli("evaluate", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "no such run folder" in result.output


def test_cifar100_evaluation_scores_superclasses(smoke_run_cifar100: Path) -> None:
    summary = json.loads((smoke_run_cifar100 / "evaluations" / "best-test" / "evaluation.json").read_text())
    assert len(summary["per_class"]) == 100
    coarse = np.array(summary["superclass"]["confusion_matrix"])
    assert coarse.shape == (20, 20) and coarse.sum() == summary["num_images"]
    assert summary["superclass"]["top1"] >= summary["top1"]  # a right fine class is a right superclass


def test_overfit_one_batch_reaches_full_training_accuracy(cifar10_data_root: Path, tmp_path: Path) -> None:
    run = train_smoke(
        cifar10_data_root, tmp_path, "--set", "train.overfit_batches=1", "--set", "train.epochs=40",
        "--set", "schedule.name=constant", "--set", "optim.lr=0.002", "--set", "run.tensorboard=false",
    )  # fmt: skip
    rows = read_csv(run / "metrics.csv")
    assert len(rows) == 40
    assert float(rows[-1]["train_accuracy"]) >= 0.99


def test_bf16_autocast_on_cpu_trains_and_run_info_says_why(cifar10_data_root: Path, tmp_path: Path) -> None:
    run = train_smoke(cifar10_data_root, tmp_path, "--set", "train.amp=bf16", "--set", "train.epochs=1",
                      "--set", "run.tensorboard=false")  # fmt: skip
    info = json.loads((run / "run_info.json").read_text())
    assert info["precision"] == "bf16 autocast on cpu"
    assert info["precision_reason"].startswith("train.amp=bf16: this CPU has")
    assert info["memory_format"] == "channels_last"
    assert np.isfinite(float(read_csv(run / "metrics.csv")[0]["train_loss"]))


def test_the_run_header_names_the_precision_and_memory_format(cifar10_data_root: Path, tmp_path: Path) -> None:
    result = cli("train", "-c", "smoke", "--set", f"data.root={cifar10_data_root}", "--set", f"run.root={tmp_path}",
                 "--set", "train.epochs=1", "--set", "train.overfit_batches=1", "--set", "run.tensorboard=false",
                 "--set", "train.channels_last=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "precision: fp32 on cpu (train.amp=off); memory format: contiguous (NCHW)" in result.output


def test_a_removed_setting_is_a_config_error_naming_its_replacement(tmp_path: Path) -> None:
    result = cli("train", "--set", "train.amp_on_cpu=true", "--print-config")
    assert result.exit_code == 2
    assert result.output.startswith("error: train.amp_on_cpu: removed: train.amp=auto") and "Traceback" not in result.output
    result = cli("train", "--set", "train.log_every_steps=5", "--print-config")
    assert result.exit_code == 2 and "train.sync_every_steps" in result.output and "train.tensorboard_every_steps" in result.output


def test_a_run_folder_from_before_the_removal_still_evaluates_and_resumes(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("train:\n", "train:\n  amp_on_cpu: false\n  log_every_steps: 20\n", 1))
    assert "amp_on_cpu" in config.read_text()
    assert cli("train", "--resume", str(run), "--quiet").exit_code == 0
    best = run / "checkpoints" / "best.pt"
    saved = load_checkpoint(best)
    saved["config"]["train"].update({"amp_on_cpu": False, "log_every_steps": 20})
    save_checkpoint(best, saved)
    result = cli("evaluate", str(run), "--quiet")
    assert result.exit_code == 0, result.output


def test_resume_refuses_extra_config(smoke_run: Path) -> None:
    result = cli("train", "--resume", str(smoke_run), "--set", "optim.lr=1")
    assert result.exit_code == 2 and "--resume" in result.output


def test_resume_of_a_finished_run_changes_nothing(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    result = cli("train", "--resume", str(run), "--quiet")
    assert result.exit_code == 0, result.output
    assert "is already complete (2 of 2 epochs)" in result.output
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["mlp", "resnet9"])
def test_other_models_train_one_step(cifar10_data_root: Path, tmp_path: Path, name: str) -> None:
    run = train_smoke(cifar10_data_root, tmp_path, "--set", f"model.name={name}", "--set", "train.epochs=1",
                      "--set", "train.overfit_batches=1", "--set", "run.tensorboard=false")  # fmt: skip
    assert json.loads((run / "evaluations" / "best-test" / "evaluation.json").read_text())["num_images"] == 100


@pytest.mark.slow
def test_torch_compile_path_trains(cifar10_data_root: Path, tmp_path: Path) -> None:
    """Opt-in (--run-slow): compiling takes about a minute on a CPU."""
    run = train_smoke(cifar10_data_root, tmp_path, "--set", "train.compile=true", "--set", "train.epochs=1",
                      "--set", "train.overfit_batches=2", "--set", "run.tensorboard=false")  # fmt: skip
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert not any(key.startswith("_orig_mod.") for key in state["model"])  # saved from the plain module
    assert np.isfinite(float(read_csv(run / "metrics.csv")[0]["train_loss"]))
