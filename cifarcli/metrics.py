"""Classification metrics on plain arrays: confusion matrix, per-class precision/recall/F1, top-k."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class, shape (num_classes, num_classes)."""
    flat = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def topk_accuracy(probabilities: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of images whose true class is among the k highest-scored classes."""
    k = min(k, probabilities.shape[1])
    top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(targets)[:, None], axis=1))) if len(targets) else 0.0


@dataclass(frozen=True)
class ClassScores:
    """Per-class scores computed from one confusion matrix."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean()) if len(self.f1) else 0.0

    @property
    def macro_precision(self) -> float:
        return float(self.precision.mean()) if len(self.precision) else 0.0

    @property
    def macro_recall(self) -> float:
        return float(self.recall.mean()) if len(self.recall) else 0.0

    def weighted(self, values: np.ndarray) -> float:
        total = self.support.sum()
        return float((values * self.support).sum() / total) if total else 0.0


def class_scores(matrix: np.ndarray) -> ClassScores:
    """Precision, recall and F1 per class (0 where undefined) and support, from a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return ClassScores(precision=precision, recall=recall, f1=f1, support=actual.astype(np.int64))


def accuracy_from_matrix(matrix: np.ndarray) -> float:
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else 0.0


def most_confused_pairs(matrix: np.ndarray, count: int = 10) -> list[tuple[int, int, int]]:
    """The `count` largest off-diagonal cells as (true class, predicted class, images), largest first."""
    off_diagonal = np.array(matrix, dtype=np.int64, copy=True)
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:count]
    pairs = [(int(i // matrix.shape[1]), int(i % matrix.shape[1])) for i in order]
    return [(t, p, int(off_diagonal[t, p])) for t, p in pairs if off_diagonal[t, p] > 0]


def to_superclass(labels: np.ndarray, fine_to_coarse: np.ndarray) -> np.ndarray:
    """Map fine class indices to their superclass indices."""
    return np.asarray(fine_to_coarse)[np.asarray(labels, dtype=np.int64)]


def superclass_probabilities(probabilities: np.ndarray, fine_to_coarse: np.ndarray, num_superclasses: int) -> np.ndarray:
    """Sum fine-class probabilities into their superclasses, shape (N, num_superclasses)."""
    out = np.zeros((probabilities.shape[0], num_superclasses), dtype=probabilities.dtype)
    np.add.at(out.T, np.asarray(fine_to_coarse), probabilities.T)
    return out


def evaluation_summary(
    probabilities: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    loss: float,
    fine_to_coarse: np.ndarray | None = None,
    superclass_names: list[str] | None = None,
) -> tuple[dict, np.ndarray]:
    """Headline and per-class figures of one evaluation, and its confusion matrix.

    With `fine_to_coarse`, the summary also scores the superclasses (fine probabilities summed).
    """
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(targets, predicted, num_classes)
    scores = class_scores(matrix)
    summary: dict = {
        "num_images": int(len(targets)),
        "loss": float(loss),
        "top1": accuracy_from_matrix(matrix),
        "top5": topk_accuracy(probabilities, targets, 5),
        "macro_precision": scores.macro_precision,
        "macro_recall": scores.macro_recall,
        "macro_f1": scores.macro_f1,
        "weighted_f1": scores.weighted(scores.f1),
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, scores.precision, scores.recall, scores.f1, scores.support)
        ],
        "most_confused": [
            {"true": class_names[t], "predicted": class_names[p], "images": n} for t, p, n in most_confused_pairs(matrix)
        ],
    }
    if fine_to_coarse is not None and superclass_names is not None:
        coarse_probabilities = superclass_probabilities(probabilities, fine_to_coarse, len(superclass_names))
        coarse_targets = to_superclass(targets, fine_to_coarse)
        coarse_matrix = confusion_matrix(coarse_targets, coarse_probabilities.argmax(axis=1), len(superclass_names))
        coarse_scores = class_scores(coarse_matrix)
        summary["superclass"] = {
            "top1": accuracy_from_matrix(coarse_matrix),
            "macro_f1": coarse_scores.macro_f1,
            "confusion_matrix": coarse_matrix.tolist(),
            "names": list(superclass_names),
        }
    return summary, matrix
