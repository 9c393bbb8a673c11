"""One pass of predictions over a split: the evaluation loop that validation, evaluate and report share."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np
import torch
from torch import nn

from cifarcli.engine.loop import Batches
from cifarcli.engine.tta import tta_logits


@dataclass(frozen=True)
class Predictions:
    """Softmax probabilities and true labels of one pass over a split, in data order."""

    probabilities: np.ndarray  # (N, C) float32
    targets: np.ndarray  # (N,) int64
    loss: float  # mean cross-entropy (no smoothing)
    losses: np.ndarray  # (N,) float32: each image's cross-entropy, the terms of `loss`

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.targets).mean()) if len(self.targets) else math.nan


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Batches,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    tta_flip: bool = False,
    tta_shift: bool = False,
) -> Predictions:
    """Evaluate `model` on every batch (eval mode, restored afterwards); optional flip and shift TTA (engine.tta)."""
    was_training = model.training
    model.eval()
    probabilities: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    try:
        for inputs, labels in batches:
            with autocast():
                logits = tta_logits(model, inputs, tta_flip, tta_shift)
            losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
            probabilities.append(torch.softmax(logits, dim=1))  # kept on the device: one copy back at the end
            targets.append(labels)
    finally:
        model.train(was_training)
    if not targets:
        return Predictions(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), math.nan, np.zeros(0, np.float32))
    all_targets = torch.cat(targets).cpu().numpy().astype(np.int64)
    all_probabilities = torch.cat(probabilities).cpu().numpy().astype(np.float32)
    all_losses = torch.cat(losses)
    mean_loss = float(all_losses.double().sum()) / len(all_targets)
    return Predictions(all_probabilities, all_targets, mean_loss, all_losses.cpu().numpy().astype(np.float32))
