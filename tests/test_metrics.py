"""Metrics on hand-checked arrays."""

from __future__ import annotations

import numpy as np

from cifarcli.metrics import (
    class_scores,
    confusion_matrix,
    evaluation_summary,
    most_confused_pairs,
    superclass_probabilities,
    topk_accuracy,
)


def test_confusion_matrix_counts_true_rows_predicted_columns() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_precision_recall_f1_by_hand() -> None:
    scores = class_scores(np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]]))
    assert np.allclose(scores.precision, [0.5, 0.5, 1.0])
    assert np.allclose(scores.recall, [0.5, 1.0, 2 / 3])
    assert np.allclose(scores.f1, [0.5, 2 / 3, 0.8])
    assert scores.support.tolist() == [2, 1, 3]
    assert np.isclose(scores.macro_f1, (0.5 + 2 / 3 + 0.8) / 3)


def test_empty_class_scores_zero_not_nan() -> None:
    scores = class_scores(np.array([[2, 0], [0, 0]]))
    assert scores.precision.tolist() == [1.0, 0.0] and scores.recall.tolist() == [1.0, 0.0]


def test_topk() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    targets = np.array([2, 1, 2])
    assert topk_accuracy(probs, targets, 1) == 1 / 3
    assert topk_accuracy(probs, targets, 2) == 2 / 3
    assert topk_accuracy(probs, targets, 5) == 1.0


def test_most_confused_pairs_are_off_diagonal_and_sorted() -> None:
    pairs = most_confused_pairs(np.array([[5, 3, 0], [1, 5, 0], [4, 0, 9]]), count=2)
    assert pairs == [(2, 0, 4), (0, 1, 3)]


def test_superclass_probabilities_sum_fine_ones() -> None:
    probs = np.array([[0.1, 0.2, 0.3, 0.4]])
    coarse = superclass_probabilities(probs, np.array([0, 1, 0, 1]), 2)
    assert np.allclose(coarse, [[0.4, 0.6]])


def test_evaluation_summary_agrees_with_its_matrix() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200).astype(np.float32)
    targets = rng.integers(0, 4, size=200)
    summary, matrix = evaluation_summary(probs, targets, ["a", "b", "c", "d"], 1.0, np.array([0, 0, 1, 1]), ["x", "y"])
    assert matrix.sum() == 200 and summary["num_images"] == 200
    assert np.isclose(summary["top1"], (probs.argmax(1) == targets).mean())
    assert [row["support"] for row in summary["per_class"]] == np.bincount(targets, minlength=4).tolist()
    assert np.isclose(summary["macro_f1"], np.mean([row["f1"] for row in summary["per_class"]]))
    assert np.array(summary["superclass"]["confusion_matrix"]).sum() == 200
