"""The tables of a report: per-class scores, confused pairs, and which images its grids show.

Everything here works on plain arrays read from a run folder (confusion_matrix.csv,
predictions.csv, metrics.csv); the readers turn a damaged file into one clear DamagedFileError (exit 1).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from cifarcli import escape
from cifarcli.errors import DamagedFileError
from cifarcli.metrics import class_scores, most_confused_pairs

REPORT_COLUMNS = ["class", "precision", "recall", "f1", "support"]
PAIR_COLUMNS = ["true", "predicted", "images", "share_of_true_class"]
MACRO_ROW = "macro avg"
WEIGHTED_ROW = "weighted avg"
# Prediction rows (predictions.csv) as arrays: these columns, in this order (the class names stay in the file).
PREDICTION_NUMBERS = ("index", "true", "predicted", "confidence", "true_probability", "loss")
INDEX, TRUE, PREDICTED, CONFIDENCE, TRUE_PROBABILITY, LOSS = range(len(PREDICTION_NUMBERS))


RESCORE_HINT = "delete it and run `cifar report` again, which re-scores the best checkpoint"
RETRAIN_HINT = "it is written by `cifar train`; restore it or re-run training"


def damaged(path: Path, problem: str, hint: str = RESCORE_HINT) -> DamagedFileError:
    """The error for a run-folder file that is damaged or foreign (exit 1), naming it and the fix."""
    return DamagedFileError(f"cannot read {path}: {problem}", hint=hint)


def _read_rows(path: Path, hint: str) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError as exc:
        raise DamagedFileError(f"missing file: {path}", hint=hint) from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise damaged(path, escape.clip(escape.terminal(exc)), hint) from exc
    if not rows:
        raise damaged(path, "the file is empty", hint)
    return rows


def _numbers(path: Path, rows: list[list[str]], width: int, hint: str = RESCORE_HINT) -> np.ndarray:
    if any(len(row) != width for row in rows):
        raise damaged(path, f"every row must have {width} fields", hint)
    try:
        return np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64).reshape(len(rows), width)
    except ValueError as exc:
        raise damaged(path, f"a value is not a number ({escape.clip(escape.terminal(exc))})", hint) from exc


def read_confusion_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and the int64 count matrix (rows true, columns predicted) of confusion_matrix.csv."""
    rows = _read_rows(path, RESCORE_HINT)
    names = rows[0][1:]
    if [row[0] for row in rows[1:]] != names:
        raise damaged(path, "its row labels do not match its column labels")
    matrix = _numbers(path, [row[1:] for row in rows[1:]], len(names))
    return names, matrix.astype(np.int64)


def read_predictions(path: Path) -> np.ndarray:
    """predictions.csv as a float array of shape (N, 6), columns as `PREDICTION_NUMBERS`, read by name.

    A file from before the `loss` column gets the loss from its probability (-log p, the same
    cross-entropy), so a run scored by an older cifar still reports.
    """
    rows = _read_rows(path, RESCORE_HINT)
    header = rows[0]
    missing = [name for name in PREDICTION_NUMBERS[:LOSS] if name not in header]
    if missing:
        found = escape.clip(escape.terminal(",".join(header)))
        raise damaged(path, f"it lacks the column(s) {', '.join(missing)} (found {found})")
    if any(len(row) != len(header) for row in rows[1:]):
        raise damaged(path, f"every row must have {len(header)} fields")
    positions = [header.index(name) for name in PREDICTION_NUMBERS if name in header]
    values = _numbers(path, [[row[i] for i in positions] for row in rows[1:]], len(positions))
    if "loss" not in header:
        with np.errstate(divide="ignore"):
            values = np.column_stack([values, -np.log(values[:, TRUE_PROBABILITY])])
    return values


# The metrics.csv columns the training curves need.
METRIC_COLUMNS_PLOTTED = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as one float array per column (NaN where a value was not recorded)."""
    rows = _read_rows(path, RETRAIN_HINT)
    header = rows[0]
    missing = [name for name in METRIC_COLUMNS_PLOTTED if name not in header]
    if missing:
        raise damaged(path, f"it lacks the column(s) {', '.join(missing)}", RETRAIN_HINT)
    values = _numbers(path, rows[1:], len(header), RETRAIN_HINT)
    return {name: values[:, i] for i, name in enumerate(header)}


def best_epoch(metrics: dict[str, np.ndarray]) -> int | None:
    """The epoch best.pt holds: the first with the highest validation accuracy, else the last one (None: no epoch)."""
    epochs, val = metrics["epoch"], metrics["val_accuracy"]
    if not len(epochs):
        return None
    finite = np.isfinite(val)
    return int(epochs[int(np.argmax(np.where(finite, val, -np.inf)))] if finite.any() else epochs[-1])


# The per-epoch table of the report page: (metrics.csv column, heading, format); absent or all-NaN columns are left out.
EPOCH_TABLE_COLUMNS = (
    ("train_loss", "train loss", ".4f"), ("train_accuracy", "train acc", ".2%"), ("val_loss", "val loss", ".4f"),
    ("val_accuracy", "val acc", ".2%"), ("ema_val_loss", "EMA val loss", ".4f"), ("ema_val_accuracy", "EMA val acc", ".2%"),
    ("lr", "lr at end", ".3g"), ("seconds", "seconds", ".1f"), ("images_per_second", "images/s", ",.0f"),
)  # fmt: skip


def epoch_table(metrics: dict[str, np.ndarray]) -> tuple[list[str], list[list[str]]]:
    """metrics.csv as display rows, one per epoch, the best epoch marked; header first."""
    shown = [(c, heading, fmt) for c, heading, fmt in EPOCH_TABLE_COLUMNS if c in metrics and np.isfinite(metrics[c]).any()]
    best = best_epoch(metrics)
    rows = [
        [f"{int(epoch)}", "best" if int(epoch) == best else "",
         *(format(float(metrics[c][i]), fmt) if math.isfinite(metrics[c][i]) else "-" for c, _, fmt in shown)]
        for i, epoch in enumerate(metrics["epoch"])
    ]  # fmt: skip
    return ["epoch", "best.pt", *(heading for _, heading, _ in shown)], rows


def classification_report(matrix: np.ndarray, class_names: list[str]) -> list[dict]:
    """Per-class precision, recall, F1 and support, then the macro and support-weighted averages."""
    scores = class_scores(matrix)
    rows = [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, scores.precision, scores.recall, scores.f1, scores.support)
    ]
    total = int(scores.support.sum())
    rows.append({"class": MACRO_ROW, "precision": scores.macro_precision, "recall": scores.macro_recall,
                 "f1": scores.macro_f1, "support": total})  # fmt: skip
    rows.append({"class": WEIGHTED_ROW, "precision": scores.weighted(scores.precision),
                 "recall": scores.weighted(scores.recall), "f1": scores.weighted(scores.f1), "support": total})  # fmt: skip
    return rows


def confused_pairs(matrix: np.ndarray, class_names: list[str], count: int = 10) -> list[dict]:
    """The `count` largest off-diagonal cells, largest first, with the share of the true class they take."""
    support = np.asarray(matrix).sum(axis=1)
    return [
        {"true": class_names[t], "predicted": class_names[p], "images": n, "share_of_true_class": n / int(support[t])}
        for t, p, n in most_confused_pairs(matrix, count)
    ]


def table_cells(rows: list[dict], columns: list[str]) -> list[list[str]]:
    """Rows as display strings: scores and shares with 3 decimals, counts as integers."""
    return [[_cell(row[c]) for c in columns] for row in rows]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "-"
    return str(value)


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; every cell escaped (`escape.markdown`)."""
    def line(values: list[str]) -> str:
        return "| " + " | ".join(escape.markdown(v) for v in values) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in cells)])


def report_markdown(title: str, headline: list[tuple[str, str]], report: list[dict], pairs: list[dict]) -> str:
    """classification_report.md: the headline figures, the per-class table and the most confused pairs."""
    parts = [f"# {escape.markdown(title)}", "", markdown_table(["metric", "value"], [list(item) for item in headline]), ""]
    parts += ["## Per class", "", markdown_table(REPORT_COLUMNS, table_cells(report, REPORT_COLUMNS)), ""]
    parts += ["## Most confused pairs", ""]
    parts.append(markdown_table(PAIR_COLUMNS, table_cells(pairs, PAIR_COLUMNS)) if pairs else "No image was misclassified.")
    return "\n".join(parts) + "\n"


def select_misclassified(predictions: np.ndarray, count: int) -> np.ndarray:
    """The at most `count` wrong rows (true != predicted) of a predictions array, most confident first.

    Ties in confidence keep the order of the input rows.
    """
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1, len(PREDICTION_NUMBERS))
    wrong = predictions[predictions[:, TRUE] != predictions[:, PREDICTED]]
    order = np.argsort(-wrong[:, CONFIDENCE], kind="stable")
    return wrong[order[: max(count, 0)]]


def sample_per_class(labels: np.ndarray, candidates: np.ndarray, classes: Sequence[int], per_class: int, seed: int) -> list[np.ndarray]:
    """For each class in `classes`, up to `per_class` of the `candidates` indices with that label, picked with `seed`.

    Returns one sorted int64 index array per class (shorter where a class has fewer images).
    """
    rng = np.random.default_rng(seed)
    candidates = np.asarray(candidates, dtype=np.int64)
    labels_of = np.asarray(labels)[candidates]
    picks = []
    for cls in classes:
        pool = candidates[labels_of == cls]
        chosen = rng.choice(pool, size=min(per_class, len(pool)), replace=False) if len(pool) else pool
        picks.append(np.sort(chosen).astype(np.int64))
    return picks
