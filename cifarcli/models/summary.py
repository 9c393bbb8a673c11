"""A layer-by-layer summary of a model: output shapes from one dummy batch, and parameter counts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.table import Table
from torch import nn


@dataclass(frozen=True)
class LayerRow:
    name: str  # as in named_modules, e.g. "layer1.0.conv1"
    type_name: str  # the module's class, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # of its first call on the dummy batch; () if not a tensor
    param_count: int  # parameters of the module and everything inside it


@dataclass(frozen=True)
class ModelSummary:
    rows: tuple[LayerRow, ...]  # in the order the forward pass first reaches them
    total_params: int
    trainable_params: int
    frozen_params: int  # requires_grad is False (e.g. a frozen pretrained backbone)


def _row_modules(model: nn.Module, max_depth: int | None) -> dict[str, nn.Module]:
    """Leaves, or modules at nesting depth `max_depth` (top-level children are depth 1)."""
    rows: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or any(name.startswith(parent + ".") for parent in rows):
            continue
        depth = name.count(".") + 1
        if next(module.children(), None) is None or depth == max_depth:
            rows[name] = module
    return rows


def _first_tensor_shape(output: object) -> tuple[int, ...]:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return tuple(item.shape)
    return ()


def _dummy_batch(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return torch.zeros(input_shape, device=device, dtype=dtype)


def summarize_model(
    model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32), max_depth: int | None = None
) -> ModelSummary:
    """Run one zero batch of `input_shape` through `model` and return its summary.

    Rows are the leaf modules (or, with `max_depth`, the modules at that depth, e.g. 2 for the
    blocks of a ResNet). The model is left as it was: no gradients, BatchNorm statistics
    untouched (the pass runs in eval mode), every module's train/eval flag restored, hooks removed.
    """
    modules = _row_modules(model, max_depth)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            shapes.setdefault(name, _first_tensor_shape(output))  # modules called twice keep the first

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    training_flags = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(_dummy_batch(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
        for module, was_training in training_flags.items():
            module.training = was_training
    rows = tuple(
        LayerRow(name, type(modules[name]).__name__, shape, sum(p.numel() for p in modules[name].parameters()))
        for name, shape in shapes.items()
    )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelSummary(rows=rows, total_params=total, trainable_params=trainable, frozen_params=total - trainable)


def render_summary(summary: ModelSummary, title: str = "Model") -> Table:
    """A rich Table of the rows, with the parameter totals as its caption."""
    table = Table(title=title, caption=(
        f"{summary.total_params:,} parameters: {summary.trainable_params:,} trainable, {summary.frozen_params:,} frozen"
    ))
    table.add_column("Layer")
    table.add_column("Type")
    table.add_column("Output shape")
    table.add_column("Params", justify="right")
    for row in summary.rows:
        shape = " x ".join(str(size) for size in row.output_shape) or "-"
        table.add_row(row.name, row.type_name, shape, f"{row.param_count:,}")
    return table
