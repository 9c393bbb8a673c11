"""Start-up figures: how fast the CLI answers, and the time from launching `cifar train` to its first step.

    python benchmarks/startup.py        # the CLI start-up table alone
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SUBSET_MD5 = "c1a4f60db235f7b139bf987610f4936c"
SUBSET_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset-python.tar.gz"
REPEATS = 5


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300)
    return time.perf_counter() - started


def cli_start_seconds() -> dict[str, float]:
    """Median wall-clock seconds of `--help`, `--version` and `train --print-config`, after one untimed run each."""
    python = [sys.executable]
    commands = {
        "python -c pass (the interpreter alone)": [*python, "-c", "pass"],
        "python -m cifarcli --help": [*python, "-m", "cifarcli", "--help"],
        "python -m cifarcli --version": [*python, "-m", "cifarcli", "--version"],
        "python -m cifarcli train --print-config": [*python, "-m", "cifarcli", "train", "--print-config"],
    }
    script = Path(sys.executable).with_name("cifar")
    if script.is_file():  # the console script imports the cifarcli first on sys.path (PYTHONPATH, else the install)
        commands[f"{script} --help"] = [str(script), "--help"]
    medians = {}
    for label, command in commands.items():
        _seconds(command)  # warm the disk cache
        medians[label] = statistics.median(_seconds(command) for _ in range(REPEATS))
    return medians


def prepare_subset(archive: Path = SUBSET_ARCHIVE) -> Path | None:
    """A temporary data root holding the real CIFAR-10 subset's cache, or None when the archive is absent."""
    if not archive.is_file():
        return None
    from cifarcli.config import DataConfig
    from cifarcli.data.prepare import prepare_dataset

    root = Path(tempfile.mkdtemp(prefix="cifar-bench-data-"))
    prepare_dataset(DataConfig(root=root, source=str(archive), md5=SUBSET_MD5))
    return root


def seconds_to_first_step(model: str, batch_size: int, device: torch.device, data_root: Path) -> float:
    """Seconds from launching `cifar train` (a fresh process) until its first optimizer step has finished.

    The run logs step 1 to TensorBoard (train.sync_every_steps=1, tensorboard_every_steps=1);
    the event's wall time, less the launch time, is the figure. It includes the interpreter,
    the imports, loading the cached data, building the model and the first step itself.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory(prefix="cifar-bench-runs-") as runs_root:
        sets = [f"model.name={model}", f"data.batch_size={batch_size}", f"data.device={device.type}", f"data.root={data_root}",
                f"run.root={runs_root}", "train.epochs=1", "train.overfit_batches=1", "train.sync_every_steps=1",
                "train.tensorboard_every_steps=1", "data.val_fraction=0", "schedule.peak_epoch=null"]  # fmt: skip
        command = [sys.executable, "-m", "cifarcli", "train", "--quiet", *[token for s in sets for token in ("--set", s)]]
        launched = time.time()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"cifar train failed ({done.returncode}): {done.stderr.strip()}")
        (run_dir,) = Path(runs_root).iterdir()
        events = EventAccumulator(str(run_dir / "tensorboard"))
        events.Reload()
        first = events.Scalars("step/train_loss")[0]
        assert first.step == 1
        return first.wall_time - launched


def main() -> None:
    for label, seconds in cli_start_seconds().items():
        print(f"{seconds:6.2f} s  {label}")


if __name__ == "__main__":
    main()
