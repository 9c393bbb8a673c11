"""An exponential moving average (EMA) of a model's weights, evaluated beside the model."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from cifarcli.torchutil import unwrap_model


class ModelEMA:
    """EMA weights: `ema = decay * ema + (1 - decay) * weights`, folded in every `every_steps` steps.

    `decay` is per optimizer step; updating every k steps uses `decay ** k` per update, so the
    average follows the same time constant with k times fewer updates (as airbench and the
    torchvision references do). Buffers (BatchNorm running statistics and counters) are copied
    as they are, not averaged. `.module` is an uncompiled copy of the model, in eval mode and
    without gradients, on the model's device; evaluate it like the model. Compiled or
    DDP-wrapped models work: the average tracks the original module's state, so names and
    tensors line up. Each update is three foreach ops over tensor lists gathered once.
    """

    def __init__(self, model: nn.Module, decay: float, every_steps: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if every_steps < 1:
            raise ValueError(f"EMA every_steps must be at least 1, got {every_steps}")
        self.decay = decay
        self.every_steps = every_steps
        self.updates = 0  # updates folded in so far
        self.module = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        self._source: nn.Module | None = None
        self._lists: tuple[list[torch.Tensor], ...] = ()

    @property
    def decay_per_update(self) -> float:
        """The decay of one update: `decay ** every_steps`."""
        return self.decay**self.every_steps

    def _gather(self, source: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """(averaged, current) float parameters, (kept, current) other parameters and buffers, as lists."""
        pairs = list(zip(self.module.parameters(), source.parameters(), strict=True))
        kept, current_buffers = list(self.module.buffers()), list(source.buffers())
        if len(kept) != len(current_buffers):
            raise ValueError("EMA: the model's buffers changed since the EMA copy was made")
        floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        others = [(a, c) for a, c in pairs if not a.is_floating_point()]
        # The source's Parameter objects themselves (not detached views), so an in-place optimizer
        # step or a later `param.data = ...` is seen; the update runs under no_grad.
        return [a for a, _ in floats], [c for _, c in floats], [a for a, _ in others] + kept, [c for _, c in others] + current_buffers

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average and copy its buffers (one foreach op each)."""
        source = unwrap_model(model)
        if source is not self._source:  # the tensor lists are gathered once per source model
            self._lists, self._source = self._gather(source), source
        averages, currents, kept, copied = self._lists
        if averages:
            torch._foreach_lerp_(averages, currents, 1.0 - self.decay_per_update)
        if kept:
            torch._foreach_copy_(kept, copied)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and buffers, the decay, the interval and the update count (tensors and numbers only)."""
        return {"module": self.module.state_dict(), "decay": self.decay, "every_steps": self.every_steps, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the decay and interval stay the ones this EMA was built with."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
