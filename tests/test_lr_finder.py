"""The LR range test engine: the sweep, smoothing, stopping, restoring, and the suggestion rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cifarcli.config import LR_SUGGESTION_NAMES, LrFindConfig, OptimConfig
from cifarcli.engine.loop import StepSettings
from cifarcli.engine.lr_finder import (
    SUGGESTERS,
    curve_warnings,
    cycle_batches,
    find_lr,
    longest_valley,
    suggest_all,
    suggest_min_div10,
    suggest_steepest,
    suggest_valley,
    sweep_lrs,
)
from cifarcli.engine.optim import build_optimizer
from cifarcli.errors import UsageError
from cifarcli.plots.lr_find import loss_axis_limits, plot_lr_find

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TinyLoader:
    """A few fixed batches of a 3-class problem that records which epochs were asked for."""

    def __init__(self, batches: int = 3, seed: int = 0, poison_at: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.batches = []
        for index in range(batches):
            inputs = torch.randn(16, 1, 2, 4, generator=generator)
            if poison_at == index:
                inputs[0, 0, 0, 0] = float("nan")
            self.batches.append((inputs, torch.randint(0, 3, (16,), generator=generator)))
        self.epoch = 0
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3))


def run_finder(cfg: LrFindConfig, optim: OptimConfig = OptimConfig(name="sgd", lr=0.1, momentum=0.9), **loader_args):
    model = tiny_model()
    optimizer = build_optimizer(model, optim)
    loader = TinyLoader(**loader_args)
    return model, optimizer, loader, find_lr(model, loader, optimizer, StepSettings(), cfg)


# --------------------------------------------------------------------------- the sweep


def test_exp_sweep_is_geometric_from_start_to_end() -> None:
    lrs = sweep_lrs(LrFindConfig(start_lr=1e-6, end_lr=1.0, num_iter=25, mode="exp"))
    assert len(lrs) == 25
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, 10 ** (6 / 24), rtol=1e-9)


def test_linear_sweep_has_constant_steps() -> None:
    lrs = sweep_lrs(LrFindConfig(start_lr=0.01, end_lr=1.0, num_iter=12, mode="linear"))
    np.testing.assert_allclose(np.diff(lrs), 0.09, rtol=1e-9)
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(1.0)


def test_finder_uses_the_sweep_lrs_cycles_epochs_and_reaches_end() -> None:
    cfg = LrFindConfig(start_lr=1e-5, end_lr=1e-3, num_iter=10, diverge_factor=100.0)
    _, _, loader, result = run_finder(cfg, batches=3)
    assert result.stop_reason == "reached end_lr" and not result.stopped_early
    assert result.steps == 10
    np.testing.assert_allclose(result.lrs, sweep_lrs(cfg), rtol=1e-9)
    assert loader.epochs_seen[:4] == [0, 1, 2, 3]  # 10 steps over 3-batch epochs
    assert loader.epoch == 0  # put back as it was


@pytest.mark.parametrize("burn_in_share, burn_in", [(0.0, 0), (0.25, 2)])
def test_smoothed_loss_is_the_bias_corrected_ema_started_again_after_the_burn_in(burn_in_share: float, burn_in: int) -> None:
    cfg = LrFindConfig(start_lr=1e-5, end_lr=1e-3, num_iter=8, smoothing=0.9, diverge_factor=100.0, burn_in_share=burn_in_share)
    _, _, _, result = run_finder(cfg)
    assert result.burn_in_steps == burn_in
    expected = []
    for start, stop in ((0, burn_in), (burn_in, len(result.losses))):  # a burn-in spike does not linger after it
        average = 0.0
        for count, loss in enumerate(result.losses[start:stop], 1):
            average = 0.9 * average + 0.1 * loss
            expected.append(average / (1 - 0.9**count))
    np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-12)
    assert result.smoothed_losses[0] == pytest.approx(result.losses[0])
    assert result.smoothed_losses[burn_in] == pytest.approx(result.losses[burn_in])


def test_finder_restores_weights_buffers_optimizer_mode_and_rng() -> None:
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(name="adam", lr=0.01))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_before = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    rng_before = torch.get_rng_state()
    result = find_lr(model, TinyLoader(), optimizer, StepSettings(), LrFindConfig(start_lr=1e-3, end_lr=1.0, num_iter=12))
    assert result.steps >= 5
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert {k: v for k, v in optimizer.param_groups[0].items() if k != "params"} == optimizer_before
    assert optimizer.state_dict()["state"] == {}
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_weights_did_change_during_the_sweep() -> None:
    """The restore test above would pass vacuously if the sweep never stepped: check it does."""
    seen: list[torch.Tensor] = []
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    start = model[1].weight.detach().clone()
    find_lr(model, TinyLoader(), optimizer, StepSettings(), LrFindConfig(start_lr=1e-2, end_lr=1.0, num_iter=6),
            on_step=lambda step, lr, loss: seen.append(model[1].weight.detach().clone()))  # fmt: skip
    assert len(seen) == 6 and not torch.equal(seen[-1], start)
    assert torch.equal(model[1].weight, start)


def test_diverging_loss_stops_early_with_the_reason() -> None:
    cfg = LrFindConfig(start_lr=1e-2, end_lr=1e4, num_iter=60, smoothing=0.0, diverge_factor=5.0)
    _, _, _, result = run_finder(cfg, optim=OptimConfig(name="sgd", lr=0.1, momentum=0.0, nesterov=False))
    assert result.stopped_early and 10 < result.steps < 60
    assert result.stop_reason == f"loss diverged (smoothed loss > 5x best) at lr {result.lrs[-1]:.3g}"
    running_best = np.minimum.accumulate(result.smoothed_losses)
    over = result.smoothed_losses > 5 * running_best
    assert over[-1] and not over[:-1].any()  # it stopped at the first such step


@pytest.mark.parametrize("burn_in_share, steps", [(0.0, 2), (0.1, 20)])
def test_a_lucky_first_batch_stops_the_sweep_only_without_a_burn_in(
    monkeypatch: pytest.MonkeyPatch, burn_in_share: float, steps: int
) -> None:
    scripted = iter([0.1, *[2.3] * 19])  # one lucky batch, then an ordinary flat loss

    def step(state, *args):  # the loss of a real step, scripted; the LR still rises
        state.optimizer.step()  # no gradients: changes nothing, but keeps the scheduler's order check quiet
        state.scheduler.step()
        return next(scripted), None

    monkeypatch.setattr("cifarcli.engine.lr_finder.optimisation_step", step)
    cfg = LrFindConfig(start_lr=1e-4, end_lr=1e-2, num_iter=20, smoothing=0.0, diverge_factor=5.0, burn_in_share=burn_in_share)
    result = run_finder(cfg)[3]
    assert result.steps == steps  # 2.3 > 5 x 0.1: "diverged" at the second step when the first sets the best
    assert result.stopped_early == (steps < 20)


def test_nan_loss_stops_the_sweep_even_when_training_would_skip_it() -> None:
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LrFindConfig(start_lr=1e-4, end_lr=1e-2, num_iter=10)
    result = find_lr(model, TinyLoader(poison_at=2), optimizer, StepSettings(skip_nonfinite=True), cfg)
    assert result.steps == 2
    assert result.stop_reason == f"loss became nan at lr {sweep_lrs(cfg)[2]:.3g}"
    assert all(s.lr is None and "only 2 step(s)" in s.note for s in result.suggestions.values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_an_empty_loader_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no batches"):
        next(cycle_batches([]))


# --------------------------------------------------------------------------- suggestions


def parabola() -> tuple[np.ndarray, np.ndarray]:
    """Loss = (log10 lr + 3)^2 over 1e-6..1: minimum at lr 1e-3, point 30 of 61."""
    lrs = np.logspace(-6, 0, 61)
    return lrs, (np.log10(lrs) + 3) ** 2


def test_min_div10_on_a_parabola_is_the_argmin_over_ten() -> None:
    lrs, losses = parabola()
    suggestion = suggest_min_div10(lrs, losses)
    assert suggestion.index == 30
    assert suggestion.lr == pytest.approx(1e-4, rel=1e-12)


def test_valley_on_a_parabola_is_two_thirds_down_the_descent() -> None:
    lrs, losses = parabola()
    assert longest_valley(losses) == (0, 30)
    suggestion = suggest_valley(lrs, losses)
    assert suggestion.index == 20
    assert suggestion.lr == pytest.approx(10**-4, rel=1e-12)


def test_steepest_is_at_the_inflection_of_a_falling_tanh() -> None:
    lrs = np.logspace(-6, 0, 61)
    losses = 1.5 - np.tanh(2 * (np.log10(lrs) + 2.5))  # steepest fall at lr 10**-2.5, point 35
    suggestion = suggest_steepest(lrs, losses)
    assert suggestion.index == 35
    assert suggestion.lr == pytest.approx(10**-2.5, rel=1e-12)


def test_steepest_ignores_the_ends() -> None:
    lrs, losses = parabola()  # steepest raw slope is at point 0, which is skipped
    suggestion = suggest_steepest(lrs, losses)
    assert suggestion.index == 3  # 5% of 61 points -> 3 skipped at each end


def test_valley_bridges_noise_inside_the_descent() -> None:
    losses = np.array([5.0, 4.0, 4.5, 3.0, 3.5, 2.0, 6.0, 1.9, 7.0])
    assert longest_valley(losses) == (0, 7)
    assert suggest_valley(np.logspace(-5, 0, 9), losses).index == 5  # 0 + round(2/3 * 7)


@pytest.mark.parametrize("losses", [np.linspace(1.0, 3.0, 20), np.full(20, 2.0)])
def test_a_loss_that_never_decreases_gives_no_suggestion(losses: np.ndarray) -> None:
    suggestions = suggest_all(np.logspace(-5, 0, 20), losses)
    for suggestion in suggestions.values():
        assert suggestion.lr is None and suggestion.index is None
        assert "never" in suggestion.note


def test_too_short_a_curve_gives_no_suggestion() -> None:
    suggestions = suggest_all(np.array([1e-3, 1e-2, 1e-1]), np.array([3.0, 2.0, 1.0]))
    assert [s.lr for s in suggestions.values()] == [None, None, None]
    assert all(s.note.startswith("only 3 step(s) recorded") for s in suggestions.values())


def test_a_burn_in_keeps_an_early_lucky_batch_from_driving_the_suggestions() -> None:
    lrs, losses = parabola()
    spiked = losses + 1.0  # lowest 1.0 at point 30
    spiked[:3] = 0.5  # three lucky batches: a smoothed loss far below the real curve at first
    assert suggest_all(lrs, spiked)["min_div10"].lr is None  # read from step 0: the lowest loss is the first
    suggestions = suggest_all(lrs, spiked, burn_in=6)
    assert suggestions["min_div10"].index == 30 and suggestions["min_div10"].lr == pytest.approx(1e-4, rel=1e-12)
    assert suggestions["valley"].index == 6 + round(2 / 3 * 24)  # the valley from point 6 (after the burn-in) to 30
    assert suggest_all(lrs[:8], spiked[:8], burn_in=6)["valley"].note.startswith("only 8 step(s) recorded, the first 6 of them burn-in")


def test_a_flat_curve_is_warned_about_with_what_to_change() -> None:
    flat = 2.30 + 0.01 * np.sin(np.linspace(0, 6, 50))
    (warning,) = curve_warnings(flat)
    assert "barely moved" in warning and "0.9%" in warning
    assert "lr_find.start_lr" in warning and "lr_find.end_lr" in warning and "lr_find.num_iter" in warning
    assert curve_warnings(parabola()[1]) == ()
    spiked = flat.copy()
    spiked[0] = 9.0  # an early spike makes the curve look as if it moved, until the burn-in skips it
    assert curve_warnings(spiked) == () and len(curve_warnings(spiked, burn_in=5)) == 1


def test_suggesters_match_the_config_names() -> None:
    assert tuple(SUGGESTERS) == LR_SUGGESTION_NAMES


# --------------------------------------------------------------------------- the figure


def test_plot_writes_a_png_and_skips_missing_suggestions(tmp_path: Path) -> None:
    lrs, losses = parabola()
    noisy = losses + np.random.default_rng(0).normal(0, 0.3, len(losses))
    path = plot_lr_find(lrs, noisy, losses, {"steepest": 1e-5, "min_div10": 1e-4, "valley": None}, tmp_path / "lr.png", chosen="min_div10")
    assert path == tmp_path / "lr.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_axis_limits_leave_out_a_diverged_tail() -> None:
    smoothed = np.array([2.3, 2.2, 2.0, 1.5, 1.0, 3.0, 40.0])
    bottom, top = loss_axis_limits(smoothed, smoothed)
    assert bottom < 1.0 and 2.3 < top < 10.0
    assert math.isfinite(bottom) and math.isfinite(top)


def test_axis_limits_show_the_divergence_after_the_lowest_loss() -> None:
    smoothed = np.array([2.3, 2.0, 1.5, 1.0, 2.0, 4.0, 5.5])
    bottom, top = loss_axis_limits(smoothed, smoothed)
    assert bottom < 1.0 and top >= 5.5  # the whole rise is in view
    raw = smoothed.copy()
    raw[-1] = np.inf  # a raw loss that overflowed does not break the limits
    assert np.isfinite(loss_axis_limits(raw, smoothed)).all()
    lucky = np.concatenate([[0.2, 0.3], smoothed])  # two lucky batches in the burn-in stay below the axis
    assert loss_axis_limits(lucky, lucky, burn_in_steps=2) == (bottom, top)


def test_steepest_ignores_a_rebound_after_the_lowest_loss() -> None:
    lrs = np.logspace(-5, 0, 40)
    losses = np.concatenate([np.linspace(2.3, 2.0, 20), [2.5, 2.9, 2.4, 3.5, 4.0], np.linspace(4.5, 9.0, 15)])
    suggestion = suggest_steepest(lrs, losses)
    assert suggestion.index is not None and suggestion.index <= 19  # not the 2.9 -> 2.4 dip at 21..22
