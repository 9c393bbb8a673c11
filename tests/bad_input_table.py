"""The machinery of the bad-input tables: a fresh workspace per row, and the one check every row passes.

A row runs one CLI command on inputs it builds inside the workspace; the check asserts the
exit code, one `error:` line (plus at most one `hint:`) holding the row's fragments, no
traceback, and that nothing was created, changed or removed in the workspace, the shared
tiny data root or the smoke run (paths and modification times, before and after).
"""

from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import pytest
import torch
from typer.testing import CliRunner

from cifarcli.cli import app
from conftest import TinyArchive
from run_fixtures import copy_run

runner = CliRunner()


@dataclass
class Workspace:
    """A fresh folder per row, plus the session fixtures a row may draw on (read-only)."""

    root: Path
    data_root: Path
    smoke_run: Path
    cifar10: TinyArchive
    cifar100: TinyArchive

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def run_copy(self) -> Path:
        return copy_run(self.smoke_run, self.root / "copied")

    @property
    def copied_run(self) -> Path:
        """Where `run_copy` puts the copy (for a row's `hold`, which runs after its `args`)."""
        return self.root / "copied" / self.smoke_run.name

    def checkpoint(self, name: str, change: Callable[[dict], object]) -> Path:
        """The smoke run's best.pt, changed by `change(state)` (its return value is saved if not None)."""
        state = torch.load(self.smoke_run / "checkpoints" / "best.pt", weights_only=True)
        replaced = change(state)
        path = self.root / name
        torch.save(state if replaced is None else replaced, path)
        return path

    def train(self, *sets: str, extra: tuple[str, ...] = ()) -> list[str]:
        """`cifar train -c smoke` on the tiny data root, into this workspace's runs folder."""
        base = [f"data.root={self.data_root}", f"run.root={self.runs}", "run.tensorboard=false", *sets]
        return ["train", "-c", "smoke", "--quiet", *[a for s in base for a in ("--set", s)], *extra]


@dataclass(frozen=True)
class Row:
    name: str
    args: Callable[[Workspace], list[str]]
    exit_code: int
    says: tuple[str, ...]  # fragments of the message; `{root}` stands for the workspace
    may_create: tuple[str, ...] = ()  # glob patterns, relative to the workspace, of paths allowed to appear
    hold: Callable[[Workspace], ContextManager[object]] = lambda ws: contextlib.nullcontext()  # held while the command runs


def tree(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its modification time (ns)."""
    return {str(p.relative_to(folder)): p.lstat().st_mtime_ns for p in sorted(folder.rglob("*"))} if folder.exists() else {}


def check_row(row: Row, ws: Workspace) -> None:
    """Run `row` in `ws` and assert its exit code, its one clear message, and that nothing changed."""
    tmp_path = ws.root
    args = row.args(ws)
    before, data_before, run_before = tree(tmp_path), tree(ws.data_root), tree(ws.smoke_run)

    with row.hold(ws):
        result = runner.invoke(app, args)

    assert result.exit_code == row.exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for fragment in row.says:
        assert fragment.format(root=tmp_path) in result.stderr, (fragment, result.stderr)
    lines = result.stderr.strip().splitlines()  # usage errors too: typer's are formatted like the tool's own
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1 and len(lines) - starts[0] <= 2, result.stderr  # one error line, at most one hint
    assert all(line.startswith("hint: ") for line in lines[starts[0] + 1 :]), result.stderr

    after = tree(tmp_path)
    changed = sorted(k for k in after if k in before and after[k] != before[k])
    created = sorted(k for k in after if k not in before and not any(fnmatch.fnmatch(k, p) for p in row.may_create))
    assert (changed, created) == ([], []), "files changed or created"
    assert sorted(k for k in before if k not in after) == [], "files removed"
    assert not [k for k in after if k not in before and ("checkpoints" in k or k.endswith(".pt"))]
    assert tree(ws.data_root) == data_before and tree(ws.smoke_run) == run_before


@pytest.fixture
def workspace(
    tmp_path: Path, cifar10_data_root: Path, smoke_run: Path, tiny_cifar10_archive: TinyArchive, tiny_cifar100_archive: TinyArchive
) -> Workspace:
    """A fresh Workspace for one row (import this fixture into a table's test module)."""
    return Workspace(tmp_path, cifar10_data_root, smoke_run, tiny_cifar10_archive, tiny_cifar100_archive)


def nested_yaml(depth: int) -> str:
    """A flow list nested `depth` levels deep around one number."""
    return "[" * depth + "0.5" + "]" * depth


def alias_bomb(levels: int) -> str:
    """A few lines of YAML anchors and aliases that expand to 10**levels values."""
    lines = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"
