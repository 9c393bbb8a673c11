"""How stride and padding shape a convolution's output: the formula, and a layer's filters applied with each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

STRIDES = (1, 2, 3)
PADDINGS = (0, 1, 2)
FORMULA = "out = floor((n + 2p - k) / s) + 1"


def conv_output_side(n: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output side of a convolution over `n` pixels: floor((n + 2p - d(k - 1) - 1) / s) + 1, i.e. FORMULA when d = 1."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class StridedMaps:
    """The feature maps of one (stride, padding) setting, and the side the formula predicts."""

    stride: int
    padding: int
    maps: np.ndarray  # N x C x h x w
    predicted_side: tuple[int, int]  # (h, w) by conv_output_side


@torch.no_grad()
def stride_padding_maps(
    conv: nn.Conv2d, inputs: torch.Tensor, strides: Sequence[int] = STRIDES, paddings: Sequence[int] = PADDINGS
) -> list[StridedMaps]:
    """`conv`'s trained filters (and bias) applied to `inputs` with every stride x padding (zero padding), row by row."""
    weight = conv.weight.detach().float()
    bias = conv.bias.detach().float() if conv.bias is not None else None
    images = inputs.detach().float().to(weight.device)
    (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
    height, width = images.shape[-2:]
    results = []
    for stride in strides:
        for padding in paddings:
            maps = nn.functional.conv2d(images, weight, bias, stride=stride, padding=padding, dilation=conv.dilation, groups=conv.groups)
            predicted = (conv_output_side(height, kh, stride, padding, dh), conv_output_side(width, kw, stride, padding, dw))
            results.append(StridedMaps(stride, padding, maps.cpu().numpy(), predicted))
    return results
