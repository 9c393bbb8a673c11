"""Text from archives and the user in every medium: rich, the terminal, matplotlib, HTML, CSV, Markdown.

One tiny data set whose class names are markup, mathtext, escape sequences, CSV and HTML
syntax is trained on, evaluated and reported, in a run folder whose path holds `[old]`.
Every command must succeed, show each name as written (escaped where the medium needs it)
and read its own files back.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarcli import escape
from cifarcli.cli import app
from cifarcli.config import DataConfig
from cifarcli.data.prepare import prepare_dataset
from cifarcli.fileio import write_csv
from conftest import TinyArchive, py2_pickle, write_tar_gz

HOSTILE_NAMES = [
    "[/]", r"$\frac$", "comma, name", 'quote"d', "esc\x1b[31mred", "new\nline",
    "<script>alert(1)</script>", "back\\slash", "[bold]loud", "pipe|name",
]  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, tiny_cifar10_archive: TinyArchive) -> tuple[Path, str]:
    """A smoke run trained on tiny CIFAR-10 with HOSTILE_NAMES as class names, under a `[old]` folder."""
    root = tmp_path_factory.mktemp("hostile")
    members = dict(tiny_cifar10_archive.members)
    members["cifar-10-batches-py/batches.meta"] = py2_pickle({b"label_names": [n.encode() for n in HOSTILE_NAMES]})
    archive = root / "hostile.tar.gz"
    md5 = write_tar_gz(archive, members, "cifar-10-batches-py")
    data_root = root / "data"
    prepare_dataset(DataConfig(root=data_root, source=str(archive), md5=md5))
    runs_root = root / "[old] runs"
    result = runner.invoke(app, ["train", "-c", "smoke", "--set", f"data.root={data_root}", "--set", f"run.root={runs_root}"])
    assert result.exit_code == 0, result.output
    (run_dir,) = runs_root.iterdir()
    return run_dir, result.output


def test_training_shows_paths_as_written_and_no_escape_sequence(hostile_run: tuple[Path, str]) -> None:
    run_dir, output = hostile_run
    assert f"run folder: {run_dir}" in output  # `[old]` is not swallowed as markup
    assert "\x1b" not in output


def test_the_confusion_matrix_csv_round_trips_every_name(hostile_run: tuple[Path, str]) -> None:
    run_dir, _ = hostile_run
    with (run_dir / "evaluations" / "best-test" / "confusion_matrix.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == HOSTILE_NAMES
    assert [row[0] for row in rows[1:]] == HOSTILE_NAMES


def test_predictions_csv_names_every_class_as_written(hostile_run: tuple[Path, str]) -> None:
    run_dir, _ = hostile_run
    with (run_dir / "evaluations" / "best-test" / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["true_class"] == HOSTILE_NAMES[int(row["true"])] for row in rows)
    assert all(row["predicted_class"] == HOSTILE_NAMES[int(row["predicted"])] for row in rows)


def test_evaluate_prints_each_name_escaped_for_the_terminal(hostile_run: tuple[Path, str]) -> None:
    run_dir, _ = hostile_run
    result = runner.invoke(app, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    for name in ("[/]", r"$\frac$", "esc\\x1b[31mred", "new\\nline", "[bold]loud"):
        assert name in result.output, name


def test_report_succeeds_and_escapes_names_in_html_and_markdown(hostile_run: tuple[Path, str]) -> None:
    run_dir, _ = hostile_run
    result = runner.invoke(app, ["report", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    page = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page and html.escape("<script>alert(1)</script>") in page
    markdown = (run_dir / "report" / "classification_report.md").read_text(encoding="utf-8")
    assert "pipe\\|name" in markdown and "&lt;script&gt;" in markdown and "new\\nline" in markdown
    with (run_dir / "report" / "classification_report.csv").open(newline="", encoding="utf-8") as handle:
        names = [row["class"] for row in csv.DictReader(handle)]
    assert names[: len(HOSTILE_NAMES)] == HOSTILE_NAMES
    assert runner.invoke(app, ["report", str(run_dir), "--quiet"]).exit_code == 0  # and again, from its own files


def test_visualize_filters_draws_hostile_names(hostile_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = hostile_run
    result = runner.invoke(app, ["visualize-filters", str(run_dir), "--out", str(tmp_path / "[v]"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "[v]" / "gradcam.png").stat().st_size > 1000


# --------------------------------------------------------------------------- the helpers, one per medium


@pytest.mark.parametrize(
    "text, shown", [("a\x1b[2Jb", "a\\x1b[2Jb"), ("two\nlines", "two\\nlines"), ("lone \ud800", "lone \\ud800"), ("[ok]", "[ok]")]
)
def test_terminal_escapes_every_control_character(text: str, shown: str) -> None:
    assert escape.terminal(text) == shown


def test_plot_keeps_newlines_and_rich_markup_escapes_brackets() -> None:
    assert escape.plot("a\nb\x07") == "a\nb\\x07"
    assert escape.rich_markup("[/]") == "\\[/]"


def test_value_cuts_long_values_and_survives_huge_ints() -> None:
    assert escape.value("x" * 1000).endswith("... (1002 characters)")
    assert escape.value(10**5000) == "<int>"


def test_write_csv_quotes_commas_quotes_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, ["name", "value"], [[name, 0.25] for name in HOSTILE_NAMES])
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows == [["name", "value"], *([name, "0.25"] for name in HOSTILE_NAMES)]


def test_an_evaluation_summary_keeps_names_exactly(hostile_run: tuple[Path, str]) -> None:
    run_dir, _ = hostile_run
    summary = json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text(encoding="utf-8"))
    assert summary["class_names"] == HOSTILE_NAMES
