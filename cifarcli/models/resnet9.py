"""The custom ResNet-9 of the seed recipe (DAWNBench style): 6,573,130 parameters for 10 classes."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def conv_bn_relu(channels_in: int, channels_out: int, pool: bool = False) -> nn.Sequential:
    """conv3x3 (no bias: BN follows) -> [maxpool 2] -> BN -> ReLU, as `conv`, `pool`, `bn`, `relu`."""
    layers: dict[str, nn.Module] = {"conv": nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False)}
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    layers["bn"] = nn.BatchNorm2d(channels_out)
    layers["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(OrderedDict(layers))


class Residual(nn.Module):
    """x + R(x), where R is two conv-BN-ReLU blocks that keep the channel count."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = conv_bn_relu(channels, channels)
        self.block2 = conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.block1(x))


class ResNet9(nn.Module):
    """prep 64@32 -> layer1 128@16 (+res) -> layer2 256@8 -> layer3 512@4 (+res) -> global max-pool -> fc.

    The global max-pool (4x4 at 32 pixels, like the recipe's maxpool 4) lets it take any image
    side of at least 8.
    """

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.prep = conv_bn_relu(3, 64)
        self.layer1 = conv_bn_relu(64, 128, pool=True)
        self.res1 = Residual(128)
        self.layer2 = conv_bn_relu(128, 256, pool=True)
        self.layer3 = conv_bn_relu(256, 512, pool=True)
        self.res3 = Residual(512)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.res1(self.layer1(self.prep(images)))
        x = self.res3(self.layer3(self.layer2(x)))
        return self.fc(self.dropout(self.flatten(self.pool(x))))


def resnet9(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """ResNet-9 for 3xSxS images (S >= 8, 32 for CIFAR) returning `num_classes` logits."""
    return ResNet9(num_classes, dropout)
