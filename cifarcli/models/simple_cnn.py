"""A small CNN: three conv-ReLU-maxpool stages, then three fully connected layers."""

from __future__ import annotations

import torch
from torch import nn

CONV_CHANNELS = (32, 64, 128)
FC_WIDTHS = (256, 128)
FEATURE_SIDE = 32 // 2 ** len(CONV_CHANNELS)  # each stage halves the 32-pixel side


def conv_stage(channels_in: int, channels_out: int) -> nn.Sequential:
    """conv3x3 (same padding) -> ReLU -> maxpool 2: halves the side, sets the channels."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(nn.Module):
    """3x32x32 -> 32x16x16 -> 64x8x8 -> 128x4x4 -> 256 -> 128 -> classes (head: `fc`)."""

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        c1, c2, c3 = CONV_CHANNELS
        self.conv1 = conv_stage(3, c1)
        self.conv2 = conv_stage(c1, c2)
        self.conv3 = conv_stage(c2, c3)
        w1, w2 = FC_WIDTHS
        self.hidden = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * FEATURE_SIDE * FEATURE_SIDE, w1),
            nn.ReLU(inplace=True),
            nn.Linear(w1, w2),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(w2, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.conv3(self.conv2(self.conv1(images)))
        return self.fc(self.dropout(self.hidden(features)))


def simple_cnn(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """A 3-conv + 3-fc network for 3x32x32 images returning `num_classes` logits."""
    return SimpleCNN(num_classes, dropout)
