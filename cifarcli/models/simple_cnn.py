"""A small CNN: three conv-ReLU-maxpool stages, then fully connected layers (two hidden by default)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cifarcli.models.fully_connected import hidden_layers

CONV_CHANNELS = (32, 64, 128)
FC_WIDTHS = (256, 128)


def conv_stage(channels_in: int, channels_out: int) -> nn.Sequential:
    """conv3x3 (same padding) -> ReLU -> maxpool 2: halves the side, sets the channels."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def feature_side(image_size: int) -> int:
    """Side of the last conv stage's output: each of the three stages halves it (rounding down)."""
    return image_size // 2 ** len(CONV_CHANNELS)


class SimpleCNN(nn.Module):
    """3x32x32 -> 32x16x16 -> 64x8x8 -> 128x4x4 -> 256 -> 128 -> classes by default (head: `fc`)."""

    def __init__(self, num_classes: int, dropout: float = 0.0, image_size: int = 32,
                 hidden_sizes: Sequence[int] = FC_WIDTHS) -> None:
        super().__init__()
        c1, c2, c3 = CONV_CHANNELS
        self.conv1 = conv_stage(3, c1)
        self.conv2 = conv_stage(c1, c2)
        self.conv3 = conv_stage(c2, c3)
        side = feature_side(image_size)
        self.hidden, width = hidden_layers(c3 * side * side, hidden_sizes, lambda: nn.ReLU(inplace=True), dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.conv3(self.conv2(self.conv1(images)))
        return self.fc(self.hidden(features))


def simple_cnn(num_classes: int, dropout: float = 0.0, image_size: int = 32, hidden_sizes: Sequence[int] = FC_WIDTHS) -> nn.Module:
    """A 3-conv network with fully connected layers for 3 x image_size x image_size images returning `num_classes` logits."""
    return SimpleCNN(num_classes, dropout, image_size, hidden_sizes)
