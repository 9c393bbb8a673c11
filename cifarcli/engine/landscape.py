"""Loss landscapes (Li et al., 2018, "Visualizing the Loss Landscape of Neural Nets").

The loss is measured at `w + a * d1 + b * d2` on a grid of (a, b), where d1 and d2 are random
directions, filter-normalised: each filter (a conv's output channel, a linear layer's output
row) of a direction is scaled to the norm of that filter of the weights, so layers of any
scale move alike. Biases and BatchNorm parameters (the 1-D tensors) get a zero direction, and
the model is evaluated in eval mode: BatchNorm uses the running statistics it was trained with.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Optional, Sequence

import numpy as np
import torch
from torch import nn

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
ProgressCallback = Callable[[int, int], None]  # (points done, points in all)


def random_direction(weights: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A direction shaped like `weights`, each filter scaled to its weight filter's norm; 1-D tensors get zeros.

    The Gaussian draw happens on the CPU from `generator`, so one seed gives one direction on any
    device, and two weight sets (trained and initial) see the same draw, each normalised to itself.
    """
    direction = []
    for w in weights:
        raw = torch.randn(w.shape, generator=generator, dtype=torch.float32)
        if w.dim() <= 1:
            direction.append(torch.zeros_like(w))
            continue
        w_norms = w.detach().float().cpu().flatten(1).norm(dim=1)
        d_norms = raw.flatten(1).norm(dim=1).clamp_min(1e-12)
        scaled = raw * (w_norms / d_norms).view(-1, *([1] * (w.dim() - 1)))
        direction.append(scaled.to(device=w.device, dtype=w.dtype))
    return direction


def filter_normalized_directions(model: nn.Module, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two filter-normalised random directions for `model`'s parameters (in `parameters()` order)."""
    generator = torch.Generator().manual_seed(seed)
    weights = list(model.parameters())
    return random_direction(weights, generator), random_direction(weights, generator)


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Batches, autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> float:
    """Mean cross-entropy of `model` over every image of `batches` (no label smoothing)."""
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for inputs, labels in batches:
        with autocast():
            logits = model(inputs).float()
        total = total.to(logits.device) + nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        count += len(labels)
    return float(total) / max(count, 1)


@torch.no_grad()
def loss_surface(
    model: nn.Module, batches: Batches, directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
    coordinates: np.ndarray, autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    on_point: Optional[ProgressCallback] = None, done_before: int = 0, total: Optional[int] = None,
) -> np.ndarray:  # fmt: skip
    """The loss at every (a, b) of `coordinates` x `coordinates`: row i is b = coordinates[i], column j is a.

    The model's weights are restored afterwards, and its train/eval mode too. `on_point` gets
    (points done, points in all) after each point; `done_before` and `total` let several
    surfaces share one progress count.
    """
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]
    d1, d2 = directions
    size = len(coordinates)
    total = total if total is not None else size * size
    losses = np.empty((size, size), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for i, b in enumerate(coordinates):
            for j, a in enumerate(coordinates):
                for p, w, x, y in zip(params, originals, d1, d2):
                    p.copy_(w + float(a) * x + float(b) * y)
                losses[i, j] = mean_loss(model, batches, autocast)
                if on_point is not None:
                    on_point(done_before + i * size + j + 1, total)
    finally:
        for p, w in zip(params, originals):
            p.copy_(w)
        model.train(was_training)
    return losses


def grid_coordinates(points: int, span: float) -> np.ndarray:
    """`points` evenly spaced values from -span to span; with an odd count the middle one is exactly 0."""
    coordinates = np.linspace(-span, span, points)
    coordinates[points // 2] = 0.0 if points % 2 else coordinates[points // 2]
    return coordinates
