"""Optimizers: every registered name builds, weight-decay groups, hyper-parameters passed through."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from cifarcli.config import OPTIMIZER_NAMES, OptimConfig
from cifarcli.engine.optim import OPTIMIZERS, build_optimizer
from cifarcli.errors import ConfigError


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),  # 0.weight: decay
        nn.BatchNorm2d(4),  # 1.weight, 1.bias: no decay
        nn.ReLU(),
        nn.Flatten(),
        nn.LayerNorm(4 * 6 * 6),  # 4.weight, 4.bias: no decay
        nn.Linear(4 * 6 * 6, 10),  # 5.weight: decay, 5.bias: no decay
    )


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_registry_matches_config_names():
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_each_optimizer_builds_and_takes_a_step(name):
    torch.manual_seed(0)
    net = _net()
    optimizer = build_optimizer(net, OptimConfig(name=name, lr=0.05, weight_decay=5e-4))
    expected_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}
    assert type(optimizer) is expected_class[name]
    before = net[5].weight.detach().clone()
    net(torch.randn(2, 3, 8, 8)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(before, net[5].weight)
    assert all(group["lr"] == 0.05 for group in optimizer.param_groups)


def test_no_decay_group_holds_exactly_norm_weights_and_biases():
    net = _net()
    optimizer = build_optimizer(net, OptimConfig(name="sgd", weight_decay=5e-4))
    decay, no_decay = optimizer.param_groups
    assert (decay["name"], no_decay["name"]) == ("decay", "no_decay")
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == _ids([net[0].weight, net[5].weight])
    assert _ids(no_decay["params"]) == _ids([net[1].weight, net[1].bias, net[4].weight, net[4].bias, net[5].bias])


def test_decay_norm_and_bias_puts_everything_in_one_decayed_group():
    net = _net()
    optimizer = build_optimizer(net, OptimConfig(name="adamw", weight_decay=0.05, decay_norm_and_bias=True))
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == 0.05
    assert _ids(group["params"]) == _ids(net.parameters())


def test_frozen_parameters_are_included_and_stay_unchanged_until_unfrozen():
    torch.manual_seed(0)
    net = _net()
    net[0].requires_grad_(False)
    optimizer = build_optimizer(net, OptimConfig(name="adamw", lr=0.1, weight_decay=0.1))
    assert _ids(p for g in optimizer.param_groups for p in g["params"]) == _ids(net.parameters())
    frozen = net[0].weight.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        net(torch.randn(2, 3, 8, 8)).square().mean().backward()
        optimizer.step()
    assert torch.equal(frozen, net[0].weight)  # no step and no decoupled weight decay either
    net[0].requires_grad_(True)
    optimizer.zero_grad()
    net(torch.randn(2, 3, 8, 8)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(frozen, net[0].weight)


def test_sgd_momentum_and_nesterov_are_passed_through():
    optimizer = build_optimizer(_net(), OptimConfig(name="sgd", momentum=0.85, nesterov=True))
    assert all(g["momentum"] == 0.85 and g["nesterov"] is True for g in optimizer.param_groups)


def test_rmsprop_momentum_and_adam_betas_are_passed_through():
    rmsprop = build_optimizer(_net(), OptimConfig(name="rmsprop", momentum=0.7, eps=1e-6))
    assert all(g["momentum"] == 0.7 and g["eps"] == 1e-6 for g in rmsprop.param_groups)
    adam = build_optimizer(_net(), OptimConfig(name="adam", betas=(0.8, 0.99)))
    assert all(tuple(g["betas"]) == (0.8, 0.99) for g in adam.param_groups)


def test_nesterov_without_momentum_is_a_config_error():
    with pytest.raises(ConfigError, match="optim.nesterov"):
        build_optimizer(_net(), OptimConfig(name="sgd", momentum=0.0, nesterov=True))


def test_optimizer_state_loads_with_weights_only():
    net = _net()
    optimizer = build_optimizer(net, OptimConfig(name="adamw", weight_decay=0.01))
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    restored = build_optimizer(net, OptimConfig(name="adamw", weight_decay=0.01))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert [g["name"] for g in restored.param_groups] == ["decay", "no_decay"]
    assert torch.equal(restored.state[net[5].weight]["exp_avg"], optimizer.state[net[5].weight]["exp_avg"])


def test_a_model_without_biases_still_gets_both_groups():
    net = nn.Linear(3, 2, bias=False)
    optimizer = build_optimizer(net, OptimConfig(name="sgd", weight_decay=0.1))
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 0]
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert optimizer.param_groups[0]["params"][0] is net.weight
