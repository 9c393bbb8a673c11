"""Lookahead on an average of the weights (`train.lookahead_every_steps`), as the fastest CIFAR recipes use.

Every `every_steps` optimizer steps the average moves toward the current weights,
`average = decay_t * average + (1 - decay_t) * weights`, and the weights jump back to the
average. `decay_t = decay * (t / total_steps) ** 3` grows from 0 (the average just follows the
weights early on) to `decay` at the end (late steps are smoothed the most). After the last
step (`total_steps`) the weights are set to the average, so the finished model, its last
checkpoint and its evaluation are all of the averaged weights. BatchNorm running statistics are averaged too; integer
buffers (step counters) are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cifarcli.torchutil import unwrap_model


class Lookahead:
    """The averaged copy of a model's floating-point state, and the rule that pulls the weights to it."""

    def __init__(self, model: nn.Module, every_steps: int, decay: float, total_steps: int) -> None:
        if every_steps < 1 or not 0.0 <= decay < 1.0 or total_steps < 1:
            raise ValueError(f"lookahead: need every_steps >= 1, 0 <= decay < 1, total_steps >= 1; got {every_steps}, {decay}, {total_steps}")
        self.every_steps, self.decay, self.total_steps = every_steps, decay, total_steps
        self._live = _float_state(model)
        self.average = [tensor.detach().clone() for tensor in self._live]

    def decay_at(self, step: int) -> float:
        """The average's decay at global step `step` (1-based count of finished steps)."""
        return self.decay * min(step / self.total_steps, 1.0) ** 3

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number `step` (1-based): every `every_steps` steps, average and jump."""
        if step % self.every_steps == 0:
            torch._foreach_lerp_(self.average, self._live, 1.0 - self.decay_at(step))
            torch._foreach_copy_(self._live, self.average)
        if step == self.total_steps:
            self.finish()

    @torch.no_grad()
    def finish(self) -> None:
        """Set the weights to the average (the end of training)."""
        torch._foreach_copy_(self._live, self.average)

    def state_dict(self) -> dict[str, Any]:
        return {"average": [tensor.clone() for tensor in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["average"]
        if len(saved) != len(self.average):
            raise ValueError(f"lookahead state has {len(saved)} tensors, the model {len(self.average)}")
        with torch.no_grad():
            torch._foreach_copy_(self.average, [t.to(a.device) for t, a in zip(saved, self.average)])


def _float_state(model: nn.Module) -> list[torch.Tensor]:
    """The model's floating-point parameters and buffers, as the live tensors (not copies)."""
    module = unwrap_model(model)
    tensors = [*module.parameters(), *module.buffers()]
    return [t for t in tensors if t.is_floating_point()]
