"""Values that would pass a loose schema and fail deep inside: every float, int, path and YAML bound.

The walks below visit every field of ExperimentConfig, so a field added later without a bound
fails here, not in the middle of a run.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import BaseModel

from bad_input_table import alias_bomb, nested_yaml
from cifarcli import config
from cifarcli.config import ExperimentConfig, config_with, load_config, parse_override
from cifarcli.errors import ConfigError
from cifarcli.yaml_reader import MAX_YAML_DEPTH, MAX_YAML_NODES


def _leaf_fields(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, annotation) of every non-section field."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaf_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", annotation


def _scalar_kinds(annotation: Any) -> set[str]:
    """How a field holds numbers: "float"/"int" directly, "float_items"/"int_items" inside a list or tuple."""
    kinds: set[str] = set()
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is float:
        kinds.add("float")
    elif annotation is int:
        kinds.add("int")
    elif origin is typing.Annotated:
        kinds |= _scalar_kinds(args[0])
    elif origin in (list, tuple):
        kinds |= {f"{k}_items" for k in set().union(*(_scalar_kinds(a) for a in args)) if not k.endswith("_items")}
    elif origin is not None:  # Optional / Union
        for arg in args:
            kinds |= _scalar_kinds(arg)
    return kinds


def _fields_of(kind: str) -> list[str]:
    return [dotted for dotted, annotation in _leaf_fields() if kind in _scalar_kinds(annotation) or f"{kind}_items" in _scalar_kinds(annotation)]


def _value_for(dotted: str, number: str) -> str:
    """`number` placed where the field expects it: as the whole value, or as every item of its list/tuple."""
    annotation = dict(_leaf_fields())[dotted]
    kinds = _scalar_kinds(annotation)
    if any(k.endswith("_items") for k in kinds) and not kinds & {"float", "int"}:
        default = getattr_dotted(ExperimentConfig(), dotted)
        count = len(default) if default else 1
        return "[" + ", ".join([number] * count) + "]"
    return number


def getattr_dotted(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


FLOAT_FIELDS = _fields_of("float")
INT_FIELDS = _fields_of("int")


def test_the_walks_find_the_fields_they_should() -> None:
    assert {"optim.lr", "optim.betas", "schedule.milestones", "data.download_timeout_s", "train.ema_decay"} <= set(FLOAT_FIELDS)
    assert {"train.seed", "data.batch_size", "visualize.image_indices", "augment.mix.off_epoch"} <= set(INT_FIELDS)
    assert len(FLOAT_FIELDS) >= 30 and len(INT_FIELDS) >= 15


@pytest.mark.parametrize("number", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("dotted", FLOAT_FIELDS)
def test_every_float_field_refuses_non_finite_values(dotted: str, number: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{dotted}={_value_for(dotted, number)}"])
    assert caught.value.message.startswith(dotted)


@pytest.mark.parametrize("number", [str(2**70), str(2**63), str(-(2**63) - 1)])
@pytest.mark.parametrize("dotted", INT_FIELDS)
def test_every_int_field_is_bounded_to_what_torch_and_numpy_take(dotted: str, number: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{dotted}={_value_for(dotted, number)}"])
    assert caught.value.message.startswith(dotted)


def test_seeds_take_the_largest_value_torch_accepts() -> None:
    import torch

    cfg = load_config(None, [f"train.seed={config.MAX_SEED}", f"data.split_seed={config.MAX_SEED}"])
    torch.Generator().manual_seed(cfg.train.seed)  # the bound is one torch takes
    assert cfg.train.seed == 2**63 - 1


@pytest.mark.parametrize(
    "dotted, value, says",
    [
        ("data.root", "a" * 300, "longer than 255 bytes"),
        ("run.root", "x/" + "b" * 256, "longer than 255 bytes"),
        ("data.root", "/" + "c/" * 2100, "longer than 4096 bytes"),
        ("model.pretrained", '"w\\0.pth"', "NUL"),
        ("data.source", '"http://x/\\0"', "NUL"),
    ],
)
def test_paths_the_operating_system_cannot_take_are_refused(dotted: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{dotted}={value}", "model.name=resnet18"])
    assert caught.value.message.startswith(dotted) and says in caught.value.message


def test_model_names_have_one_source() -> None:
    assert config.MODEL_NAMES == typing.get_args(config.ModelName)
    assert config.OPTIMIZER_NAMES == typing.get_args(config.OptimizerName)
    assert config.SCHEDULE_NAMES == typing.get_args(config.ScheduleName)
    assert config.DATASET_NAMES == typing.get_args(config.DatasetName)
    assert config.LR_SUGGESTION_NAMES == typing.get_args(config.LrSuggestionName)


# --------------------------------------------------------------------------- YAML bounds


def _refusal(tmp_path: Path, text: str) -> str:
    """The message of the ConfigError that loading `text` as a config file raises."""
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.message


def test_deep_nesting_in_a_file_is_refused_with_its_line(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "optim:\n  betas: " + nested_yaml(100_000) + "\n")
    assert message == f"{tmp_path / 'exp.yaml'}:2: it nests more than {MAX_YAML_DEPTH} levels deep"


def test_deep_nesting_in_set_is_refused_and_the_value_cut() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_override("optim.betas=" + nested_yaml(100_000))
    message = caught.value.message
    assert f"nests more than {MAX_YAML_DEPTH} levels deep" in message
    assert len(message) < 400 and "(200005 characters)" in message


def test_a_few_lines_of_aliases_do_not_expand(tmp_path: Path) -> None:
    message = _refusal(tmp_path, alias_bomb(9))  # 10**9 values if expanded
    assert f"expands to more than {MAX_YAML_NODES} values" in message


def test_an_alias_inside_itself_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "schedule:\n  milestones: &m [1, *m]\n")
    assert "alias refers to a list or mapping that contains it" in message


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("lr_find:\n  start_lr: &low 0.001\noptim:\n  eps: *low\n")
    assert load_config(path).optim.eps == 0.001


@pytest.mark.parametrize("text", ["[1, 2]: 3\n", "optim:\n  {a: 1}: 2\n", "? [x]\n: 1\n"])
def test_a_list_or_mapping_as_a_key_is_named_as_such(tmp_path: Path, text: str) -> None:
    message = _refusal(tmp_path, text)
    assert "a list or mapping is used as a key" in message and "tag" not in message


def test_a_python_tag_is_still_named_as_a_tag(tmp_path: Path) -> None:
    assert "YAML tag refused" in _refusal(tmp_path, "optim: !!python/object/apply:os.system [echo]\n")


def test_a_huge_config_file_is_refused_before_parsing(tmp_path: Path) -> None:
    assert "too large for a config file" in _refusal(tmp_path, "# " + "x" * (2 << 20) + "\n")


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        config_with(ExperimentConfig(), {"model.name": "m" * 100_000})
    assert len(caught.value.message) < 400 and "(100002 characters)" in caught.value.message
