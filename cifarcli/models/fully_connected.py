"""The fully connected part shared by the MLP and the simple CNN: Flatten, then Linear layers with dropout."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn


def hidden_layers(width_in: int, widths: Sequence[int], make_activation: Callable[[], nn.Module],
                  dropout: float) -> tuple[nn.Sequential, int]:
    """Flatten -> (Linear -> activation -> dropout) per width; returns the stack and its output width.

    Dropout rides in the activation's slot (a parameter-free Sequential), so the Linear layers
    keep the state-dict keys `1`, `3`, `5`, ... with or without it; with no hidden layer, the
    flattened input itself is dropped out.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    for width in widths:
        activation = make_activation()
        layers += [nn.Linear(width_in, width), nn.Sequential(activation, nn.Dropout(dropout)) if dropout > 0 else activation]
        width_in = width
    if not widths and dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers), width_in
