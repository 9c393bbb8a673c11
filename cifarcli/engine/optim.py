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


def split_param_groups(model: nn.Module, cfg: OptimConfig) -> ParamGroups:
    """All parameters of `model`, in one group or in "decay" and "no_decay" groups (see module doc)."""
    named = list(model.named_parameters())
    if cfg.decay_norm_and_bias:
        return [{"name": "all", "params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    decay = [p for n, p in named if not is_decay_exempt(n, p)]
    no_decay = [p for n, p in named if is_decay_exempt(n, p)]
    return [
        {"name": "decay", "params": decay, "weight_decay": cfg.weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` over all of `model`'s parameters, grouped for weight decay."""
    factory = OPTIMIZERS.get(cfg.name)
    if factory is None:
        raise ConfigError(f"optim.name: {cfg.name!r} is not one of {', '.join(OPTIMIZERS)}")
    groups = split_param_groups(model, cfg)
    if not any(group["params"] for group in groups):
        raise ConfigError(
            f"model {type(model).__name__} has no parameters to optimize",
            hint="check model.name; every built-in model has parameters",
        )
    return factory(groups, cfg)
