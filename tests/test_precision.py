"""Device choice, autocast on the CPU, the grad scaler and gradient clipping."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from cifarcli.engine.precision import (
    autocast_context,
    clip_gradients,
    describe_precision,
    make_grad_scaler,
    resolve_device,
)
from cifarcli.errors import UsageError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def _net_with_grads(scale: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    (scale * net(torch.randn(6, 4)).square().sum()).backward()
    return net, torch.optim.SGD(net.parameters(), lr=0.1)


def _global_norm(net: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()])).item()


def test_clip_by_norm_bounds_the_global_norm_and_returns_the_norm_before():
    net, optimizer = _net_with_grads(scale=100.0)
    before = _global_norm(net)
    assert before > 1.0
    returned = clip_gradients(net.parameters(), make_grad_scaler(CPU, "off"), optimizer, max_norm=1.0, max_value=None)
    assert returned == pytest.approx(before, rel=1e-5)
    assert _global_norm(net) <= 1.0 + 1e-5
    assert _global_norm(net) == pytest.approx(1.0, rel=1e-4)


def test_clip_by_value_bounds_every_element_and_returns_the_norm_before():
    net, optimizer = _net_with_grads(scale=100.0)
    before = _global_norm(net)
    returned = clip_gradients(net.parameters(), make_grad_scaler(CPU, "off"), optimizer, max_norm=None, max_value=0.05)
    assert returned == pytest.approx(before, rel=1e-5)
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert grads.abs().max().item() <= 0.05 + 1e-7  # 0.05 rounded to float32
    assert (grads.abs() == 0.05).any()


def test_small_gradients_are_left_alone_and_no_limit_returns_none():
    net, optimizer = _net_with_grads(scale=1e-4)
    grads = [p.grad.clone() for p in net.parameters()]
    clip_gradients(net.parameters(), make_grad_scaler(CPU, "off"), optimizer, max_norm=10.0, max_value=None)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, net.parameters()))
    assert clip_gradients(net.parameters(), make_grad_scaler(CPU, "off"), optimizer, None, None) is None


def test_parameters_without_gradients_are_skipped():
    net, optimizer = _net_with_grads(scale=100.0)
    net[0].weight.grad = None
    returned = clip_gradients(net.parameters(), make_grad_scaler(CPU, "off"), optimizer, max_norm=0.5, max_value=None)
    assert returned > 0.5
    assert net[0].weight.grad is None
    assert _global_norm(net[2]) <= 0.5 + 1e-5


def test_bf16_autocast_on_cpu_trains_a_tiny_conv_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    seen: list[torch.dtype] = []
    net[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    images, labels = torch.randn(16, 3, 8, 8), torch.arange(16) % 4
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        with autocast_context(CPU, "bf16", amp_on_cpu=True):
            logits = net(images)
            loss = nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert seen and set(seen) == {torch.bfloat16}
    assert net[0].weight.dtype == torch.float32  # the weights stay fp32; only the compute is bf16
    assert losses[-1] < losses[0]


def test_cpu_autocast_needs_amp_on_cpu():
    assert isinstance(autocast_context(CPU, "bf16", amp_on_cpu=False), contextlib.nullcontext)
    assert isinstance(autocast_context(CPU, "fp16", amp_on_cpu=True), contextlib.nullcontext)
    assert isinstance(autocast_context(CPU, "off", amp_on_cpu=True), contextlib.nullcontext)
    with autocast_context(CPU, "bf16", amp_on_cpu=False):
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32


def test_grad_scaler_is_enabled_only_for_fp16_on_cuda():
    for amp in ("off", "bf16", "fp16"):
        assert not make_grad_scaler(CPU, amp).is_enabled()
    assert not make_grad_scaler(CUDA, "bf16").is_enabled()


def test_describe_precision_names_dtype_and_device():
    assert describe_precision(CUDA, "bf16", amp_on_cpu=False) == "bf16 autocast on cuda"
    assert describe_precision(CUDA, "fp16", amp_on_cpu=False) == "fp16 autocast with grad scaler on cuda"
    assert describe_precision(CUDA, "off", amp_on_cpu=False) == "fp32 on cuda"
    assert describe_precision(CPU, "bf16", amp_on_cpu=True) == "bf16 autocast on cpu"
    assert describe_precision(CPU, "bf16", amp_on_cpu=False).startswith("fp32 on cpu (")
    assert describe_precision(CPU, "fp16", amp_on_cpu=True) == "fp32 on cpu (fp16 needs CUDA)"


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(UsageError, match="no CUDA device") as caught:
        resolve_device("cuda")
    assert caught.value.hint is not None and "--set data.device=cpu" in caught.value.hint
    assert caught.value.exit_code == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA
    assert resolve_device("cuda") == CUDA
    with pytest.raises(UsageError, match="data.device"):
        resolve_device("tpu")
