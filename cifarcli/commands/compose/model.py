"""The model of a run: built and initialised for training, or rebuilt from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from cifarcli import escape
from cifarcli.commands.compose.data import DataBundle, LabelSet
from cifarcli.commands.compose.device import run_autocast, use_channels_last
from cifarcli.config import ExperimentConfig
from cifarcli.data.loader import DeviceLoader
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.distributed import current, predict_across_ranks
from cifarcli.engine.predict import Predictions
from cifarcli.engine.reproducibility import configure_determinism, seed_everything
from cifarcli.errors import CheckpointError, UsageError
from cifarcli.models import ModelImportError, build_model
from cifarcli.models.init import initialise_model


WHITENING_IMAGES = 5000  # training images whose patches set a whitened stem (model.whiten_stem)


def prepare_model(
    cfg: ExperimentConfig, num_classes: int, device: torch.device, data: Optional[DataBundle] = None
) -> nn.Module:
    """Seed, build (loading pretrained weights if configured), initialise (`model.whiten_stem` etc.,
    whitening on `data`'s training images; None when trained weights are loaded next) and place the model."""
    configure_determinism(cfg.train.deterministic)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, num_classes, cfg.data.image_size).to(device)
    whiten_images = data.train.normalized_images(WHITENING_IMAGES) if data is not None and cfg.model.whiten_stem else None
    initialise_model(model, cfg.model, whiten_images)
    if use_channels_last(cfg):
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass(frozen=True)


class LoadedRun:
    """A trained model rebuilt from its checkpoint, with the config it was trained with."""

    cfg: ExperimentConfig
    model: nn.Module
    checkpoint: dict[str, Any]
    device: torch.device
    path: Path


def load_trained_model(
    path: Path, cfg: ExperimentConfig, device: torch.device, use_ema: bool = False, checkpoint: dict[str, Any] | None = None
) -> LoadedRun:
    """Rebuild the model of a checkpoint (weights only) for evaluation or visualisation."""
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint(path)
    num_classes = int(checkpoint["num_classes"])
    try:
        model = build_model(cfg.model.model_copy(update={"pretrained": None}), num_classes, cfg.data.image_size).to(device)
    except ModelImportError as exc:
        raise UsageError(f"{path}: its model {cfg.model.name!r} cannot be rebuilt: {exc.problem}",
                         hint="run cifar where that model imports, as when the run was trained (its folder, or with the package installed)") from exc
    weights = checkpoint["ema"]["module"] if use_ema and checkpoint.get("ema") else checkpoint["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(
            f"{path} does not match model {cfg.model.name} with {num_classes} classes ({first})",
            hint="evaluate it with the config it was trained with (its run folder's config.yaml)",
        ) from exc
    if use_channels_last(cfg):  # the loaders feed channels_last batches then
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(cfg=cfg, model=model, checkpoint=checkpoint, device=device, path=path)


def check_checkpoint_classes(checkpoint: dict[str, Any], labels: LabelSet, path: Path) -> None:
    """A checkpoint is scored and shown only on the classes it was trained on."""
    names = checkpoint.get("class_names", labels.class_names)
    if checkpoint["num_classes"] != labels.num_classes or names != labels.class_names:
        raise CheckpointError(
            f"{path} was trained on {checkpoint['num_classes']} classes ({escape.clip(escape.terminal(', '.join(names)), 80)}), "
            f"but the data set at data.root has {labels.num_classes} ({escape.clip(escape.terminal(', '.join(labels.class_names)), 80)})",
            hint="use the data root it was trained with (--set data.root=...)",
        )


def run_predictions(run: LoadedRun, loader: DeviceLoader, tta_flip: bool, tta_shift: bool = False) -> Predictions:
    """The model's predictions over `loader`, in order; under torchrun each rank predicts a share, all get the whole."""
    return predict_across_ranks(run.model, loader, current(), run_autocast(run.cfg, run.device), tta_flip, tta_shift)
