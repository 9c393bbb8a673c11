"""The fully connected baseline: a flattened image through three LeakyReLU hidden layers."""

from __future__ import annotations

import torch
from torch import nn

IMAGE_FEATURES = 3 * 32 * 32
HIDDEN_WIDTHS = (1024, 512, 256)
LEAKY_SLOPE = 0.01  # negative-side slope of LeakyReLU


class MLP(nn.Module):
    """3072 -> 1024 -> 512 -> 256 -> classes; the head is `fc`, like every model in the zoo."""

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = IMAGE_FEATURES
        for width in HIDDEN_WIDTHS:
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(LEAKY_SLOPE)]
            width_in = width
        self.hidden = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width_in, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.hidden(images)))


def mlp(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """An MLP for 3x32x32 images returning `num_classes` logits."""
    return MLP(num_classes, dropout)
