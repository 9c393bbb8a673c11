"""Checkpoints: written atomically, read back with `weights_only=True` only.

A checkpoint is a dict of tensors and plain values: model, optimizer, scheduler, scaler and EMA
state, the epoch and step reached, RNG states, the best validation accuracy, the metrics
history and the resolved config.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from cifarcli import escape, records
from cifarcli.errors import CheckpointError, StorageError
from cifarcli.fileio import write_atomic
from cifarcli.torchutil import load_tensor_file

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "epoch", "config")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise `state` and replace `path` atomically; the old file survives any failure."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    _write(path, buffer.getvalue())


def copy_checkpoint(source: Path, target: Path) -> None:
    """Replace `target` atomically with a copy of `source` (e.g. last.pt -> best.pt)."""
    _write(target, source.read_bytes())


def _write(path: Path, data: bytes) -> None:
    existed = path.is_file()
    try:
        write_atomic(path, data)
    except StorageError as exc:  # the write is atomic: a checkpoint that was there is still there
        raise exc.with_hint("the previous checkpoint is intact") if existed else exc


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _ema(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _tensors(value.get("module")) and records.whole(value.get("updates")))


def _lookahead(value: Any) -> bool:
    average = value.get("average") if isinstance(value, dict) else None
    return value is None or (isinstance(average, list) and all(isinstance(t, torch.Tensor) for t in average))


def _optimizer(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("state"), dict) and records.records(value.get("param_groups"))


def _rng(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("torch"), torch.Tensor) and value["torch"].dtype == torch.uint8


# What every reader uses (evaluate, report, visualize-filters), then what --resume needs on top.
# `cifar train` always writes num_classes and class_names; a checkpoint of the engine alone may lack them.
MODEL_FIELDS: dict[str, records.Check] = {
    "format_version": records.whole, "model": _tensors, "epoch": records.whole, "config": records.mapping,
    "num_classes": records.positive, "class_names": records.texts, "ema": _ema,
}  # fmt: skip
RESUME_FIELDS: dict[str, records.Check] = {
    "optimizer": _optimizer, "scheduler": records.mapping, "scaler": records.mapping, "batch_in_epoch": records.whole,
    "epoch_totals": records.optional(records.mapping), "global_step": records.whole,
    "best_val_accuracy": records.number, "history": records.records, "rng": _rng, "lookahead": _lookahead,
}  # fmt: skip


def load_checkpoint(path: Path, for_resume: bool = False) -> dict[str, Any]:
    """Load a checkpoint safely (weights only) and check every entry a reader uses, or raise CheckpointError.

    `for_resume` also checks the optimizer, scheduler, scaler, counters and RNG states.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", hint="pass a run folder or a .pt file written by `cifar train`")
    state = load_tensor_file(
        path, "checkpoint",
        damaged_hint="resume from the other checkpoint in the same folder (last.pt / best.pt) or re-run `cifar train`",
        unsafe_hint="only load checkpoints written by `cifar train`; re-train or re-export the weights",
    )  # fmt: skip
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(
            f"{path} is not a cifar checkpoint (missing {', '.join(k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state)})",
            hint="pass a checkpoint written by `cifar train`",
        )
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {escape.value(state['format_version'], 40)}, this cifar reads {FORMAT_VERSION}")
    fields = {**MODEL_FIELDS, **(RESUME_FIELDS if for_resume else {})}
    problem = records.first_problem(state, fields, may_lack=("num_classes", "class_names", "ema", "lookahead"))
    if problem is None and "class_names" in state and "num_classes" in state and len(state["class_names"]) != state["num_classes"]:
        problem = f"it names {len(state['class_names'])} classes but has num_classes {state['num_classes']}"
    if problem is not None:
        raise CheckpointError(f"{path} is damaged: {problem}",
                              hint="use the other checkpoint of the run (last.pt / best.pt) or re-run `cifar train`")  # fmt: skip
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device), as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
