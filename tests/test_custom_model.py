"""Your own model (`model.name: package.module:callable`): built, checked, trained, scored, and every bad path refused."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.models import ModelImportError, build_model
from cifarcli.config import ModelConfig
from custom_data import build_image_folder, write_npz_pair

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"

# Each module name is used by this file only, and dropped from sys.modules after each test.
BAD_MODULE = "cifar_test_badnets"
BAD_SOURCE = textwrap.dedent('''
    from torch import nn

    SIZE = 3

    def a_list(num_classes):
        return [num_classes]

    class WrongShape(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.fc = nn.Linear(3, num_classes + 1)

        def forward(self, images):
            return self.fc(images.mean(dim=(2, 3)))

    class NeedsSize(nn.Module):
        def __init__(self, num_classes, size):
            super().__init__()
''')
BROKEN_MODULE = "cifar_test_broken"  # raises while it is imported
BAD_PATHS = [
    ("cifar_test_missing:Net", r"no module named 'cifar_test_missing' in the current folder"),
    (f"{BAD_MODULE}:Nothing", rf"module {BAD_MODULE} has no attribute 'Nothing'"),
    (f"{BAD_MODULE}:SIZE", r"SIZE is an int, not a class or function"),
    (f"{BAD_MODULE}:a_list", r"a_list\(num_classes=3\) returned a list, not a torch.nn.Module"),
    (f"{BAD_MODULE}:WrongShape", r"returns \(2, 4\) for a \(2, 3, 16, 16\) batch; expected \(2, 3\) \(batch, num_classes\)"),
    (f"{BAD_MODULE}:NeedsSize", r"calling NeedsSize\(num_classes=3\) failed: TypeError: .*'size'"),
    (f"{BROKEN_MODULE}:Net", r"importing cifar_test_broken failed: ZeroDivisionError: division by zero"),
]


def readme_block(language: str) -> str:
    """The first ```language block of the README's "Your own model" section."""
    section = README.read_text(encoding="utf-8").split("## Your own model", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder holds the bad modules and the README's model file, as a user's would."""
    (tmp_path / f"{BAD_MODULE}.py").write_text(BAD_SOURCE)
    (tmp_path / f"{BROKEN_MODULE}.py").write_text("VALUE = 1 / 0\n")
    (tmp_path / "mymodels.py").write_text(readme_block("python"))
    monkeypatch.chdir(tmp_path)
    for name in (BAD_MODULE, BROKEN_MODULE, "mymodels", "cifar_test_missing"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield tmp_path
    for name in (BAD_MODULE, BROKEN_MODULE, "mymodels"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """--set options for a prepared 3-class .npz data set of 16x16 images."""
    base = tmp_path_factory.mktemp("custom-model-data")
    train, test = write_npz_pair(base / "arrays", side=16)
    sets = ["--set", "data.dataset=npz", "--set", f"data.path={train}", "--set", f"data.test_path={test}",
            "--set", "data.image_size=16", "--set", f"data.root={base / 'data'}"]
    assert runner.invoke(app, ["prepare", *sets]).exit_code == 0
    return sets


def test_the_readme_model_file_is_ten_lines() -> None:
    assert len(readme_block("python").strip().splitlines()) == 10


def test_build_model_imports_calls_and_checks_the_callable(model_folder: Path) -> None:
    model = build_model(ModelConfig(name="mymodels:TinyNet", kwargs={"width": 12}), num_classes=5, image_size=16)
    assert type(model).__name__ == "TinyNet" and model.fc.in_features == 12 and model.fc.out_features == 5
    assert model.training  # the shape check leaves the train/eval flags as they were
    assert model(torch.zeros(4, 3, 16, 16)).shape == (4, 5)


@pytest.mark.parametrize(("name", "message"), BAD_PATHS)
def test_each_bad_import_path_is_its_own_error(model_folder: Path, name: str, message: str) -> None:
    with pytest.raises(ModelImportError, match=message) as info:
        build_model(ModelConfig(name=name), num_classes=3, image_size=16)
    assert info.value.message.startswith(f"model.name {name!r}: ") and info.value.exit_code == 2


@pytest.mark.parametrize(("name", "message"), BAD_PATHS[:5])
def test_train_refuses_a_bad_model_in_one_line_before_making_a_run_folder(
    model_folder: Path, npz_data: list[str], name: str, message: str
) -> None:
    runs_root = model_folder / "runs"
    result = runner.invoke(app, ["train", "-c", "smoke", "--quiet", *npz_data, "--set", f"model.name={name}",
                                 "--set", f"run.root={runs_root}"])
    assert result.exit_code == 2, result.output
    (first, *rest) = result.stderr.strip().splitlines()
    assert first.startswith(f"error: model.name {name!r}: ") and re.search(message, first), first
    assert all(line.startswith("hint: ") for line in rest) and len(rest) <= 1
    assert "Traceback" not in result.output
    assert not runs_root.exists() or not any(runs_root.iterdir())


def test_the_readme_model_and_config_train_evaluate_report_and_visualize(model_folder: Path) -> None:
    images = build_image_folder(model_folder / "pets")
    config = yaml.safe_load(readme_block("yaml"))
    assert config["model"]["name"] == "mymodels:TinyNet" and config["data"]["path"] == "pets"
    (model_folder / "tinynet.yaml").write_text(readme_block("yaml"))
    fast = ["--set", "data.image_size=16", "--set", "train.epochs=1", "--set", "data.batch_size=8",
            "--set", "data.device=cpu", "--set", "run.tensorboard=false", "--set", 'train.amp="off"', "--set", "schedule.peak_epoch=null"]
    trained = runner.invoke(app, ["train", "-c", "tinynet.yaml", "--quiet", *fast])
    assert trained.exit_code == 0, trained.output
    assert "skipped 1 unreadable file:" in trained.stderr  # said even when quiet; the progress lines are not
    assert "found 3 classes" not in trained.stderr
    (run_dir,) = (model_folder / "runs").iterdir()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["name"] == "mymodels:TinyNet" and saved["model"]["kwargs"] == {"width": 48}
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert tuple(state["model"]["fc.weight"].shape) == (3, 48)
    scored = next((run_dir / "evaluations").glob("best-test*/evaluation.json"))  # its key names the recipe's TTA
    assert json.loads(scored.read_text())["num_images"] == sum(images.test_counts)
    for command in (["evaluate", str(run_dir)], ["report", str(run_dir)], ["visualize-filters", str(run_dir)]):
        result = runner.invoke(app, [*command, "--quiet"])
        assert result.exit_code == 0, (command, result.output)
    assert (run_dir / "report" / "index.html").is_file() and (run_dir / "visualize" / "filters.png").is_file()

    # The same run, from a folder where its model no longer imports: one clear line.
    sys.modules.pop("mymodels", None)
    (model_folder / "mymodels.py").unlink()
    result = runner.invoke(app, ["evaluate", str(run_dir), "--quiet"])
    assert result.exit_code == 2, result.output
    assert re.search(r"error: .*best\.pt: its model 'mymodels:TinyNet' cannot be rebuilt: no module named 'mymodels'",
                     result.stderr), result.stderr
    assert "Traceback" not in result.output


def test_the_shape_check_leaves_a_model_as_it_was() -> None:
    from cifarcli.models.custom import check_output_shape

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    running_mean = model[1].running_mean.clone()
    check_output_shape(model, "inline:model", num_classes=4, image_size=8)
    assert model.training and torch.equal(model[1].running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())
