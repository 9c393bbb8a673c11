"""Small torch helpers every layer may use (they import only cifarcli.errors)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from cifarcli.errors import CheckpointError


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


def load_tensor_file(path: Path, what: str, damaged_hint: str, unsafe_hint: str) -> object:
    """`torch.load(path, weights_only=True)` with its CRC-32s checked, or one CheckpointError.

    `what` names the file in messages ("checkpoint", "pretrained weights file"). A file whose
    unpickling would run code is refused with `unsafe_hint`; unreadable, truncated or
    bit-flipped bytes are reported as damaged with `damaged_hint`.
    """
    _check_crc(path, what, damaged_hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for bad bytes (RuntimeError, IndexError, KeyError, ...)
        if isinstance(exc, pickle.UnpicklingError) and _needs_code(exc):
            raise CheckpointError(f"refused to load {path}: it needs arbitrary code to unpickle, which may be unsafe",
                                  hint=unsafe_hint) from exc  # fmt: skip
        raise _damaged(path, what, damaged_hint, exc) from exc


def _check_crc(path: Path, what: str, damaged_hint: str) -> None:
    """torch.load does not verify the zip's CRC-32s, so a flipped bit in a tensor would load silently."""
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy (non-zip) format, or garbage that torch.load reports
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise _damaged(path, what, damaged_hint, exc) from exc
    if bad_member is not None:
        raise _damaged(path, what, damaged_hint, ValueError(f"CRC-32 mismatch in {bad_member}"))


def _needs_code(exc: pickle.UnpicklingError) -> bool:
    """torch's weights-only unpickler names the global or call it will not run; bytes that are no
    pickle at all (a text file, a truncated legacy file) fail on an unknown opcode instead."""
    text = str(exc)
    return "Unsupported operand" not in text and ("weights_only" in text or "Unsupported global" in text)


def _damaged(path: Path, what: str, hint: str, exc: BaseException) -> CheckpointError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Unsupported operand")), lines[0] if lines else type(exc).__name__)
    return CheckpointError(f"{what} {path} is damaged or truncated ({detail[:160]})", hint=hint)
