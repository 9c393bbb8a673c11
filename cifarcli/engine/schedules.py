"""Learning-rate schedules, stepped once per optimizer step (per batch).

Every schedule is a pure function `shape(step, timeline, cfg) -> multiplier`, where the
multiplier scales the peak LR (`optim.lr`). `lr_multiplier` adds the optional linear warm-up,
and both the live scheduler (`build_scheduler`) and the plotted trace (`lr_trace`) go
through it, so what is plotted is what is trained.

Step `s` (0-based) is the LR used by the `s`-th optimizer step of the run: the train loop
calls `optimizer.step()` then `scheduler.step()` after each batch.

Warm-up (every schedule but onecycle, which has its own rise): the LR rises linearly from
`lr / warmup_div` at step 0 to the schedule's value at the first step after warm-up. The
schedule then runs over the remaining steps: cosine anneals from the end of warm-up to the
end of the run, and cosine-restart cycles are counted from the end of warm-up. Multistep
milestones stay at their absolute epochs, because they name epochs of the run.

`schedule.span_epochs` (a run extended with `--extend-schedule continue`) draws the schedule
over fewer epochs than the run: every step past its end uses the schedule's final LR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cifarcli.config import ScheduleConfig
from cifarcli.errors import ConfigError


@dataclass(frozen=True)
class Timeline:
    """The run measured in optimizer steps, which every schedule shape is drawn on."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int  # 0 for onecycle
    min_ratio: float  # schedule.min_lr / peak LR, the floor of cosine and cosine_restarts


Shape = Callable[[int, Timeline, ScheduleConfig], float]


# --------------------------------------------------------------------------- shapes


def onecycle_peak_fraction(cfg: ScheduleConfig, epochs: int) -> float:
    """Share of the run spent rising: `peak_epoch / epochs`, or `peak_fraction` when unset."""
    if cfg.peak_epoch is None:
        fraction = cfg.peak_fraction
    elif cfg.peak_epoch >= epochs:
        raise ConfigError(
            f"schedule.peak_epoch: {cfg.peak_epoch} must be less than train.epochs ({epochs})",
            hint="lower schedule.peak_epoch, or set it to null to use schedule.peak_fraction",
        )
    else:
        fraction = cfg.peak_epoch / epochs
    if cfg.three_phase and fraction >= 0.5:
        raise ConfigError(
            f"schedule.three_phase: the rise takes {fraction:.0%} of the run, but three phases need less than half",
            hint="lower schedule.peak_epoch (or peak_fraction), or set schedule.three_phase=false",
        )
    return fraction


def _anneal(start: float, end: float, progress: float, anneal: str) -> float:
    """Interpolate from `start` to `end` as `progress` goes from 0 to 1 (cos or linear)."""
    if anneal == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1)
    return (end - start) * progress + start


def onecycle(step: int, timeline: Timeline, cfg: ScheduleConfig) -> float:
    """One-cycle: the same phases and boundaries as `torch.optim.lr_scheduler.OneCycleLR`.

    Steps past the end are held at the last step (torch would extrapolate, below the floor).
    """
    total = timeline.total_steps
    rise = onecycle_peak_fraction(cfg, total // timeline.steps_per_epoch) * total
    initial = 1.0 / cfg.initial_div
    final = initial / cfg.final_div
    if cfg.three_phase:
        phases = [(rise - 1, initial, 1.0), (2 * rise - 2, 1.0, initial), (total - 1, initial, final)]
    else:
        phases = [(rise - 1, initial, 1.0), (total - 1, 1.0, final)]
    step = min(max(step, 0), total - 1)
    phase_start = 0.0
    for index, (phase_end, start, end) in enumerate(phases):
        if step <= phase_end or index == len(phases) - 1:
            length = phase_end - phase_start
            progress = (step - phase_start) / length if length != 0 else 1.0
            return _anneal(start, end, progress, cfg.anneal)
        phase_start = phase_end
    raise AssertionError("unreachable: the last phase always matches")


def cosine(step: int, timeline: Timeline, cfg: ScheduleConfig) -> float:
    """Half a cosine from the peak (end of warm-up) to `min_lr` at the last step of the run."""
    length = max(timeline.total_steps - 1 - timeline.warmup_steps, 1)
    progress = min(max(step - timeline.warmup_steps, 0) / length, 1.0)
    floor = timeline.min_ratio
    return floor + (1.0 - floor) * (1 + math.cos(math.pi * progress)) / 2


def cosine_restarts(step: int, timeline: Timeline, cfg: ScheduleConfig) -> float:
    """SGDR: torch's `CosineAnnealingWarmRestarts` evaluated at the fractional epoch of `step`.

    The first cycle lasts `restart_epochs`, each next one `restart_mult` times longer; at each
    restart the LR jumps back to the peak. Epochs are counted from the end of warm-up.
    """
    epoch = max(step - timeline.warmup_steps, 0) / timeline.steps_per_epoch
    cycle_epochs = cfg.restart_epochs
    if cfg.restart_mult == 1:
        since_restart = epoch % cycle_epochs
    else:
        # A loop, not torch's log(): exact at the cycle boundaries, and only log(n) turns.
        cycle_start = 0.0
        while epoch >= cycle_start + cycle_epochs:
            cycle_start += cycle_epochs
            cycle_epochs *= cfg.restart_mult
        since_restart = epoch - cycle_start
    floor = timeline.min_ratio
    return floor + (1.0 - floor) * (1 + math.cos(math.pi * since_restart / cycle_epochs)) / 2


def multistep(step: int, timeline: Timeline, cfg: ScheduleConfig) -> float:
    """`gamma` to the power of the milestones reached; a milestone epoch `m` acts from step round(m * steps_per_epoch)."""
    passed = sum(1 for milestone in cfg.milestones if step >= round(milestone * timeline.steps_per_epoch))
    return cfg.gamma**passed


def constant(step: int, timeline: Timeline, cfg: ScheduleConfig) -> float:
    """The peak LR throughout."""
    return 1.0


SCHEDULES: dict[str, Shape] = {
    "onecycle": onecycle,
    "cosine": cosine,
    "cosine_restarts": cosine_restarts,
    "multistep": multistep,
    "constant": constant,
}


# --------------------------------------------------------------------------- warm-up and builders


def make_timeline(cfg: ScheduleConfig, peak_lr: float, steps_per_epoch: int, epochs: int) -> Timeline:
    """Check the run's length against the schedule and measure the schedule's span in steps."""
    if cfg.name not in SCHEDULES:
        raise ConfigError(f"schedule.name: {cfg.name!r} is not one of {', '.join(SCHEDULES)}")
    if cfg.span_epochs is not None:
        if cfg.span_epochs > epochs:
            raise ConfigError(f"schedule.span_epochs: {cfg.span_epochs} is more than train.epochs ({epochs})",
                              hint="set schedule.span_epochs to null, or at most train.epochs")  # fmt: skip
        epochs = cfg.span_epochs
    if steps_per_epoch < 1 or epochs < 1:
        raise ConfigError(
            f"the schedule needs at least one step: got {steps_per_epoch} steps per epoch and {epochs} epochs",
            hint="use a smaller data.batch_size, or set data.drop_last=false for a tiny data set",
        )
    total_steps = steps_per_epoch * epochs
    warmup_steps = 0 if cfg.name == "onecycle" else round(cfg.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        raise ConfigError(
            f"schedule.warmup_epochs: {cfg.warmup_epochs} must be less than train.epochs ({epochs})",
            hint="lower schedule.warmup_epochs or raise train.epochs",
        )
    if cfg.name == "onecycle":
        onecycle_peak_fraction(cfg, epochs)
    if cfg.name in ("cosine", "cosine_restarts") and cfg.min_lr > peak_lr:
        raise ConfigError(
            f"schedule.min_lr: {cfg.min_lr} is above the peak LR optim.lr ({peak_lr})",
            hint="set schedule.min_lr below optim.lr, e.g. optim.lr / 100",
        )
    return Timeline(steps_per_epoch, total_steps, warmup_steps, cfg.min_lr / peak_lr)


def lr_multiplier(step: int, timeline: Timeline, cfg: ScheduleConfig) -> float:
    """The LR at `step` divided by the peak LR, warm-up included; past the schedule's span, its final value."""
    shape = SCHEDULES[cfg.name]
    step = min(step, timeline.total_steps - 1)
    warmup_steps = timeline.warmup_steps
    if step >= warmup_steps:
        return shape(step, timeline, cfg)
    start = 1.0 / cfg.warmup_div
    return start + (shape(warmup_steps, timeline, cfg) - start) * max(step, 0) / warmup_steps


def lr_trace(cfg: ScheduleConfig, peak_lr: float, steps_per_epoch: int, epochs: int) -> list[float]:
    """The LR used by every optimizer step of the run, in order (length epochs * steps_per_epoch)."""
    timeline = make_timeline(cfg, peak_lr, steps_per_epoch, epochs)
    return [peak_lr * lr_multiplier(step, timeline, cfg) for step in range(steps_per_epoch * epochs)]


def build_scheduler(optimizer: Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> LambdaLR:
    """A `LambdaLR` over `lr_multiplier`, to be stepped after every optimizer step.

    Its `state_dict()` holds only counters and floats (the multiplier is a closure, which
    `LambdaLR` does not save), so it loads with `torch.load(..., weights_only=True)`. The peak
    LR is each group's `initial_lr` (set on first construction) or else its `lr`. To resume:
    build the optimizer and this scheduler as for a fresh run, then load both state dicts.
    """
    first_group = optimizer.param_groups[0]
    peak_lr = float(first_group.get("initial_lr", first_group["lr"]))
    timeline = make_timeline(cfg, peak_lr, steps_per_epoch, epochs)

    def multiplier(step: int) -> float:
        return lr_multiplier(step, timeline, cfg)

    return LambdaLR(optimizer, multiplier)


def sync_lr(optimizer: Optimizer, scheduler: LambdaLR) -> None:
    """Set each group's LR to what `scheduler` gives at the step it has reached.

    Needed once after a checkpoint's state is loaded into a scheduler drawn over another
    length (a run extended with the schedule stretched): the optimizer state holds the LR of
    the old schedule, which the next step would still use.
    """
    lrs = [base * shape(scheduler.last_epoch) for base, shape in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports, as LambdaLR.step() would set it
