"""What a conv layer sees and where a class comes from: feature maps and Grad-CAM.

Both take a model, one of its layers (an `nn.Module`, looked up by the caller) and a
normalised batch N x 3 x H x W on the model's device, and return numpy arrays on the CPU.
They run the model in eval mode and leave it as they found it: its training flag restored,
every hook removed, no `.grad` left on any parameter.

The layer's output is captured with a forward hook that hands the rest of the network a
copy, so in-place operations that follow the layer (`ReLU(inplace=True)`) cannot change
the captured tensor: the maps and the Grad-CAM gradients are those of the layer's own
output. If the layer runs more than once in a forward pass, the last call counts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarcli.errors import UsageError


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM of one batch: heatmaps in [0, 1] at the image size, and what they explain."""

    heatmaps: np.ndarray  # (N, H, W) float32; 1 = the image's most relevant pixel, all 0 = no evidence
    target_classes: np.ndarray  # (N,) int64: the class each heatmap explains
    probabilities: np.ndarray  # (N, classes) float32 softmax of the same forward pass

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _capture_output(
    layer: nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[list[Optional[torch.Tensor]]]:
    """Hook `layer` for the duration: each output goes through `replace`, which returns what
    to keep; the network continues with a clone of the kept tensor. Yields the kept tensors
    (None for an output that is not a tensor)."""
    kept: list[Optional[torch.Tensor]] = []

    def hook(module: nn.Module, inputs: object, output: object) -> Optional[torch.Tensor]:
        if not isinstance(output, torch.Tensor):
            kept.append(None)
            return None
        kept.append(replace(output))
        return kept[-1].clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield kept
    finally:
        handle.remove()


def _feature_maps_of(kept: list[Optional[torch.Tensor]], layer: nn.Module) -> torch.Tensor:
    """The last captured output, which must be N x C x H x W; UsageError otherwise."""
    name = type(layer).__name__
    if not kept:
        raise UsageError(f"this {name} layer did not run in the forward pass; choose a conv layer (--list-layers)")
    output = kept[-1]
    shape = "no tensor" if output is None else f"shape {tuple(output.shape)}"
    if output is None or output.ndim != 4:
        raise UsageError(f"this {name} layer outputs {shape}, not feature maps N x C x H x W; choose a conv layer (--list-layers)")
    return output


def layer_activations(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> np.ndarray:
    """The output of `layer` for each image: (N, C, h, w) float32, C = the layer's channels."""
    with _eval_mode(model), torch.no_grad(), _capture_output(layer, lambda out: out.detach()) as kept:
        model(images)
    return _feature_maps_of(kept, layer).float().cpu().numpy()


def grad_cam(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, target_classes: Optional[torch.Tensor] = None
) -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) of `layer` for each image, explaining `target_classes`
    (default: the predicted class).

    Channel weights are the spatial means of d(class score)/d(activation); the map is the
    ReLU of the weighted channel sum, upsampled bilinearly to the image size and divided by
    its own maximum (a map with no positive evidence stays all zero).
    """

    def as_leaf(output: torch.Tensor) -> torch.Tensor:
        # A fresh leaf: the gradient is taken w.r.t. exactly this tensor, and no graph is
        # built for the layers before it (parameters there get no gradient work at all).
        return output.detach().requires_grad_(True)

    with _eval_mode(model), torch.enable_grad(), _capture_output(layer, as_leaf) as kept:
        logits = model(images).float()
        activation = _feature_maps_of(kept, layer)
        if target_classes is None:
            target_classes = logits.argmax(dim=1)
        targets = target_classes.to(device=logits.device, dtype=torch.int64)
        scores = logits.gather(1, targets.view(-1, 1)).sum()  # images are independent in eval mode
        (gradients,) = torch.autograd.grad(scores, activation, allow_unused=True)
    if gradients is None:  # the layer ran, but the scores do not depend on its output
        gradients = torch.zeros_like(activation)
    with torch.no_grad():
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cams = F.relu((weights * activation).sum(dim=1, keepdim=True)).float()
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp_min(0.0)
        peaks = cams.amax(dim=(1, 2), keepdim=True)
        heatmaps = cams / peaks.clamp_min(torch.finfo(cams.dtype).tiny)  # an all-zero map stays 0, never 0/0
        probabilities = torch.softmax(logits.detach(), dim=1)
    return GradCam(
        heatmaps=heatmaps.cpu().numpy().astype(np.float32),
        target_classes=targets.cpu().numpy().astype(np.int64),
        probabilities=probabilities.cpu().numpy().astype(np.float32),
    )
