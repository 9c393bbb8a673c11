"""`cifar lr-find` end to end on the smoke setup, and `cifar train --lr-from` reading its result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.fileio import read_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lr_find_args(data_root: Path, runs_root: Path, *extra: str) -> list[str]:
    return ["lr-find", "-c", "smoke", "--quiet", "--set", f"data.root={data_root}", "--set", f"run.root={runs_root}",
            "--set", "lr_find.num_iter=20", *extra]  # fmt: skip


def run_lr_find(data_root: Path, runs_root: Path, *extra: str, exit_code: int = 0) -> tuple[Path, str]:
    result = CliRunner().invoke(app, lr_find_args(data_root, runs_root, *extra))
    assert result.exit_code == exit_code, result.output
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir, result.output


@pytest.fixture(scope="module")
def exp_run(tmp_path_factory: pytest.TempPathFactory, cifar10_data_root: Path) -> tuple[Path, str]:
    """An exponential sweep 1e-5 -> 1 with the smoke model (adam)."""
    runs_root = tmp_path_factory.mktemp("lr-find-exp")
    return run_lr_find(cifar10_data_root, runs_root, "--set", "lr_find.start_lr=1e-5", "--set", "lr_find.end_lr=1")


def test_exp_sweep_writes_agreeing_csv_json_png_and_config(exp_run: tuple[Path, str]) -> None:
    run_dir, output = exp_run
    assert run_dir.name.endswith("-smoke-lr-find")
    rows = read_csv(run_dir / "lr_find.csv")
    summary = json.loads((run_dir / "lr_find.json").read_text())
    assert list(rows[0]) == ["lr", "loss", "smoothed_loss"]
    assert len(rows) == summary["steps"] and 5 <= summary["steps"] <= 20
    lrs = np.array([float(r["lr"]) for r in rows])
    assert lrs[0] == pytest.approx(1e-5)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1 / 1e-5) ** (1 / 19), rtol=1e-6)  # geometric
    chosen = summary["chosen"]
    assert chosen["name"] == "valley"
    assert chosen["lr"] == summary["suggestions"]["valley"]["lr"]
    assert 1e-5 <= chosen["lr"] <= 1.0
    assert lrs[summary["suggestions"]["valley"]["step"]] == pytest.approx(chosen["lr"])
    assert set(summary["suggestions"]) == {"steepest", "min_div10", "valley"}
    assert summary["stop_reason"] == "reached end_lr" or summary["stop_reason"].startswith(("loss diverged", "loss became"))
    assert summary["stopped_early"] == (summary["steps"] < 20)
    assert summary["config"]["lr_find"]["num_iter"] == 20 and summary["config"]["optim"]["name"] == "adam"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["lr_find"]["start_lr"] == 1e-5
    assert (run_dir / "lr_find.png").read_bytes().startswith(PNG_SIGNATURE)
    for name in ("config.yaml", "lr_find.csv", "lr_find.json", "lr_find.png"):
        assert f"wrote {run_dir / name}" in output
    assert f"--lr-from {run_dir / 'lr_find.json'}" in output
    assert f"stopped after {summary['steps']} of 20 steps: {summary['stop_reason']}" in output


def test_linear_sweep_has_constant_steps(cifar10_data_root: Path, tmp_path: Path) -> None:
    run_dir, _ = run_lr_find(
        cifar10_data_root, tmp_path, "--set", "lr_find.mode=linear", "--set", "lr_find.start_lr=1e-4",
        "--set", "lr_find.end_lr=0.01", "--set", "lr_find.suggestion=min_div10", "--set", "lr_find.num_iter=12",
    )  # fmt: skip
    rows = read_csv(run_dir / "lr_find.csv")
    lrs = np.array([float(r["lr"]) for r in rows])
    assert lrs[0] == pytest.approx(1e-4) and len(lrs) >= 5
    np.testing.assert_allclose(np.diff(lrs), (0.01 - 1e-4) / 11, rtol=1e-6)
    assert json.loads((run_dir / "lr_find.json").read_text())["chosen"]["name"] == "min_div10"


def test_sgd_to_a_huge_lr_diverges_early(cifar10_data_root: Path, tmp_path: Path) -> None:
    run_dir, output = run_lr_find(
        cifar10_data_root, tmp_path, "--set", "optim.name=sgd", "--set", "lr_find.start_lr=0.1",
        "--set", "lr_find.end_lr=1e3", "--set", "lr_find.smoothing=0.5",
    )  # fmt: skip
    summary = json.loads((run_dir / "lr_find.json").read_text())
    assert summary["stopped_early"] and summary["steps"] < 20
    assert summary["stop_reason"].startswith(("loss diverged (smoothed loss > 5x best) at lr ", "loss became nan at lr ", "loss became inf at lr "))
    assert summary["stop_reason"] in output
    assert len(read_csv(run_dir / "lr_find.csv")) == summary["steps"]


def test_a_curve_too_short_for_a_suggestion_is_a_clear_error(cifar10_data_root: Path, tmp_path: Path) -> None:
    run_dir, output = run_lr_find(
        cifar10_data_root, tmp_path, "--set", "optim.name=sgd", "--set", "lr_find.start_lr=1e4",
        "--set", "lr_find.end_lr=1e6", "--set", "lr_find.smoothing=0", exit_code=1,
    )  # fmt: skip
    summary = json.loads((run_dir / "lr_find.json").read_text())
    assert summary["chosen"] is None and summary["steps"] < 5
    assert "error: lr-find: no 'valley' suggestion: only" in output
    assert (run_dir / "lr_find.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_sweep_over_too_narrow_a_range_warns_what_to_change(cifar10_data_root: Path, tmp_path: Path) -> None:
    args = lr_find_args(cifar10_data_root, tmp_path, "--set", "lr_find.start_lr=1e-9", "--set", "lr_find.end_lr=2e-9")
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1), result.output  # 1 when the flat curve gives no suggestion at all
    assert "warning: the smoothed loss barely moved over the sweep" in result.output and "lr_find.end_lr" in result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "lr_find.json").read_text())
    assert len(summary["warnings"]) == 1 and "barely moved" in summary["warnings"][0]
    assert summary["burn_in_steps"] == 2  # 10% of 20 steps


def test_print_config_prints_and_creates_no_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lr-find", "-c", "smoke", "--set", f"run.root={tmp_path}", "--print-config"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["lr_find"]["suggestion"] == "valley"
    assert list(tmp_path.iterdir()) == []


def test_lr_find_is_listed_in_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "lr-find" in result.output and "cifar lr-find" in result.output


# --------------------------------------------------------------------------- train --lr-from


@pytest.fixture(scope="module")
def lr_from_run(exp_run: tuple[Path, str], cifar10_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch smoke run whose optim.lr came from `exp_run` (--lr-from)."""
    runs_root = tmp_path_factory.mktemp("lr-from-runs")
    args = ["train", "-c", "smoke", "--quiet", "--set", f"data.root={cifar10_data_root}", "--set", f"run.root={runs_root}",
            "--set", "train.epochs=1", "--set", "run.tensorboard=false", "--lr-from", str(exp_run[0] / "lr_find.json")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir


def test_train_lr_from_sets_the_peak_lr_and_records_its_source(exp_run: tuple[Path, str], lr_from_run: Path) -> None:
    json_path = exp_run[0] / "lr_find.json"
    chosen = json.loads(json_path.read_text())["chosen"]
    saved = yaml.safe_load((lr_from_run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == chosen["lr"]
    assert saved["lr_source"] == f"{json_path}#valley"


def test_lr_from_takes_the_lr_find_folder_and_says_what_it_set(exp_run: tuple[Path, str], cifar10_data_root: Path) -> None:
    run_dir = exp_run[0]
    chosen = json.loads((run_dir / "lr_find.json").read_text())["chosen"]
    result = CliRunner().invoke(app, ["train", "-c", "smoke", "--set", f"data.root={cifar10_data_root}",
                                      "--lr-from", str(run_dir), "--print-config"])  # fmt: skip
    assert result.exit_code == 0, result.output
    mantissa, exponent = f"{chosen['lr']:.2e}".split("e")
    shown = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    assert f"optim.lr = {shown} ({chosen['name']}, from {run_dir / 'lr_find.json'})" in result.output
    assert f"optim.lr = {shown}" in result.stderr
    assert yaml.safe_load(result.stdout)["optim"]["lr"] == chosen["lr"]


def test_report_of_an_lr_from_run_shows_the_lr_find_and_visualize_figures(
    exp_run: tuple[Path, str], lr_from_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / lr_from_run.name
    shutil.copytree(lr_from_run, run_dir)
    (run_dir / "visualize").mkdir()
    shutil.copy(exp_run[0] / "lr_find.png", run_dir / "visualize" / "filters.png")  # any PNG stands in for the filters
    (run_dir / "visualize" / "gradcam.png").write_text("not a png")  # left out, not embedded
    result = CliRunner().invoke(app, ["report", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    report_dir = run_dir / "report"
    assert (report_dir / "lr_find.png").read_bytes() == (exp_run[0] / "lr_find.png").read_bytes()
    assert (report_dir / "filters.png").is_file() and not (report_dir / "gradcam.png").exists()
    page = (report_dir / "index.html").read_text()
    assert "<h2>LR range test</h2>" in page and "<h2>First-layer filters</h2>" in page and "Grad-CAM" not in page
    assert "is the valley suggestion of this LR range test" in page
    assert page.count("data:image/png;base64,") == 8  # the report's six figures, lr_find.png and filters.png


def test_train_lr_from_with_print_config_shows_the_new_lr(exp_run: tuple[Path, str], tmp_path: Path) -> None:
    json_path = exp_run[0] / "lr_find.json"
    chosen = json.loads(json_path.read_text())["chosen"]
    result = CliRunner().invoke(
        app, ["train", "-c", "smoke", "--set", f"run.root={tmp_path}", "--lr-from", str(json_path), "--print-config"]
    )
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)  # the line saying which LR was set goes to stderr
    assert printed["optim"]["lr"] == chosen["lr"] and printed["lr_source"] == f"{json_path}#valley"
    assert list(tmp_path.iterdir()) == []


def test_lr_from_notes_a_different_setup(exp_run: tuple[Path, str], tmp_path: Path) -> None:
    json_path = exp_run[0] / "lr_find.json"
    args = ["train", "-c", "smoke", "--set", "optim.name=sgd", "--lr-from", str(json_path), "--print-config"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "was found with another setup (optim.name 'adam' there, 'sgd' here)" in result.output


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("{not json", "not a readable JSON file"),
        ('{"chosen": null, "suggestions": {}}', "holds no chosen LR suggestion"),
        ('{"chosen": {"name": "valley", "lr": -1}}', "holds no chosen LR suggestion"),
        ("[1, 2]", "holds no chosen LR suggestion"),
    ],
)
def test_a_bad_lr_from_file_is_a_one_line_usage_error(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "lr_find.json"
    if content is not None:
        path.write_text(content)
    runs_root = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", "-c", "smoke", "--set", f"run.root={runs_root}", "--lr-from", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --lr-from {path}: {problem}\n")
    assert not runs_root.exists()


def test_lr_from_with_resume_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lr_find.json"
    path.write_text('{"chosen": {"name": "valley", "lr": 0.01}}')
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--lr-from", str(path)])
    assert result.exit_code == 2, result.output
    assert "error: --resume continues a run with its own config" in result.output and "--lr-from" in result.output


def test_lr_from_notes_a_different_logit_scale(exp_run: tuple[Path, str]) -> None:
    json_path = exp_run[0] / "lr_find.json"  # found with smoke's logits as built
    args = ["train", "-c", "smoke", "--set", "model.logit_scale=0.125", "--lr-from", str(json_path), "--print-config"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "model.logit_scale 1.0 there, 0.125 here" in result.output
