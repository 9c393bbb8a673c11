"""What `cifar train` shows in TensorBoard besides the engine's scalars: a confusion matrix per epoch, HParams.

Drawn here, in the command layer, because they need the plots and the config; the engine's
logger only writes what it is given.
"""

from __future__ import annotations

import json
import math
from typing import Any, Union

from cifarcli.config import ExperimentConfig, flatten_tree
from cifarcli.engine.callbacks import TrainCallbacks
from cifarcli.engine.predict import Predictions
from cifarcli.engine.tensorboard import TensorBoardLogger
from cifarcli.metrics import confusion_matrix
from cifarcli.plots.confusion import confusion_image

HParam = Union[bool, int, float, str]
VAL_CONFUSION_TAG = "confusion_matrix/val"  # one image per epoch, at step = epoch
TEST_CONFUSION_TAG = "confusion_matrix/test"  # the best checkpoint on the test set, at step = last epoch


class ConfusionPerEpoch(TrainCallbacks):
    """Logs the class-labelled confusion matrix of every epoch's validation pass."""

    def __init__(self, logger: TensorBoardLogger, class_names: list[str]) -> None:
        self.logger = logger
        self.class_names = class_names

    def on_validation(self, epoch: int, predictions: Predictions) -> None:
        if not len(predictions.targets):
            return
        matrix = confusion_matrix(predictions.targets, predictions.predicted, len(self.class_names))
        title = f"validation split, epoch {epoch}: accuracy {predictions.accuracy:.1%}"
        self.logger.log_image(VAL_CONFUSION_TAG, confusion_image(matrix, self.class_names, title), epoch)


def hparam_values(cfg: ExperimentConfig) -> dict[str, HParam]:
    """The resolved config as {dotted key: value} of the kinds HParams takes (a null or a list as its JSON text)."""
    return {key: _hparam(value) for key, value in flatten_tree(cfg.model_dump(mode="json")).items()}


def _hparam(value: Any) -> HParam:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def final_metrics(test_summary: dict, history: list[dict[str, float]]) -> dict[str, float]:
    """The run's results as HParams metrics: test accuracy and loss, best validation accuracy, final train loss."""
    val = [row["val_accuracy"] for row in history if math.isfinite(row.get("val_accuracy", math.nan))]
    return {
        "hparam/test_accuracy": float(test_summary["top1"]),
        "hparam/test_loss": float(test_summary["loss"]),
        "hparam/best_val_accuracy": max(val) if val else math.nan,
        "hparam/final_train_loss": float(history[-1]["train_loss"]) if history else math.nan,
    }
