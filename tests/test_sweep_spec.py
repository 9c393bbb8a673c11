"""Sweep definitions: --grid parsing, grid expansion, trial names, sweep files, checks against the base config."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifarcli.config import builtin_config_names, load_config
from cifarcli.errors import ConfigError, UsageError
from cifarcli.sweeps.spec import (
    build_spec,
    builtin_sweep_names,
    expand_grid,
    parse_grid_option,
    resolve_sweep_path,
    short_keys,
    trial_name,
)

SMOKE = load_config(Path("smoke"))
DEFAULT = load_config()
SHIPPED = {"lr-exploration": "grid", "batch-size-weight-decay": "grid", "augmentation-ablation": "variants",
           "optimizers": "variants", "schedules": "variants", "lr-wd-search": "space"}  # fmt: skip


def spec_of(*grid: str, base=SMOKE, **kwargs):
    options = dict(space=None, variants=None, trials=None, seed=None, prune=False, name=None)
    options.update(kwargs)
    return build_spec(base, list(grid), **options)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_option_values_are_yaml_scalars() -> None:
    assert parse_grid_option("optim.lr=0.1, 1.0e-2,3") == ("optim.lr", [0.1, 0.01, 3])
    assert parse_grid_option("train.grad_clip_norm=null,1.0") == ("train.grad_clip_norm", [None, 1.0])
    assert parse_grid_option("augment.flip.enabled=true,false") == ("augment.flip.enabled", [True, False])
    for bad in ("optim.lr", "optim.lr=", "optim.lr=0.1,,0.2", "=0.1"):
        with pytest.raises((UsageError, ConfigError)):
            parse_grid_option(bad)


def test_grid_expansion_is_the_cartesian_product_first_axis_slowest() -> None:
    points = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(points) == 6
    assert points[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
    assert points[-1] == {"a": 2, "b": "z"}
    assert expand_grid({"a": [1]}) == [{"a": 1}]


def test_spec_normalises_values_through_the_schema_and_counts_trials() -> None:
    spec = spec_of("optim.lr=1e-4,0.01", "data.batch_size=16,32,64")
    assert spec.kind == "grid" and spec.trials == 6 and spec.name == "smoke-grid"
    assert spec.grid == {"optim.lr": [0.0001, 0.01], "data.batch_size": [16, 32, 64]}  # "1e-4" is a YAML string; the schema makes it a float
    assert spec.setting_columns() == ["optim.lr", "data.batch_size"]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spaces") / "space.yaml"
    path.write_text("space:\n  optim.lr: {type: log_uniform, low: 1.0e-4, high: 0.1}\n"
                    "  data.batch_size: {type: int, low: 16, high: 64, step: 16}\n")  # fmt: skip
    return path


def test_trial_names_are_unique_readable_folder_names(space_file: Path) -> None:
    spec = spec_of("optim.lr=0.001,0.1", "augment.crop.enabled=true,false", "augment.flip.enabled=true,false")
    assert short_keys(list(spec.grid)) == {"optim.lr": "lr", "augment.crop.enabled": "crop.enabled", "augment.flip.enabled": "flip.enabled"}
    name = trial_name(7, spec, {"optim.lr": 0.001, "augment.crop.enabled": False, "augment.flip.enabled": True})
    assert name == "007_lr-0.001_crop.enabled-false_flip.enabled-true"
    long = trial_name(1234, spec_of("data.root=" + "x" * 200), {"data.root": "x" * 200})
    assert long.startswith("1234_root-xxx") and len(long) <= 80
    searched = spec_of(space=space_file, trials=2)
    assert trial_name(3, searched, {"optim.lr": 0.00123456, "data.batch_size": 48}) == "003_lr-0.00123_batch_size-48"


def test_variants_and_space_files(tmp_path: Path, space_file: Path) -> None:
    variants = write(tmp_path, "ablation.yaml", "variants:\n  base: {}\n  no-flip: {augment.flip.enabled: false}\n"
                                                "  steps: {schedule.name: multistep, schedule.milestones: [1, 2]}\n")  # fmt: skip
    spec = spec_of(variants=variants)
    assert spec.kind == "variants" and spec.trials == 3 and spec.name == "ablation"
    assert spec.variants["steps"] == {"schedule.name": "multistep", "schedule.milestones": [1.0, 2.0]}
    assert spec.setting_columns() == ["variant", "augment.flip.enabled", "schedule.name", "schedule.milestones"]
    assert trial_name(2, spec, {"variant": "no-flip"}) == "002_no-flip"
    space = spec_of(space=space_file, trials=5, seed=3)
    assert (space.kind, space.trials, space.seed) == ("search", 5, 3)
    assert space.space["optim.lr"].type == "log_uniform" and space.space["data.batch_size"].step == 16


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"grid": ["optim.lrr=0.1,0.2"]}, "did you mean optim.lr"),
        ({"grid": ["optim.lr=0.1,-1"]}, "optim.lr"),
        ({"grid": ["optim.lr=0.1,0.1"]}, "twice"),
        ({"grid": ["run.name=a,b"]}, "cannot be swept"),
        ({"grid": ["data.val_fraction=0,0.2"]}, "val_fraction"),
        ({"grid": ["train.grad_clip_norm=1.0", "train.grad_clip_value=1.0"]}, "grad_clip_norm or grad_clip_value"),
        ({"grid": ["optim.lr=0.1", "optim.lr=0.2"]}, "given twice"),
        ({"grid": []}, "exactly one of"),
        ({"grid": ["optim.lr=0.1"], "trials": 3}, "--trials is for --space"),
        ({"grid": ["optim.lr=0.1"], "name": "a b"}, "--name"),
    ],
)
def test_bad_sweeps_are_one_line_errors_before_anything_runs(kwargs: dict, fragment: str) -> None:
    grid = kwargs.pop("grid")
    with pytest.raises((UsageError, ConfigError)) as info:
        spec_of(*grid, **kwargs)
    assert fragment in info.value.message + (info.value.hint or "")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("space:\n  optim.lr: {type: log_uniform, low: 0, high: 1}\n", "low > 0"),
        ("space:\n  optim.lr: {type: uniform, low: 1, high: 0.5}\n", "low < high"),
        ("space:\n  optim.name: {type: categorical, low: 1}\n", "choices"),
        ("space:\n  optim.lr: {type: normal, low: 1, high: 2}\n", "optim.lr"),
        ("space:\n  optim.lr: {type: uniform, low: 0.1, high: 0.2}\ngrid:\n  optim.lr: [1]\n", "exactly one of"),
        ("variants:\n  a: {}\n", "holds a variants"),
        ("space:\n  optim.lrr: {type: uniform, low: 0.1, high: 0.2}\ntrials: 2\n", "did you mean optim.lr"),
    ],
)
def test_bad_space_files_name_the_file_and_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, "space.yaml", text)
    with pytest.raises((UsageError, ConfigError)) as info:
        spec_of(space=path, trials=2)
    assert fragment in info.value.message + (info.value.hint or "")


def test_a_space_needs_a_trial_count(tmp_path: Path) -> None:
    path = write(tmp_path, "space.yaml", "space:\n  optim.lr: {type: uniform, low: 0.001, high: 0.01}\n")
    with pytest.raises(UsageError, match="--trials"):
        spec_of(space=path)
    assert spec_of(space=write(tmp_path, "s2.yaml", path.read_text() + "trials: 4\n")).trials == 4


def test_shipped_sweep_files_run_on_the_default_config_and_are_not_configs() -> None:
    assert sorted(builtin_sweep_names()) == sorted(SHIPPED)
    assert not set(builtin_sweep_names()) & set(builtin_config_names())
    for name, kind in SHIPPED.items():
        path = resolve_sweep_path(Path(name), f"--{kind}")
        option = {"grid": {"grid": [name]}, "space": {"space": path}, "variants": {"variants": path}}[kind]
        spec = build_spec(DEFAULT, option.pop("grid", []), **{"space": None, "variants": None, **option},
                          trials=None, seed=None, prune=False, name=None)  # fmt: skip
        assert spec.name == name and spec.trials >= 3, name
    ablation = build_spec(DEFAULT, [], None, resolve_sweep_path(Path("augmentation-ablation"), "--variants"), None, None, False, None)
    assert "all-off" in ablation.variants and all(v is False for v in ablation.variants["all-off"].values())
    grid = build_spec(DEFAULT, ["batch-size-weight-decay"], None, None, None, None, False, None)
    assert len(grid.grid) == 3 and "train.grad_clip_norm" in grid.grid
    with pytest.raises(ConfigError):
        load_config(Path("lr-exploration"))  # a sweep file is not an experiment config
