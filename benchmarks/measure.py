"""Measuring helpers for the benchmark scripts: device clocks, peak memory, FLOPs, the matmul rate, spreads.

Every timing synchronises the device before it reads the clock, so queued GPU work is counted
where it runs. On the CPU the synchronisation is a no-op and these helpers work unchanged.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    """Wait until every kernel queued on `device` has finished (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: torch.device) -> float:
    """Seconds `work()` takes, the device synchronised before the start and after the end."""
    synchronize(device)
    started = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements with their lowest and highest value."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, digits: int = 1) -> str:
        return f"{self.median:,.{digits}f} [{self.low:,.{digits}f}-{self.high:,.{digits}f}]"


class PeakMemory:
    """Peak memory between `reset()` and `read()`: max allocated on CUDA, this process's peak RSS on the CPU."""

    _CLEAR_REFS = Path("/proc/self/clear_refs")
    _STATUS = Path("/proc/self/status")

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            self._CLEAR_REFS.write_text("5")  # Linux: restart the peak-RSS high-water mark (VmHWM) from now
        except OSError:
            pass  # then `read` reports the peak since the process started

    def read(self) -> int:
        """Bytes."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            for line in self._STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux

    @property
    def kind(self) -> str:
        return "max allocated (CUDA)" if self.device.type == "cuda" else "peak RSS of this process"


def train_flops_per_image(model: nn.Module, device: torch.device, image_size: int = 32) -> float:
    """Matmul/conv FLOPs of one forward and backward pass per image, counted by torch.utils.flop_counter."""
    return _flops_per_image(model, device, image_size, backward=True)


def eval_flops_per_image(model: nn.Module, device: torch.device, image_size: int = 32) -> float:
    """Matmul/conv FLOPs of one forward pass per image."""
    return _flops_per_image(model, device, image_size, backward=False)


def _flops_per_image(model: nn.Module, device: torch.device, image_size: int, backward: bool) -> float:
    batch = 4
    inputs = torch.randn(batch, 3, image_size, image_size, device=device)
    was_training = model.training
    model.train(backward)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(inputs)
        if backward:
            out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / batch


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype = torch.bfloat16, tries: int = 5) -> float:
    """The dense matmul rate this device reaches in `dtype`, measured now: the best of `tries` short runs.

    The best, not the median: other work on a shared machine only ever slows a run down, so the
    fastest run is the closest to what the device can do.
    """
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, caches, clocks
        a @ b
    repeats = 20 if device.type == "cuda" else 4
    rates = [2.0 * size**3 * repeats / timed(lambda: [a @ b for _ in range(repeats)], device) for _ in range(tries)]
    return max(rates)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (with the threads torch uses)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
