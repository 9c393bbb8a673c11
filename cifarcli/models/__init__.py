"""The model zoo: the registry, `build_model`, and where each model keeps its head and convs.

Every model takes a normalised float batch N x 3 x S x S (S = data.image_size, 32 for CIFAR)
and returns N x num_classes logits, and names its classifier head `fc` (an `nn.Linear`), so the
helpers below work on all of them. `model.name` may instead be an import path to the user's
own model (see `custom.py`); the helpers that need a head or conv layers say so when it has none.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cifarcli.config import CIFAR_IMAGE_SIZE, HIDDEN_SIZE_MODELS, ModelConfig, is_model_import_path
from cifarcli.errors import UsageError
from cifarcli.models.custom import ModelImportError, build_custom_model
from cifarcli.models.mlp import mlp
from cifarcli.models.pretrained import load_imagenet_backbone
from cifarcli.models.resnet9 import resnet9
from cifarcli.models.simple_cnn import simple_cnn
from cifarcli.models.speednet import speednet
from cifarcli.models.summary import ModelSummary, render_summary, summarize_model
from cifarcli.models.torchvision_resnet import resnet18, resnet34, resnet50
from cifarcli.torchutil import unwrap_model

ModelBuilder = Callable[..., nn.Module]  # (num_classes: int, dropout: float = 0.0, **sizes) -> nn.Module

# Keyed by exactly config.MODEL_NAMES (a test holds them equal).
MODELS: dict[str, ModelBuilder] = {
    "mlp": mlp,
    "simple_cnn": simple_cnn,
    "resnet9": resnet9,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "speednet": speednet,
}

HEAD_NAME = "fc"  # the classifier head's module name in every registered model
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_model(cfg: ModelConfig, num_classes: int, image_size: int = CIFAR_IMAGE_SIZE) -> nn.Module:
    """A fresh `cfg.name` model with a `num_classes` head for image_size x image_size images, on the CPU.

    With `cfg.pretrained`, the backbone starts from that torchvision ImageNet weights file
    (see `pretrained.load_imagenet_backbone`: the head and the 7x7 stem are not loaded). An
    import-path name is imported, called with `cfg.kwargs` and checked on one dummy batch
    (ModelImportError, a ConfigError, when anything is wrong).
    """
    if is_model_import_path(cfg.name):
        return scale_logits(build_custom_model(cfg.name, num_classes, cfg.kwargs, image_size), cfg.logit_scale)
    options: dict[str, object] = {"dropout": cfg.dropout}
    if cfg.name in HIDDEN_SIZE_MODELS:  # their fully connected layers are sized by the image (the resnets pool it away)
        options["image_size"] = image_size
        if cfg.hidden_sizes is not None:
            options["hidden_sizes"] = tuple(cfg.hidden_sizes)
    model = MODELS[cfg.name](num_classes, **options)
    if cfg.pretrained is not None:
        load_imagenet_backbone(model, cfg.pretrained, cfg.name)
    return scale_logits(model, cfg.logit_scale)


class LogitScale:
    """A forward hook multiplying a model's output by a constant (it keeps the state dict unchanged)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        return output * self.factor


def scale_logits(model: nn.Module, factor: float) -> nn.Module:
    """`model`, its logits multiplied by `factor` from now on (`model.logit_scale`; nothing when 1)."""
    if factor != 1.0:
        model.register_forward_hook(LogitScale(factor))
    return model


def head_module(model: nn.Module) -> nn.Linear:
    """The classifier head (`fc`) of a registered model."""
    head = getattr(unwrap_model(model), HEAD_NAME, None)
    if not isinstance(head, nn.Linear):
        raise UsageError(
            f"{type(model).__name__} has no nn.Linear head named {HEAD_NAME!r}; build models with cifarcli.models.MODELS"
        )
    return head


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names (as in `named_modules`) of every Conv2d, in definition order; [] for the MLP.

    These are the layers whose outputs can be shown as feature maps or used for Grad-CAM.
    """
    return [name for name, module in unwrap_model(model).named_modules() if isinstance(module, nn.Conv2d)]


def _no_conv_error(model: nn.Module) -> UsageError:
    return UsageError(
        f"{type(unwrap_model(model)).__name__} has no conv layer; filters, feature maps and Grad-CAM "
        "need a conv model: simple_cnn, resnet9, resnet18, resnet34 or resnet50"
    )


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d (the stem, which sees the image); UsageError for a model without one."""
    names = conv_layer_names(model)
    if not names:
        raise _no_conv_error(model)
    return unwrap_model(model).get_submodule(names[0])


def last_conv_layer_name(model: nn.Module) -> str:
    """Name of the last Conv2d: the default Grad-CAM layer; UsageError for a model without one."""
    names = conv_layer_names(model)
    if not names:
        raise _no_conv_error(model)
    return names[-1]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`; UsageError listing the conv layers when there is none."""
    inner = unwrap_model(model)
    try:
        return inner.get_submodule(name)
    except AttributeError:
        convs = conv_layer_names(model)
        shown = ", ".join(convs[:8]) + (f", ... ({len(convs)} in all, last: {convs[-1]})" if len(convs) > 8 else "")
        raise UsageError(
            f"layer {name!r} not found in {type(inner).__name__}; "
            f"choose a module name such as a conv layer: {shown or 'none'}"
        ) from None


# Modules that never come from an ImageNet weights file: the 3x3 stem replaces the 7x7 one
# (`bn1` normalises that new conv's output, so its ImageNet statistics do not apply either).
FRESH_STEM_NAMES = ("conv1", "bn1")


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Set requires_grad on the pretrained backbone; the head and the fresh stem always stay trainable."""
    inner = unwrap_model(model)
    always = {id(p) for p in head_module(model).parameters()}
    for name in FRESH_STEM_NAMES:
        if hasattr(inner, name):
            always |= {id(p) for p in getattr(inner, name).parameters()}
    for param in inner.parameters():
        param.requires_grad_(trainable or id(param) in always)


def freeze_norm_stats(model: nn.Module) -> int:
    """Put every BatchNorm layer whose parameters are all frozen into eval mode; returns how many.

    Call it after each `model.train()` while the backbone is frozen: a frozen BatchNorm would
    otherwise keep updating its running statistics from CIFAR batches, drifting away from the
    weights it was trained with. BatchNorm layers with trainable parameters are left alone.
    """
    count = 0
    for module in unwrap_model(model).modules():
        params = list(module.parameters())
        if isinstance(module, BATCH_NORMS) and params and not any(p.requires_grad for p in params):
            module.eval()
            count += 1
    return count


__all__ = [
    "HEAD_NAME",
    "MODELS",
    "ModelImportError",
    "ModelSummary",
    "build_model",
    "conv_layer_names",
    "find_layer",
    "first_conv",
    "freeze_norm_stats",
    "head_module",
    "last_conv_layer_name",
    "load_imagenet_backbone",
    "render_summary",
    "set_backbone_trainable",
    "summarize_model",
    "unwrap_model",
]
