"""What `cifar report` reads from a run folder, each file checked before anything is written.

Run folders are edited, truncated and swapped by users and by crashes; a file that is damaged
or belongs to another run is one DamagedFileError naming it and the fix (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifarcli import fileio, records, runs
from cifarcli import report_tables as tables
from cifarcli.commands.evaluation import read_evaluation_summary
from cifarcli.data.cache import CifarArrays
from cifarcli.report_tables import RETRAIN_HINT, damaged


@dataclass(frozen=True)
class RunRecords:
    """The training records of a run: metrics.csv and run_info.json's steps per epoch."""

    metrics: dict[str, np.ndarray]
    steps_per_epoch: int


def read_run_records(run_dir: Path) -> RunRecords:
    """metrics.csv and run_info.json, checked; read before anything is scored or written."""
    info_path = run_dir / runs.RUN_INFO_FILE
    info = fileio.read_json(info_path)
    if not isinstance(info, dict) or not records.positive(info.get("steps_per_epoch")):
        raise damaged(info_path, "it has no valid steps_per_epoch", RETRAIN_HINT)
    return RunRecords(tables.read_metrics(run_dir / runs.METRICS_FILE), info["steps_per_epoch"])


@dataclass(frozen=True)
class Evaluation:
    """What `cifar evaluate` (or train) left in the run folder, read back and checked."""

    summary: dict[str, Any]
    class_names: list[str]
    matrix: np.ndarray
    predictions: np.ndarray  # rows: report_tables.PREDICTION_NUMBERS (index, true, predicted, ..., loss)


def read_evaluation(eval_dir: Path, class_names: list[str], arrays: CifarArrays) -> Evaluation:
    """evaluation.json, confusion_matrix.csv and predictions.csv of `eval_dir`, checked against each other and the data set."""
    summary = read_evaluation_summary(eval_dir / runs.EVALUATION_FILE)
    confusion_path, predictions_path = eval_dir / runs.CONFUSION_FILE, eval_dir / runs.PREDICTIONS_FILE
    names, matrix = tables.read_confusion_matrix(confusion_path)
    if names != class_names or summary["class_names"] != class_names:
        raise damaged(confusion_path, f"it names other classes than the run's data set ({len(names)} vs {len(class_names)})")
    if (matrix < 0).any() or int(matrix.sum()) != summary["num_images"]:
        raise damaged(confusion_path, f"its counts are not {summary['num_images']} images, as evaluation.json says")
    predictions = tables.read_predictions(predictions_path)
    split_size = len(arrays.train_images if summary["split"] == "val" else arrays.test_images)  # val rows index the training set
    problem = _predictions_problem(predictions, summary["num_images"], len(class_names), split_size)
    if problem is not None:
        raise damaged(predictions_path, problem)
    return Evaluation(summary, names, matrix, predictions)


def _predictions_problem(rows: np.ndarray, images: int, num_classes: int, split_size: int) -> str | None:
    """What is wrong with the prediction rows (count, indices, classes, probabilities), or None."""
    if len(rows) != images:
        return f"it has {len(rows)} rows, evaluation.json counts {images} images"
    indices, classes = rows[:, tables.INDEX], rows[:, [tables.TRUE, tables.PREDICTED]]
    probabilities, losses = rows[:, [tables.CONFIDENCE, tables.TRUE_PROBABILITY]], rows[:, tables.LOSS]
    if not np.array_equal(rows[:, :3], np.round(rows[:, :3])):
        return "an index or class is not a whole number"
    if len(rows) and (indices.min() < 0 or indices.max() >= split_size):
        return f"an image index is outside 0..{split_size - 1}"
    if len(rows) and (classes.min() < 0 or classes.max() >= num_classes):
        return f"a class is outside 0..{num_classes - 1}"
    if not (np.isfinite(probabilities).all() and (probabilities >= 0).all() and (probabilities <= 1).all()):
        return "a probability is outside [0, 1]"
    if np.isnan(losses).any() or (losses < 0).any():  # inf is a true probability of 0 in an old file
        return "a loss is negative or not a number"
    return None
