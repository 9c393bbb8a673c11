"""LR schedules: torch equivalence, shapes, warm-up, and the scheduler's checkpoint round trip."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from cifarcli.config import SCHEDULE_NAMES, ScheduleConfig
from cifarcli.engine.schedules import SCHEDULES, build_scheduler, lr_trace, sync_lr
from cifarcli.errors import ConfigError

PEAK_LR = 0.4


def _sgd(lr: float = PEAK_LR) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9)


def _torch_trace(scheduler: torch.optim.lr_scheduler.LRScheduler, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_registry_matches_config_names():
    assert tuple(SCHEDULES) == SCHEDULE_NAMES


@pytest.mark.parametrize(
    "settings, epochs, steps_per_epoch, pct_start",
    [
        # The seed recipe: 24 epochs, 98 steps, peak at epoch 5, divisors 100/100, linear, two phases.
        (dict(peak_epoch=5.0, initial_div=100.0, final_div=100.0, anneal="linear"), 24, 98, 5 / 24),
        (dict(peak_epoch=5.0, initial_div=25.0, final_div=1e4, anneal="cos", three_phase=True), 24, 98, 5 / 24),
        (dict(peak_epoch=None, peak_fraction=0.3, initial_div=25.0, final_div=1e4, anneal="cos"), 10, 37, 0.3),
        # A rise of 22.75 steps: torch's fractional phase boundary must be copied, not rounded.
        (dict(peak_epoch=None, peak_fraction=0.25, anneal="linear", three_phase=True), 7, 13, 0.25),
    ],
)
def test_onecycle_equals_torch_at_every_step(settings, epochs, steps_per_epoch, pct_start):
    cfg = ScheduleConfig(name="onecycle", **settings)
    ours = lr_trace(cfg, PEAK_LR, steps_per_epoch, epochs)
    optimizer = _sgd()
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=PEAK_LR,
        total_steps=epochs * steps_per_epoch,
        pct_start=pct_start,
        div_factor=cfg.initial_div,
        final_div_factor=cfg.final_div,
        three_phase=cfg.three_phase,
        anneal_strategy=cfg.anneal,
    )
    expected = _torch_trace(reference, optimizer, epochs * steps_per_epoch)
    assert len(ours) == epochs * steps_per_epoch
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=0)
    assert ours[0] == pytest.approx(PEAK_LR / cfg.initial_div, rel=1e-12)
    assert ours[-1] == pytest.approx(PEAK_LR / cfg.initial_div / cfg.final_div, rel=1e-9)
    assert max(ours) <= PEAK_LR * (1 + 1e-12)  # reached exactly only when the rise is a whole number of steps


def test_onecycle_peaks_at_the_peak_epoch_and_ignores_warmup():
    cfg = ScheduleConfig(name="onecycle", peak_epoch=5.0, warmup_epochs=3.0, initial_div=100.0, final_div=100.0)
    trace = lr_trace(cfg, PEAK_LR, 98, 24)
    assert int(np.argmax(trace)) == 5 * 98 - 1  # torch's first phase ends at pct_start * total - 1
    assert trace[0] == pytest.approx(PEAK_LR / 100)
    assert all(np.diff(trace[: 5 * 98]) > 0) and all(np.diff(trace[5 * 98 - 1 :]) < 0)


def test_onecycle_rejects_a_peak_after_the_end():
    with pytest.raises(ConfigError, match="schedule.peak_epoch"):
        lr_trace(ScheduleConfig(name="onecycle", peak_epoch=30.0), PEAK_LR, 10, 24)
    with pytest.raises(ConfigError, match="three_phase"):
        lr_trace(ScheduleConfig(name="onecycle", peak_epoch=None, peak_fraction=0.6, three_phase=True), PEAK_LR, 10, 24)


def test_cosine_falls_monotonically_from_peak_to_min_lr():
    trace = lr_trace(ScheduleConfig(name="cosine", min_lr=0.004), PEAK_LR, 20, 5)
    assert trace[0] == pytest.approx(PEAK_LR)
    assert trace[-1] == pytest.approx(0.004)
    assert min(trace) == pytest.approx(0.004) and max(trace) == pytest.approx(PEAK_LR)
    assert all(np.diff(trace) < 0)
    middle = (len(trace) - 1) / 2  # half way the LR is half way between peak and floor
    assert np.interp(middle, np.arange(len(trace)), trace) == pytest.approx((PEAK_LR + 0.004) / 2, rel=1e-3)


@pytest.mark.parametrize("restart_epochs, restart_mult", [(2, 1), (2, 2), (3, 3)])
def test_cosine_restarts_equals_torch_at_fractional_epochs(restart_epochs, restart_mult):
    steps_per_epoch, epochs = 10, 20
    cfg = ScheduleConfig(name="cosine_restarts", restart_epochs=restart_epochs, restart_mult=restart_mult, min_lr=0.01)
    ours = lr_trace(cfg, PEAK_LR, steps_per_epoch, epochs)
    optimizer = _sgd()
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=restart_epochs, T_mult=restart_mult, eta_min=0.01
    )
    expected = []
    for step in range(steps_per_epoch * epochs):
        reference.step(step / steps_per_epoch)
        expected.append(optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=0)


def test_cosine_restarts_jump_back_to_the_peak_at_cycle_boundaries():
    steps_per_epoch = 10
    cfg = ScheduleConfig(name="cosine_restarts", restart_epochs=2, restart_mult=2, min_lr=0.0)
    trace = np.array(lr_trace(cfg, PEAK_LR, steps_per_epoch, 14))
    jumps = [int(i) + 1 for i in np.flatnonzero(np.diff(trace) > 0)]
    assert jumps == [20, 60]  # cycles of 2, 4, 8 epochs: restarts at epochs 2 and 6
    assert trace[jumps] == pytest.approx([PEAK_LR, PEAK_LR])
    assert trace[19] < 0.01 * PEAK_LR and trace[59] < 0.01 * PEAK_LR


def test_multistep_drops_by_gamma_at_the_milestone_steps():
    cfg = ScheduleConfig(name="multistep", milestones=[2.0, 3.5], gamma=0.1)
    trace = np.array(lr_trace(cfg, PEAK_LR, 10, 5))
    drops = [int(i) + 1 for i in np.flatnonzero(np.diff(trace) != 0)]
    assert drops == [20, 35]
    assert trace[:20] == pytest.approx([PEAK_LR] * 20)
    assert trace[20:35] == pytest.approx([PEAK_LR * 0.1] * 15)
    assert trace[35:] == pytest.approx([PEAK_LR * 0.01] * 15)


def test_constant_is_the_peak_lr():
    assert lr_trace(ScheduleConfig(name="constant"), PEAK_LR, 7, 3) == [PEAK_LR] * 21


@pytest.mark.parametrize("name", ["cosine", "cosine_restarts", "multistep", "constant"])
def test_warmup_rises_linearly_from_lr_over_div_to_the_schedule(name):
    steps_per_epoch, epochs, warmup_steps = 10, 6, 15
    cfg = ScheduleConfig(name=name, warmup_epochs=1.5, warmup_div=20.0, milestones=[4.0], restart_epochs=2.0)
    trace = np.array(lr_trace(cfg, PEAK_LR, steps_per_epoch, epochs))
    assert trace[0] == pytest.approx(PEAK_LR / 20.0)
    ramp = trace[: warmup_steps + 1]
    np.testing.assert_allclose(np.diff(ramp, 2), 0.0, atol=1e-12)  # a straight line ...
    assert trace[warmup_steps] == pytest.approx(PEAK_LR)  # ... that reaches the schedule's peak
    assert all(np.diff(ramp) > 0)


def test_cosine_after_warmup_runs_over_the_remaining_steps():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1.0, min_lr=0.0)
    trace = lr_trace(cfg, PEAK_LR, 10, 5)
    remaining = len(trace) - 1 - 10  # the cosine spans steps 10 .. 49
    expected = [PEAK_LR * (1 + math.cos(math.pi * k / remaining)) / 2 for k in range(remaining + 1)]
    np.testing.assert_allclose(trace[10:], expected, rtol=1e-9, atol=1e-15)


def test_warmup_longer_than_the_run_is_a_config_error():
    with pytest.raises(ConfigError, match="schedule.warmup_epochs"):
        lr_trace(ScheduleConfig(name="cosine", warmup_epochs=5.0), PEAK_LR, 10, 5)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_scheduler_follows_the_trace(name):
    cfg = ScheduleConfig(
        name=name, warmup_epochs=0.5, peak_epoch=1.0, milestones=[1.0], restart_epochs=1.0, min_lr=0.001
    )
    optimizer = _sgd()
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=8, epochs=3)
    np.testing.assert_allclose(_torch_trace(scheduler, optimizer, 24), lr_trace(cfg, PEAK_LR, 8, 3), rtol=1e-12)


def test_scheduler_state_round_trips_through_weights_only_load():
    cfg = ScheduleConfig(name="onecycle", peak_epoch=2.0, initial_div=100.0, final_div=100.0)
    steps_per_epoch, epochs, stop_at = 9, 5, 17

    optimizer = _sgd()
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    uninterrupted = _torch_trace(scheduler, optimizer, steps_per_epoch * epochs)

    optimizer = _sgd()
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    before = _torch_trace(scheduler, optimizer, stop_at)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_optimizer = _sgd()
    resumed = build_scheduler(resumed_optimizer, cfg, steps_per_epoch, epochs)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    after = _torch_trace(resumed, resumed_optimizer, steps_per_epoch * epochs - stop_at)
    assert before + after == pytest.approx(uninterrupted, rel=1e-12)
    assert resumed.last_epoch == steps_per_epoch * epochs


def test_min_lr_above_the_peak_is_a_config_error():
    with pytest.raises(ConfigError, match="schedule.min_lr"):
        lr_trace(ScheduleConfig(name="cosine", min_lr=1.0), PEAK_LR, 10, 2)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_span_epochs_draws_the_schedule_over_fewer_epochs_and_holds_its_final_lr(name: str) -> None:
    cfg = ScheduleConfig(name=name, peak_epoch=None, milestones=[1.0], restart_epochs=1.0)
    short = lr_trace(cfg, PEAK_LR, 4, 3)
    held = lr_trace(cfg.model_copy(update={"span_epochs": 3}), PEAK_LR, 4, 5)
    assert len(held) == 20 and held[:12] == short and held[12:] == [short[-1]] * 8
    with pytest.raises(ConfigError, match="schedule.span_epochs: 6 is more than train.epochs"):
        lr_trace(cfg.model_copy(update={"span_epochs": 6}), PEAK_LR, 4, 5)


def test_sync_lr_sets_the_lr_of_a_longer_schedule_at_the_step_reached() -> None:
    cfg = ScheduleConfig(name="cosine")
    optimizer = _sgd()
    short = build_scheduler(optimizer, cfg, 4, 2)
    for _ in range(8):
        optimizer.step()
        short.step()
    state = short.state_dict()
    longer_optimizer = _sgd()
    longer = build_scheduler(longer_optimizer, cfg, 4, 4)  # then the checkpoint is loaded, as a resume does
    longer_optimizer.load_state_dict(optimizer.state_dict())
    longer.load_state_dict(state)
    assert longer_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]  # still the short schedule's
    sync_lr(longer_optimizer, longer)
    assert longer_optimizer.param_groups[0]["lr"] == pytest.approx(lr_trace(cfg, PEAK_LR, 4, 4)[8])
    assert longer.get_last_lr() == [longer_optimizer.param_groups[0]["lr"]]
