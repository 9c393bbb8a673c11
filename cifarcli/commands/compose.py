"""Composition shared by the commands: config slices in, data, model and training state out.

This is the only place where data, models and engine meet (STYLE: peers do not import each
other); each command calls a few of these functions and stays a screen long.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional

import numpy as np
import torch
from torch import nn

from cifarcli import escape, runs
from cifarcli.config import ExperimentConfig
from cifarcli.data.augment import augment_preview
from cifarcli.data.cache import CifarArrays
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.prepare import load_dataset
from cifarcli.data.split import stratified_split
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.ema import ModelEMA
from cifarcli.engine.lookahead import Lookahead
from cifarcli.engine.loop import StepSettings, TrainState
from cifarcli.engine.predict import Predictions, predict
from cifarcli.engine.trainer import RunFiles
from cifarcli.engine.optim import build_optimizer, torch_lr_factor
from cifarcli.engine.precision import Precision, make_autocast, make_grad_scaler, resolve_device, resolve_precision
from cifarcli.engine.reproducibility import configure_determinism, seed_everything
from cifarcli.engine.schedules import build_scheduler
from cifarcli.errors import CheckpointError, RunError, UsageError
from cifarcli.models import ModelImportError, ModelSummary, build_model, freeze_norm_stats, set_backbone_trainable, summarize_model
from cifarcli.models.init import initialise_model, stem_bias_freezer

WHITENING_IMAGES = 5000  # training images whose patches set a whitened stem (model.whiten_stem)


@dataclass(frozen=True)
class LabelSet:
    """The labels a run trains on: fine or coarse, with their names and the superclass map."""

    train: np.ndarray
    test: np.ndarray
    class_names: list[str]
    fine_to_coarse: Optional[np.ndarray]  # CIFAR-100 fine labels only
    superclass_names: Optional[list[str]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def select_labels(arrays: CifarArrays, label_mode: str) -> LabelSet:
    """Fine or coarse labels of the cached data set, per `data.label_mode`."""
    if arrays.train_coarse_labels is None or arrays.superclass_names is None:
        return LabelSet(np.array(arrays.train_labels), np.array(arrays.test_labels), list(arrays.class_names), None, None)
    if label_mode == "coarse":
        return LabelSet(
            np.array(arrays.train_coarse_labels), np.array(arrays.test_coarse_labels), list(arrays.superclass_names), None, None
        )
    mapping = np.zeros(len(arrays.class_names), dtype=np.int64)
    mapping[np.asarray(arrays.train_labels)] = np.asarray(arrays.train_coarse_labels)
    return LabelSet(
        np.array(arrays.train_labels), np.array(arrays.test_labels), list(arrays.class_names), mapping, list(arrays.superclass_names)
    )


@dataclass(frozen=True)
class DataBundle:
    arrays: CifarArrays
    labels: LabelSet
    train_indices: np.ndarray
    val_indices: np.ndarray
    train: DeviceLoader
    val: Optional[DeviceLoader]
    test: DeviceLoader


def eval_loader(
    cfg: ExperimentConfig, arrays: CifarArrays, images: Any, targets: np.ndarray, num_classes: int, device: torch.device
) -> DeviceLoader:
    """An evaluation loader (normalise only, in order) over `images` with the run's batch size and memory format,
    normalised with the data set's own statistics (`arrays`, from its manifest)."""
    return DeviceLoader(np.asarray(images), targets, batch_size=cfg.data.eval_batch_size, num_classes=num_classes,
                        mean=arrays.mean, std=arrays.std, device=device, channels_last=use_channels_last(cfg))  # fmt: skip


def build_data(cfg: ExperimentConfig, device: torch.device, progress: bool = True) -> DataBundle:
    """Load (downloading if needed) the data set and build the train, validation and test loaders."""
    arrays = load_dataset(cfg.data, progress=progress)
    labels = select_labels(arrays, cfg.data.label_mode)
    train_idx, val_idx = stratified_split(labels.train, cfg.data.val_fraction, cfg.data.split_seed)
    images = np.asarray(arrays.train_images)
    train = DeviceLoader(
        images[train_idx], labels.train[train_idx], batch_size=cfg.data.batch_size, augment=cfg.augment,
        shuffle=True, drop_last=cfg.data.drop_last, seed=cfg.train.seed, num_classes=labels.num_classes,
        mean=arrays.mean, std=arrays.std, device=device, channels_last=use_channels_last(cfg),
    )  # fmt: skip
    val = eval_loader(cfg, arrays, images[val_idx], labels.train[val_idx], labels.num_classes, device) if len(val_idx) else None
    test = eval_loader(cfg, arrays, arrays.test_images, labels.test, labels.num_classes, device)
    return DataBundle(arrays, labels, train_idx, val_idx, train, val, test)


def steps_per_epoch(cfg: ExperimentConfig, data: DataBundle) -> int:
    """Optimizer steps per epoch: every training batch, or the fixed ones of an overfitting run."""
    batches = len(data.train)
    return min(cfg.train.overfit_batches, batches) if cfg.train.overfit_batches else batches


def use_channels_last(cfg: ExperimentConfig) -> bool:
    """Whether images and conv weights use channels_last (train.channels_last), on CUDA and on the
    CPU alike: both have faster channels_last convolutions (see benchmarks/RESULTS.md)."""
    return cfg.train.channels_last


def memory_format_name(cfg: ExperimentConfig) -> str:
    return "channels_last" if use_channels_last(cfg) else "contiguous (NCHW)"


def run_precision(cfg: ExperimentConfig, device: torch.device) -> Precision:
    """The run's autocast dtype and grad scaler for train.amp on this device, with the reason."""
    return resolve_precision(device, cfg.train.amp)


def run_autocast(cfg: ExperimentConfig, device: torch.device) -> Callable[[], ContextManager[Any]]:
    """A zero-argument factory of the run's autocast context."""
    return make_autocast(run_precision(cfg, device))


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


def build_train_state(cfg: ExperimentConfig, model: nn.Module, steps_per_epoch: int, device: torch.device) -> TrainState:
    """Optimizer, per-step scheduler, grad scaler, EMA and (optionally) the compiled forward."""
    optimizer = build_optimizer(model, cfg.optim, cfg.data.batch_size)
    # schedule.min_lr is in optim.lr's units (optim.units), as the scheduler sees torch's LR
    factor = torch_lr_factor(cfg.optim, cfg.data.batch_size)
    schedule = cfg.schedule.model_copy(update={"min_lr": cfg.schedule.min_lr * factor}) if factor != 1 else cfg.schedule
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch, cfg.train.epochs)
    forward = torch.compile(model) if cfg.train.compile else model
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_every_steps) if cfg.train.ema_decay is not None else None
    every = cfg.train.lookahead_every_steps
    lookahead = Lookahead(model, every, cfg.train.lookahead_decay, steps_per_epoch * cfg.train.epochs) if every else None
    return TrainState(model=model, forward=forward, optimizer=optimizer, scheduler=scheduler,
                      scaler=make_grad_scaler(run_precision(cfg, device)), ema=ema, lookahead=lookahead)  # fmt: skip


def step_settings(cfg: ExperimentConfig, device: torch.device) -> StepSettings:
    return StepSettings(
        label_smoothing=cfg.loss.label_smoothing,
        l1_weight=cfg.loss.l1_weight,
        grad_clip_norm=cfg.train.grad_clip_norm,
        grad_clip_value=cfg.train.grad_clip_value,
        skip_nonfinite=cfg.train.nonfinite_loss == "skip",
        autocast=run_autocast(cfg, device),
        sync_every_steps=cfg.train.sync_every_steps,
        progress_every_steps=cfg.train.progress_every_steps,
    )


def epoch_hooks(cfg: ExperimentConfig) -> Optional[Callable[[int, nn.Module], None]]:
    """The before-epoch hook of a run: the backbone freezer and the whitened stem's bias freezer, as configured."""
    hooks = [h for h in (backbone_freezer(cfg.model.freeze_backbone_epochs), stem_bias_freezer(cfg.model)) if h is not None]
    if not hooks:
        return None

    def before_epoch(epoch: int, model: nn.Module) -> None:
        for hook in hooks:
            hook(epoch, model)

    return before_epoch


def backbone_freezer(freeze_epochs: int) -> Optional[Callable[[int, nn.Module], None]]:
    """An epoch hook keeping all but the head frozen (and its norm statistics fixed) early on."""
    if freeze_epochs <= 0:
        return None

    def before_epoch(epoch: int, model: nn.Module) -> None:
        frozen = epoch < freeze_epochs
        set_backbone_trainable(model, not frozen)
        if frozen and model.training:  # called after model.train(): keep frozen BatchNorm statistics fixed
            freeze_norm_stats(model)

    return before_epoch


def summary_at_start(cfg: ExperimentConfig, state: TrainState) -> ModelSummary:
    """The model summary as training (re)starts: with the backbone frozen if this epoch freezes it."""
    freezer = epoch_hooks(cfg)
    if freezer is not None:
        freezer(state.epoch, state.model)
    return summarize_model(state.model, (1, 3, cfg.data.image_size, cfg.data.image_size), max_depth=2)


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
    return predict(run.model, loader, run_autocast(run.cfg, run.device), tta_flip=tta_flip, tta_shift=tta_shift)


def device_for(cfg: ExperimentConfig) -> torch.device:
    return resolve_device(cfg.data.device)



def run_files(run_dir: Path) -> RunFiles:
    """The paths the training loop writes inside `run_dir`."""
    return RunFiles(
        run_dir=run_dir,
        last_checkpoint=runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT),
        best_checkpoint=runs.checkpoint_path(run_dir, runs.BEST_CHECKPOINT),
        metrics_csv=run_dir / runs.METRICS_FILE,
    )


def preview_augmented(cfg: ExperimentConfig, data: DataBundle, count: int) -> torch.Tensor:
    """`count` training images as the augmentation pipeline sees them, floats in [0, 1], N x 3 x S x S."""
    images = np.asarray(data.arrays.train_images)[np.sort(data.train_indices[:count])]
    return augment_preview(images, cfg.augment, cfg.train.seed)


def run_info(cfg: ExperimentConfig, data: DataBundle, device: torch.device) -> dict[str, Any]:
    """Facts about a run that its config alone does not give (saved as run_info.json)."""
    return {
        "dataset": data.arrays.dataset,
        "image_size": data.arrays.image_size,
        "normalization": {"mean": list(data.arrays.mean), "std": list(data.arrays.std)},
        "label_mode": cfg.data.label_mode,
        "num_classes": data.labels.num_classes,
        "class_names": data.labels.class_names,
        "train_images": int(len(data.train_indices)),
        "val_images": int(len(data.val_indices)),
        "test_images": int(len(data.labels.test)),
        "steps_per_epoch": steps_per_epoch(cfg, data),
        "device": str(device),
        **precision_facts(cfg, device),
        "torch": torch.__version__,
    }


def precision_facts(cfg: ExperimentConfig, device: torch.device) -> dict[str, str]:
    """What the run computes in and why, and its memory format: for the run header and run_info.json."""
    precision = run_precision(cfg, device)
    return {"precision": precision.description, "precision_reason": precision.reason,
            "memory_format": memory_format_name(cfg)}  # fmt: skip


@contextlib.contextmanager
def out_of_memory_as_error(batch_size: int, field: str) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into a one-line RunError naming the batch size that failed."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        smaller = max(1, batch_size // 2)
        raise RunError(
            f"out of GPU memory with {field}={batch_size}",
            hint=f"lower it (--set {field}={smaller}), use train.amp=bf16, or a smaller model; "
            "checkpoints written so far are intact",
        ) from exc


@dataclass(frozen=True)
class PickedImages:
    raw: np.ndarray  # N x S x S x 3 uint8, for display
    labels: np.ndarray  # N true class indices
    inputs: torch.Tensor  # N x 3 x S x S, normalised exactly as the test loader does


def test_images(
    cfg: ExperimentConfig, arrays: CifarArrays, labels: LabelSet, indices: np.ndarray, device: torch.device
) -> PickedImages:
    """A few test images by index, raw and as model inputs (without moving the whole data set)."""
    raw = np.asarray(arrays.test_images)[indices]
    loader = DeviceLoader(raw, labels.test[indices], batch_size=max(1, len(indices)), num_classes=labels.num_classes,
                          mean=arrays.mean, std=arrays.std, device=device, channels_last=use_channels_last(cfg))  # fmt: skip
    inputs, _ = next(iter(loader))
    return PickedImages(raw, labels.test[indices], inputs)
