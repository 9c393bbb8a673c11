"""Test-time augmentation: a model's logits averaged over a few views of each image.

- flip (`eval.tta_flip`): the image and its mirror image, weight 1/2 each.
- shift (`eval.tta_shift`): also the image moved one pixel up-left and one pixel down-right
  (reflect-padded), each with its mirror image when flipping: the unshifted views weigh 1/2 and
  the shifted ones 1/2 together, so 6 views with both switches on.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def _mirrored(forward: Forward, inputs: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = forward(inputs).float()
    if flip:
        logits = (logits + forward(torch.flip(inputs, dims=[3])).float()) / 2
    return logits


def shifted_views(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch moved one pixel up-left and one pixel down-right, edges reflected: two N x C x H x W batches."""
    height, width = inputs.shape[-2:]
    padded = F.pad(inputs, (1, 1, 1, 1), mode="reflect")
    return padded[..., 2 : height + 2, 2 : width + 2], padded[..., 0:height, 0:width]


def tta_logits(forward: Forward, inputs: torch.Tensor, flip: bool, shift: bool) -> torch.Tensor:
    """float32 logits of `inputs` averaged over the views that `flip` and `shift` switch on."""
    logits = _mirrored(forward, inputs, flip)
    if not shift:
        return logits
    up_left, down_right = shifted_views(inputs)
    shifted = (_mirrored(forward, up_left, flip) + _mirrored(forward, down_right, flip)) / 2
    return (logits + shifted) / 2
