"""The fully connected baseline: a flattened image through LeakyReLU hidden layers (three by default)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cifarcli.models.fully_connected import hidden_layers

HIDDEN_WIDTHS = (1024, 512, 256)
LEAKY_SLOPE = 0.01  # negative-side slope of LeakyReLU


class MLP(nn.Module):
    """3*S*S -> 1024 -> 512 -> 256 -> classes by default; the head is `fc`, like every model in the zoo."""

    def __init__(self, num_classes: int, dropout: float = 0.0, image_size: int = 32,
                 hidden_sizes: Sequence[int] = HIDDEN_WIDTHS) -> None:
        super().__init__()
        self.hidden, width = hidden_layers(3 * image_size * image_size, hidden_sizes,
                                           lambda: nn.LeakyReLU(LEAKY_SLOPE), dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(images))


def mlp(num_classes: int, dropout: float = 0.0, image_size: int = 32, hidden_sizes: Sequence[int] = HIDDEN_WIDTHS) -> nn.Module:
    """An MLP for 3 x image_size x image_size images returning `num_classes` logits."""
    return MLP(num_classes, dropout, image_size, hidden_sizes)
