"""Start a 32x32 torchvision ResNet from an ImageNet weights file on disk, safely.

The file is read with `weights_only=True`, so a pickle that would run code is refused. Two
things in an ImageNet file cannot serve a CIFAR model and are left out:
- `fc.*`: the 1000-class head; the model keeps its freshly initialised head for its classes.
- `conv1.weight` when it is the 7x7 ImageNet stem: the CIFAR stem is a 3x3 stride-1 conv, and
  a 3x3 crop of filters learnt at stride 2 on 224-pixel images is no better than a fresh start,
  so the stem is trained from scratch. A file whose conv1 is already 3x3 (a CIFAR run) loads it.
Every other tensor must match the model by name and shape, or loading stops with an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from cifarcli.errors import CheckpointError
from cifarcli.torchutil import load_tensor_file

HEAD_KEYS = ("fc.weight", "fc.bias")
STEM_KEY = "conv1.weight"
WRAPPER_KEYS = ("state_dict", "model")  # checkpoint dicts that nest the weights under a key
DDP_PREFIX = "module."

# (blocks in layer1..layer4, bottleneck blocks) -> torchvision architecture, to name a wrong file
_RESNET_LAYOUTS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Return the name -> tensor dict in `path`: a plain state_dict, or one under "state_dict"/"model"."""
    if not path.exists():
        raise CheckpointError(
            f"pretrained weights file not found: {path}; set model.pretrained to an existing .pth file",
            hint="torchvision's ImageNet files are named like resnet18-f37072fd.pth",
        )
    if not path.is_file():
        raise CheckpointError(f"pretrained weights path is not a file: {path}; set model.pretrained to a .pth file")
    loaded = load_tensor_file(
        path, "pretrained weights file",
        damaged_hint="download it again, or point model.pretrained to a .pth state_dict",
        unsafe_hint="use a file saved with torch.save(model.state_dict(), path)",
    )  # fmt: skip
    return _state_dict_of(loaded, path)


def _state_dict_of(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(
            f"{path} does not hold a state_dict (a dict of tensors); save one with torch.save(model.state_dict(), path)"
        )
    not_tensors = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: entry {not_tensors[0]!r} is not a tensor; expected a state_dict of tensors only"
        )
    state = {str(k): v for k, v in loaded.items()}
    if all(k.startswith(DDP_PREFIX) for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len(DDP_PREFIX) :]: v for k, v in state.items()}
    return state


def guess_resnet_name(keys: list[str]) -> str | None:
    """The torchvision ResNet whose layout the state-dict `keys` have, or None if unknown."""
    blocks = []
    for layer in range(1, 5):
        indices = {int(m.group(1)) for k in keys if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(len(indices))
    bottleneck = any(k.endswith(".conv3.weight") for k in keys)
    return _RESNET_LAYOUTS.get((tuple(blocks), bottleneck))


def _mismatch_error(path: Path, model_name: str, problem: str, file_keys: list[str]) -> CheckpointError:
    guess = guess_resnet_name(file_keys)
    if guess is not None and guess != model_name:
        fix = (
            f"this looks like a {guess} file but model.name is {model_name}; "
            f"set model.name: {guess} or use a {model_name} file"
        )
    else:
        fix = f"point model.pretrained to torchvision {model_name} weights (model.name is {model_name})"
    return CheckpointError(f"{path} does not fit {model_name}: {problem}; {fix}")


def _left_out(key: str, file_shape: torch.Size, model_state: Mapping[str, torch.Tensor]) -> bool:
    if key in HEAD_KEYS:
        return True
    return key == STEM_KEY and key in model_state and model_state[key].shape != file_shape


def _first_mismatch(
    state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor], ignored: set[str]
) -> str | None:
    """A sentence naming the first key missing, misshapen or unexpected; None when all fit."""
    for key, tensor in model_state.items():
        if key in ignored:
            continue
        if key not in state:
            if key.endswith("num_batches_tracked"):  # older torchvision files lack these counters
                continue
            return f"key {key} is missing from the file"
        if state[key].shape != tensor.shape:
            return f"key {key} has shape {list(state[key].shape)} in the file but {list(tensor.shape)} in the model"
    unexpected = [k for k in state if k not in model_state]
    if unexpected:
        return f"the file has key {unexpected[0]} that the model lacks"
    return None


def load_imagenet_backbone(model: nn.Module, path: Path, model_name: str) -> list[str]:
    """Copy every backbone tensor of the weights file at `path` into `model` (in place).

    `model_name` (a registry name) only words the error for a file of another architecture.
    Returns the file's keys that were left out (the ImageNet head, and the 7x7 stem).
    Raises CheckpointError for a missing, unsafe or unreadable file, or one that does not fit.
    """
    state = read_weights_file(path)
    model_state = model.state_dict()
    left_out = [k for k, v in state.items() if _left_out(k, v.shape, model_state)]
    kept = {k: v for k, v in state.items() if k not in left_out}
    problem = _first_mismatch(kept, model_state, ignored={*HEAD_KEYS, *left_out})
    if problem is not None:
        raise _mismatch_error(path, model_name, problem, list(state))
    model.load_state_dict(kept, strict=False)  # strictness was checked above, head and stem aside
    return left_out
