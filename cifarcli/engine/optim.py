"""Optimizers: a registry of factories and `build_optimizer(model, cfg)`.

Every parameter of the model goes into the optimizer, frozen ones included: the engine
unfreezes a pretrained backbone after `model.freeze_backbone_epochs`, and a parameter that
is not in the optimizer would never train. A frozen parameter (requires_grad=False) keeps
`.grad` at None, and torch's optimizers skip such parameters entirely (no step, no weight
decay, no momentum state) — so the train loop must clear gradients with
`optimizer.zero_grad(set_to_none=True)`, torch's default.

Weight decay: with `decay_norm_and_bias` false (the default), parameters are split into two
groups, "decay" (conv and linear weights, ndim >= 2) and "no_decay" (biases and every 1-D
parameter, i.e. norm-layer weights), the latter with weight_decay 0. Both groups always exist,
even if one is empty, so the optimizer's state_dict has the same layout for every model.
`foreach`/`fused` are left to torch's defaults (foreach on CUDA, the for-loop on CPU).

Units (`optim.units`): with "torch", `lr` and `weight_decay` go to torch as they are. With
"per_1024_images" (the speedrun's parametrisation, after Page's and Jordan's CIFAR work), they are
given per 1024 images and decoupled from the batch size and the momentum: the torch LR is
`lr * batch_size / 1024 / (1 + 1 / (1 - momentum))` (the last factor removes the step
amplification of Nesterov momentum), and each step shrinks the weights by
`weight_decay * batch_size / 1024 / (1 + 1 / (1 - momentum))` at the peak LR, whatever `lr` is
(torch's coupled decay is set to that divided by the torch LR). Tuning one knob then does not
re-tune the others. `norm_bias_lr_scale` multiplies the LR of BatchNorm shifts (not their decay
per step), in a third group "norm_bias".
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from cifarcli.config import OptimConfig
from cifarcli.errors import ConfigError

ParamGroups = list[dict[str, Any]]
OptimizerFactory = Callable[[ParamGroups, OptimConfig], torch.optim.Optimizer]


def make_sgd(groups: ParamGroups, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with (optionally Nesterov) momentum and L2 weight decay."""
    if cfg.nesterov and cfg.momentum == 0:
        raise ConfigError(
            "optim.nesterov: Nesterov momentum needs optim.momentum > 0 (got 0)",
            hint="set optim.momentum=0.9, or optim.nesterov=false",
        )
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def make_adam(groups: ParamGroups, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam with L2 weight decay added to the gradient."""
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def make_adamw(groups: ParamGroups, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW: weight decay decoupled from the gradient."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def make_rmsprop(groups: ParamGroups, cfg: OptimConfig) -> torch.optim.Optimizer:
    """RMSprop with momentum and L2 weight decay."""
    return torch.optim.RMSprop(
        groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay
    )


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": make_sgd,
    "adam": make_adam,
    "adamw": make_adamw,
    "rmsprop": make_rmsprop,
}


def is_decay_exempt(name: str, param: nn.Parameter) -> bool:
    """True for biases and 1-D parameters (norm-layer weights), which are not weight-decayed."""
    return param.ndim <= 1 or name == "bias" or name.endswith(".bias")


def norm_bias_ids(model: nn.Module) -> set[int]:
    """ids of the shifts (biases) of the model's BatchNorm layers."""
    return {
        id(module.bias)
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.bias is not None
    }


def split_param_groups(model: nn.Module, cfg: OptimConfig, weight_decay: float | None = None) -> ParamGroups:
    """All parameters of `model`, in one group or in "decay" and "no_decay" groups (see module doc),
    plus a "norm_bias" group when `cfg.norm_bias_lr_scale` is not 1. `weight_decay` overrides
    `cfg.weight_decay` (the per-1024-images conversion passes torch's value)."""
    decay_value = cfg.weight_decay if weight_decay is None else weight_decay
    named = list(model.named_parameters())
    shifts = norm_bias_ids(model) if cfg.norm_bias_lr_scale != 1.0 else set()
    rest = [(n, p) for n, p in named if id(p) not in shifts]
    if cfg.decay_norm_and_bias:
        groups = [{"name": "all", "params": [p for _, p in rest], "weight_decay": decay_value}]
    else:
        groups = [
            {"name": "decay", "params": [p for n, p in rest if not is_decay_exempt(n, p)], "weight_decay": decay_value},
            {"name": "no_decay", "params": [p for n, p in rest if is_decay_exempt(n, p)], "weight_decay": 0.0},
        ]
    if shifts:
        # A larger LR, the same decay per step: torch's coupled decay is divided by the LR factor.
        shift_decay = decay_value / cfg.norm_bias_lr_scale if cfg.decay_norm_and_bias else 0.0
        groups.append({"name": "norm_bias", "params": [p for _, p in named if id(p) in shifts],
                       "lr_scale": cfg.norm_bias_lr_scale, "weight_decay": shift_decay})  # fmt: skip
    return groups


def momentum_amplification(cfg: OptimConfig) -> float:
    """How much larger than the gradient a momentum step is, for constant gradients: 1 + 1 / (1 - m) with
    Nesterov, 1 / (1 - m) without, 1 for optimizers without momentum (Adam's moments are normalised)."""
    if cfg.name not in ("sgd", "rmsprop") or cfg.momentum == 0:
        return 1.0
    return 1.0 + 1.0 / (1.0 - cfg.momentum) if cfg.nesterov else 1.0 / (1.0 - cfg.momentum)


def torch_lr_factor(cfg: OptimConfig, batch_size: int | None) -> float:
    """torch's LR divided by `optim.lr`: 1 in torch units, batch / 1024 / amplification per 1024 images."""
    if cfg.units == "torch" or batch_size is None:
        return 1.0
    return batch_size / 1024.0 / momentum_amplification(cfg)


def build_optimizer(model: nn.Module, cfg: OptimConfig, batch_size: int | None = None) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` over all of `model`'s parameters, grouped for weight decay.

    `batch_size` (images per step) converts `optim.units: per_1024_images` into torch's units;
    torch units need none.
    """
    factory = OPTIMIZERS.get(cfg.name)
    if factory is None:
        raise ConfigError(f"optim.name: {cfg.name!r} is not one of {', '.join(OPTIMIZERS)}")
    if batch_size is None and cfg.units != "torch":
        raise ValueError(f"optim.units={cfg.units} needs the batch size to convert the LR")
    factor = torch_lr_factor(cfg, batch_size)
    lr = cfg.lr * factor
    # Per 1024 images the decay per step is weight_decay * factor; torch multiplies its value by the LR.
    weight_decay = cfg.weight_decay if cfg.units == "torch" else cfg.weight_decay * factor / lr
    groups = split_param_groups(model, cfg, weight_decay)
    if not any(group["params"] for group in groups):
        raise ConfigError(
            f"model {type(model).__name__} has no parameters to optimize",
            hint="check model.name; every built-in model has parameters",
        )
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale", 1.0)
    return factory(groups, cfg.model_copy(update={"lr": lr}))
