"""TensorBoard logging as a training callback: per-step loss and LR, per-epoch metrics, images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from cifarcli.engine.callbacks import TrainCallbacks
from cifarcli.engine.loop import StepLoss, TrainState
from cifarcli.fileio import make_folder


class TensorBoardLogger(TrainCallbacks):
    """Writes event files under `log_dir`; per-step scalars for every `every_steps`-th step.

    The losses arrive in batches when the loop reads them back (train.sync_every_steps), each
    with its own step and LR, so the interval does not depend on how often the loop syncs.
    """

    def __init__(self, log_dir: Path, every_steps: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in tensorboard

        make_folder(log_dir, remedy="set run.tensorboard: false")  # one clear line if a file is in the way
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.every_steps = every_steps

    def on_losses(self, losses: list[StepLoss]) -> None:
        for record in losses:
            if record.step % self.every_steps == 0:
                self.writer.add_scalar("step/train_loss", record.loss, record.step)
                self.writer.add_scalar("step/lr", record.lr, record.step)

    def on_epoch_end(self, row: dict[str, float], is_best: bool) -> None:
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()

    def on_train_start(self, state: TrainState, epochs: int, steps_per_epoch: int) -> None:
        self.writer.add_text("run/schedule", f"{epochs} epochs x {steps_per_epoch} steps, starting at epoch {state.epoch + 1}")

    def on_train_end(self) -> None:
        self.writer.flush()

    def log_image_grid(self, tag: str, images: torch.Tensor, columns: int = 8) -> None:
        """Log float images in [0, 1], shape (N, 3, H, W), as one grid."""
        from torchvision.utils import make_grid

        self.writer.add_image(tag, make_grid(images.float().cpu().clamp(0, 1), nrow=columns, padding=2), 0)

    def log_png(self, tag: str, path: Path, step: int = 0) -> None:
        """Log a PNG file (e.g. the confusion matrix figure) as an image."""
        import matplotlib.image

        pixels = np.asarray(matplotlib.image.imread(str(path)))[..., :3]
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
