"""Device choice, mixed precision (autocast + GradScaler) and gradient clipping.

`train.amp` picks the autocast dtype: bf16 runs on CUDA, and on the CPU only with
`train.amp_on_cpu` (CPU bf16 is slower than fp32 on many chips); fp16 runs on CUDA only,
with a GradScaler; everything else trains in fp32.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager, Iterable

import torch
from torch import Tensor

from cifarcli.errors import UsageError

DEVICE_NAMES = ("auto", "cpu", "cuda")
AMP_NAMES = ("off", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """The torch device for `data.device`: auto picks cuda when it is available."""
    if name not in DEVICE_NAMES:
        raise UsageError(f"data.device: {name!r} is not one of {', '.join(DEVICE_NAMES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(
            f"data.device: cuda was asked for, but no CUDA device is available (torch {torch.__version__}, {build})",
            hint="run on the CPU with --set data.device=cpu (or data.device=auto)",
        )
    return torch.device(name)


def autocast_dtype(device: torch.device, amp: str, amp_on_cpu: bool) -> torch.dtype | None:
    """The dtype autocast runs in on `device`, or None for plain fp32."""
    if amp not in AMP_NAMES:
        raise UsageError(f"train.amp: {amp!r} is not one of {', '.join(AMP_NAMES)}")
    if device.type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if device.type == "cpu" and amp == "bf16" and amp_on_cpu:
        return torch.bfloat16
    return None


def native_bf16(device: torch.device) -> bool:
    """Whether this GPU computes in bf16 natively (compute capability 8.0+, or ROCm), not by slow emulation.

    The same test as `torch.cuda.is_bf16_supported(including_emulation=False)`, which needs torch 2.4.
    """
    return torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8


def make_autocast(device: torch.device, amp: str, amp_on_cpu: bool) -> Callable[[], ContextManager[object]]:
    """A zero-argument factory of the autocast context for each forward pass (checked once, here).

    bf16 on a GPU without native bf16 (emulated, very slow) is refused with the fp16 hint.
    """
    dtype = autocast_dtype(device, amp, amp_on_cpu)
    if dtype is None:
        return contextlib.nullcontext
    if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        raise UsageError(
            f"train.amp: bf16 is not supported natively by this GPU ({torch.cuda.get_device_name(device)})",
            hint="use --set train.amp=fp16 (or train.amp=off)",
        )
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def autocast_context(device: torch.device, amp: str, amp_on_cpu: bool) -> ContextManager[object]:
    """A fresh context manager to wrap one forward pass and loss: autocast, or a no-op for fp32."""
    return make_autocast(device, amp, amp_on_cpu)()


def make_grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 on CUDA (bf16 and fp32 need no loss scaling).

    A disabled scaler is a pass-through: `scale(loss)` returns the loss, `step` calls
    `optimizer.step()`, so the train loop can use the scaler unconditionally.
    """
    enabled = amp == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def clip_gradients(
    parameters: Iterable[Tensor],
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    max_norm: float | None,
    max_value: float | None,
) -> Tensor | None:
    """Clip gradients by global L2 norm (`max_norm`) or per element (`max_value`); return the pre-clip norm.

    Call after `scaler.scale(loss).backward()` and before `scaler.step(optimizer)`. Under fp16
    the gradients are unscaled first (`scaler.unscale_(optimizer)`, once per step), so the
    thresholds apply to true gradients. Returns the global L2 norm of the gradients before
    clipping as a 0-dim tensor on the gradients' device (inf/nan when an fp16 step overflowed;
    the scaler then skips that step), or None when both limits are None. It is not read back
    here, so clipping adds no host-device sync.
    """
    if max_norm is None and max_value is None:
        return None
    if max_norm is not None and max_value is not None:
        raise UsageError("set train.grad_clip_norm or train.grad_clip_value, not both")
    with_grad = [p for p in parameters if p.grad is not None]
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    if not with_grad:
        return torch.zeros(())
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
    norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
    torch.nn.utils.clip_grad_value_(with_grad, max_value)
    return norm


def describe_precision(device: torch.device, amp: str, amp_on_cpu: bool) -> str:
    """One line for the run header, e.g. "bf16 autocast on cuda" or "fp32 on cpu"."""
    dtype = autocast_dtype(device, amp, amp_on_cpu)
    if dtype == torch.float16:
        return f"fp16 autocast with grad scaler on {device.type}"
    if dtype == torch.bfloat16:
        return f"bf16 autocast on {device.type}"
    if amp == "bf16" and device.type == "cpu":
        return "fp32 on cpu (bf16 needs train.amp_on_cpu=true on the CPU)"
    if amp == "fp16" and device.type != "cuda":
        return f"fp32 on {device.type} (fp16 needs CUDA)"
    return f"fp32 on {device.type}"
