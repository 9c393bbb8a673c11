"""`cifar report` end to end on real smoke runs, and the report's tables and image picks."""

from __future__ import annotations

import base64
import csv
import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.config import load_config
from cifarcli.data.prepare import load_dataset
from cifarcli.data.split import stratified_split
from cifarcli.errors import DamagedFileError
from cifarcli.report_tables import (
    MACRO_ROW,
    WEIGHTED_ROW,
    classification_report,
    confused_pairs,
    markdown_table,
    read_confusion_matrix,
    read_predictions,
    sample_per_class,
    select_misclassified,
)
from run_fixtures import copy_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ["confusion_matrix.png", "misclassified.png", "curves.png", "lr_schedule.png", "augmentations.png", "class_accuracy.png"]
TABLES = ["classification_report.csv", "classification_report.md", "most_confused.csv", "index.html"]


def run_report(run_dir: Path, *extra: str):
    return CliRunner().invoke(app, ["report", str(run_dir), "--quiet", *extra])


def assert_png(path: Path, min_side_px: int = 200) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, f"{path} is suspiciously small ({len(data)} bytes)"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert min(pixels.shape[:2]) >= min_side_px
    assert float(pixels[..., :3].std()) > 0.01, f"{path} is blank"
    return pixels


@dataclass(frozen=True)
class Reported:
    run_dir: Path
    output: str
    predictions_before: np.ndarray  # predictions.csv as it was before the report ran


@pytest.fixture(scope="module")
def reported_run(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """The smoke run reported once, after its predictions.csv was deleted (so the report re-scores it)."""
    run_dir = copy_run(smoke_run, tmp_path_factory.mktemp("report-10"))
    original = read_predictions(run_dir / "evaluations" / "best-test" / "predictions.csv")
    (run_dir / "evaluations" / "best-test" / "predictions.csv").unlink()
    result = run_report(run_dir)
    assert result.exit_code == 0, result.output
    return Reported(run_dir, result.output, original)


@pytest.fixture(scope="module")
def reported_run_cifar100(smoke_run_cifar100: Path, tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """The CIFAR-100 smoke run reported once, reusing the evaluation its training wrote."""
    run_dir = copy_run(smoke_run_cifar100, tmp_path_factory.mktemp("report-100"))
    before = read_predictions(run_dir / "evaluations" / "best-test" / "predictions.csv")
    result = run_report(run_dir)
    assert result.exit_code == 0, result.output
    return Reported(run_dir, result.output, before)


# --------------------------------------------------------------------------- end to end


def test_report_writes_every_figure_and_table(reported_run: Reported) -> None:
    report_dir = reported_run.run_dir / "report"
    for name in FIGURES:
        assert_png(report_dir / name)
        assert f"wrote {report_dir / name}" in reported_run.output
    for name in TABLES:
        assert (report_dir / name).stat().st_size > 100
        assert f"wrote {report_dir / name}" in reported_run.output
    assert not (report_dir / "superclass_confusion_matrix.png").exists()  # CIFAR-10 has no superclasses


def test_report_regenerates_a_deleted_predictions_file(reported_run: Reported) -> None:
    run_dir = reported_run.run_dir
    for name in ("evaluation.json", "confusion_matrix.csv", "predictions.csv"):
        assert f"wrote {run_dir / 'evaluations' / 'best-test' / name}" in reported_run.output
    regenerated = read_predictions(run_dir / "evaluations" / "best-test" / "predictions.csv")
    original = reported_run.predictions_before
    assert regenerated[:, :3].tolist() == original[:, :3].tolist()  # same checkpoint, same images, same answers
    assert np.allclose(regenerated[:, 3:], original[:, 3:], atol=1e-5)
    assert json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())["checkpoint"].endswith("best.pt")  # re-scored by the report


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.pre_text = ""
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_pre = self._in_pre or tag == "pre"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data"):
                self.links.append((tag, name, value or ""))

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre_text += data


def test_index_html_is_self_contained(reported_run: Reported) -> None:
    run_dir = reported_run.run_dir
    page = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert [tag for tag, name, _ in parser.links] == ["img"] * len(FIGURES)  # no href, no script, no external src
    for _, _, value in parser.links:
        assert value.startswith("data:image/png;base64,")
        assert base64.b64decode(value.split(",", 1)[1])[:8] == PNG_SIGNATURE
    embedded = {base64.b64decode(v.split(",", 1)[1]) for _, _, v in parser.links}
    assert embedded == {(run_dir / "report" / name).read_bytes() for name in FIGURES}
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "name: simple_cnn" in parser.pre_text and "epochs: 2" in parser.pre_text  # the resolved config
    assert "amp: 'off'" in parser.pre_text  # quotes escaped in the source, intact once parsed
    summary = json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())
    assert f"{summary['top1']:.2%}" in page


class _Sections(HTMLParser):
    """The page's h2 headings in order, the text inside <details>, and the rows of each table after a heading."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.details_text = ""
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self._open.append(tag)
        if tag == "tr" and self.headings:
            self.tables.setdefault(self.headings[-1], []).append([])
        if tag == "h2":
            self.headings.append("")

    def handle_endtag(self, tag):
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data):
        if self._open and self._open[-1] == "h2":
            self.headings[-1] += data
        if "details" in self._open:
            self.details_text += data
        if self._open and self._open[-1] in ("td", "th") and self.headings:
            self.tables[self.headings[-1]][-1].append(data)


def test_page_puts_per_class_scores_by_the_headline_and_folds_the_config(reported_run: Reported) -> None:
    run_dir = reported_run.run_dir
    parser = _Sections()
    parser.feed((run_dir / "report" / "index.html").read_text(encoding="utf-8"))
    assert parser.headings[:4] == ["Headline", "Per-class precision, recall and F1", "Accuracy per class", "Confusion matrix"]
    assert "name: simple_cnn" in parser.details_text and "Config" in parser.details_text
    epochs = parser.tables["Metrics per epoch"]
    assert epochs[0][:4] == ["epoch", "best.pt", "train loss", "train acc"]
    assert "EMA val acc" not in epochs[0]  # the smoke run has no EMA weights
    metrics = [row for row in csv.DictReader((run_dir / "metrics.csv").open(newline=""))]
    assert [row[0] for row in epochs[1:]] == [row["epoch"] for row in metrics]
    best = max(metrics, key=lambda row: float(row["val_accuracy"]))["epoch"]  # max keeps the first of equals
    assert [row[0] for row in epochs[1:] if row[1:2] == ["best"]] == [best]
    checkpoint_epoch = json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())["epoch"]
    assert int(best) == checkpoint_epoch  # the marked epoch is the one best.pt holds


def test_predictions_csv_names_the_classes_and_gives_each_images_loss(reported_run: Reported) -> None:
    run_dir = reported_run.run_dir
    names, _ = _confusion(run_dir)
    with (run_dir / "evaluations" / "best-test" / "predictions.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["index", "true", "true_class", "predicted", "predicted_class", "confidence", "true_probability", "loss"]
    assert all(row["true_class"] == names[int(row["true"])] and row["predicted_class"] == names[int(row["predicted"])] for row in rows)
    losses = np.array([float(row["loss"]) for row in rows])
    probabilities = np.array([float(row["true_probability"]) for row in rows])
    assert np.allclose(losses, -np.log(probabilities), atol=1e-4)  # the image's cross-entropy
    assert losses.mean() == pytest.approx(json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())["loss"], abs=1e-5)


def test_misclassified_captions_give_the_index_and_the_loss() -> None:
    from cifarcli.commands.report_pages import misclassified_captions

    row = np.array([[17, 1, 0, 0.9, 0.05, 2.9957]])
    assert misclassified_captions(row, ["cat", "dog"], "test") == ["test #17, loss 3.00\ntrue: dog (p=0.05)\npred: cat (p=0.90)"]


def test_report_reads_run_files_from_before_the_loss_and_name_columns(smoke_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(smoke_run, tmp_path)
    rows = list(csv.DictReader((run_dir / "evaluations" / "best-test" / "predictions.csv").open(newline="")))
    old = ["index", "true", "predicted", "confidence", "true_probability"]
    with (run_dir / "evaluations" / "best-test" / "predictions.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([old, *([row[c] for c in old] for row in rows)])
    metrics = list(csv.DictReader((run_dir / "metrics.csv").open(newline="")))
    columns = [*metrics[0], "ema_val_loss", "ema_val_accuracy"]  # cifar wrote these as all-NaN before
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([columns, *([row.get(c, "nan") for c in columns] for row in metrics)])
    result = run_report(run_dir)
    assert result.exit_code == 0, result.output
    parser = _Sections()
    parser.feed((run_dir / "report" / "index.html").read_text(encoding="utf-8"))
    assert "EMA val acc" not in parser.tables["Metrics per epoch"][0]  # an all-NaN column is not shown
    loaded = read_predictions(run_dir / "evaluations" / "best-test" / "predictions.csv")
    expected = -np.log(np.array([float(row["true_probability"]) for row in rows]))
    assert np.allclose(loaded[:, 5], expected)  # the loss of an old file, from its probability
    compared = CliRunner().invoke(app, ["compare", str(run_dir), str(smoke_run), "--out", str(tmp_path / "cmp")])
    assert compared.exit_code == 0, compared.output


def _confusion(run_dir: Path) -> tuple[list[str], np.ndarray]:
    with (run_dir / "evaluations" / "best-test" / "confusion_matrix.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0][1:], np.array([[int(v) for v in row[1:]] for row in rows[1:]])


def test_classification_report_agrees_with_the_confusion_matrix(reported_run: Reported) -> None:
    run_dir = reported_run.run_dir
    names, matrix = _confusion(run_dir)
    with (run_dir / "report" / "classification_report.csv").open(newline="") as handle:
        rows = {row["class"]: row for row in csv.DictReader(handle)}
    assert list(rows) == [*names, MACRO_ROW, WEIGHTED_ROW]
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precisions, recalls = [], []
    for i, name in enumerate(names):
        precision = matrix[i, i] / predicted[i] if predicted[i] else 0.0
        recall = matrix[i, i] / actual[i] if actual[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert float(rows[name]["precision"]) == pytest.approx(precision)
        assert float(rows[name]["recall"]) == pytest.approx(recall)
        assert float(rows[name]["f1"]) == pytest.approx(f1)
        assert int(rows[name]["support"]) == actual[i]
        precisions.append(precision)
        recalls.append(recall)
    assert float(rows[MACRO_ROW]["precision"]) == pytest.approx(np.mean(precisions))
    assert float(rows[WEIGHTED_ROW]["recall"]) == pytest.approx(np.trace(matrix) / matrix.sum())  # weighted recall = accuracy
    assert int(rows[MACRO_ROW]["support"]) == matrix.sum()
    markdown = (run_dir / "report" / "classification_report.md").read_text()
    for name in names:
        assert f"| {name} | {float(rows[name]['precision']):.3f} | {float(rows[name]['recall']):.3f} |" in markdown


def test_most_confused_pairs_are_the_largest_off_diagonal_cells(reported_run: Reported) -> None:
    run_dir = reported_run.run_dir
    names, matrix = _confusion(run_dir)
    with (run_dir / "report" / "most_confused.csv").open(newline="") as handle:
        pairs = list(csv.DictReader(handle))
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    expected = sorted((int(v) for v in off.ravel() if v > 0), reverse=True)[:10]
    assert [int(p["images"]) for p in pairs] == expected
    for pair in pairs:
        t, p = names.index(pair["true"]), names.index(pair["predicted"])
        assert t != p and matrix[t, p] == int(pair["images"])
        assert float(pair["share_of_true_class"]) == pytest.approx(matrix[t, p] / matrix[t].sum())


def test_report_on_the_validation_split_shows_training_images(smoke_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(smoke_run, tmp_path)
    result = run_report(run_dir, "--set", "eval.split=val", "--set", "report.misclassified_count=4")
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "evaluations" / "best-val" / "evaluation.json").read_text())
    assert summary["split"] == "val"
    assert (run_dir / "evaluations" / "best-test" / "evaluation.json").read_bytes() == (
        smoke_run / "evaluations" / "best-test" / "evaluation.json").read_bytes()  # the test scoring is kept
    rows = read_predictions(run_dir / "evaluations" / "best-val" / "predictions.csv")
    cfg = load_config(run_dir / "config.yaml")
    train_labels = np.asarray(load_dataset(cfg.data).train_labels)
    _, val_indices = stratified_split(train_labels, cfg.data.val_fraction, cfg.data.split_seed)
    assert sorted(rows[:, 0].astype(int).tolist()) == val_indices.tolist()  # rows index the training set
    assert rows[:, 1].astype(int).tolist() == train_labels[rows[:, 0].astype(int)].tolist()
    assert "| split | val |" in (run_dir / "report" / "classification_report.md").read_text()
    assert_png(run_dir / "report" / "misclassified.png")


def test_report_on_cifar100_draws_the_superclass_matrix(reported_run_cifar100: Reported) -> None:
    run_dir = reported_run_cifar100.run_dir
    report_dir = run_dir / "report"
    assert reported_run_cifar100.output.count("wrote ") == len(FIGURES) + 1 + len(TABLES)  # evaluation reused, not redone
    assert read_predictions(run_dir / "evaluations" / "best-test" / "predictions.csv").tolist() == reported_run_cifar100.predictions_before.tolist()
    fine = assert_png(report_dir / "confusion_matrix.png")
    coarse = assert_png(report_dir / "superclass_confusion_matrix.png")
    assert fine.shape[0] > 1.5 * coarse.shape[0]  # 100 classes get a bigger canvas than 20
    for name in FIGURES[1:]:
        assert_png(report_dir / name)
    with (report_dir / "classification_report.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 100 + 2
    page = (report_dir / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES) + 1
    assert "superclass top-1" in page


@pytest.mark.parametrize("kind", ["missing", "empty", "not a checkpoint"])
def test_report_refuses_what_is_not_a_run_folder(kind: str, smoke_run: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    target = {"missing": tmp_path / "no-such-run", "empty": tmp_path, "not a checkpoint": tmp_path / "notes.pt"}[kind]
    result = CliRunner().invoke(app, ["report", str(target)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 2  # the error line and its hint
    assert not (tmp_path / "report").exists()


def test_report_refuses_a_training_setting(smoke_run: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(smoke_run), "--set", "model.name=mlp"])
    assert result.exit_code == 2
    assert "error: --set model.name" in result.output


# --------------------------------------------------------------------------- the tables and picks


def test_select_misclassified_keeps_wrong_rows_most_confident_first() -> None:
    rows = np.array(
        [
            [0, 1, 1, 0.99, 0.99, 0.01],  # right
            [1, 2, 3, 0.40, 0.10, 2.30],
            [2, 0, 4, 0.90, 0.01, 4.61],
            [3, 5, 5, 0.30, 0.30, 1.20],  # right
            [4, 6, 7, 0.70, 0.20, 1.61],
            [5, 3, 2, 0.90, 0.05, 3.00],  # ties with index 2: input order kept
        ]
    )
    picked = select_misclassified(rows, 3)
    assert picked[:, 0].tolist() == [2, 5, 4]
    assert select_misclassified(rows, 10)[:, 0].tolist() == [2, 5, 4, 1]
    assert select_misclassified(rows[[0, 3]], 5).shape == (0, 6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.floats(0.0, 1.0)), max_size=40),
    st.integers(0, 50),
)
def test_select_misclassified_properties(entries: list[tuple[int, int, float]], count: int) -> None:
    rows = np.array([[i, t, p, c, 0.0, 1.0] for i, (t, p, c) in enumerate(entries)], dtype=np.float64).reshape(-1, 6)
    picked = select_misclassified(rows, count)
    wrong = [r for r in rows if r[1] != r[2]]
    assert len(picked) == min(count, len(wrong))
    assert all(r[1] != r[2] for r in picked)
    assert list(picked[:, 3]) == sorted(picked[:, 3], reverse=True)
    if len(picked):
        left_out = [r[3] for r in wrong if r[0] not in set(picked[:, 0])]
        assert all(c <= picked[-1, 3] for c in left_out)


def test_classification_report_by_hand() -> None:
    report = classification_report(np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]]), ["a", "b", "c"])
    by_class = {row["class"]: row for row in report}
    assert by_class["a"]["precision"] == pytest.approx(0.5) and by_class["c"]["recall"] == pytest.approx(2 / 3)
    assert by_class[MACRO_ROW]["f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert by_class[WEIGHTED_ROW]["precision"] == pytest.approx((0.5 * 2 + 0.5 * 1 + 1.0 * 3) / 6)
    assert by_class[WEIGHTED_ROW]["support"] == 6
    pairs = confused_pairs(np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]]), ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["images"]) for p in pairs] == [("a", "b", 1), ("c", "a", 1)]
    assert pairs[1]["share_of_true_class"] == pytest.approx(1 / 3)


def test_sample_per_class_picks_from_candidates_with_a_seed() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 2])
    candidates = np.array([0, 1, 2, 3, 5, 7])  # index 4 and 6 (class 0) are held out
    picks = sample_per_class(labels, candidates, [0, 1, 2], per_class=2, seed=3)
    assert [len(p) for p in picks] == [2, 2, 1]
    assert set(picks[0]) <= {0, 2} and set(picks[1]) <= {1, 3, 5} and picks[2].tolist() == [7]
    assert all(np.all(np.diff(p) > 0) for p in picks)
    again = sample_per_class(labels, candidates, [0, 1, 2], per_class=2, seed=3)
    assert [p.tolist() for p in again] == [p.tolist() for p in picks]


def test_markdown_table_escapes_pipes() -> None:
    table = markdown_table(["class", "f1"], [["a|b", "0.500"]])
    assert table.splitlines() == ["| class | f1 |", "| --- | --- |", "| a\\|b | 0.500 |"]


def test_readers_turn_damaged_files_into_damaged_file_errors(tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("index,true,predicted\n0,1,1\n")
    with pytest.raises(DamagedFileError, match="lacks the column.s. confidence, true_probability"):
        read_predictions(predictions)
    predictions.write_text("index,true,predicted,confidence,true_probability\n0,1,x,0.5,0.5\n")
    with pytest.raises(DamagedFileError, match="not a number"):
        read_predictions(predictions)
    confusion = tmp_path / "confusion_matrix.csv"
    confusion.write_text("true\\predicted,a,b\na,1,0\nc,0,1\n")
    with pytest.raises(DamagedFileError, match="row labels"):
        read_confusion_matrix(confusion)
    confusion.write_text('true\\predicted,a,"b,c"\na,1,0\n"b,c",2,3\n')
    names, matrix = read_confusion_matrix(confusion)
    assert names == ["a", "b,c"] and matrix.tolist() == [[1, 0], [2, 3]]
    with pytest.raises(DamagedFileError, match="missing file"):
        read_confusion_matrix(tmp_path / "absent.csv")
