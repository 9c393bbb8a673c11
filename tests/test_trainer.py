"""The epoch loop: checkpoints, resume equivalence, interruption, non-finite losses, overfitting."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cifarcli.config import AugmentConfig, OptimConfig, ScheduleConfig
from cifarcli.data.loader import DeviceLoader
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.ema import ModelEMA
from cifarcli.engine.loop import NonFiniteLoss, StepLoss, StepSettings, TrainState
from cifarcli.engine.optim import build_optimizer
from cifarcli.engine.precision import make_grad_scaler, resolve_precision
from cifarcli.engine.reproducibility import configure_determinism, seed_everything
from cifarcli.engine.schedules import build_scheduler
from cifarcli.engine.callbacks import CallbackList
from cifarcli.engine.trainer import FitSettings, RunFiles, TrainCallbacks, fit, restore_train_state
from cifarcli.errors import Interrupted

CPU = torch.device("cpu")
CLASSES = 4
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def toy_images(count: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-coloured noisy images, N x 32 x 32 x 3 uint8, that a small net can learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % CLASSES
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=np.float64)
    images = palette[labels][:, None, None, :] + rng.normal(0, 30, size=(count, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1),
        nn.Linear(16, CLASSES),
    )  # fmt: skip


def loaders(batch_size: int = 16) -> tuple[DeviceLoader, DeviceLoader]:
    images, labels = toy_images()
    augment = AugmentConfig()  # crop + flip + cutout: resume must replay the same random draws
    common = dict(num_classes=CLASSES, mean=MEAN, std=STD, device=CPU)
    train = DeviceLoader(images[:64], labels[:64], batch_size=batch_size, augment=augment, shuffle=True, drop_last=True, seed=3, **common)
    val = DeviceLoader(images[64:], labels[64:], batch_size=32, **common)
    return train, val


def new_state(steps_per_epoch: int, epochs: int, lr: float = 0.05) -> TrainState:
    configure_determinism(True)
    seed_everything(7)
    model = tiny_net()
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=lr, momentum=0.9))
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="onecycle", peak_epoch=None), steps_per_epoch, epochs)
    return TrainState(model=model, forward=model, optimizer=optimizer, scheduler=scheduler, scaler=make_grad_scaler(resolve_precision(CPU, "off")))


def files(folder: Path) -> RunFiles:
    return RunFiles(folder, folder / "checkpoints" / "last.pt", folder / "checkpoints" / "best.pt", folder / "metrics.csv")


def run(state: TrainState, folder: Path, epochs: int, callbacks: TrainCallbacks = TrainCallbacks(), **settings) -> None:
    train, val = loaders()
    fit(state, train, val, FitSettings(epochs=epochs, step=StepSettings(**settings)), files(folder), {"config": {}}, callbacks)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(autouse=True)
def _deterministic_off_afterwards():
    yield
    configure_determinism(False)


def test_fit_writes_metrics_and_checkpoints(tmp_path: Path) -> None:
    state = new_state(4, 2)
    run(state, tmp_path, epochs=2)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_accuracy,val_loss,val_accuracy")
    assert len(lines) == 3 and lines[1].startswith("1,") and lines[2].startswith("2,")
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["epoch"] == 2 and saved["global_step"] == 8 and saved["batch_in_epoch"] == 0
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert_same_weights(saved["model"], state.model.state_dict())
    assert 0.0 <= state.history[-1]["val_accuracy"] <= 1.0


def test_metrics_csv_has_ema_columns_only_when_the_run_has_ema_weights(tmp_path: Path) -> None:
    run(new_state(4, 1), tmp_path / "plain", epochs=1)
    header = (tmp_path / "plain" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "ema_val_loss" not in header and "ema_val_accuracy" not in header and "val_accuracy" in header
    run(_with_ema(new_state(4, 1), every_steps=1), tmp_path / "ema", epochs=1)
    lines = (tmp_path / "ema" / "metrics.csv").read_text().splitlines()
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert 0.0 <= float(row["ema_val_accuracy"]) <= 1.0 and math.isfinite(float(row["ema_val_loss"]))


def test_resume_after_an_epoch_gives_identical_weights(tmp_path: Path) -> None:
    straight = new_state(4, 2)
    run(straight, tmp_path / "a", epochs=2)

    first = new_state(4, 2)
    run(first, tmp_path / "b", epochs=1)
    resumed = new_state(4, 2)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    restore_train_state(resumed, load_checkpoint(last, for_resume=True), last)
    assert resumed.epoch == 1
    run(resumed, tmp_path / "b", epochs=2)

    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert resumed.lr == straight.lr
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


class SignalAtStep(TrainCallbacks):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, lr: float) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_saves_mid_epoch_and_resume_matches(tmp_path: Path) -> None:
    straight = new_state(4, 2)
    run(straight, tmp_path / "a", epochs=2)

    interrupted = new_state(4, 2)
    with pytest.raises(Interrupted) as info:
        run(interrupted, tmp_path / "b", epochs=2, callbacks=SignalAtStep(6))
    assert info.value.exit_code == 130
    assert info.value.message.startswith("stopped by Ctrl-C at epoch 2") and "--resume" in info.value.hint
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    saved = load_checkpoint(last, for_resume=True)
    assert (saved["epoch"], saved["batch_in_epoch"], saved["global_step"]) == (1, 2, 6)

    resumed = new_state(4, 2)
    restore_train_state(resumed, saved, last)
    run(resumed, tmp_path / "b", epochs=2)
    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


class PoisonFromEpoch(nn.Module):
    """Wraps a model and returns NaN logits from a given epoch on (set by the test)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.poisoned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out * math.nan if self.poisoned else out


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    state = new_state(4, 3)
    poisoned = PoisonFromEpoch(state.model)
    state.forward = poisoned
    run(state, tmp_path, epochs=1)
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    poisoned.poisoned = True
    with pytest.raises(NonFiniteLoss) as info:
        run(state, tmp_path, epochs=3)
    assert "epoch 2, step 5" in info.value.message
    assert "optim.lr" in info.value.hint and "bf16" in info.value.hint
    assert last.read_bytes() == before


def test_nonfinite_loss_can_skip_steps(tmp_path: Path) -> None:
    state = new_state(4, 1)
    poisoned = PoisonFromEpoch(state.model)
    poisoned.poisoned = True
    state.forward = poisoned
    before = weights(state.model)
    run(state, tmp_path, epochs=1, skip_nonfinite=True)
    assert state.global_step == 4  # the schedule still advanced
    assert math.isnan(state.history[0]["train_loss"])
    for key, value in before.items():
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(value, state.model.state_dict()[key]), key


def test_overfit_fixed_batches_reaches_full_training_accuracy(tmp_path: Path) -> None:
    configure_determinism(False)
    seed_everything(0)
    model = tiny_net()
    optimizer = build_optimizer(model, OptimConfig(name="adam", lr=0.01))
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="constant"), 1, 40)
    state = TrainState(model=model, forward=model, optimizer=optimizer, scheduler=scheduler, scaler=make_grad_scaler(resolve_precision(CPU, "off")))
    train, val = loaders()
    settings = FitSettings(epochs=40, step=StepSettings(), overfit_batches=1)
    fit(state, train, val, settings, files(tmp_path), {"config": {}})
    assert state.global_step == 40  # one fixed batch per epoch
    assert state.history[-1]["train_accuracy"] >= 0.99


def test_epoch_hook_runs_after_train_mode_so_frozen_norms_stay_fixed(tmp_path: Path) -> None:
    state = new_state(4, 1)
    norm = state.model[1]
    before = norm.running_mean.clone()

    def freeze_norm(epoch: int, model: nn.Module) -> None:
        assert model.training  # fit put the model in train mode first
        model[1].eval()

    train, val = loaders()
    settings = FitSettings(epochs=1, step=StepSettings(), before_epoch=freeze_norm)
    fit(state, train, val, settings, files(tmp_path), {"config": {}})
    assert torch.equal(norm.running_mean, before)


class RecordSteps(TrainCallbacks):
    def __init__(self) -> None:
        self.reads: list[list[int]] = []
        self.progress: list[int] = []
        self.lrs: dict[int, float] = {}

    def on_step(self, step: int, lr: float) -> None:
        self.progress.append(step)

    def on_losses(self, losses: list[StepLoss]) -> None:
        assert all(math.isfinite(record.loss) for record in losses)
        self.reads.append([record.step for record in losses])
        self.lrs.update({record.step: record.lr for record in losses})


class RecordLr(TrainCallbacks):
    def __init__(self, state: TrainState) -> None:
        self.state, self.before_step = state, {1: state.lr}

    def on_step(self, step: int, lr: float) -> None:
        self.before_step[step + 1] = lr  # the LR the next step will use


def test_loss_is_read_back_every_few_steps_only_and_every_step_is_reported(tmp_path: Path) -> None:
    recorder = RecordSteps()
    state = new_state(4, 2)
    lrs = RecordLr(state)
    run(state, tmp_path, epochs=2, callbacks=CallbackList([recorder, lrs]), sync_every_steps=3, progress_every_steps=2)
    assert recorder.reads == [[1, 2, 3], [4], [5, 6], [7, 8]]  # multiples of 3, and each epoch's end
    assert recorder.progress == [2, 4, 6, 8]  # progress reads nothing from the device
    assert all(recorder.lrs[step] == lrs.before_step[step] for step in (3, 5, 7))  # each loss with the LR its step used


def test_sparse_reads_still_name_the_first_nonfinite_step(tmp_path: Path) -> None:
    state = new_state(4, 2)
    poisoned = PoisonFromEpoch(state.model)
    state.forward = poisoned

    class PoisonAtStep(TrainCallbacks):
        def on_losses(self, losses: list[StepLoss]) -> None:
            poisoned.poisoned = True  # from the step after the first read (step 3) on

    with pytest.raises(NonFiniteLoss) as info:
        run(state, tmp_path, epochs=2, callbacks=PoisonAtStep(), sync_every_steps=3)
    assert "loss became nan at epoch 1, step 4" in info.value.message


def _with_ema(state: TrainState, every_steps: int) -> TrainState:
    state.ema = ModelEMA(state.model, decay=0.8, every_steps=every_steps)
    return state


def test_ema_every_k_steps_is_updated_at_multiples_of_k_and_resumes_exactly(tmp_path: Path) -> None:
    straight = _with_ema(new_state(4, 2), every_steps=3)
    run(straight, tmp_path / "a", epochs=2)
    assert straight.ema.updates == 2  # steps 3 and 6 of 8

    interrupted = _with_ema(new_state(4, 2), every_steps=3)
    with pytest.raises(Interrupted):
        run(interrupted, tmp_path / "b", epochs=2, callbacks=SignalAtStep(5))
    resumed = _with_ema(new_state(4, 2), every_steps=3)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    restore_train_state(resumed, load_checkpoint(last, for_resume=True), last)
    run(resumed, tmp_path / "b", epochs=2)
    assert resumed.ema.updates == 2
    assert_same_weights(weights(straight.ema.module), weights(resumed.ema.module))


def test_l1_penalty_covers_only_layers_trainable_this_epoch(tmp_path: Path) -> None:
    state = new_state(4, 1)
    frozen = state.model[0]

    def freeze_first_conv(epoch: int, model: nn.Module) -> None:
        frozen.requires_grad_(False)

    train, val = loaders()
    settings = FitSettings(epochs=1, step=StepSettings(l1_weight=1e-3), before_epoch=freeze_first_conv)
    fit(state, train, val, settings, files(tmp_path), {"config": {}})
    assert all(w is not frozen.weight for w in state.penalised_weights)
    assert [tuple(w.shape) for w in state.penalised_weights] == [(16, 8, 3, 3), (CLASSES, 16)]  # second conv, linear
