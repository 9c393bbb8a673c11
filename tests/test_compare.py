"""`cifar compare` on two smoke runs (CIFAR-10 and CIFAR-100), and its errors."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.commands.comparison import load_runs


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_compare_two_runs_writes_figures_tables_and_page(smoke_run: Path, smoke_run_cifar100: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", str(smoke_run), str(smoke_run_cifar100), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "cmp"
    for name in ("curves.png", "lr_schedules.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 20_000, name
    metrics = read_csv(out / "metrics.csv")
    assert metrics[0][:4] == ["run", "model", "dataset", "epochs"] and [row[2] for row in metrics[1:]] == ["cifar10", "cifar100"]
    assert all(0.0 <= float(row[metrics[0].index("test_accuracy")]) <= 1.0 for row in metrics[1:])
    diff = {row[0]: row[1:] for row in read_csv(out / "config_diff.csv")[1:]}
    assert sorted(diff) == ["data.dataset", "data.root"]  # run.name differs too, but every run's does: not listed
    assert diff["data.dataset"] == ["cifar10", "cifar100"]
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and smoke_run.name in page and "data.dataset" in page
    assert "headline metrics" in result.output and "data.dataset" in result.output and f"wrote {out / 'index.html'}" in result.output


def test_compare_reads_each_runs_own_numbers(smoke_run: Path, smoke_run_cifar100: Path) -> None:
    first, second = load_runs([smoke_run, smoke_run_cifar100, smoke_run])  # a run named twice counts once
    assert (first.path, second.path) == (smoke_run.resolve(), smoke_run_cifar100.resolve())
    assert list(first.metrics["epoch"]) == [1.0, 2.0] and first.steps_per_epoch == 5 and first.evaluation["split"] == "test"


def test_compare_needs_two_real_run_folders(smoke_run: Path, tmp_path: Path) -> None:
    for args, fragment in (([str(smoke_run)], "at least two runs"), ([str(smoke_run), str(tmp_path / "nope")], "no such run folder"),
                           ([str(smoke_run), str(tmp_path)], "not a run folder")):  # fmt: skip
        result = CliRunner().invoke(app, ["compare", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output, result.output
