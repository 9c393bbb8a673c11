"""The declared torch and torchvision floors are the real ones: as new as the newest API the code uses, no newer.

Installing an old torch in CI is not possible here (multi-GB CUDA wheels), so the audit is a
table: each torch API the code calls that is newer than torch 2.0, with the first release that
has it. The code is scanned (its syntax tree, so comments and docstrings do not count) for
each entry, and pyproject.toml and README.md must state the floor the entries found imply.
Calling a newer API means adding it to the table, which then raises the floor.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cifarcli"

# (dotted name as written in the code, keyword argument or None) -> first torch release with it.
TORCH_API_FLOOR: dict[tuple[str, str | None], tuple[int, int]] = {
    ("torch.nn.utils.get_total_norm", None): (2, 6),
    ("torch.cuda.is_bf16_supported", "including_emulation"): (2, 4),
    ("torch.amp.GradScaler", None): (2, 3),  # the device-generic class; torch.cuda.amp.GradScaler before
    ("torch._foreach_copy_", None): (2, 1),
    ("torch.compile", None): (2, 0),
    ("torch.optim.lr_scheduler.LRScheduler", None): (2, 0),  # public name; _LRScheduler before
    ("torch.cuda.OutOfMemoryError", None): (1, 13),
    ("torch.load", "weights_only"): (1, 13),
    ("torch.use_deterministic_algorithms", "warn_only"): (1, 11),
}
OLDEST_SUPPORTED = (2, 0)  # below this the code needs more than the table lists (torch.compile, ...)
TORCHVISION_FOR_TORCH = {  # the torchvision release built for each torch release
    (2, 0): (0, 15), (2, 1): (0, 16), (2, 2): (0, 17), (2, 3): (0, 18), (2, 4): (0, 19), (2, 5): (0, 20), (2, 6): (0, 21),
}  # fmt: skip


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def used_apis(package: Path = PACKAGE) -> dict[tuple[str, str | None], list[str]]:
    """Every table entry the code uses, with where (file:line)."""
    found: dict[tuple[str, str | None], list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            uses: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Attribute) and (name := _dotted(node)):
                uses.append((name, None))
            if isinstance(node, ast.Call) and (name := _dotted(node.func)):
                uses += [(name, keyword.arg) for keyword in node.keywords if keyword.arg]
            for use in uses:
                if use in TORCH_API_FLOOR:
                    found.setdefault(use, []).append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return found


def _floor_of(requirement: str, text: str) -> tuple[int, int]:
    match = re.search(rf'"{requirement}>=(\d+)\.(\d+)"', text)
    assert match, f"pyproject.toml declares no {requirement}>=X.Y"
    return int(match.group(1)), int(match.group(2))


def needed_torch() -> tuple[tuple[int, int], list[str]]:
    """The torch release the code needs, and the APIs (with places) that set it."""
    found = used_apis()
    floor = max([OLDEST_SUPPORTED, *(TORCH_API_FLOOR[use] for use in found)])
    setters = [f"{name}{f'({kw}=...)' if kw else ''} at {where[0]}" for (name, kw), where in found.items()
               if TORCH_API_FLOOR[(name, kw)] == floor]  # fmt: skip
    return floor, setters


def test_the_scan_finds_what_the_code_uses() -> None:
    found = used_apis()
    assert ("torch.amp.GradScaler", None) in found and ("torch.load", "weights_only") in found
    assert all(where for where in found.values())


def test_the_scan_ignores_comments_and_docstrings(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text('"""torch.nn.utils.get_total_norm(x)"""\n# torch.compile(model)\nimport torch\ntorch.compile(m)\n')
    assert set(used_apis(tmp_path)) == {("torch.compile", None)}


def test_pyproject_declares_exactly_the_torch_floor_the_code_needs() -> None:
    declared = _floor_of("torch", (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed, setters = needed_torch()
    assert declared == needed, (
        f"pyproject.toml says torch>={declared[0]}.{declared[1]}, the code needs torch>={needed[0]}.{needed[1]} "
        f"(set by {'; '.join(setters) or 'the oldest supported release'}): change the floor in pyproject.toml and README.md"
    )


def test_torchvision_floor_matches_the_torch_floor() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert _floor_of("torchvision", text) == TORCHVISION_FOR_TORCH[_floor_of("torch", text)]


def test_readme_states_the_floor() -> None:
    torch_floor = _floor_of("torch", (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    vision_floor = TORCHVISION_FOR_TORCH[torch_floor]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"torch {torch_floor[0]}.{torch_floor[1]} or newer (torchvision {vision_floor[0]}.{vision_floor[1]})" in readme


@pytest.mark.skipif(sys.version_info < (3, 10), reason="the package needs Python 3.10")
def test_the_installed_torch_meets_the_floor() -> None:
    import torch

    installed = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    assert installed >= needed_torch()[0]
