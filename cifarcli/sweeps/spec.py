"""What a sweep runs: a grid, a search space or named variants over dotted config keys.

Read from `--grid KEY=V1,V2,...` options and sweep files (shipped ones in `configs/sweeps/`),
checked against the base config once, point by point, into a frozen `SweepSpec`. No Optuna
here: a mistake in a sweep is a one-line error before any trial starts.
"""

from __future__ import annotations

import itertools
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cifarcli.config import BUILTIN_CONFIG_PACKAGE, ExperimentConfig, config_with, parse_override, read_yaml_mapping
from cifarcli.errors import ConfigError, UsageError

SWEEP_FOLDER = "sweeps"  # inside the built-in configs: cifarcli/configs/sweeps/*.yaml
NAME_PATTERN = r"^[A-Za-z0-9._-]+$"  # sweep, variant and trial names: safe as folder names
MAX_TRIALS = 10000
MAX_TRIAL_NAME = 80  # run.name's limit
RESERVED_KEYS = ("run.root", "run.name")  # every trial sets these itself: its folder in the sweep

Scalar = Union[bool, int, float, str, None]
SweepKind = Literal["grid", "search", "variants"]
VARIANT_KEY = "variant"  # the one grid axis of a variants sweep: the variant names


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRange(_Frozen):
    """One searched key: `log_uniform`/`uniform` floats, `int` (with `step`), or `categorical` choices."""

    type: Literal["log_uniform", "uniform", "int", "categorical"]
    low: Optional[float] = Field(None, description="Lowest value (log_uniform, uniform, int).")
    high: Optional[float] = Field(None, description="Highest value, included (log_uniform, uniform, int).")
    step: Optional[int] = Field(None, ge=1, description="int only: values low, low+step, ...; default 1.")
    choices: Optional[list[Scalar]] = Field(None, min_length=1, description="categorical only: the values to pick from.")

    @model_validator(mode="after")
    def _consistent(self) -> "ParamRange":
        if self.type == "categorical":
            if self.choices is None or self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("categorical takes choices: [...] only")
            return self
        if self.choices is not None or self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} takes low and high with low < high")
        if self.type == "log_uniform" and self.low <= 0:
            raise ValueError("log_uniform needs low > 0")
        if self.step is not None and self.type != "int":
            raise ValueError("step is for int ranges only")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("int takes whole numbers for low and high")
        return self

    def bounds(self) -> list[Scalar]:
        """The values that must each validate: the two ends of a range, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low or 0), int(self.high or 0)]
        return [self.low, self.high]


class SweepFile(_Frozen):
    """A sweep file: exactly one of grid:, space: or variants:, and for a space optionally trials:."""

    grid: Optional[dict[str, list[Scalar]]] = None
    space: Optional[dict[str, ParamRange]] = None
    variants: Optional[dict[str, dict[str, Any]]] = None
    trials: Optional[int] = Field(None, ge=1, le=MAX_TRIALS, description="space only: how many trials to run.")

    @model_validator(mode="after")
    def _one_kind(self) -> "SweepFile":
        given = [kind for kind in ("grid", "space", "variants") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a sweep file holds exactly one of grid:, space:, variants: (found {', '.join(given) or 'none'})")
        if self.trials is not None and self.space is None:
            raise ValueError("trials: belongs to a space: file only (a grid or variants file runs each point once)")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in ("grid", "space", "variants") if getattr(self, kind) is not None)


class SweepSpec(_Frozen):
    """A checked sweep. Values are as the base config's schema resolves them (`1e-4` becomes 0.0001)."""

    kind: SweepKind
    name: str = Field(pattern=NAME_PATTERN, max_length=60)
    grid: dict[str, list[Scalar]] = Field(default_factory=dict, description="grid: the axes, in order.")
    space: dict[str, ParamRange] = Field(default_factory=dict, description="search: the searched keys.")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="variants: name -> its overrides.")
    trials: int = Field(ge=1, le=MAX_TRIALS, description="Trials in all: the grid's size, the variants, or the search budget.")
    seed: int = Field(0, ge=0, description="search: seed of the TPE sampler (trial n uses seed + n).")
    prune: bool = Field(False, description="Stop trials whose validation accuracy falls below the median (Optuna MedianPruner).")

    def setting_keys(self) -> list[str]:
        """The dotted keys a trial's settings are shown by: the axes, the searched keys, or every key a variant sets."""
        if self.kind == "grid":
            return list(self.grid)
        if self.kind == "search":
            return list(self.space)
        return list(dict.fromkeys(key for overrides in self.variants.values() for key in overrides))

    def setting_columns(self) -> list[str]:
        """The summary's setting columns: the variant's name first (variants), then `setting_keys()`."""
        return [VARIANT_KEY, *self.setting_keys()] if self.kind == "variants" else self.setting_keys()

    def overrides_for(self, params: dict[str, Any]) -> dict[str, Any]:
        """The dotted-key overrides of the base config for a trial with these Optuna params."""
        if self.kind == "variants":
            return dict(self.variants[params[VARIANT_KEY]])
        return dict(params)

    def grid_axes(self) -> dict[str, list[Scalar]]:
        """The grid an Optuna GridSampler enumerates (for variants: one axis of names); {} for a search."""
        return {VARIANT_KEY: list(self.variants)} if self.kind == "variants" else dict(self.grid)


# --------------------------------------------------------------------------- reading the options


def builtin_sweep_names() -> list[str]:
    """Names of the sweep files shipped in configs/sweeps/ (usable as `--grid NAME`, `--variants NAME`, ...)."""
    folder = resources.files(BUILTIN_CONFIG_PACKAGE).joinpath(SWEEP_FOLDER)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_sweep_path(path: Path, option: str) -> Path:
    """A sweep file given to `option`: a real path, or the name of a shipped sweep file."""
    if path.is_file():
        return path
    if not path.suffix and len(path.parts) == 1 and path.name in builtin_sweep_names():
        return Path(str(resources.files(BUILTIN_CONFIG_PACKAGE).joinpath(SWEEP_FOLDER).joinpath(path.name + ".yaml")))
    raise UsageError(f"{option} {path}: no such sweep file",
                     hint="pass a YAML file, or a shipped one: " + ", ".join(builtin_sweep_names()))  # fmt: skip


def read_sweep_file(path: Path, option: str, expected: str) -> SweepFile:
    """Read and check a sweep file; it must hold `expected` (grid, space or variants)."""
    try:
        sweep_file = SweepFile.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where + ': ' if where else ''}{message}",
                          hint="see configs/sweeps/ for the format of each kind") from exc  # fmt: skip
    if sweep_file.kind != expected:
        raise UsageError(f"{path} holds a {sweep_file.kind}: sweep, not a {expected}:", hint=f"pass it with --{sweep_file.kind}")
    return sweep_file


def parse_grid_option(text: str) -> tuple[str, list[Scalar]]:
    """`optim.lr=0.1,0.01` -> ("optim.lr", [0.1, 0.01]); each value is read as YAML, like --set."""
    key, sep, raw = text.partition("=")
    if not sep or not raw.strip():
        raise UsageError(f"--grid {text!r}: expected KEY=V1,V2,... or a sweep file", hint="e.g. --grid optim.lr=0.1,0.01,0.001")
    values = []
    for piece in raw.split(","):
        if not piece.strip():
            raise UsageError(f"--grid {text!r}: an empty value between commas", hint="e.g. --grid optim.lr=0.1,0.01")
        parts, value = parse_override(f"{key.strip()}={piece.strip()}")
        values.append(value)
    return ".".join(parts), values


def grid_axes_from_options(options: list[str]) -> tuple[dict[str, list[Scalar]], list[Path]]:
    """The axes of repeated `--grid` options (inline KEY=... or grid files), and the files read."""
    axes: dict[str, list[Scalar]] = {}
    files: list[Path] = []
    for text in options:
        if "=" in text:
            new = dict([parse_grid_option(text)])
        else:
            path = resolve_sweep_path(Path(text), "--grid")
            new = read_sweep_file(path, "--grid", "grid").grid or {}
            files.append(path)
        for key, values in new.items():
            if key in axes:
                raise UsageError(f"--grid: {key} is given twice", hint="give each key one --grid with all its values")
            axes[key] = values
    return axes, files


def build_spec(
    base: ExperimentConfig, grid: list[str], space: Optional[Path], variants: Optional[Path],
    trials: Optional[int], seed: Optional[int], prune: bool, name: Optional[str],
) -> SweepSpec:  # fmt: skip
    """The sweep of the `cifar sweep` options, every point checked against `base` (UsageError/ConfigError otherwise)."""
    if sum(bool(x) for x in (grid, space, variants)) != 1:
        raise UsageError("cifar sweep needs exactly one of --grid, --space or --variants",
                         hint="e.g. cifar sweep -c smoke --grid optim.lr=0.01,0.001")  # fmt: skip
    if trials is not None and space is None:
        raise UsageError("--trials is for --space (a grid or variants sweep runs each point once)")
    if seed is not None and space is None:
        raise UsageError("--seed is for --space (it seeds the TPE sampler)")
    files: list[Path] = []
    fields: dict[str, Any] = {"seed": seed or 0, "prune": prune}
    if grid:
        axes, files = grid_axes_from_options(grid)
        fields.update(kind="grid", grid=axes, trials=math.prod(len(v) for v in axes.values()))
    elif space is not None:
        path = resolve_sweep_path(space, "--space")
        files = [path]
        sweep_file = read_sweep_file(path, "--space", "space")
        count = trials or sweep_file.trials
        if count is None:
            raise UsageError(f"--space {space}: how many trials? pass --trials N (or put trials: N in the file)")
        fields.update(kind="search", space=sweep_file.space, trials=count)
    else:
        path = resolve_sweep_path(variants or Path(), "--variants")
        files = [path]
        found = read_sweep_file(path, "--variants", "variants").variants or {}
        fields.update(kind="variants", variants=found, trials=len(found))
    fields["name"] = name or (files[0].stem if len(files) == 1 else f"{base.run.name}-{fields['kind']}")
    _check_name(fields["name"], "--name")
    if fields["trials"] > MAX_TRIALS:
        raise UsageError(f"this sweep has {fields['trials']} trials, more than {MAX_TRIALS}", hint="use fewer values or --space with --trials")
    return check_against(SweepSpec(**fields), base)


def _check_name(name: str, what: str) -> None:
    if not re.match(NAME_PATTERN, name) or len(name) > 60:
        raise UsageError(f"{what} {name!r}: use at most 60 letters, digits, '.', '_' or '-'", hint="it becomes part of a folder name")


# --------------------------------------------------------------------------- checking against the base config


def value_at(tree: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a config dumped as a dict."""
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def resolved_values(base: ExperimentConfig, overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """`overrides` applied to `base` and validated; returns each key's value as the schema resolved it."""
    for key in overrides:
        if key in RESERVED_KEYS:
            raise UsageError(f"{where}: {key} cannot be swept", hint="each trial's folder is sweeps/<sweep>/<trial>/; set --root instead")
    try:
        cfg = config_with(base, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint or "every sweep point must be a valid config") from exc
    if cfg.data.val_fraction == 0:
        raise ConfigError(f"{where}: data.val_fraction is 0, but a sweep scores each trial on its validation split",
                          hint="set data.val_fraction above 0, e.g. --set data.val_fraction=0.1")  # fmt: skip
    tree = cfg.model_dump(mode="json")
    return {key: value_at(tree, key) for key in overrides}


def check_against(spec: SweepSpec, base: ExperimentConfig) -> SweepSpec:
    """Validate every grid point, variant, range end and choice against `base`; values come back normalised."""
    if spec.kind == "grid":
        axes = {}
        for key, values in spec.grid.items():
            if not values:
                raise UsageError(f"grid axis {key} has no values")
            axes[key] = [resolved_values(base, {key: v}, f"grid {key}={v!r}")[key] for v in values]
            if len({repr(v) for v in axes[key]}) != len(axes[key]):
                raise UsageError(f"grid axis {key} lists a value twice: {axes[key]}")
        for point in expand_grid(axes):  # values that pass alone may clash together (e.g. both clip kinds)
            resolved_values(base, point, "grid point " + ", ".join(f"{k}={v!r}" for k, v in point.items()))
        return spec.model_copy(update={"grid": axes})
    if spec.kind == "variants":
        if not spec.variants:
            raise UsageError("the variants file names no variant")
        variants = {}
        for name, overrides in spec.variants.items():
            _check_name(name, "variant")
            variants[name] = resolved_values(base, overrides, f"variant {name}")
        return spec.model_copy(update={"variants": variants})
    for key, param in spec.space.items():
        for value in param.bounds():
            resolved_values(base, {key: value}, f"space {key}={value!r}")
    return spec


def expand_grid(axes: dict[str, list[Scalar]]) -> list[dict[str, Scalar]]:
    """Every combination of the axes' values, the first axis varying slowest."""
    keys = list(axes)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(axes[k] for k in keys))]


# --------------------------------------------------------------------------- trial names


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest tail that no other key ends with: optim.lr -> lr, augment.crop.enabled -> crop.enabled."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            tail = ".".join(parts[-length:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                break
        short[key] = tail
    return short


def format_value(value: Any, significant: Optional[int] = None) -> str:
    """A setting as text: YAML spelling for true/false/null, floats exact or to `significant` digits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.{significant}g}" if significant else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v, significant) for v in value) + "]"
    return str(value)


def trial_name(number: int, spec: SweepSpec, params: dict[str, Any]) -> str:
    """The trial's folder name: its number, then its variant or settings, e.g. 003_lr-0.01_batch_size-128."""
    if spec.kind == "variants":
        label = str(params[VARIANT_KEY])
    else:
        keys = list(params)
        short = short_keys(keys)
        digits = 3 if spec.kind == "search" else None  # searched floats have many digits; 3 tell trials apart
        label = "_".join(f"{short[k]}-{format_value(params[k], digits)}" for k in keys)
    name = re.sub(r"[^A-Za-z0-9._-]", "", f"{number:03d}_{label}".replace(" ", "").replace(",", "-"))
    return name[:MAX_TRIAL_NAME].rstrip("._-")
