"""Device choice, the run's precision (autocast dtype and grad scaler, chosen for the machine) and gradient clipping.

`train.amp` picks what the forward pass and loss compute in:
- `auto` (the default): on CUDA, bf16 where the GPU has it natively, else fp16 with a
  GradScaler; on the CPU, bf16 where the CPU has native bf16 instructions (AVX512-BF16 or
  AMX, as torch reports them), else fp32;
- `bf16`, `fp16`, `off`: that choice, whatever the machine (bf16 on a CPU without native
  support is emulated, and slow; fp16 runs on CUDA only: a CPU computes fp32 instead, and
  says so). The weights, the optimizer and the loss stay fp32 in every case.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional, Sequence

import torch
from torch import Tensor

from cifarcli.errors import UsageError

DEVICE_NAMES = ("auto", "cpu", "cuda")
AMP_NAMES = ("auto", "off", "bf16", "fp16")
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


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


@dataclass(frozen=True)
class Precision:
    """What a run computes in on its device: the autocast dtype (None = fp32), the grad scaler, and why."""

    device_type: str
    dtype: Optional[torch.dtype]
    grad_scaler: bool  # fp16 only: scale the loss so small gradients do not underflow
    reason: str  # e.g. "train.amp=auto: this CPU has native bf16 (AVX512-BF16, AMX)"

    @property
    def name(self) -> str:
        """bf16, fp16 or fp32."""
        return _DTYPE_NAMES[self.dtype]

    @property
    def description(self) -> str:
        """One line for the run header and run_info.json, e.g. "bf16 autocast on cpu"."""
        if self.dtype is None:
            return f"fp32 on {self.device_type}"
        scaler = " with grad scaler" if self.grad_scaler else ""
        return f"{self.name} autocast{scaler} on {self.device_type}"


def cpu_bf16_features() -> list[str]:
    """The native bf16 instruction sets torch reports on this CPU (AVX512-BF16, AMX); [] when none."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return []  # without oneDNN the bf16 convolutions and matmuls have no fast kernels
    checks = (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    return [name for name, check in checks if getattr(torch.cpu, check, lambda: False)()]


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether this GPU computes in bf16 natively (compute capability 8.0+, or ROCm), not by slow emulation.

    The same test as `torch.cuda.is_bf16_supported(including_emulation=False)`, which needs torch 2.4.
    """
    return torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(device: torch.device, amp: str) -> Precision:
    """The precision for `train.amp` on `device` (see the module docstring); checked once, here."""
    if amp not in AMP_NAMES:
        raise UsageError(f"train.amp: {amp!r} is not one of {', '.join(AMP_NAMES)}")
    kind = device.type
    if amp == "off":
        return Precision(kind, None, False, "train.amp=off")
    if kind == "cuda":
        return _cuda_precision(device, amp)
    if kind != "cpu":
        return Precision(kind, None, False, f"train.amp={amp}: autocast is used on cuda and cpu only")
    features = cpu_bf16_features()
    native = f"this CPU has native bf16 ({', '.join(features)})" if features else "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    if amp == "auto":
        return Precision(kind, torch.bfloat16 if features else None, False, f"train.amp=auto: {native}")
    if amp == "bf16":
        return Precision(kind, torch.bfloat16, False, f"train.amp=bf16: {native}" + ("" if features else ", so it is emulated and slow"))
    return Precision(kind, None, False, "train.amp=fp16: fp16 runs on CUDA only (on the CPU it is many times slower than fp32)")


def _cuda_precision(device: torch.device, amp: str) -> Precision:
    native = cuda_has_native_bf16(device)
    gpu = torch.cuda.get_device_name(device)
    if amp == "auto":
        if native:
            return Precision("cuda", torch.bfloat16, False, f"train.amp=auto: {gpu} has native bf16")
        return Precision("cuda", torch.float16, True, f"train.amp=auto: {gpu} has no native bf16")
    if amp == "bf16":
        if not native:
            raise UsageError(
                f"train.amp: bf16 is not supported natively by this GPU ({gpu})",
                hint="use --set train.amp=auto (fp16 with a grad scaler here) or train.amp=off",
            )
        return Precision("cuda", torch.bfloat16, False, "train.amp=bf16")
    return Precision("cuda", torch.float16, True, "train.amp=fp16")


def make_autocast(precision: Precision) -> Callable[[], ContextManager[object]]:
    """A zero-argument factory of the autocast context for each forward pass (a no-op for fp32)."""
    if precision.dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=precision.device_type, dtype=precision.dtype)


def make_grad_scaler(precision: Precision) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 and fp32 need no loss scaling).

    A disabled scaler is a pass-through: `scale(loss)` returns the loss, `step` calls
    `optimizer.step()`, so the train loop can use the scaler unconditionally.
    """
    return torch.amp.GradScaler(precision.device_type, enabled=precision.grad_scaler)


def clip_gradients(
    parameters: Sequence[Tensor],
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    max_norm: float | None,
    max_value: float | None,
) -> Tensor | None:
    """Clip gradients by global L2 norm (`max_norm`) or per element (`max_value`).

    Call after `scaler.scale(loss).backward()` and before `scaler.step(optimizer)`, with the
    model's parameters gathered once (a tuple kept across steps; those without a gradient are
    skipped). Under fp16 the gradients are unscaled first (`scaler.unscale_(optimizer)`, once
    per step), so the thresholds apply to true gradients. Returns, for norm clipping, the
    global L2 norm before clipping as a 0-dim tensor on the gradients' device (inf/nan when an
    fp16 step overflowed; the scaler then skips that step); None otherwise. Nothing is read
    back here, so clipping adds no host-device sync.
    """
    if max_norm is None and max_value is None:
        return None
    if max_norm is not None and max_value is not None:
        raise UsageError("set train.grad_clip_norm or train.grad_clip_value, not both")
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    if max_norm is not None:  # both use foreach kernels where the device has them
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    torch.nn.utils.clip_grad_value_(parameters, max_value)
    return None
