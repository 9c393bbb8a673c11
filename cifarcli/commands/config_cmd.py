"""`cifar config keys` and `cifar config show NAME`: every config key from the schema, and the built-in configs.

The listing is read from the pydantic schema itself (`ExperimentConfig`), so it cannot drift
from what `--set` and the YAML files accept.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Optional

import typer

from cifarcli import escape
from cifarcli.errors import UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel


class ConfigKey(NamedTuple):
    """One settable key of the schema."""

    key: str  # dotted path, as `--set` takes it: optim.lr
    type: str  # float, int, cifar10 | cifar100 | ..., path or null
    default: str  # as YAML writes it: 0.1, null, true, [256, 128]
    description: str


def schema_keys(model: type[BaseModel], prefix: str = "") -> list[ConfigKey]:
    """Every leaf key of `model` and its sections, in schema order."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    found: list[ConfigKey] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(schema_keys(annotation, f"{prefix}{name}."))
            continue
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        shown = "(required)" if default is PydanticUndefined else _yaml_value(default)
        found.append(ConfigKey(prefix + name, _type_name(annotation), shown, field.description or ""))
    return found


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = [_type_name(arg) for arg in args if arg is not Ellipsis]
        return f"list of {inner[0]}" if inner else "list"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _yaml_value(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value) if not isinstance(value, str) else value


def keys(
    prefix: Annotated[Optional[str], typer.Argument(help="Only the keys starting with this (a section: optim, data ...).", show_default=False)] = None,
) -> None:
    """List every config key with its type, default and description, straight from the schema.

    Example: cifar config keys optim
    """
    from cifarcli.config import ExperimentConfig

    listed = [k for k in schema_keys(ExperimentConfig) if prefix is None or k.key.startswith(prefix)]
    if not listed:
        sections = sorted({k.key.split(".")[0] for k in schema_keys(ExperimentConfig)})
        raise UsageError(f"no config key starts with {escape.value(prefix)}", hint="sections: " + ", ".join(sections))
    for key in listed:
        typer.echo(f"{key.key}: {key.type} = {key.default}")
        if key.description:
            typer.echo(f"    {key.description}")


def show(name: Annotated[str, typer.Argument(help="A built-in config name, as -c takes it (default, smoke, cifar100-resnet34, ...).", show_default=False)]) -> None:
    """Print a built-in config, every field commented (copy it to start your own).

    Example: cifar config show cifar100-resnet34 > my-experiment.yaml
    """
    from cifarcli.config import builtin_config_names, resolve_config_path

    names = builtin_config_names()
    if name not in names:
        raise UsageError(f"no built-in config named {escape.value(name)}", hint="built-in configs: " + ", ".join(names))
    typer.echo(resolve_config_path(Path(name)).read_text(encoding="utf-8"), nl=False)
