"""`cifar sweep` end to end on the tiny fixture data: real trainings of the smoke recipe, one epoch each."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarcli.cli import app
from run_fixtures import copy_run

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def fast(data_root: Path, epochs: int = 1) -> list[str]:
    """The smoke recipe on one fixed batch per epoch, without TensorBoard: a trial takes about a second."""
    return ["-c", "smoke", "--set", f"data.root={data_root}", "--set", f"train.epochs={epochs}", "--set", "run.tensorboard=false",
            "--set", "train.overfit_batches=1"]  # fmt: skip


def sweep_cli(*args: object):
    return CliRunner().invoke(app, ["sweep", *map(str, args)])


def only_sweep_folder(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def read_summary(folder: Path) -> list[dict[str, str]]:
    with (folder / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def trial_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory, cifar10_data_root: Path) -> tuple[Path, str]:
    """A finished 2 x 2 grid over optim.lr and data.batch_size, and the command's output."""
    root = tmp_path_factory.mktemp("sweeps")
    result = sweep_cli(*fast(cifar10_data_root), "--grid", "optim.lr=0.001,0.003", "--grid", "data.batch_size=16,32",
                       "--root", root, "--prune")  # fmt: skip
    assert result.exit_code == 0, result.output
    return only_sweep_folder(root), result.output


def test_a_grid_sweep_writes_its_summary_heatmap_and_page(grid_sweep: tuple[Path, str]) -> None:
    folder, output = grid_sweep
    assert folder.name.endswith("-smoke-grid") and (folder / "study.db").is_file()
    rows = read_summary(folder)
    assert list(rows[0])[:3] == ["trial", "optim.lr", "data.batch_size"]
    assert sorted((float(r["optim.lr"]), int(r["data.batch_size"])) for r in rows) == [(0.001, 16), (0.001, 32), (0.003, 16), (0.003, 32)]
    for row in rows:
        assert row["state"] in ("complete", "pruned") and row["epochs"] == "1" and row["error"] == ""
        assert 0.0 <= float(row["best_val_accuracy"]) <= 1.0 and float(row["seconds"]) > 0
        assert row["best_val_accuracy"] == row["final_val_accuracy"]  # one epoch
    complete = [r for r in rows if r["state"] == "complete"]
    assert complete and all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in complete)
    for name in ("heatmap_lr_batch_size.png", "val_curves.png"):
        assert (folder / name).read_bytes()[:8] == PNG, name
    page = (folder / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "optim.lr x data.batch_size" in page
    assert all(r["trial"] in page for r in rows) and "best validation accuracy" in page
    assert "[4/4]" in output and "best trial:" in output and f"wrote {folder / 'index.html'}" in output
    best = max(complete, key=lambda r: float(r["best_val_accuracy"]))
    assert f"best trial: {best['trial']}" in output
    saved = json.loads((folder / "sweep.json").read_text())
    assert saved["sweep"]["grid"] == {"optim.lr": [0.001, 0.003], "data.batch_size": [16, 32]} and saved["storage"] is None


def test_every_trial_is_a_normal_run_folder(grid_sweep: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = grid_sweep
    trials = trial_folders(folder)
    assert len(trials) == 4
    for trial in trials:
        config = (trial / "config.yaml").read_text()
        assert f"name: {trial.name}" in config and (trial / "metrics.csv").is_file() and (trial / "checkpoints" / "last.pt").is_file()
    run = copy_run(trials[0], tmp_path)
    for command in (["evaluate", str(run), "--quiet"], ["report", str(run), "--quiet"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
    assert (run / "report" / "index.html").is_file()


def test_compare_a_sweep_folder_and_two_runs(grid_sweep: tuple[Path, str], smoke_run: Path, tmp_path: Path) -> None:
    folder, _ = grid_sweep
    result = CliRunner().invoke(app, ["compare", str(folder), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "cmp" / "config_diff.csv").open(newline="") as handle:
        diff = list(csv.reader(handle))
    assert [row[0] for row in diff[1:]] == ["data.batch_size", "optim.lr"] and len(diff[0]) == 5
    with (tmp_path / "cmp" / "metrics.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    result = CliRunner().invoke(app, ["compare", str(smoke_run), str(trial_folders(folder)[0]), "--out", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "two" / "config_diff.csv").open(newline="") as handle:
        keys = [row[0] for row in list(csv.reader(handle))[1:]]
    assert "train.epochs" in keys and "run.tensorboard" in keys and "run.name" not in keys


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(cifar10_data_root: Path, tmp_path: Path) -> None:
    variants = tmp_path / "variants.yaml"
    variants.write_text("variants:\n  explode:\n    optim.name: sgd\n    optim.lr: 1.0e+30\n    train.overfit_batches: 2\n  fine: {}\n")
    result = sweep_cli(*fast(cifar10_data_root), "--variants", variants, "--root", tmp_path / "sweeps")
    assert result.exit_code == 0, result.output
    folder = only_sweep_folder(tmp_path / "sweeps")
    rows = {r["variant"]: r for r in read_summary(folder)}
    assert rows["explode"]["state"] == "failed" and "loss became nan" in rows["explode"]["error"]
    assert rows["explode"]["optim.name"] == "sgd" and rows["fine"]["optim.name"] == "adam"  # settings as each trial ran
    assert rows["fine"]["state"] == "complete" and rows["fine"]["test_accuracy"] != ""
    assert (folder / "trials.png").read_bytes()[:8] == PNG
    assert "failed (loss became nan" in result.output and "[2/2]" in result.output


def test_a_search_runs_its_trials_with_a_seeded_sampler(cifar10_data_root: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  optim.lr: {type: log_uniform, low: 1.0e-4, high: 1.0e-2}\n"
                     "  data.batch_size: {type: int, low: 16, high: 48, step: 16}\n")  # fmt: skip
    result = sweep_cli(*fast(cifar10_data_root), "--space", space, "--trials", 3, "--seed", 5, "--root", tmp_path / "sweeps")
    assert result.exit_code == 0, result.output
    folder = only_sweep_folder(tmp_path / "sweeps")
    rows = read_summary(folder)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"complete"}
    assert all(1e-4 <= float(r["optim.lr"]) <= 1e-2 and int(r["data.batch_size"]) in (16, 32, 48) for r in rows)
    assert json.loads((folder / "sweep.json").read_text())["sweep"]["seed"] == 5
    assert len(trial_folders(folder)) == 3 and (folder / "trials.png").is_file()


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


def test_resume_continues_where_the_sweep_stopped_and_never_repeats_a_finished_trial(cifar10_data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "sweeps"
    command = [sys.executable, "-m", "cifarcli", "sweep", *fast(cifar10_data_root, epochs=2),
               "--grid", "optim.lr=0.001,0.002,0.003", "--root", str(root)]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while sum(1 for p in root.glob("*/*/metrics.csv")) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first trial is done and the second has finished an epoch
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    folder = only_sweep_folder(root)
    assert f"cifar sweep --resume {folder}" in stderr
    finished = {r["trial"]: (folder / r["trial"] / "metrics.csv").read_bytes() for r in read_summary(folder) if r["state"] == "complete"}
    assert finished  # at least the first trial

    result = sweep_cli("--resume", folder)
    assert result.exit_code == 0, result.output
    rows = read_summary(folder)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"complete"} and len(trial_folders(folder)) == 3
    assert sorted(float(r["optim.lr"]) for r in rows) == [0.001, 0.002, 0.003]
    for name, metrics in finished.items():
        assert (folder / name / "metrics.csv").read_bytes() == metrics, f"{name} was trained again"
        assert f"trial {name}:" not in result.output
    assert all(r["epochs"] == "2" for r in rows)


def test_two_processes_on_one_sqlite_study_finish_a_grid_without_running_a_trial_twice(cifar10_data_root: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    command = [sys.executable, "-m", "cifarcli", "sweep", *fast(cifar10_data_root), "--grid", "optim.lr=0.001,0.002,0.003",
               "--storage", storage, "--name", "shared", "--root", str(tmp_path / "sweeps")]  # fmt: skip
    processes = [subprocess.Popen(command, cwd=tmp_path, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    folder = only_sweep_folder(tmp_path / "sweeps")  # both worked in the folder the first one made
    rows = read_summary(folder)
    assert sorted(float(r["optim.lr"]) for r in rows) == [0.001, 0.002, 0.003] and {r["state"] for r in rows} == {"complete"}
    assert len(trial_folders(folder)) == 3
    started = [line for _, err in outputs for line in err.splitlines() if line.startswith("trial ")]
    assert len(started) == 3, outputs  # each trial started once, in one of the two processes
    assert json.loads((folder / "sweep.json").read_text())["storage"] == storage


def test_a_pruned_trial_stops_after_its_epoch_with_its_checkpoints_kept(cifar10_data_root: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from cifarcli.commands.sweeping import run_trial
    from cifarcli.config import load_config
    from cifarcli.sweeps.trials import TrialPruned, TrialTask

    class PruneAtOnce:
        def __init__(self) -> None:
            self.reported: list[tuple[int, float]] = []

        def report(self, epoch: int, val_accuracy: float) -> None:
            self.reported.append((epoch, val_accuracy))
            raise TrialPruned(f"pruned after epoch {epoch}")

    base = load_config(Path("smoke"), ["train.epochs=3", "train.overfit_batches=1", "run.tensorboard=false", f"data.root={cifar10_data_root}"])
    folder = tmp_path / "sweep" / "000_lr-0.003"
    folder.mkdir(parents=True)
    reporter = PruneAtOnce()
    with pytest.raises(TrialPruned):
        run_trial(base, TrialTask(0, folder.name, {"optim.lr": 0.003}, folder, resume=False), reporter, Console(quiet=True), False)
    assert [epoch for epoch, _ in reporter.reported] == [1] and 0.0 <= reporter.reported[0][1] <= 1.0
    assert (folder / "checkpoints" / "last.pt").is_file() and (folder / "checkpoints" / "best.pt").is_file()
    assert len((folder / "metrics.csv").read_text().splitlines()) == 2  # header + the one epoch it trained
    assert not (folder / "evaluations" / "best-test" / "evaluation.json").exists()  # pruned before scoring
    assert "name: 000_lr-0.003" in (folder / "config.yaml").read_text() and "lr: 0.003" in (folder / "config.yaml").read_text()
