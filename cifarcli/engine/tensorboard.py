"""TensorBoard logging as a training callback: per-step loss and LR, per-epoch metrics, images, HParams.

A resumed run writes into the same folder: what belongs to the start of a run (the augmented
preview) is written only when training starts from step 0, and every image has the step it
belongs to, so a resume adds no second copy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

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

    def __init__(self, log_dir: Path, every_steps: int, preview: Optional[Callable[[], torch.Tensor]] = None) -> None:
        """`preview()` gives the images logged as `augmented_train_batch` when a run starts at step 0."""
        from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in tensorboard

        make_folder(log_dir, remedy="set run.tensorboard: false")  # one clear line if a file is in the way
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.every_steps = every_steps
        self.preview = preview

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
        text = f"{epochs} epochs x {steps_per_epoch} steps, starting at epoch {state.epoch + 1}"
        self.writer.add_text("run/schedule", text, state.global_step)
        if state.global_step == 0 and self.preview is not None:
            self.log_image_grid("augmented_train_batch", self.preview())

    def on_train_end(self) -> None:
        self.writer.flush()

    def log_image_grid(self, tag: str, images: torch.Tensor, columns: int = 8) -> None:
        """Log float images in [0, 1], shape (N, 3, H, W), as one grid."""
        from torchvision.utils import make_grid

        self.writer.add_image(tag, make_grid(images.float().cpu().clamp(0, 1), nrow=columns, padding=2), 0)

    def log_image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        """Log an H x W x 3 image (uint8, or floats in [0, 1]) at `step`."""
        self.writer.add_image(tag, np.asarray(pixels), step, dataformats="HWC")
        self.writer.flush()

    def log_png(self, tag: str, path: Path, step: int = 0) -> None:
        """Log a PNG file (e.g. the confusion matrix figure) as an image."""
        import matplotlib.image

        self.log_image(tag, np.asarray(matplotlib.image.imread(str(path)))[..., :3], step)

    def log_hparams(self, hparams: Mapping[str, Union[bool, int, float, str]], metrics: Mapping[str, float], step: int) -> None:
        """The run's settings and results (scalars at `step`) for TensorBoard's HParams tab, in this run's event file.

        (`SummaryWriter.add_hparams` would write them into a new sub-run instead.)
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        finite = {tag: value for tag, value in metrics.items() if math.isfinite(value)}
        for summary in hparams_summaries(dict(hparams), finite):
            self.writer.file_writer.add_summary(summary)
        for tag, value in finite.items():  # the HParams tab reads each metric from a scalar of that tag
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
