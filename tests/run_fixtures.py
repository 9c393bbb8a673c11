"""Session fixtures holding real trained runs (the smoke recipe on the tiny fixture data sets).

Loaded by conftest.py through `pytest_plugins`; read-only for the tests that use them: a
test that changes a run copies it first (`copy_run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarcli.cli import app


def train_smoke(data_root: Path, runs_root: Path, *extra: str) -> Path:
    """Train `-c smoke` through the CLI and return the new run folder."""
    args = ["train", "-c", "smoke", "--quiet", "--set", f"data.root={data_root}", "--set", f"run.root={runs_root}", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir


def copy_run(run_dir: Path, target_parent: Path) -> Path:
    target = target_parent / run_dir.name
    shutil.copytree(run_dir, target)
    return target


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, cifar10_data_root: Path) -> Path:
    """A finished 2-epoch smoke run on tiny CIFAR-10 (evaluated on its test set)."""
    return train_smoke(cifar10_data_root, tmp_path_factory.mktemp("smoke-runs"))


@pytest.fixture(scope="session")
def smoke_run_cifar100(tmp_path_factory: pytest.TempPathFactory, cifar100_data_root: Path) -> Path:
    """A finished 2-epoch smoke run on tiny CIFAR-100 with fine labels."""
    return train_smoke(
        cifar100_data_root, tmp_path_factory.mktemp("smoke-runs-100"), "--set", "data.dataset=cifar100", "--set", "run.name=smoke100"
    )
