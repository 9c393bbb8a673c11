"""Initialisations and BatchNorm settings that recipes switch on (`model.*`), for any model of the zoo.

- `whiten_conv_`: the first convolution's filters become the whitening transform of the image
  patches it sees (eigenvectors of their covariance scaled by 1/sqrt(eigenvalue)), and their
  negatives, so its outputs start decorrelated with unit variance.
- `identity_init_`: every other 3x3 convolution starts as the identity on its first input
  channels (a Dirac delta), so a deep net starts close to a shallow one.
- `configure_batchnorm`: BatchNorm running-statistics momentum, and scales held at 1 (only the
  shifts train).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cifarcli.config import ModelConfig
from cifarcli.errors import UsageError

WHITEN_EPS = 5e-4  # added to each eigenvalue: the smallest patch directions are mostly noise


def image_patches(images: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Every kernel-sized patch of N x C x H x W images (stride 1), flattened: (patches, C * kh * kw)."""
    kh, kw = kernel
    patches = images.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * kh * kw)


def whitening_filters(images: torch.Tensor, kernel: tuple[int, int], eps: float = WHITEN_EPS) -> torch.Tensor:
    """The whitening filters of the patches of `images`, largest-variance direction first: (C*kh*kw, C, kh, kw).

    Filter i is eigenvector i of the patch covariance divided by sqrt(eigenvalue_i + eps), so
    the filter responses are uncorrelated, each with variance eigenvalue / (eigenvalue + eps).
    """
    patches = image_patches(images.double(), kernel)
    centred = patches - patches.mean(dim=0, keepdim=True)
    covariance = centred.T @ centred / max(len(patches) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
    filters = (eigenvectors / torch.sqrt(eigenvalues + eps)).T
    return filters.reshape(-1, images.shape[1], *kernel)


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = WHITEN_EPS) -> int:
    """Set `conv`'s filters to the whitening filters of `images` and their negatives; returns how many were set.

    `images` are normalised float N x C x H x W model inputs. A conv with fewer than 2 x C*kh*kw
    output channels gets the strongest directions only; one with more keeps its other filters
    as initialised. The bias (if any) is zeroed; freezing the weights is the caller's choice.
    """
    if conv.groups != 1 or conv.in_channels != images.shape[1]:
        raise UsageError(
            f"model.whiten_stem: the first conv ({conv.in_channels} input channels, groups={conv.groups}) "
            f"does not see the {images.shape[1]}-channel images directly",
            hint="use a model whose first layer is a plain convolution of the image, or set model.whiten_stem=false",
        )
    kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
    filters = whitening_filters(images, kernel, eps)
    both = torch.cat([filters, -filters])[: conv.out_channels]
    conv.weight[: len(both)] = both.to(conv.weight.dtype)
    if conv.bias is not None:
        conv.bias.zero_()
    return len(both)


@torch.no_grad()
def identity_init_(model: nn.Module, skip: tuple[nn.Module, ...] = ()) -> int:
    """Start every 3x3 (odd-sized, ungrouped) conv but those in `skip` as the identity on its first
    input channels (`min(in, out)` filters); returns how many convs were changed."""
    changed = 0
    for module in model.modules():
        if not isinstance(module, nn.Conv2d) or any(module is s for s in skip):
            continue
        kh, kw = module.kernel_size
        if module.groups != 1 or kh % 2 == 0 or kw % 2 == 0:
            continue
        count = min(module.in_channels, module.out_channels)
        nn.init.dirac_(module.weight[:count, :count])
        module.weight[:count, count:] = 0
        changed += 1
    return changed


def configure_batchnorm(model: nn.Module, momentum: float | None, train_scale: bool) -> int:
    """Set every BatchNorm's running-stats `momentum` (None: keep torch's 0.1) and whether its scale
    trains (False: held at 1); returns how many BatchNorm layers there are."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if momentum is not None:
                module.momentum = momentum
            if module.weight is not None and not train_scale:
                with torch.no_grad():
                    module.weight.fill_(1.0)
                module.weight.requires_grad_(False)
            count += 1
    return count


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first Conv2d in definition order (the stem that sees the images)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise UsageError(f"model.whiten_stem: {type(model).__name__} has no convolution to whiten",
                         hint="use a convolutional model, or set model.whiten_stem=false")  # fmt: skip
    return conv


def initialise_model(model: nn.Module, cfg: ModelConfig, whiten_images: torch.Tensor | None) -> None:
    """Apply the `model.*` initialisation switches: BatchNorm settings, identity convs, the whitened,
    frozen stem (from `whiten_images`, normalised training images; None when trained weights follow)."""
    configure_batchnorm(model, cfg.bn_momentum, cfg.bn_train_scale)
    stem = first_conv(model) if cfg.whiten_stem else None
    if cfg.identity_init:
        identity_init_(model, skip=(stem,) if stem is not None else ())
    if stem is not None:
        if whiten_images is not None:  # None: the caller loads trained weights over these
            whiten_conv_(stem, whiten_images.to(stem.weight.device))
        stem.weight.requires_grad_(False)


def stem_bias_freezer(cfg: ModelConfig) -> Callable[[int, nn.Module], None] | None:
    """An epoch hook that freezes the whitened stem's bias from epoch `whiten_bias_epochs` on (None: nothing to do)."""
    if not cfg.whiten_stem or cfg.whiten_bias_epochs is None:
        return None
    trainable_epochs = cfg.whiten_bias_epochs

    def before_epoch(epoch: int, model: nn.Module) -> None:
        bias = first_conv(model).bias
        if bias is not None:
            bias.requires_grad_(epoch < trainable_epochs)

    return before_epoch
