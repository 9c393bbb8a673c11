"""Torchvision ResNet-18/34/50 adapted to small images such as CIFAR's 32x32 (never downloads anything).

The ImageNet stem (7x7 stride-2 conv, then a stride-2 maxpool) would shrink a 32x32 image to
8x8 before the first block, so it becomes a 3x3 stride-1 conv and the maxpool is removed.
The average pool before the head is adaptive, so any image side works.
"""

from __future__ import annotations

import torchvision
from torch import nn

STEM_CHANNELS = 64  # torchvision's conv1 output width, which layer1 expects


def cifar_stem() -> nn.Conv2d:
    """The 32x32 stem: 3x3 stride-1 conv, no bias (bn1 follows), torchvision's init."""
    conv = nn.Conv2d(3, STEM_CHANNELS, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def adapt_to_cifar(model: torchvision.models.ResNet, dropout: float) -> torchvision.models.ResNet:
    """Swap the stem for 32x32 images and, with dropout > 0, drop pooled features before `fc`.

    The dropout rides in `avgpool` (no parameters), so state-dict keys are the same with or
    without it and torchvision weights files keep loading.
    """
    model.conv1 = cifar_stem()
    model.maxpool = nn.Identity()
    if dropout > 0:
        model.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout))
    return model


def resnet18(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Torchvision ResNet-18 for 3x32x32 images returning `num_classes` logits."""
    return adapt_to_cifar(torchvision.models.resnet18(weights=None, num_classes=num_classes), dropout)


def resnet34(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Torchvision ResNet-34 for 3x32x32 images returning `num_classes` logits."""
    return adapt_to_cifar(torchvision.models.resnet34(weights=None, num_classes=num_classes), dropout)


def resnet50(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Torchvision ResNet-50 for 3x32x32 images returning `num_classes` logits."""
    return adapt_to_cifar(torchvision.models.resnet50(weights=None, num_classes=num_classes), dropout)
