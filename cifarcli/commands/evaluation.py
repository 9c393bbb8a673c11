"""Scoring a trained checkpoint and writing what `cifar report` reads; used by train and evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from cifarcli import fileio, records, runs
from cifarcli.commands.compose import DataBundle, LabelSet, LoadedRun, eval_loader, run_predictions, select_labels
from cifarcli.commands.progress import metrics_table
from cifarcli.config import EvalConfig, ExperimentConfig
from cifarcli.data.cache import CifarArrays
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.prepare import load_dataset
from cifarcli.data.split import stratified_split
from cifarcli.errors import UsageError
from cifarcli.metrics import evaluation_summary
from cifarcli.reporting import SILENT, Reporter
from cifarcli.report_tables import CONFIDENCE, INDEX, LOSS, PREDICTED, TRUE, TRUE_PROBABILITY, damaged

# predictions.csv: the ids with their class names beside them, the two probabilities, the image's loss.
PREDICTION_COLUMNS = ["index", "true", "true_class", "predicted", "predicted_class", "confidence", "true_probability", "loss"]


@dataclass(frozen=True)
class EvalData:
    """The one split a trained model is scored on, with the data set's arrays and labels."""

    arrays: CifarArrays
    labels: LabelSet
    split: str  # "test" or "val"
    loader: DeviceLoader
    indices: np.ndarray  # each image's index: into the test set, or into the training set for "val"


def _no_validation_split() -> UsageError:
    return UsageError("eval.split is val but data.val_fraction is 0, so there is no validation split", hint="use --set eval.split=test")


def build_eval_data(cfg: ExperimentConfig, device: torch.device, reporter: Reporter = SILENT) -> EvalData:
    """Load the data set and build the loader of `cfg.eval.split` only: no training loader, no augmentation."""
    arrays = load_dataset(cfg.data, reporter=reporter)
    labels = select_labels(arrays, cfg.data.label_mode)
    if cfg.eval.split == "test":
        loader = eval_loader(cfg, arrays, arrays.test_images, labels.test, labels.num_classes, device)
        return EvalData(arrays, labels, "test", loader, np.arange(len(labels.test)))
    _, val_idx = stratified_split(labels.train, cfg.data.val_fraction, cfg.data.split_seed)
    if not len(val_idx):
        raise _no_validation_split()
    loader = eval_loader(cfg, arrays, np.asarray(arrays.train_images)[val_idx], labels.train[val_idx], labels.num_classes, device)
    return EvalData(arrays, labels, "val", loader, val_idx)


def eval_data_of(data: DataBundle, split: str) -> EvalData:
    """The `split` ("test" or "val") of a training run's data, as `build_eval_data` gives it."""
    if split == "test":
        return EvalData(data.arrays, data.labels, "test", data.test, np.arange(len(data.labels.test)))
    if data.val is None:
        raise _no_validation_split()
    return EvalData(data.arrays, data.labels, "val", data.val, data.val_indices)


def evaluate_split(run: LoadedRun, data: EvalData, settings: EvalConfig) -> tuple[dict, np.ndarray, np.ndarray]:
    """Score the split of `data`; returns the summary, confusion matrix and prediction rows.

    Prediction rows (columns as `report_tables.INDEX` ... `LOSS`) index into the split: the
    test set, or the training set for "val".
    """
    split, tta_flip, indices = data.split, settings.tta_flip, data.indices
    predictions = run_predictions(run, data.loader, tta_flip, settings.tta_shift)
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
            predictions.losses,
        ],
        axis=1,
    )
    summary.update({
        "split": split, "tta_flip": tta_flip, "tta_shift": settings.tta_shift, "dataset": data.arrays.dataset, "class_names": data.labels.class_names,
        "checkpoint": str(run.path), "epoch": int(run.checkpoint["epoch"]),
    })  # fmt: skip
    return summary, matrix, rows


def evaluation_key_of(summary: dict) -> str:
    """The evaluations/ folder name of a summary: what it scored (checkpoint, split, TTA, EMA)."""
    return runs.evaluation_key(summary["checkpoint"], summary["split"], bool(summary.get("tta_flip")),
                               bool(summary.get("tta_shift")), bool(summary.get("ema")))  # fmt: skip


def write_evaluation(run_dir: Path, summary: dict, matrix: np.ndarray, rows: np.ndarray, class_names: list[str]) -> list[Path]:
    """Write evaluation.json, confusion_matrix.csv and predictions.csv into RUN/evaluations/<key>/
    (key: `evaluation_key_of`), so no other scoring of the run is replaced; return their paths."""
    out_dir = runs.evaluation_dir(run_dir, evaluation_key_of(summary))
    fileio.make_folder(out_dir)
    eval_path = out_dir / runs.EVALUATION_FILE
    fileio.write_json(eval_path, summary)
    cm_path = out_dir / runs.CONFUSION_FILE
    fileio.write_csv(cm_path, ["true\\predicted", *class_names], ([name, *map(int, row)] for name, row in zip(class_names, matrix)))
    pred_path = out_dir / runs.PREDICTIONS_FILE
    fileio.write_csv(pred_path, PREDICTION_COLUMNS, (_prediction_cells(r, class_names) for r in rows))
    return [eval_path, cm_path, pred_path]


def _prediction_cells(row: np.ndarray, class_names: list[str]) -> list[object]:
    """One predictions.csv line; class names go in as they are (csv.writer quotes a comma)."""
    true, predicted = int(row[TRUE]), int(row[PREDICTED])
    return [int(row[INDEX]), true, class_names[true], predicted, class_names[predicted],
            round(float(row[CONFIDENCE]), 6), round(float(row[TRUE_PROBABILITY]), 6), round(float(row[LOSS]), 6)]  # fmt: skip


def _superclass(value: object) -> bool:
    if not isinstance(value, dict) or not records.number(value.get("top1")) or not records.texts(value.get("names")):
        return False
    matrix, size = value.get("confusion_matrix"), len(value["names"])
    return isinstance(matrix, list) and len(matrix) == size and all(
        isinstance(row, list) and len(row) == size and all(records.whole(n) for n in row) for row in matrix
    )


# Every field of evaluation.json that `cifar report` reads.
SUMMARY_FIELDS: dict[str, records.Check] = {
    "split": records.one_of("test", "val"), "tta_flip": records.flag, "tta_shift": records.flag, "ema": records.flag,
    "num_images": records.whole, "top1": records.number, "top5": records.number, "loss": records.number,
    "macro_f1": records.number, "weighted_f1": records.number, "epoch": records.whole,
    "checkpoint": records.text, "class_names": records.texts, "superclass": _superclass,
}  # fmt: skip


def read_evaluation_summary(path: Path) -> dict:
    """evaluation.json, with every field the report uses checked; DamagedFileError (exit 1) if one is off."""
    summary = fileio.read_json(path)
    problem = records.first_problem(summary, SUMMARY_FIELDS, may_lack=("ema", "superclass", "tta_shift"))
    if problem is not None:
        raise damaged(path, f"it is damaged or not from `cifar evaluate`: {problem}")
    return summary


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


def scored_label(summary: dict) -> str:
    """Which split, checkpoint and weights an evaluation scored, e.g. "test split, best.pt (epoch 2)"."""
    text = f"{summary['split']} split, {Path(summary['checkpoint']).name} (epoch {summary['epoch']})"
    return text + (", EMA weights" if summary.get("ema") else "") + (", flip TTA" if summary.get("tta_flip") else "")


def print_summary(console: Console, summary: dict, title: str) -> None:
    console.print(metrics_table(title, headline_rows(summary)))
