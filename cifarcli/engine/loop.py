"""One training epoch: the optimisation step and the loop that reads its losses back once per sync."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, NamedTuple, Optional

import torch
from torch import nn

from cifarcli.engine.ema import ModelEMA
from cifarcli.engine.lookahead import Lookahead
from cifarcli.engine.losses import classification_loss, l1_penalty, l1_weights
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
    # Read the losses back from the device (check they are finite, report them) every this
    # many global steps and at the end of the epoch. Reading waits for the device, so on a GPU
    # a larger value keeps it busy; skip_nonfinite must look at every loss and reads every step.
    sync_every_steps: int = 1
    # Report progress (step and LR, both known on the host) every this many global steps.
    progress_every_steps: int = 1


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
    lookahead: Optional[Lookahead] = None
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches already done in the current epoch (after an interruption)
    epoch_totals: EpochTotals = field(default_factory=EpochTotals)  # their sums (after an interruption)
    global_step: int = 0
    best_val_accuracy: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    # Gathered once (and again by `gather_parameters` after layers are frozen or thawed), so
    # that clipping and the L1 penalty walk no module tree in the step.
    parameters: tuple[nn.Parameter, ...] = field(init=False, repr=False)
    penalised_weights: tuple[nn.Parameter, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.gather_parameters()

    def gather_parameters(self) -> None:
        """Collect the model's parameters and the trainable weights the L1 penalty covers."""
        self.parameters = tuple(self.model.parameters())
        self.penalised_weights = tuple(l1_weights(self.model))

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


@dataclass(frozen=True)
class StepLoss:
    """One finished step's loss, read back from the device, and the LR that step used."""

    step: int  # global step, counted from 1
    loss: float
    lr: float


StepCallback = Callable[[int, float], None]  # (global step just finished, current LR): host values only
LossesCallback = Callable[[list[StepLoss]], None]  # the steps read back at one sync, in order


class _Pending(NamedTuple):
    """A finished step whose loss and hits are still on the device."""

    step: int
    loss: torch.Tensor  # 0-dim, detached
    hits: torch.Tensor  # 0-dim int64: correct predictions
    lr: float  # the LR the step used
    images: int


@dataclass
class _Window:
    """The steps since the last read-back, still on the device, and the epoch's host-side sums."""

    totals: EpochTotals
    steps: list[_Pending] = field(default_factory=list)

    def read_back(self, state: TrainState) -> list[StepLoss]:
        """Copy the window's losses and hits to the host in one transfer, add them to the totals in
        step order, and raise NonFiniteLoss naming the first step whose loss is NaN/inf."""
        if not self.steps:
            return []
        losses = torch.stack([pending.loss for pending in self.steps]).double()
        hits = torch.stack([pending.hits for pending in self.steps]).double()
        values = torch.cat([losses, hits]).tolist()  # the one sync of the window
        count = len(self.steps)
        loss_sum, correct, images = self.totals.loss_sum, self.totals.correct, self.totals.images
        read: list[StepLoss] = []
        for pending, loss, hit in zip(self.steps, values[:count], values[count:]):
            if not math.isfinite(loss):
                raise _nonfinite_error(state, loss, pending.step)
            loss_sum += loss * pending.images  # the same float64 sums, in the same order, as step by step
            correct += int(hit)
            images += pending.images
            read.append(StepLoss(pending.step, loss, pending.lr))
        self.totals = dataclasses.replace(self.totals, loss_sum=loss_sum, correct=correct, images=images)
        self.steps = []
        return read


def train_one_epoch(
    state: TrainState,
    batches: Batches,
    settings: StepSettings,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_losses: LossesCallback | None = None,
) -> EpochStats:
    """Run the optimisation steps of one epoch (from `state.batch_in_epoch` on) and return its stats.

    The model must already be in train mode (the caller may keep some layers in eval mode).
    Each step's loss and hits stay on the device until the next read-back, every
    `settings.sync_every_steps` global steps and at the end: one transfer, then a NaN/inf loss
    raises NonFiniteLoss naming its exact step, and `on_losses` receives the steps read.
    `on_step` is called every `settings.progress_every_steps` steps with host values only. Stops
    early, with `interrupted=True`, when `should_stop()` turns true between steps.
    """
    carried = state.epoch_totals if state.batch_in_epoch else EpochTotals()
    window = _Window(carried)
    state.gather_parameters()  # an epoch hook may have frozen or thawed layers
    skipped, done = carried.skipped_steps, state.batch_in_epoch
    started = time.perf_counter()
    every_sync = 1 if settings.skip_nonfinite else max(1, settings.sync_every_steps)
    every_progress = max(1, settings.progress_every_steps)

    def sync() -> None:
        read = window.read_back(state)
        if on_losses is not None and read:
            on_losses(read)

    for inputs, targets in batches:
        lr = state.lr
        if settings.skip_nonfinite:
            value, hits = optimisation_step(state, inputs, targets, settings)
            if value is None:
                skipped += 1
            else:  # already read back: kept as host tensors so the window sums them the same way
                loss_value, hit_count = torch.tensor(value, dtype=torch.float64), torch.tensor(hits)
                window.steps.append(_Pending(state.global_step, loss_value, hit_count, lr, inputs.shape[0]))
        else:
            loss, hit_count = device_step(state, inputs, targets, settings)
            window.steps.append(_Pending(state.global_step, loss, hit_count, lr, inputs.shape[0]))
        done += 1
        if on_step is not None and state.global_step % every_progress == 0:
            on_step(state.global_step, state.lr)
        if state.global_step % every_sync == 0:
            sync()
        if should_stop():
            break
    sync()
    seconds = carried.seconds + (time.perf_counter() - started)
    interrupted = should_stop()
    totals = dataclasses.replace(window.totals, skipped_steps=skipped, seconds=seconds)
    # An interrupted epoch's sums go into the checkpoint; a finished epoch leaves nothing to carry.
    state.epoch_totals = totals if interrupted else EpochTotals()
    return EpochStats(
        loss=totals.loss_sum / totals.images if totals.images else math.nan,
        accuracy=totals.correct / totals.images if totals.images else math.nan,
        images=totals.images,
        seconds=seconds,
        batches_done=done,
        skipped_steps=skipped,
        interrupted=interrupted,
    )


def _nonfinite_error(state: TrainState, value: object, step: int) -> NonFiniteLoss:
    return NonFiniteLoss(
        f"loss became {value} at epoch {state.epoch + 1}, step {step} (lr {state.lr:.3g})",
        hint="lower optim.lr, switch train.amp from fp16 to bf16, or set train.grad_clip_norm; "
        "the last good checkpoint is intact (train.nonfinite_loss=skip skips such steps)",
    )


def _forward_loss(
    state: TrainState, inputs: torch.Tensor, targets: torch.Tensor, settings: StepSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the training loss (label smoothing, L1) of one batch."""
    with settings.autocast():
        logits = state.forward(inputs)
        loss = classification_loss(logits, targets, settings.label_smoothing)
    if settings.l1_weight > 0 and state.penalised_weights:
        loss = loss + settings.l1_weight * l1_penalty(state.penalised_weights)
    return logits, loss


def _update(state: TrainState, loss: torch.Tensor, settings: StepSettings) -> None:
    """Backward, clip, optimizer and scheduler step, EMA, lookahead: everything after the loss."""
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    clip_gradients(state.parameters, state.scaler, state.optimizer, settings.grad_clip_norm, settings.grad_clip_value)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.global_step += 1
    if state.ema is not None and state.global_step % state.ema.every_steps == 0:
        state.ema.update(state.model)
    if state.lookahead is not None:
        state.lookahead.after_step(state.global_step)


def _hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    hard_targets = targets if targets.ndim == 1 else targets.argmax(dim=1)
    return (logits.detach().argmax(dim=1) == hard_targets).sum()


def device_step(
    state: TrainState, inputs: torch.Tensor, targets: torch.Tensor, settings: StepSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step that reads nothing back from the device: returns the detached loss and the hits as tensors."""
    logits, loss = _forward_loss(state, inputs, targets, settings)
    _update(state, loss, settings)
    return loss.detach(), _hits(logits, targets)


def optimisation_step(
    state: TrainState, inputs: torch.Tensor, targets: torch.Tensor, settings: StepSettings
) -> tuple[Optional[float], int]:
    """One step that checks the loss first: returns (loss, correct predictions), or (None, 0) for a
    skipped non-finite step (with `settings.skip_nonfinite`; otherwise NonFiniteLoss is raised)."""
    logits, loss = _forward_loss(state, inputs, targets, settings)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        if not settings.skip_nonfinite:
            raise _nonfinite_error(state, loss_value, state.global_step + 1)
        state.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # the schedule advances on purpose, though no update happened
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            state.scheduler.step()
        state.global_step += 1
        return None, 0
    _update(state, loss, settings)
    return loss_value, int(_hits(logits, targets))
