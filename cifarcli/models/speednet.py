"""The speedrun network: a small, wide-early CNN in the style of the fastest public CIFAR-10 training.

    stem   conv 2x2 (3 -> 24, no padding, bias) -> GELU          32 -> 31 px
    layer1 conv 3x3 -> maxpool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU   (64 channels, 15 px)
    layer2 the same                                                        (256 channels, 7 px)
    layer3 the same                                                        (256 channels, 3 px)
    pool   global max-pool -> flatten -> fc (no bias) -> logits * 1/9

The stem has no BatchNorm after it: it is meant to be initialised by patch whitening
(`model.whiten_stem`), which makes its outputs unit-variance already. Its 24 channels are the
12 whitening filters of a 2x2x3 patch and their negatives. The 1/9 logit scale keeps the
initial logits small, so the loss starts near log(classes) with a large learning rate.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

STEM_KERNEL = 2  # pixels; a 2x2x3 patch has 12 dimensions, whitened into 12 filters and their negatives
STEM_WIDTH = 2 * 3 * STEM_KERNEL**2
WIDTHS = (64, 256, 256)  # output channels of layer1, layer2, layer3
LOGIT_SCALE = 1.0 / 9.0


def conv_group(channels_in: int, channels_out: int) -> nn.Sequential:
    """conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU (convs without bias: BN follows)."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False)),
        ("pool", nn.MaxPool2d(2)),
        ("bn1", nn.BatchNorm2d(channels_out)),
        ("act1", nn.GELU()),
        ("conv2", nn.Conv2d(channels_out, channels_out, kernel_size=3, padding=1, bias=False)),
        ("bn2", nn.BatchNorm2d(channels_out)),
        ("act2", nn.GELU()),
    ]))  # fmt: skip


class SpeedNet(nn.Module):
    """The speedrun CNN for 3 x S x S images (S >= 9; designed for 32); head `fc` like every model of the zoo."""

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, STEM_WIDTH, kernel_size=STEM_KERNEL, padding=0, bias=True)
        self.stem_act = nn.GELU()
        w1, w2, w3 = WIDTHS
        self.layer1 = conv_group(STEM_WIDTH, w1)
        self.layer2 = conv_group(w1, w2)
        self.layer3 = conv_group(w2, w3)
        self.pool = nn.AdaptiveMaxPool2d(1)  # 3 x 3 -> 1 at 32 px; any size from 9 px up
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(w3, num_classes, bias=False)
        nn.init.zeros_(self.stem.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(images))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(self.flatten(self.pool(x)))) * LOGIT_SCALE


def speednet(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """The speedrun CNN returning `num_classes` logits (about 1.97 M parameters for 10 classes)."""
    return SpeedNet(num_classes, dropout)
