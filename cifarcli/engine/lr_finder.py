"""The LR range test: train briefly while the LR sweeps upwards, and read a good LR off the loss.

`find_lr` runs the configured optimisation step (`optimisation_step`: autocast, label
smoothing, L1, clipping, grad scaler) with a `LambdaLR` that sets the sweep's LR before every
step, records the loss, smooths it (an exponential moving average with bias correction, started
again after the burn-in) and stops at `end_lr`, when the smoothed loss exceeds `diverge_factor`
times its best after the burn-in, or when the loss turns NaN/inf. The model, the optimizer and
the global RNG are restored afterwards, so the sweep never changes what follows.

The suggestions are pure functions of the recorded curve (LRs and smoothed losses), read
after a burn-in (the first `lr_find.burn_in_share` of the steps, where one lucky or unlucky
batch still moves the smoothed loss a lot):
- `steepest`: where the smoothed loss falls fastest against log(LR);
- `min_div10`: the LR at the lowest smoothed loss, divided by 10;
- `valley`: two thirds of the way down the longest valley of decreasing loss.
`curve_warnings` says when the smoothed loss barely moved, so that no suggestion means much.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from cifarcli.config import LrFindConfig
from cifarcli.engine.checkpoint import capture_rng_state, restore_rng_state
from cifarcli.engine.loop import Batches, NonFiniteLoss, StepSettings, TrainState, optimisation_step
from cifarcli.errors import UsageError

MIN_POINTS = 5  # fewer recorded steps than this give no suggestion at all
EDGE_SHARE = 0.05  # `steepest` ignores this share of the points at each end (at least one)
VALLEY_POSITION = 2 / 3  # how far down the valley `valley` picks its point
FLAT_SHARE = 0.03  # a smoothed loss whose range after the burn-in is under 3% of its level "barely moved"

StepHook = Callable[[int, float, float], None]  # (step index, lr, smoothed loss)


@dataclass(frozen=True)
class Suggestion:
    """One suggested LR, or None with the reason in `note` when the curve gives none."""

    name: str
    lr: Optional[float]
    index: Optional[int]  # the point of the curve the suggestion is read from
    note: str


@dataclass(frozen=True)
class LrFindResult:
    """The recorded sweep: one entry per completed step, and why it stopped."""

    lrs: np.ndarray  # LR used by each step
    losses: np.ndarray  # raw training loss of each step
    smoothed_losses: np.ndarray  # bias-corrected EMA of `losses`
    stop_reason: str  # "reached end_lr", "loss diverged (...) at lr ...", "loss became nan at lr ..."
    stopped_early: bool
    suggestions: dict[str, Suggestion]
    burn_in_steps: int = 0  # the first steps the suggestions ignore
    warnings: tuple[str, ...] = ()  # why the suggestions may mean little, each with what to change

    @property
    def steps(self) -> int:
        return len(self.lrs)


def sweep_lrs(cfg: LrFindConfig) -> np.ndarray:
    """The `num_iter` LRs of the sweep, from `start_lr` to `end_lr`: geometric (exp) or evenly spaced (linear)."""
    if cfg.mode == "exp":
        return np.geomspace(cfg.start_lr, cfg.end_lr, cfg.num_iter)
    return np.linspace(cfg.start_lr, cfg.end_lr, cfg.num_iter)


def cycle_batches(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches: epoch after epoch of `batches` (calling `set_epoch` when it has one)."""
    epoch = 0
    while True:
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise UsageError(
                "lr-find: the training split yields no batches",
                hint="lower data.batch_size or set data.drop_last=false for a small data set",
            )
        epoch += 1


def _sweep_scheduler(optimizer: torch.optim.Optimizer, lrs: np.ndarray) -> LambdaLR:
    """A LambdaLR whose multiplier makes step `s` use `lrs[s]` (relative to the first group's base LR)."""
    first = optimizer.param_groups[0]
    base_lr = float(first.get("initial_lr", first["lr"]))
    last = len(lrs) - 1
    return LambdaLR(optimizer, lambda step: float(lrs[min(step, last)]) / base_lr)


def _nonfinite_word(exc: NonFiniteLoss) -> str:
    found = re.match(r"loss became (\S+)", exc.message)
    return found.group(1) if found else "nan/inf"


def _sweep(
    state: TrainState, batches: Iterable, settings: StepSettings, cfg: LrFindConfig, on_step: Optional[StepHook]
) -> tuple[list[float], list[float], list[float], str]:
    """Step through the sweep; returns (lrs, losses, smoothed losses, stop reason)."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, count, best = 0.0, 0, math.inf  # count: the steps in the average (for its bias correction)
    burn_in = burn_in_steps(cfg)
    for step, (inputs, targets) in zip(range(cfg.num_iter), batches):
        lr = state.lr
        try:
            loss, _ = optimisation_step(state, inputs, targets, settings)
        except NonFiniteLoss as exc:
            return lrs, losses, smoothed, f"loss became {_nonfinite_word(exc)} at lr {lr:.3g}"
        assert loss is not None  # skip_nonfinite is off, so a bad loss raises instead
        if step == burn_in:  # the smoothing starts again: a burn-in spike would linger in the average for ~1/(1-smoothing) steps
            average, count = 0.0, 0
        count += 1
        average = cfg.smoothing * average + (1 - cfg.smoothing) * loss
        smooth = average / (1 - cfg.smoothing**count)
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(smooth)
        if on_step is not None:
            on_step(step, lr, smooth)
        if not math.isfinite(smooth):
            return lrs, losses, smoothed, f"loss became {smooth} at lr {lr:.3g}"
        if step < burn_in:  # a lucky early batch must not set the best that divergence is measured from
            continue
        best = min(best, smooth)
        if smooth > cfg.diverge_factor * best:
            return lrs, losses, smoothed, f"loss diverged (smoothed loss > {cfg.diverge_factor:g}x best) at lr {lr:.3g}"
    return lrs, losses, smoothed, "reached end_lr"


def find_lr(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    settings: StepSettings,
    cfg: LrFindConfig,
    scaler: Optional[torch.amp.GradScaler] = None,
    on_step: Optional[StepHook] = None,
) -> LrFindResult:
    """Run the LR range test on `model` with `optimizer` (built over its parameters) and return the curve.

    `batches` is cycled epoch after epoch when `num_iter` exceeds one epoch. `scaler` defaults
    to a disabled GradScaler (fp32/bf16). Non-finite losses always stop the sweep (even with
    `settings.skip_nonfinite`). Afterwards the model's weights and buffers, its train/eval
    mode, the optimizer's state and the global torch RNG are as they were before the call.
    """
    device = next(model.parameters()).device
    saved_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_rng = capture_rng_state()
    was_training = model.training
    start_epoch = getattr(batches, "epoch", None)
    try:
        state = TrainState(
            model=model, forward=model, optimizer=optimizer, scheduler=_sweep_scheduler(optimizer, sweep_lrs(cfg)),
            scaler=scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False),
        )  # fmt: skip
        model.train()
        step_settings = dataclasses.replace(settings, skip_nonfinite=False)
        lrs, losses, smoothed, reason = _sweep(state, cycle_batches(batches), step_settings, cfg, on_step)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
        restore_rng_state(saved_rng)
        if isinstance(start_epoch, int) and hasattr(batches, "set_epoch"):
            batches.set_epoch(start_epoch)
    lr_array, smooth_array = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    burn_in = burn_in_steps(cfg)
    return LrFindResult(
        lrs=lr_array,
        losses=np.asarray(losses, dtype=np.float64),
        smoothed_losses=smooth_array,
        stop_reason=reason,
        stopped_early=reason != "reached end_lr",
        suggestions=suggest_all(lr_array, smooth_array, burn_in),
        burn_in_steps=burn_in,
        warnings=curve_warnings(smooth_array, burn_in),
    )


def burn_in_steps(cfg: LrFindConfig) -> int:
    """How many of the sweep's first steps the suggestions skip: `burn_in_share` of `num_iter`, rounded down."""
    return int(cfg.burn_in_share * cfg.num_iter)


def curve_warnings(smoothed_losses: np.ndarray, burn_in: int = 0) -> tuple[str, ...]:
    """Why the curve says little, each with the setting to change; () for a curve that moved.

    The smoothed loss "barely moved" when, after the burn-in, its range is under FLAT_SHARE of
    its level: the sweep did not reach LRs that train (too low) or that diverge (too high).
    """
    curve = np.asarray(smoothed_losses, dtype=np.float64)[burn_in:]
    curve = curve[np.isfinite(curve)]
    if len(curve) < MIN_POINTS:
        return ()
    lowest, highest = float(curve.min()), float(curve.max())
    level = max(abs(highest), 1e-12)
    if (highest - lowest) / level >= FLAT_SHARE:
        return ()
    return (
        f"the smoothed loss barely moved over the sweep ({lowest:.4g} to {highest:.4g}, {100 * (highest - lowest) / level:.1f}%), "
        "so the suggestions mean little: widen the range (lower lr_find.start_lr, raise lr_find.end_lr) "
        "or take more steps (raise lr_find.num_iter)",
    )


# --------------------------------------------------------------------------- suggestions


def suggest_steepest(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """The LR where the loss falls fastest against log(LR) on its way down to its lowest point.

    A few points at each end are ignored (the first steps are noisy, the last diverge), and so
    is everything after the lowest loss, where a dip is a rebound of a diverging loss.
    """
    if len(lrs) < MIN_POINTS:
        return _too_short("steepest", len(lrs))
    losses = np.asarray(losses, dtype=np.float64)
    slopes = np.gradient(losses, np.log(np.asarray(lrs, dtype=np.float64)))
    edge = max(1, int(len(lrs) * EDGE_SHARE))
    inner = slopes[edge : min(int(np.nanargmin(losses)), len(lrs) - 1 - edge) + 1]
    flat = 1e-9 * max(1.0, float(np.nanmax(np.abs(losses))))  # rounding noise of a flat curve is not a descent
    if inner.size == 0 or not np.isfinite(inner).any() or np.nanmin(inner) >= -flat:
        return Suggestion("steepest", None, None, "the loss never decreased")
    index = edge + int(np.nanargmin(inner))
    return Suggestion("steepest", float(lrs[index]), index, "steepest descent of the smoothed loss")


def suggest_min_div10(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """The LR at the lowest loss, divided by 10."""
    if len(lrs) < MIN_POINTS:
        return _too_short("min_div10", len(lrs))
    index = int(np.nanargmin(losses))
    if index == 0:
        return Suggestion("min_div10", None, None, "the loss never went below its first value")
    return Suggestion("min_div10", float(lrs[index]) / 10, index, f"lowest smoothed loss at lr {lrs[index]:.3g}, divided by 10")


def longest_valley(losses: np.ndarray) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing run of points, gaps allowed.

    It is the longest decreasing subsequence of the curve, found in O(n log n): `tails[k]`
    holds the index ending the best decreasing chain of k + 1 points seen so far.
    """
    negated = [-float(v) for v in losses]  # a decreasing chain of losses is an increasing chain here
    tails: list[int] = []
    tail_values: list[float] = []
    previous = [-1] * len(negated)
    for index, value in enumerate(negated):
        if not math.isfinite(value):
            continue
        position = bisect.bisect_left(tail_values, value)
        previous[index] = tails[position - 1] if position > 0 else -1
        if position == len(tails):
            tails.append(index)
            tail_values.append(value)
        else:
            tails[position] = index
            tail_values[position] = value
    if not tails:
        return 0, 0
    last = first = tails[-1]
    while previous[first] != -1:
        first = previous[first]
    return first, last


def suggest_valley(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """The point two thirds of the way down the longest valley of decreasing loss."""
    if len(lrs) < MIN_POINTS:
        return _too_short("valley", len(lrs))
    first, last = longest_valley(losses)
    if last <= first:
        return Suggestion("valley", None, None, "the loss never decreased")
    index = first + int(round(VALLEY_POSITION * (last - first)))
    return Suggestion("valley", float(lrs[index]), index, f"2/3 down the valley from lr {lrs[first]:.3g} to {lrs[last]:.3g}")


# Keyed by exactly config.LR_SUGGESTION_NAMES (a test holds it to that tuple).
SUGGESTERS: dict[str, Callable[[np.ndarray, np.ndarray], Suggestion]] = {
    "steepest": suggest_steepest,
    "min_div10": suggest_min_div10,
    "valley": suggest_valley,
}


def suggest_all(lrs: np.ndarray, smoothed_losses: np.ndarray, burn_in: int = 0) -> dict[str, Suggestion]:
    """Every suggestion for one curve, keyed by name, read from the points after the first `burn_in`.

    Indices in the suggestions count from the start of the whole curve.
    """
    if len(lrs) - burn_in < MIN_POINTS:
        return {name: _too_short(name, len(lrs), burn_in) for name in SUGGESTERS}
    suggestions = {}
    for name, suggest in SUGGESTERS.items():
        found = suggest(np.asarray(lrs)[burn_in:], np.asarray(smoothed_losses)[burn_in:])
        suggestions[name] = dataclasses.replace(found, index=found.index + burn_in) if found.index is not None else found
    return suggestions


def _too_short(name: str, points: int, burn_in: int = 0) -> Suggestion:
    if not burn_in:
        return Suggestion(name, None, None, f"only {points} step(s) recorded; at least {MIN_POINTS} are needed")
    return Suggestion(name, None, None, f"only {points} step(s) recorded, the first {min(burn_in, points)} of them "
                      f"burn-in (lr_find.burn_in_share); at least {MIN_POINTS} after it are needed")  # fmt: skip
