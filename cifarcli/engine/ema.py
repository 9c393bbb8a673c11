"""An exponential moving average (EMA) of a model's weights, evaluated beside the model."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from cifarcli.torchutil import unwrap_model


class ModelEMA:
    """EMA weights: after each optimizer step, `ema = decay * ema + (1 - decay) * weights`.

    Buffers (BatchNorm running statistics and counters) are copied as they are, not averaged.
    `.module` is an uncompiled copy of the model, in eval mode and without gradients, on the
    model's device; evaluate it like the model. Compiled or DDP-wrapped models work: the
    average tracks the original module's state, so names and tensors line up.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0  # optimizer steps averaged so far
        self.module = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average and copy its buffers (one fused op each)."""
        source = unwrap_model(model)
        pairs = list(zip(self.module.parameters(), source.parameters(), strict=True))
        floats = [(a, c.detach()) for a, c in pairs if a.is_floating_point()]
        if floats:
            averages, currents = zip(*floats)
            torch._foreach_lerp_(list(averages), list(currents), 1.0 - self.decay)
        for average, current in pairs:
            if not average.is_floating_point():
                average.copy_(current)
        kept, current_buffers = list(self.module.buffers()), list(source.buffers())
        if len(kept) != len(current_buffers):
            raise ValueError("EMA: the model's buffers changed since the EMA copy was made")
        if kept:
            torch._foreach_copy_(kept, current_buffers)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and buffers, the decay and the update count (tensors and numbers only)."""
        return {"module": self.module.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the decay stays the one this EMA was built with."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
