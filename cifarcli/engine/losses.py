"""The training loss: cross-entropy on hard or soft (MixUp/CutMix) targets, and an L1 penalty."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def classification_loss(logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """Mean cross-entropy of `logits` (N x C) against `targets`, as a 0-dim float32 tensor.

    `targets` are either class indices (N, integer dtype) or probability rows (N x C, float,
    each summing to 1, as MixUp/CutMix produce). Label smoothing `eps` applies to both: the
    target distribution becomes `t * (1 - eps) + eps / C` (for class indices, `t` is one-hot).
    The loss is computed in float32 even when the logits come out of bf16/fp16 autocast.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be N x C, got shape {tuple(logits.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    logits = logits.float()
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(
                f"soft targets must match the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}"
            )
        # torch smooths probability targets exactly as t * (1 - eps) + eps / C.
        return F.cross_entropy(logits, targets.float(), label_smoothing=label_smoothing)
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"class-index targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
    return F.cross_entropy(logits, targets.long(), label_smoothing=label_smoothing)


def l1_weights(model: nn.Module) -> list[nn.Parameter]:
    """The tensors the L1 penalty covers: trainable conv/linear weights (ndim >= 2)."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def l1_penalty(weights: Sequence[Tensor]) -> Tensor:
    """Sum of |w| over `weights` (from `l1_weights(model)`), unweighted, as a 0-dim float32 tensor.

    Biases and norm-layer parameters (every 1-D parameter) are left out, the same set that
    weight decay exempts: shrinking BatchNorm scales toward zero would switch channels off
    rather than regularise them. Frozen parameters are left out too. The caller gathers the
    weights once, multiplies by `loss.l1_weight` and skips the call when it is 0:
    `loss = loss + cfg.l1_weight * l1_penalty(weights)`. One fused foreach L1 norm covers all
    the tensors, instead of an abs and a sum kernel per tensor.
    """
    if not weights:
        return torch.zeros((), dtype=torch.float32)
    norms = torch._foreach_norm(list(weights), 1)
    return torch.stack(norms).sum().float()
