"""Where and how a run computes: its device, autocast precision and memory format."""

from __future__ import annotations

from typing import Any, Callable, ContextManager

import torch

from cifarcli.config import ExperimentConfig
from cifarcli.engine.distributed import DistContext, local_device, process_group
from cifarcli.engine.precision import Precision, make_autocast, resolve_device, resolve_precision


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


def device_for(cfg: ExperimentConfig) -> torch.device:
    """`data.device`, resolved; under torchrun on CUDA, this rank's own GPU (LOCAL_RANK)."""
    return local_device(resolve_device(cfg.data.device))


def joined_ranks(cfg: ExperimentConfig) -> ContextManager[DistContext]:
    """torchrun's process group for the block, on the run's device (world 1 without torchrun)."""
    return process_group(device_for(cfg))


def precision_facts(cfg: ExperimentConfig, device: torch.device) -> dict[str, str]:
    """What the run computes in and why, and its memory format: for the run header and run_info.json."""
    precision = run_precision(cfg, device)
    return {"precision": precision.description, "precision_reason": precision.reason,
            "memory_format": memory_format_name(cfg)}  # fmt: skip
