"""Device choice, the precision chosen for the machine, autocast on the CPU, the grad scaler and clipping."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from cifarcli.engine import precision as precision_module
from cifarcli.engine.precision import (
    Precision,
    clip_gradients,
    make_autocast,
    make_grad_scaler,
    resolve_device,
    resolve_precision,
)
from cifarcli.errors import UsageError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def _net_with_grads(scale: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    (scale * net(torch.randn(6, 4)).square().sum()).backward()
    return net, torch.optim.SGD(net.parameters(), lr=0.1)


FP32_CPU = Precision("cpu", None, False, "train.amp=off")
OFF = make_grad_scaler(FP32_CPU)


def _global_norm(net: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()])).item()


def test_clip_by_norm_bounds_the_global_norm_and_returns_the_norm_before():
    net, optimizer = _net_with_grads(scale=100.0)
    before = _global_norm(net)
    assert before > 1.0
    returned = clip_gradients(tuple(net.parameters()), OFF, optimizer, max_norm=1.0, max_value=None)
    assert returned == pytest.approx(before, rel=1e-5)
    assert _global_norm(net) <= 1.0 + 1e-5
    assert _global_norm(net) == pytest.approx(1.0, rel=1e-4)


def test_clip_by_value_bounds_every_element_and_computes_no_norm():
    net, optimizer = _net_with_grads(scale=100.0)
    returned = clip_gradients(tuple(net.parameters()), OFF, optimizer, max_norm=None, max_value=0.05)
    assert returned is None  # nobody reads a global norm when clipping by value
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert grads.abs().max().item() <= 0.05 + 1e-7  # 0.05 rounded to float32
    assert (grads.abs() == 0.05).any()


def test_small_gradients_are_left_alone_and_no_limit_returns_none():
    net, optimizer = _net_with_grads(scale=1e-4)
    grads = [p.grad.clone() for p in net.parameters()]
    clip_gradients(tuple(net.parameters()), OFF, optimizer, max_norm=10.0, max_value=None)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, net.parameters()))
    assert clip_gradients(tuple(net.parameters()), OFF, optimizer, None, None) is None


def test_parameters_without_gradients_are_skipped():
    net, optimizer = _net_with_grads(scale=100.0)
    net[0].weight.grad = None
    returned = clip_gradients(tuple(net.parameters()), OFF, optimizer, max_norm=0.5, max_value=None)
    assert returned > 0.5
    assert net[0].weight.grad is None
    assert _global_norm(net[2]) <= 0.5 + 1e-5
    clip_gradients(tuple(net.parameters()), OFF, optimizer, max_norm=None, max_value=1e-3)
    assert net[0].weight.grad is None and net[2].weight.grad.abs().max().item() <= 1e-3 + 1e-9


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
        with make_autocast(resolve_precision(CPU, "bf16"))():
            logits = net(images)
            loss = nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert seen and set(seen) == {torch.bfloat16}
    assert net[0].weight.dtype == torch.float32  # the weights stay fp32; only the compute is bf16
    assert losses[-1] < losses[0]


def _cpu_with(monkeypatch, features: list[str]) -> None:
    monkeypatch.setattr(precision_module, "cpu_bf16_features", lambda: features)


def test_auto_picks_bf16_on_a_cpu_with_native_bf16_and_fp32_elsewhere(monkeypatch):
    _cpu_with(monkeypatch, ["AVX512-BF16", "AMX"])
    chosen = resolve_precision(CPU, "auto")
    assert (chosen.dtype, chosen.grad_scaler, chosen.description) == (torch.bfloat16, False, "bf16 autocast on cpu")
    assert chosen.reason == "train.amp=auto: this CPU has native bf16 (AVX512-BF16, AMX)"
    _cpu_with(monkeypatch, [])
    chosen = resolve_precision(CPU, "auto")
    assert (chosen.dtype, chosen.description) == (None, "fp32 on cpu")
    assert "no native bf16" in chosen.reason
    assert isinstance(make_autocast(chosen)(), contextlib.nullcontext)


def test_an_explicit_choice_wins_over_the_machine(monkeypatch):
    _cpu_with(monkeypatch, [])
    emulated = resolve_precision(CPU, "bf16")
    assert emulated.dtype == torch.bfloat16 and "emulated" in emulated.reason
    _cpu_with(monkeypatch, ["AMX"])
    off = resolve_precision(CPU, "off")
    assert (off.dtype, off.reason) == (None, "train.amp=off")
    with make_autocast(off)():
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32
    fp16 = resolve_precision(CPU, "fp16")  # CPU fp16 autocast is far slower than fp32: computed in fp32, and said so
    assert fp16.dtype is None and "CUDA only" in fp16.reason


def test_auto_on_cuda_is_bf16_where_native_else_fp16_with_a_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(precision_module, "cuda_has_native_bf16", lambda device: True)
    chosen = resolve_precision(CUDA, "auto")
    assert (chosen.dtype, chosen.grad_scaler, chosen.reason) == (torch.bfloat16, False, "train.amp=auto: Test GPU has native bf16")
    monkeypatch.setattr(precision_module, "cuda_has_native_bf16", lambda device: False)
    chosen = resolve_precision(CUDA, "auto")
    assert (chosen.dtype, chosen.grad_scaler) == (torch.float16, True)
    assert chosen.description == "fp16 autocast with grad scaler on cuda"
    with pytest.raises(UsageError, match="not supported natively") as caught:
        resolve_precision(CUDA, "bf16")
    assert "train.amp=auto" in caught.value.hint


def test_this_cpu_reports_its_bf16_features_from_torch():
    features = precision_module.cpu_bf16_features()
    assert set(features) <= {"AVX512-BF16", "AMX"}
    assert ("AMX" in features) == bool(torch.cpu._is_amx_tile_supported()) or not torch.backends.mkldnn.is_available()


def test_grad_scaler_is_enabled_only_for_fp16():
    assert not make_grad_scaler(FP32_CPU).is_enabled()
    assert not make_grad_scaler(Precision("cpu", torch.bfloat16, False, "")).is_enabled()
    assert make_grad_scaler(Precision("cpu", torch.float16, True, "")).is_enabled()


def test_unknown_amp_is_a_usage_error():
    with pytest.raises(UsageError, match="train.amp"):
        resolve_precision(CPU, "fp8")


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
