"""Your own images end to end: `cifar prepare`, then train, evaluate, report, lr-find and visualize-filters on them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.fileio import read_csv
from conftest import CIFAR10_CLASS_NAMES
from custom_data import CLASS_NAMES, CORRUPT_FILE, FolderExpectation, build_image_folder, write_npz_pair
from run_fixtures import train_smoke

runner = CliRunner()
FAST = ["--set", "train.epochs=1", "--set", "run.tensorboard=false"]


@dataclass(frozen=True)
class OwnRun:
    data_root: Path
    sets: list[str]        # the --set options naming the data set
    prepare_output: object  # the CliRunner result of `cifar prepare`
    run_dir: Path


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[OwnRun, FolderExpectation]:
    base = tmp_path_factory.mktemp("own-folder")
    expected = build_image_folder(base / "pets")
    sets = ["--set", "data.image_size=16"]
    prepared = runner.invoke(app, ["prepare", "--dataset", "folder", "--path", str(expected.root), *sets,
                                   "--set", f"data.root={base / 'data'}"])
    sets += ["--set", "data.dataset=folder", "--set", f"data.path={expected.root}"]
    run_dir = train_smoke(base / "data", base / "runs", *sets, *FAST)
    return OwnRun(base / "data", sets, prepared, run_dir), expected


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory: pytest.TempPathFactory) -> OwnRun:
    base = tmp_path_factory.mktemp("own-npz")
    train, test = write_npz_pair(base / "arrays", side=20)
    sets = ["--set", "data.dataset=npz", "--set", f"data.path={train}", "--set", f"data.test_path={test}",
            "--set", "data.image_size=20"]
    prepared = runner.invoke(app, ["prepare", *sets, "--set", f"data.root={base / 'data'}"])
    model = ["--set", "model.name=mlp", "--set", "model.hidden_sizes=[32, 16]", "--set", "model.dropout=0.3"]
    run_dir = train_smoke(base / "data", base / "runs", *sets, *model, *FAST)
    return OwnRun(base / "data", sets, prepared, run_dir)


def test_prepare_lists_the_classes_and_the_unreadable_file(folder_run) -> None:
    run, expected = folder_run
    result = run.prepare_output
    assert result.exit_code == 0, result.output
    assert "folder: converted from data.path" in result.stdout
    assert re.search(r"cache:  .*folder-pets-[0-9a-f]{12} \(23 train, 6 test images, 16x16 RGB\)", result.stdout)
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in ([n] for n in CLASS_NAMES)]
    assert rows == [[name, str(train), str(test)] for name, train, test in
                    zip(CLASS_NAMES, expected.train_counts, expected.test_counts)]
    assert "skipped 1 unreadable file:" in result.stderr and f"  {CORRUPT_FILE}: " in result.stderr
    again = runner.invoke(app, ["prepare", "--dataset", "folder", "--path", str(expected.root), "--set", "data.image_size=16",
                                "--set", f"data.root={run.data_root}"])
    assert again.exit_code == 0 and "folder: already present and verified" in again.stdout
    assert f"skipped when converted: {CORRUPT_FILE}: " in again.stdout


def test_training_on_the_folder_records_its_classes(folder_run) -> None:
    run, expected = folder_run
    info = json.loads((run.run_dir / "run_info.json").read_text())
    assert info["dataset"] == "folder" and info["class_names"] == CLASS_NAMES and info["image_size"] == 16
    assert info["test_images"] == sum(expected.test_counts)
    assert info["train_images"] + info["val_images"] == sum(expected.train_counts)
    manifest = json.loads(next(run.data_root.glob("folder-pets-*/manifest.json")).read_text())
    assert info["normalization"] == {"mean": manifest["mean"], "std": manifest["std"]}


def test_evaluate_report_and_visualize_the_folder_run(folder_run) -> None:
    run, expected = folder_run
    evaluated = runner.invoke(app, ["evaluate", str(run.run_dir), "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((run.run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())
    assert summary["class_names"] == CLASS_NAMES and summary["num_images"] == sum(expected.test_counts)
    assert [row["true\\predicted"] for row in read_csv(run.run_dir / "evaluations" / "best-test" / "confusion_matrix.csv")] == CLASS_NAMES
    reported = runner.invoke(app, ["report", str(run.run_dir), "--quiet"])
    assert reported.exit_code == 0, reported.output
    page = (run.run_dir / "report" / "index.html").read_text()
    assert all(name in page for name in CLASS_NAMES)
    assert (run.run_dir / "report" / "misclassified.png").stat().st_size > 0
    shown = runner.invoke(app, ["visualize-filters", str(run.run_dir), "--quiet"])
    assert shown.exit_code == 0, shown.output
    assert (run.run_dir / "visualize" / "gradcam.png").is_file()


def test_lr_find_runs_on_the_folder(folder_run, tmp_path: Path) -> None:
    run, _ = folder_run
    result = runner.invoke(app, ["lr-find", "-c", "smoke", "--quiet", *run.sets, "--set", f"data.root={run.data_root}",
                                 "--set", f"run.root={tmp_path}", "--set", "lr_find.num_iter=5"])
    assert result.exit_code == 0, result.output
    (found,) = tmp_path.glob("*-lr-find/lr_find.json")
    summary = json.loads(found.read_text())
    assert summary["steps"] == 5 and summary["config"]["data"]["dataset"] == "folder"


def test_the_npz_data_set_trains_evaluates_and_reports(npz_run: OwnRun) -> None:
    assert npz_run.prepare_output.exit_code == 0, npz_run.prepare_output.output
    assert "npz: converted from data.path" in npz_run.prepare_output.stdout
    info = json.loads((npz_run.run_dir / "run_info.json").read_text())
    assert info["class_names"] == CLASS_NAMES and info["test_images"] == 9 and info["image_size"] == 20
    assert runner.invoke(app, ["evaluate", str(npz_run.run_dir), "--quiet"]).exit_code == 0
    assert json.loads((npz_run.run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())["num_images"] == 9
    reported = runner.invoke(app, ["report", str(npz_run.run_dir), "--quiet"])
    assert reported.exit_code == 0, reported.output
    assert (npz_run.run_dir / "report" / "index.html").is_file()


def test_the_npz_run_trained_the_configured_mlp(npz_run: OwnRun) -> None:
    import torch

    state = torch.load(npz_run.run_dir / "checkpoints" / "best.pt", weights_only=True)
    widths = [tuple(v.shape) for k, v in state["model"].items() if k.endswith("weight")]
    assert widths == [(32, 3 * 20 * 20), (16, 32), (3, 16)]  # hidden_sizes [32, 16] on 20x20 images, 3 classes
    assert state["config"]["model"]["dropout"] == 0.3


def test_download_refuses_your_own_data_with_the_way_forward(npz_run: OwnRun) -> None:
    result = runner.invoke(app, ["download", *npz_run.sets])
    assert result.exit_code == 2
    assert "error: cifar download fetches CIFAR-10/100" in result.stderr and "cifar prepare" in result.stderr


def test_prepare_lists_cifar_classes_too(cifar10_data_root: Path) -> None:
    result = runner.invoke(app, ["prepare", "--set", f"data.root={cifar10_data_root}"])
    assert result.exit_code == 0, result.output
    assert "cifar10: already present and verified" in result.stdout and "32x32 RGB" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()[3:]]
    assert rows[0] == ["class", "train", "test"]
    assert rows[1:] == [[name, "20", "10"] for name in CIFAR10_CLASS_NAMES]
