"""Small torch helpers every layer may use (they import nothing else from cifarcli)."""

from __future__ import annotations

from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile (`_orig_mod`) and DataParallel/DDP (`.module`) wrappers."""
    while True:
        original = getattr(model, "_orig_mod", None)  # set by torch.compile's OptimizedModule
        if isinstance(original, nn.Module):
            model = original
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model
