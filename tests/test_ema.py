"""EMA weights: the average by hand, buffers copied, state round trip, compiled models."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from cifarcli.engine.ema import ModelEMA


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _set_weights(net: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


def test_ema_equals_the_hand_computed_average():
    net = _net()
    _set_weights(net, 1.0)
    ema = ModelEMA(net, decay=0.9)
    expected = 1.0
    for value in (2.0, 5.0, -1.0):
        _set_weights(net, value)
        ema.update(net)
        expected = 0.9 * expected + 0.1 * value
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, expected), atol=1e-6)
    assert expected == pytest.approx(0.9**3 * 1.0 + 0.9**2 * 0.1 * 2.0 + 0.9 * 0.1 * 5.0 + 0.1 * -1.0)
    assert ema.updates == 3
    assert all(p.item() == -1.0 for p in net[0].bias)  # the model itself is untouched


def test_buffers_are_copied_not_averaged():
    net = _net()
    ema = ModelEMA(net, decay=0.99)
    net.train()
    net(torch.randn(8, 3) * 3 + 2)  # moves BatchNorm running stats
    ema.update(net)
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    assert torch.equal(ema.module[1].running_var, net[1].running_var)
    assert ema.module[1].num_batches_tracked.item() == 1


def test_ema_module_is_a_frozen_eval_copy():
    net = _net()
    ema = ModelEMA(net, decay=0.5)
    assert ema.module is not net and not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in net.parameters())


def test_state_round_trips_through_weights_only_load():
    net = _net()
    ema = ModelEMA(net, decay=0.8)
    _set_weights(net, 3.0)
    ema.update(net)
    ema.update(net)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    restored = ModelEMA(_net(), decay=0.8)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.updates == 2
    for a, b in zip(restored.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    _set_weights(net, -2.0)
    ema.update(net)
    restored.update(net)
    assert torch.equal(restored.module[0].weight, ema.module[0].weight)


def test_compiled_models_are_tracked_through_the_original_module():
    net = _net()
    compiled = torch.compile(net, backend="eager")
    ema = ModelEMA(compiled, decay=0.5)
    assert type(ema.module) is nn.Sequential
    assert set(ema.module.state_dict()) == set(net.state_dict())
    start = net[2].bias.detach().clone()
    _set_weights(net, 4.0)
    ema.update(compiled)
    assert torch.allclose(ema.module[2].bias, 0.5 * start + 0.5 * 4.0)
    out = ema.module.eval()(torch.ones(2, 3))
    assert out.shape == (2, 2)


def test_an_update_every_k_steps_uses_the_decay_to_the_power_k():
    net = _net()
    _set_weights(net, 1.0)
    ema = ModelEMA(net, decay=0.9, every_steps=3)
    assert ema.decay_per_update == pytest.approx(0.729)
    _set_weights(net, 2.0)
    ema.update(net)
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.729 * 1.0 + 0.271 * 2.0), atol=1e-6)
    assert ema.state_dict()["every_steps"] == 3 and ema.updates == 1


def test_k_step_updates_follow_the_per_step_average_of_a_slowly_moving_model():
    per_step, every_4 = _net(), _net()
    _set_weights(per_step, 0.0)
    _set_weights(every_4, 0.0)
    a, b = ModelEMA(per_step, decay=0.99), ModelEMA(every_4, decay=0.99, every_steps=4)
    for step in range(1, 401):
        _set_weights(per_step, step / 400)
        _set_weights(every_4, step / 400)
        a.update(per_step)
        if step % 4 == 0:
            b.update(every_4)
    final_a, final_b = a.module[0].weight[0, 0].item(), b.module[0].weight[0, 0].item()
    assert final_a == pytest.approx(final_b, abs=0.02)  # same time constant (about 100 steps), a quarter of the updates
    assert 0.7 < final_a < 0.8 and b.updates == 100


def test_an_update_sees_in_place_optimizer_steps_and_replaced_parameter_data():
    net = _net()
    ema = ModelEMA(net, decay=0.5)
    _set_weights(net, 2.0)
    ema.update(net)  # gathers the tensor lists
    with torch.no_grad():
        net[0].weight.data = torch.full_like(net[0].weight, 6.0)  # e.g. a memory-format change
    ema.update(net)
    start = 0.5 * (0.5 * _net()[0].weight + 0.5 * 2.0) + 0.5 * 6.0
    assert torch.allclose(ema.module[0].weight, start, atol=1e-6)
