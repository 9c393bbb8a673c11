"""Training state and settings of a run: optimizer, schedule, EMA, hooks, files and facts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from cifarcli import runs
from cifarcli.commands.compose.data import DataBundle, steps_per_epoch
from cifarcli.commands.compose.device import precision_facts, run_autocast, run_precision
from cifarcli.config import ExperimentConfig
from cifarcli.engine.distributed import SINGLE, DistContext, rank_batch_size, wrap_model
from cifarcli.engine.ema import ModelEMA
from cifarcli.engine.lookahead import Lookahead
from cifarcli.engine.loop import StepSettings, TrainState
from cifarcli.engine.optim import build_optimizer, torch_lr_factor
from cifarcli.engine.precision import make_grad_scaler
from cifarcli.engine.schedules import build_scheduler
from cifarcli.engine.trainer import RunFiles
from cifarcli.errors import ConfigError, RunError
from cifarcli.models import ModelSummary, freeze_norm_stats, set_backbone_trainable, summarize_model
from cifarcli.models.init import stem_bias_freezer


def build_train_state(
    cfg: ExperimentConfig, model: nn.Module, steps_per_epoch: int, device: torch.device, ranks: DistContext = SINGLE
) -> TrainState:
    """Optimizer, per-step scheduler, grad scaler, EMA and (optionally) the compiled forward, which
    DistributedDataParallel wraps when there are several `ranks` (the saved model stays unwrapped)."""
    model = for_ranks(cfg, model, device, ranks)
    optimizer = build_optimizer(model, cfg.optim, cfg.data.batch_size)
    # schedule.min_lr is in optim.lr's units (optim.units), as the scheduler sees torch's LR
    factor = torch_lr_factor(cfg.optim, cfg.data.batch_size)
    schedule = cfg.schedule.model_copy(update={"min_lr": cfg.schedule.min_lr * factor}) if factor != 1 else cfg.schedule
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch, cfg.train.epochs)
    forward = torch.compile(model) if cfg.train.compile else model
    forward = wrap_model(forward, ranks, device, find_unused_parameters=epoch_hooks(cfg) is not None)
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_every_steps) if cfg.train.ema_decay is not None else None
    every = cfg.train.lookahead_every_steps
    lookahead = Lookahead(model, every, cfg.train.lookahead_decay, steps_per_epoch * cfg.train.epochs) if every else None
    return TrainState(model=model, forward=forward, optimizer=optimizer, scheduler=scheduler,
                      scaler=make_grad_scaler(run_precision(cfg, device)), ema=ema, lookahead=lookahead)  # fmt: skip


def for_ranks(cfg: ExperimentConfig, model: nn.Module, device: torch.device, ranks: DistContext) -> nn.Module:
    """The model as several ranks train it: BatchNorm synchronised across them with train.sync_batchnorm."""
    check_for_ranks(cfg, device, ranks.world_size)
    if not ranks.is_distributed or not cfg.train.sync_batchnorm:
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def check_for_ranks(cfg: ExperimentConfig, device: torch.device, world_size: int) -> None:
    """Refuse the settings `world_size` processes cannot train with (`--nproc` asks before starting them)."""
    rank_batch_size(cfg.data.batch_size, DistContext(world_size=world_size))
    if world_size == 1:
        return
    if cfg.train.nonfinite_loss == "skip":
        raise ConfigError("train.nonfinite_loss: skip decides per process, so the processes would part ways under torchrun",
                          hint="use --set train.nonfinite_loss=stop with several processes")  # fmt: skip
    if cfg.train.sync_batchnorm and device.type != "cuda":
        raise ConfigError("train.sync_batchnorm: PyTorch synchronises BatchNorm on GPUs only, this run is on the CPU",
                          hint="set --set train.sync_batchnorm=false, or run on CUDA")  # fmt: skip


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


def run_files(run_dir: Path) -> RunFiles:
    """The paths the training loop writes inside `run_dir`."""
    return RunFiles(
        run_dir=run_dir,
        last_checkpoint=runs.checkpoint_path(run_dir, runs.LAST_CHECKPOINT),
        best_checkpoint=runs.checkpoint_path(run_dir, runs.BEST_CHECKPOINT),
        metrics_csv=run_dir / runs.METRICS_FILE,
    )


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
