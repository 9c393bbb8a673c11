"""The Typer app itself: version, help, command registration, one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from cifarcli import __version__
from cifarcli.cli import app, one_line

runner = CliRunner()
COMMANDS = ["download", "train", "evaluate", "lr-find", "report", "visualize-filters"]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cifar {__version__}"


def test_help_lists_every_command_with_an_example() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # undo the help box's wrapping
    for name in COMMANDS:
        assert f"Example: cifar {name} " in text, name


def test_every_command_has_the_shared_config_options() -> None:
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, name
        for option in ("--config", "--set", "--print-config"):
            assert option in result.output, (name, option)


def test_one_line_flattens_and_escapes() -> None:
    assert one_line("a\nb") == "a b"
    assert one_line("bell\x07 esc\x1b[31m") == "bell\\x07 esc\\x1b[31m"


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "cifarcli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"cifar {__version__}"


HEAVY_LIBRARIES = ("torch", "torchvision", "matplotlib", "tensorboard", "optuna", "PIL")
# Runs `cifar ARGS` with the heavy libraries made unimportable: each `import torch` raises.
WITHOUT_HEAVY_LIBRARIES = f"""
import sys
for name in {HEAVY_LIBRARIES!r}:
    sys.modules[name] = None
sys.argv = ["cifar", *sys.argv[1:]]
from cifarcli.entry import main
main()
"""


def test_importing_the_cli_imports_no_heavy_library() -> None:
    code = f"import sys, cifarcli.cli; print(sorted(m for m in {HEAVY_LIBRARIES!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args, expected",
    [(["--help"], "Example: cifar train"), (["--version"], f"cifar {__version__}"), (["train", "--help"], "--print-config"),
     (["train", "--print-config"], "amp: auto"), (["lr-find", "--print-config", "--set", "lr_find.num_iter=7"], "num_iter: 7"),
     (["download", "--print-config", "--dataset", "cifar100"], "dataset: cifar100"), (["sweep", "--help"], "--grid"),
     (["compare", "--help"], "--out"), (["landscape", "--help"], "--out"), (["prepare", "--help"], "--path"),
     (["sweep", "--print-config", "--set", "optim.lr=0.003"], "lr: 0.003"),
     (["config", "keys", "optim"], "optim.lr: float = "), (["config", "show", "smoke"], "cifar train -c smoke"),
     (["prepare", "--print-config", "--dataset", "npz", "--path", "x.npz", "--set", "data.test_fraction=0.2"], "dataset: npz")],
)  # fmt: skip
def test_help_version_and_print_config_work_without_the_heavy_libraries(args: list[str], expected: str) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_HEAVY_LIBRARIES, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert expected in " ".join(done.stdout.replace("│", " ").split())


def _caught_signals(pid: int) -> int:
    """The SigCgt mask of a process: bit n-1 set when it has a handler for signal n."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def _has_mapped(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def _wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, "the command ended before it was signalled"
        assert time.monotonic() < deadline, "timed out waiting for the command to start"
        time.sleep(0.002)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc to see where the process is")
@pytest.mark.parametrize(
    "signum, moment",
    [(signal.SIGINT, "handlers installed"), (signal.SIGTERM, "handlers installed"), (signal.SIGINT, "torch loading")],
)
def test_an_interrupt_during_start_up_is_one_line_and_exit_130(
    signum: int, moment: str, cifar10_data_root: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "cifarcli", "train", "-c", "smoke", "--set", f"data.root={cifar10_data_root}",
               "--set", f"run.root={tmp_path}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if moment == "handlers installed":  # the first moment `cifar` can answer a signal: its imports have just begun
            _wait_until(lambda: _caught_signals(process.pid) & (1 << (signal.SIGTERM - 1)), process)
        else:  # in the middle of `import torch`, inside the command
            _wait_until(lambda: _has_mapped(process.pid, "libtorch"), process)
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err == ("stopped by Ctrl-C\n" if signum == signal.SIGINT else "stopped by SIGTERM\n") and out == ""
    assert not list(tmp_path.iterdir())  # nothing was started, so nothing was written
