"""One training epoch and one pass of predictions: the two loops everything else is built on."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, Optional

import numpy as np
import torch
from torch import nn

from cifarcli.engine.ema import ModelEMA
from cifarcli.engine.losses import classification_loss, l1_penalty
from cifarcli.engine.precision import clip_gradients
from cifarcli.errors import RunError

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class NonFiniteLoss(RunError):
    """The loss became NaN or inf; the last good checkpoint is left untouched."""


@dataclass(frozen=True)
class StepSettings:
    """What one optimisation step needs to know besides the model and optimizer."""

    label_smoothing: float = 0.0
    l1_weight: float = 0.0
    grad_clip_norm: Optional[float] = None
    grad_clip_value: Optional[float] = None
    skip_nonfinite: bool = False
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext


@dataclass(frozen=True)
class EpochTotals:
    """Sums over the finished steps of the current epoch, kept across an interruption so that a
    resumed epoch reports the same loss and accuracy as an uninterrupted one."""

    loss_sum: float = 0.0  # sum over steps of loss * images
    correct: int = 0
    images: int = 0
    skipped_steps: int = 0
    seconds: float = 0.0


@dataclass
class TrainState:
    """Everything a resumable run carries from step to step."""

    model: nn.Module  # the module whose weights are saved
    forward: nn.Module  # what is called on batches (the compiled model, or `model` itself)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: Optional[ModelEMA] = None
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches already done in the current epoch (after an interruption)
    epoch_totals: EpochTotals = field(default_factory=EpochTotals)  # their sums (after an interruption)
    global_step: int = 0
    best_val_accuracy: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    batches_done: int  # in this epoch, counting any batches done before a resume
    skipped_steps: int
    interrupted: bool

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


StepCallback = Callable[[int, float, float], None]  # (global step, loss, lr)


def train_one_epoch(
    state: TrainState,
    batches: Batches,
    settings: StepSettings,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> EpochStats:
    """Run the optimisation steps of one epoch (from `state.batch_in_epoch` on) and return its stats.

    Stops early, with `interrupted=True`, when `should_stop()` turns true between steps.
    """
    state.forward.train()
    carried = state.epoch_totals if state.batch_in_epoch else EpochTotals()
    loss_sum = torch.tensor(carried.loss_sum, dtype=torch.float64)
    correct = torch.tensor(carried.correct, dtype=torch.int64)
    images = carried.images
    skipped = carried.skipped_steps
    done = state.batch_in_epoch
    started = time.perf_counter()
    for inputs, targets in batches:
        loss, hits = optimisation_step(state, inputs, targets, settings)
        done += 1
        if loss is None:
            skipped += 1
        else:
            loss_sum += loss * inputs.shape[0]
            correct += hits
            images += inputs.shape[0]
            if on_step is not None:
                on_step(state.global_step, loss, state.lr)
        if should_stop():
            break
    seconds = carried.seconds + (time.perf_counter() - started)
    interrupted = should_stop()
    # An interrupted epoch's sums go into the checkpoint; a finished epoch leaves nothing to carry.
    state.epoch_totals = EpochTotals(float(loss_sum), int(correct), images, skipped, seconds) if interrupted else EpochTotals()
    return EpochStats(
        loss=float(loss_sum) / images if images else math.nan,
        accuracy=float(correct) / images if images else math.nan,
        images=images,
        seconds=seconds,
        batches_done=done,
        skipped_steps=skipped,
        interrupted=interrupted,
    )


def optimisation_step(
    state: TrainState, inputs: torch.Tensor, targets: torch.Tensor, settings: StepSettings
) -> tuple[Optional[float], int]:
    """One step; returns (loss, correct predictions), or (None, 0) for a skipped non-finite step."""
    with settings.autocast():
        logits = state.forward(inputs)
        loss = classification_loss(logits, targets, settings.label_smoothing)
    if settings.l1_weight > 0:
        loss = loss + settings.l1_weight * l1_penalty(state.model)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        if not settings.skip_nonfinite:
            raise NonFiniteLoss(
                f"loss became {loss_value} at epoch {state.epoch + 1}, step {state.global_step + 1} (lr {state.lr:.3g})",
                hint="lower optim.lr, switch train.amp from fp16 to bf16, or set train.grad_clip_norm; "
                "the last good checkpoint is intact (train.nonfinite_loss=skip skips such steps)",
            )
        state.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # the schedule advances on purpose, though no update happened
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            state.scheduler.step()
        state.global_step += 1
        return None, 0
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    clip_gradients(
        state.model.parameters(), state.scaler, state.optimizer, settings.grad_clip_norm, settings.grad_clip_value
    )
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(state.model)
    state.global_step += 1
    hard_targets = targets if targets.ndim == 1 else targets.argmax(dim=1)
    hits = int((logits.detach().argmax(dim=1) == hard_targets).sum())
    return loss_value, hits


@dataclass(frozen=True)
class Predictions:
    """Softmax probabilities and true labels of one pass over a split, in data order."""

    probabilities: np.ndarray  # (N, C) float32
    targets: np.ndarray  # (N,) int64
    loss: float  # mean cross-entropy (no smoothing)

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
) -> Predictions:
    """Evaluate `model` on every batch (eval mode, restored afterwards); optional flip TTA."""
    was_training = model.training
    model.eval()
    probabilities: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    loss_sum = 0.0
    try:
        for inputs, labels in batches:
            with autocast():
                logits = model(inputs).float()
                if tta_flip:
                    logits = (logits + model(torch.flip(inputs, dims=[3])).float()) / 2
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            probabilities.append(torch.softmax(logits, dim=1).cpu())
            targets.append(labels.cpu())
    finally:
        model.train(was_training)
    if not targets:
        return Predictions(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), math.nan)
    all_targets = torch.cat(targets).numpy().astype(np.int64)
    return Predictions(torch.cat(probabilities).numpy().astype(np.float32), all_targets, loss_sum / len(all_targets))
