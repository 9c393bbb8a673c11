"""The config loader: precedence, the shipped configs, and every bad input as one clean line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.config import (
    MODEL_NAMES,
    ExperimentConfig,
    builtin_config_names,
    config_to_yaml,
    config_with,
    load_config,
    parse_override,
)
from cifarcli.errors import ConfigError

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def print_config(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", "--print-config", *args])
    return result.exit_code, result.output


def test_precedence_defaults_then_file_then_set(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: 0.02\n  momentum: 0.8\n")
    code, out = print_config("-c", str(path), "--set", "optim.lr=0.5")
    assert code == 0, out
    resolved = yaml.safe_load(out)
    assert resolved["optim"]["lr"] == 0.5  # --set beats the file
    assert resolved["optim"]["momentum"] == 0.8  # the file beats the default
    assert resolved["optim"]["name"] == ExperimentConfig().optim.name  # untouched: the schema default
    assert resolved["train"]["epochs"] == ExperimentConfig().train.epochs


def test_an_unquoted_off_for_train_amp_means_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "train:\n  amp: off\n")).train.amp == "off"  # YAML reads it as false
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    assert ExperimentConfig().train.amp == "auto"
    with pytest.raises(ConfigError, match="train.amp: True is not valid"):
        load_config(None, ["train.amp=on"])


def test_default_yaml_is_exactly_the_schema_defaults() -> None:
    """One source of defaults: default.yaml shows ExperimentConfig()'s values, field by field."""
    text = (Path(__file__).resolve().parents[1] / "configs" / "default.yaml").read_text()
    shown, schema = yaml.safe_load(text), ExperimentConfig().model_dump(mode="json")

    def pairs(node: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in node.items():
            out.update(pairs(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
        return out

    differ = {k: (v, pairs(schema).get(k)) for k, v in pairs(shown).items() if v != pairs(schema).get(k)}
    assert differ == {}
    assert load_config() == ExperimentConfig()  # the built-in default loads the same config


def test_seed004_keeps_the_seeds_recipe() -> None:
    cfg = load_config(Path("seed004"))
    assert (cfg.model.name, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("resnet9", "adam", 0.005, 1e-4)
    assert (cfg.schedule.name, cfg.schedule.peak_epoch, cfg.schedule.initial_div, cfg.schedule.final_div) == ("onecycle", 5.0, 100.0, 100.0)
    assert (cfg.data.batch_size, cfg.data.val_fraction, cfg.train.epochs, cfg.train.amp) == (512, 0.0, 24, "off")
    assert cfg.augment.crop.padding_mode == "zeros" and cfg.augment.cutout.size == 8 and cfg.loss.label_smoothing == 0.0
    assert not cfg.eval.tta_flip


def test_default_yaml_documents_every_field() -> None:
    text = (Path(__file__).resolve().parents[1] / "configs" / "default.yaml").read_text()
    tree = yaml.safe_load(text)

    def leaves(node: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in node.items():
            out += leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
        return out

    assert sorted(leaves(tree)) == sorted(leaves(ExperimentConfig().model_dump(mode="json")))
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in stripped, f"undocumented line: {line}"


@pytest.mark.parametrize("name", ["default", "smoke", "cifar100-resnet34", "cifar100-resnet34-transfer",
                                  "cifar10-resnet18", "cifar10-custom-resnet-l1", "cifar100-mlp", "cifar100-cnn"])  # fmt: skip
def test_shipped_configs_validate(name: str) -> None:
    assert name in builtin_config_names()
    cfg = load_config(Path(name))
    assert cfg.model.name in MODEL_NAMES


def test_recipes_match_the_issue() -> None:
    l1 = load_config(Path("cifar10-custom-resnet-l1"))
    assert (l1.loss.l1_weight, l1.optim.name, l1.optim.momentum, l1.train.epochs) == (0.0005, "sgd", 0.9, 24)
    r34 = load_config(Path("cifar100-resnet34"))
    assert r34.optim.name == "sgd" and r34.optim.weight_decay > 0 and r34.loss.label_smoothing > 0
    assert r34.augment.mix.mixup_alpha > 0 and r34.augment.mix.cutmix_alpha > 0
    assert r34.schedule.name == "cosine_restarts" and r34.train.amp == "bf16" and r34.data.dataset == "cifar100"


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, ["augment.mix.mixup_alpha=0.4", "schedule.milestones=[3, 6]"])
    path = write(tmp_path, config_to_yaml(cfg))
    assert load_config(path) == cfg


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(Exception):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    changed = config_with(cfg, {"optim.lr": 1.0})
    assert changed.optim.lr == 1.0 and cfg.optim.lr != 1.0


def test_set_values_parse_as_yaml() -> None:
    assert parse_override("schedule.milestones=[1, 2.5]") == (["schedule", "milestones"], [1, 2.5])
    assert parse_override("model.pretrained=null") == (["model", "pretrained"], None)
    assert parse_override("run.name=abc") == (["run", "name"], "abc")
    assert parse_override("train.compile=true") == (["train", "compile"], True)


BAD_CASES = [
    # (file text or None, --set values, exit code, expected fragments of the message)
    (None, ["optim.lr=-1"], 2, ["optim.lr", "greater than 0"]),
    (None, ["optim.lrr=0.1"], 2, ["optim.lrr", "unknown key", "did you mean optim.lr"]),
    (None, ["optim.name=adamm"], 2, ["optim.name", "adamm", "sgd, adam, adamw, rmsprop"]),
    (None, ["model.name=resnet99"], 2, ["model.name", "resnet9", "resnet18"]),
    (None, ["data.batch_size=lots"], 2, ["data.batch_size", "integer"]),
    (None, ["augment.flip.probability=1.5"], 2, ["augment.flip.probability", "less than or equal to 1"]),
    (None, ["optim.lr"], 2, ["--set", "KEY=VALUE"]),
    (None, ["=3"], 2, ["--set", "KEY=VALUE"]),
    (None, ["optim..lr=3"], 2, ["empty part"]),
    (None, ["optim.lr.x=3"], 2, ["optim.lr", "not a section"]),
    (None, ["schedule.milestones=[1, 2"], 2, ["schedule.milestones", "not valid YAML"]),
    ("optim:\n  lr: [0.1\n", [], 2, ["exp.yaml:", "YAML syntax error"]),
    ("optim:\n  lr: 0.1\n    momentum: 0.9\n", [], 2, ["exp.yaml:3", "YAML syntax error"]),
    ("- 1\n- 2\n", [], 2, ["top level must be a mapping"]),
    ("optimizer:\n  lr: 0.1\n", [], 2, ["optimizer", "unknown key", "did you mean optim"]),
    ("train:\n  grad_clip_norm: 1\n  grad_clip_value: 1\n", [], 2, ["train", "not both"]),
    ("lr_find:\n  start_lr: 1\n  end_lr: 0.1\n", [], 2, ["lr_find", "end_lr must be greater"]),
    ("model:\n  name: mlp\n  pretrained: w.pth\n", [], 2, ["model.pretrained", "resnet18"]),
    ("!!python/object/apply:os.system ['echo hacked']\n", [], 2, ["exp.yaml:1", "YAML tag refused"]),
    # your own data and models
    (None, ["data.dataset=folder"], 2, ["data.path is required", "folder"]),
    (None, ["data.dataset=npz", "data.path=x.npz"], 2, ["exactly one of data.test_path", "data.test_fraction"]),
    (None, ["data.dataset=folder", "data.path=x", "data.test_path=t.npz"], 2, ["data.test_path applies to npz"]),
    (None, ["data.path=x"], 2, ["data.path applies to the folder and npz", "not cifar10"]),
    (None, ["data.image_size=64"], 2, ["data.image_size", "cifar10 images are 32x32"]),
    (None, ["data.dataset=folder", "data.path=x", "data.test_fraction=1.5"], 2, ["data.test_fraction", "less than 1"]),
    (None, ["data.dataset=folder", "data.path=x", "data.image_size=6", "augment.crop.padding=2"], 2,
     ["data.image_size", "resnet9 needs images of at least 8x8"]),
    (None, ["data.dataset=folder", "data.path=x", "data.image_size=8", "model.name=mlp", "augment.crop.padding=8"], 2,
     ["augment.crop.padding", "smaller than data.image_size 8"]),
    (None, ["model.name=my-models:Net"], 2, ["model.name", "'my-models:Net' is not valid", "an import path"]),
    (None, ["model.name=os:system"], 2, ["model.name", "'os:system' names Python's standard library (os)"]),
    (None, ["model.hidden_sizes=[64]"], 2, ["model.hidden_sizes applies to mlp and simple_cnn", "resnet9"]),
    (None, ["model.name=mlp", "model.hidden_sizes=[0]"], 2, ["model.hidden_sizes", "between 1 and 65536"]),
    (None, ["model.kwargs={width: 3}"], 2, ["model.kwargs applies to import-path models"]),
    (None, ["model.name=mynet:Net", "model.dropout=0.5"], 2, ["model.dropout applies to the built-in models", "model.kwargs"]),
]


@pytest.mark.parametrize("text, sets, code, fragments", BAD_CASES)
def test_bad_config_is_one_clean_line(tmp_path: Path, text, sets, code, fragments) -> None:
    args = ["-c", str(write(tmp_path, text))] if text is not None else []
    for value in sets:
        args += ["--set", value]
    exit_code, out = print_config(*args)
    assert exit_code == code, out
    assert "Traceback" not in out
    first = out.strip().splitlines()[0]
    assert first.startswith("error: ")
    for fragment in fragments:
        assert fragment in out, (fragment, out)
    assert len(out.strip().splitlines()) <= 2


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, out = print_config("-c", str(missing))
    assert code == 2
    assert f"config file not found: {missing}" in out
    assert "default" in out  # lists the built-in names as the fix


def test_bad_config_error_type() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.val_fraction=1.0"])
    assert info.value.exit_code == 2 and info.value.message.startswith("data.val_fraction")


def test_model_name_takes_an_import_path_and_its_kwargs() -> None:
    cfg = load_config(None, ["model.name=my_pkg.nets:make_net", "model.kwargs={width: 8, depth: 2}"])
    assert cfg.model.name == "my_pkg.nets:make_net" and cfg.model.kwargs == {"width": 8, "depth": 2}
    assert load_config(Path("default")).model.kwargs == {}  # a round trip through YAML keeps both
    again = yaml.safe_load(config_to_yaml(cfg))
    assert again["model"] == {**again["model"], "name": "my_pkg.nets:make_net", "kwargs": {"width": 8, "depth": 2}}


def test_folder_and_npz_settings_validate() -> None:
    folder = load_config(None, ["data.dataset=folder", "data.path=pets", "data.image_size=64"]).data
    assert (folder.path, folder.test_fraction, folder.image_size) == (Path("pets"), None, 64)
    npz = load_config(None, ["data.dataset=npz", "data.path=a.npz", "data.test_fraction=0.2"]).data
    assert (npz.path, npz.test_path, npz.test_fraction, npz.image_size) == (Path("a.npz"), None, 0.2, 32)


def test_a_run_saved_before_logit_scale_existed_loads_with_its_logits_as_built() -> None:
    from cifarcli.config import validate_saved_config

    saved = ExperimentConfig().model_dump(mode="json")
    del saved["model"]["logit_scale"]  # what a config.yaml of an older cifar holds
    assert validate_saved_config(saved).model.logit_scale == 1.0
    assert ExperimentConfig().model.logit_scale == 0.125  # while a new run takes the default recipe's scale
    kept = {**saved, "model": {**saved["model"], "logit_scale": 0.5}}
    assert validate_saved_config(kept).model.logit_scale == 0.5
