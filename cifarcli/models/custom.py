"""Your own model: `model.name: package.module:callable`, imported and checked before any run starts.

The callable (a class or a function) is called as `callable(num_classes=N, **model.kwargs)`
and must return an `nn.Module` whose output on a batch of B images (B x 3 x S x S) has shape
(B, num_classes). The module is imported from the current folder or the installed packages.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

import torch
from torch import nn

from cifarcli.errors import ConfigError

CHECK_BATCH = 2  # images in the dummy batch of the shape check (2: BatchNorm needs more than one in training)


class ModelImportError(ConfigError):
    """`model.name` names a callable that cannot be imported, called, or gives the wrong output."""

    def __init__(self, import_path: str, problem: str, hint: str | None = None) -> None:
        super().__init__(f"model.name {import_path!r}: {problem}", hint=hint)
        self.import_path = import_path
        self.problem = problem  # what was wrong, without the path: for messages that name it otherwise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def import_model_callable(import_path: str) -> Callable[..., Any]:
    """The object `package.module:attr.attr` names, imported with the current folder on the path."""
    module_name, _, attribute = import_path.partition(":")
    try:
        module = _import_from_here(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise ModelImportError(import_path, f"no module named {missing!r} in the current folder ({os.getcwd()}) "
                                   "or the installed packages",
                                   hint="run cifar from the folder that holds it, or pip install the package") from exc
        raise ModelImportError(import_path, f"importing {module_name} failed: {_first_line(exc)}") from exc
    except Exception as exc:  # the user's module ran and raised: say what, not where inside cifar
        raise ModelImportError(import_path, f"importing {module_name} failed: {_first_line(exc)}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelImportError(import_path, f"module {module_name} has no attribute {attribute!r}",
                                   hint=f"define it in {getattr(module, '__file__', module_name)}, or fix the name after the colon")
        target = getattr(target, part)
    if not callable(target):
        raise ModelImportError(import_path, f"{attribute} is {_a(type(target).__name__)}, not a class or function")
    return target


def _import_from_here(module_name: str) -> Any:
    """Import `module_name`, with the current folder searched first (as `python -m` would) while importing."""
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    importlib.invalidate_caches()  # a module file written since the last import must be found
    try:
        return importlib.import_module(module_name)
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def build_custom_model(import_path: str, num_classes: int, kwargs: dict[str, Any], image_size: int) -> nn.Module:
    """Import, call and check the user's model: an nn.Module mapping B x 3 x S x S to B x num_classes."""
    factory = import_model_callable(import_path)
    call = import_path.partition(":")[2] + "(" + ", ".join([f"num_classes={num_classes}", *(f"{k}={v!r}" for k, v in kwargs.items())]) + ")"
    try:
        model = factory(num_classes=num_classes, **kwargs)
    except Exception as exc:
        raise ModelImportError(import_path, f"calling {call} failed: {_first_line(exc)}",
                               hint="it must accept num_classes and the keys of model.kwargs as keyword arguments") from exc
    if not isinstance(model, nn.Module):
        raise ModelImportError(import_path, f"{call} returned {_a(type(model).__name__)}, not a torch.nn.Module")
    check_output_shape(model, import_path, num_classes, image_size)
    return model


def check_output_shape(model: nn.Module, import_path: str, num_classes: int, image_size: int) -> None:
    """Run one zero batch through `model` (eval mode, no gradients, flags restored); it must give (batch, num_classes)."""
    shape = (CHECK_BATCH, 3, image_size, image_size)
    first = next(model.parameters(), None)
    batch = torch.zeros(shape, device=first.device if first is not None else "cpu")
    flags = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            output = model(batch)
    except Exception as exc:
        raise ModelImportError(import_path, f"fails on a {_shape(shape)} batch of zeros: {_first_line(exc)}",
                               hint="it must take B x 3 x data.image_size x data.image_size images") from exc
    finally:
        for module, was_training in flags.items():
            module.training = was_training
    got = _shape(tuple(output.shape)) if isinstance(output, torch.Tensor) else _a(type(output).__name__)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (CHECK_BATCH, num_classes):
        raise ModelImportError(import_path, f"returns {got} for a {_shape(shape)} batch; "
                               f"expected {_shape((CHECK_BATCH, num_classes))} (batch, num_classes)")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"
