"""The classification loss (hard and soft targets, label smoothing) and the L1 penalty."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarcli.engine.losses import classification_loss, l1_penalty, l1_weights


def _logits() -> torch.Tensor:
    return torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])


def test_hard_targets_without_smoothing_are_plain_cross_entropy():
    logits, targets = _logits(), torch.tensor([0, 2])
    by_hand = -(torch.log_softmax(logits, 1)[0, 0] + torch.log_softmax(logits, 1)[1, 2]) / 2
    assert classification_loss(logits, targets, 0.0).item() == pytest.approx(by_hand.item(), rel=1e-6)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothed_hard_targets_match_torch(eps):
    logits, targets = _logits(), torch.tensor([1, 2])
    expected = F.cross_entropy(logits, targets, label_smoothing=eps)
    got = classification_loss(logits, targets, eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() != pytest.approx(classification_loss(logits, targets, 0.0).item(), rel=1e-3)


def test_smoothing_on_soft_targets_matches_the_manual_formula():
    logits = _logits()
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]])  # MixUp-style rows summing to 1
    eps, classes = 0.2, 3
    smoothed = soft * (1 - eps) + eps / classes
    by_hand = -(smoothed * torch.log_softmax(logits, 1)).sum(1).mean()
    assert classification_loss(logits, soft, eps).item() == pytest.approx(by_hand.item(), rel=1e-6)
    unsmoothed = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert classification_loss(logits, soft, 0.0).item() == pytest.approx(unsmoothed.item(), rel=1e-6)


def test_one_hot_soft_targets_equal_hard_targets():
    logits, targets = _logits(), torch.tensor([2, 0])
    one_hot = F.one_hot(targets, 3).float()
    assert classification_loss(logits, one_hot, 0.1).item() == pytest.approx(
        classification_loss(logits, targets, 0.1).item(), rel=1e-6
    )


def test_bf16_logits_give_a_float32_loss_with_gradients():
    logits = _logits().to(torch.bfloat16).requires_grad_(True)
    loss = classification_loss(logits, torch.tensor([0, 1]), 0.1)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16


def test_mismatched_targets_are_rejected():
    with pytest.raises(ValueError, match="soft targets"):
        classification_loss(_logits(), torch.ones(2, 4) / 4, 0.0)
    with pytest.raises(ValueError, match="class-index targets"):
        classification_loss(_logits(), torch.tensor([0, 1, 2]), 0.0)


def test_l1_on_a_linear_layer_is_the_sum_of_absolute_weights():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, -0.25, 3.0]]))
        layer.bias.fill_(100.0)  # biases are not penalised
    penalty = l1_penalty(l1_weights(layer))
    assert penalty.item() == pytest.approx(6.75)
    penalty.backward()
    assert torch.equal(layer.weight.grad, torch.sign(layer.weight.detach()))
    assert layer.bias.grad is None


def test_l1_skips_norm_layers_and_frozen_weights():
    net = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.BatchNorm2d(2), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)  # 8 weights
        net[1].weight.fill_(50.0)
        net[2].weight.fill_(0.5)  # 4 weights
    assert l1_penalty(l1_weights(net)).item() == pytest.approx(8 + 2)
    net[0].requires_grad_(False)
    assert l1_penalty(l1_weights(net)).item() == pytest.approx(2)
    net.requires_grad_(False)
    assert l1_penalty(l1_weights(net)).item() == 0.0


def test_l1_weight_changes_the_loss_by_weight_times_penalty():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    base = classification_loss(layer(x), y, 0.0)
    total = base + 5e-4 * l1_penalty(l1_weights(layer))
    assert total.item() - base.item() == pytest.approx(5e-4 * layer.weight.abs().sum().item(), rel=1e-4)
    assert not math.isclose(total.item(), base.item())
