"""Seeds and deterministic kernels."""

from __future__ import annotations

import os
import random

import torch


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Deterministic mode: two runs with one seed on one machine give bit-identical weights.

    It turns off cuDNN autotuning and TF32 and asks torch for deterministic kernels. A few CUDA
    kernels have no deterministic version (max-pool backward, used by ResNet-9, is one): torch
    then warns instead of failing, and those steps may differ in the last bits between runs.
    On the CPU every kernel the models use is deterministic. Otherwise autotuning is on.
    """
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
