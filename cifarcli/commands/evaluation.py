"""Scoring a trained checkpoint and writing what `cifar report` reads; used by train and evaluate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from cifarcli import fileio, runs
from cifarcli.commands.compose import EvalData, LoadedRun, run_predictions
from cifarcli.commands.progress import metrics_table
from cifarcli.config import EvalConfig
from cifarcli.metrics import evaluation_summary

PREDICTION_COLUMNS = ["index", "true", "predicted", "confidence", "true_probability"]


def evaluate_split(run: LoadedRun, data: EvalData, settings: EvalConfig) -> tuple[dict, np.ndarray, np.ndarray]:
    """Score the split of `data`; returns the summary, confusion matrix and prediction rows.

    Prediction rows index into the split: the test set, or the training set for "val".
    """
    split, tta_flip, indices = data.split, settings.tta_flip, data.indices
    predictions = run_predictions(run, data.loader, tta_flip)
    summary, matrix = evaluation_summary(
        predictions.probabilities, predictions.targets, data.labels.class_names, predictions.loss,
        data.labels.fine_to_coarse if settings.superclass else None, data.labels.superclass_names,
    )  # fmt: skip
    predicted = predictions.predicted
    rows = np.stack(
        [
            indices.astype(np.float64),
            predictions.targets,
            predicted,
            predictions.probabilities[np.arange(len(predicted)), predicted],
            predictions.probabilities[np.arange(len(predicted)), predictions.targets],
        ],
        axis=1,
    )
    summary.update({
        "split": split, "tta_flip": tta_flip, "dataset": data.arrays.dataset, "class_names": data.labels.class_names,
        "checkpoint": str(run.path), "epoch": int(run.checkpoint["epoch"]),
    })  # fmt: skip
    return summary, matrix, rows


def write_evaluation(out_dir: Path, summary: dict, matrix: np.ndarray, rows: np.ndarray, class_names: list[str]) -> list[Path]:
    """Write evaluation.json, confusion_matrix.csv and predictions.csv; return their paths."""
    eval_path = out_dir / runs.EVALUATION_FILE
    fileio.write_json(eval_path, summary)
    cm_path = out_dir / runs.CONFUSION_FILE
    fileio.write_csv(cm_path, ["true\\predicted", *class_names], ([name, *map(int, row)] for name, row in zip(class_names, matrix)))
    pred_path = out_dir / runs.PREDICTIONS_FILE
    fileio.write_csv(
        pred_path, PREDICTION_COLUMNS,
        ([int(r[0]), int(r[1]), int(r[2]), round(float(r[3]), 6), round(float(r[4]), 6)] for r in rows),
    )  # fmt: skip
    return [eval_path, cm_path, pred_path]


def headline_rows(summary: dict) -> list[tuple[str, str]]:
    """The headline figures of an evaluation summary as (name, formatted value) pairs."""
    rows = [
        ("split", str(summary.get("split", "test"))),
        ("images", f"{summary['num_images']:,}"),
        ("top-1 accuracy", f"{summary['top1']:.2%}"),
        ("top-5 accuracy", f"{summary['top5']:.2%}"),
        ("loss", f"{summary['loss']:.4f}"),
        ("macro F1", f"{summary['macro_f1']:.4f}"),
        ("weighted F1", f"{summary['weighted_f1']:.4f}"),
    ]
    if "superclass" in summary:
        rows.append(("superclass top-1", f"{summary['superclass']['top1']:.2%}"))
    return rows


def print_summary(console: Console, summary: dict, title: str) -> None:
    console.print(metrics_table(title, headline_rows(summary)))
