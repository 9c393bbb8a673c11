"""Faults a run must survive: SIGKILL, SIGTERM/SIGINT, a NaN loss, GPU out of memory, a full or
read-only disk, runs started in the same second, and damaged caches and checkpoints.

Real processes get real signals: three `cifar train` processes start together on one run.name
(an uninterrupted reference, a chain of SIGKILLs, a SIGTERM then a SIGINT), each driven by its
own thread in the background while the in-process tests run; the last tests check what they
left (the fixture is autouse, so even `-k` selections wait for them, ~30 s). In-process faults
are injected by monkeypatching the one function where they would surface, only for the files
they target, so the background scenarios are unaffected. Every wait has a timeout. `FAULTS`
counts what was injected; the module prints the total when it finishes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cifarcli import fileio
from cifarcli.cli import app
from cifarcli.data.cache import read_cache
from cifarcli.engine import checkpoint as checkpoint_module
from cifarcli.engine import loop as loop_module
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.errors import CheckpointError
from cifarcli.fileio import read_csv
from conftest import TinyArchive
from run_fixtures import copy_run

EPOCHS = 6
STEPS_PER_EPOCH = 5  # 160 training images of the tiny set / batch 32
KILLS = 3
WAIT_S = 150.0  # bound of any single wait; a loaded 2-core machine needs ~10 s to start a process
FAULTS: collections.Counter[str] = collections.Counter()
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _report_fault_count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and FAULTS:
        detail = ", ".join(f"{count} {kind}" for kind, count in sorted(FAULTS.items()))
        reporter.write_line(f"\ntest_faults: {sum(FAULTS.values())} faults injected ({detail})")


# --------------------------------------------------------------------------- real processes


def child_env() -> dict[str, str]:
    """The test's environment for a child `cifar`: one thread (bit-identical everywhere), no debug mode."""
    env = {k: v for k, v in os.environ.items() if k != "CIFAR_DEBUG"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="400")  # no wrapped paths
    return env


def smoke_args(data_root: Path, runs_root: Path) -> list[str]:
    """`train` arguments of the deterministic 6-epoch smoke run every process scenario starts with
    (not quiet: it announces its run folder)."""
    sets = [f"data.root={data_root}", f"run.root={runs_root}", "run.name=same", "train.deterministic=true",
            f"train.epochs={EPOCHS}", "run.tensorboard=false"]  # fmt: skip
    return ["train", "-c", "smoke", *[arg for value in sets for arg in ("--set", value)]]


# Runs `cifar` with a clock stuck at one second, so concurrent runs really ask for the same folder name.
FROZEN_CLOCK_MAIN = """
import datetime, sys
import cifarcli.runs

class FrozenClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 11, 21, 9, 30, 0)

cifarcli.runs.datetime = FrozenClock
from cifarcli.cli import main
sys.argv = ["cifar", *sys.argv[1:]]
main()
"""


@dataclass
class Child:
    """A `cifar` subprocess whose stdout and stderr go to files (no pipe can fill up and block it)."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, args: list[str], log: Path, frozen_clock: bool = False) -> Child:
        prefix = [sys.executable, "-c", FROZEN_CLOCK_MAIN] if frozen_clock else [sys.executable, "-m", "cifarcli"]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
            process = subprocess.Popen(prefix + args, stdout=out, stderr=err, env=child_env(), cwd=log.parent)
        return cls(process, log)

    def finish(self, timeout_s: float = WAIT_S) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"cifar did not finish within {timeout_s} s:\n{self.stderr}")

    def send(self, signum: int) -> None:
        assert self.process.poll() is None, f"the run ended before {signal.Signals(signum).name} was sent:\n{self.stderr}"
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def stdout(self) -> str:
        return self.log.with_suffix(".out").read_text()

    @property
    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text()


def wait_until(condition: Callable[[], bool], child: Child, what: str, timeout_s: float = WAIT_S) -> None:
    """Poll `condition` every 10 ms; fail if the child exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if child.process.poll() is not None:
            pytest.fail(f"cifar exited ({child.process.returncode}) while waiting for {what}:\n{child.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def file_identity(path: Path) -> Optional[tuple[int, int]]:
    """Changes whenever `path` is atomically replaced (a new inode) or rewritten."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@dataclass
class Interruption:
    """One signal sent to a training process, and the state it left behind."""

    signal_name: str
    epochs_seen: int  # rows in metrics.csv when the signal was sent
    returncode: int
    stderr: str
    saved_epoch: int  # from last.pt, loaded right after the process ended
    saved_batch_in_epoch: int
    saved_history_rows: int


@dataclass
class Chain:
    """A run started, interrupted again and again (resumed in between), then let finish."""

    run_dir: Path
    interruptions: list[Interruption] = field(default_factory=list)
    final_returncode: Optional[int] = None
    final_stdout: str = ""
    final_stderr: str = ""

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"


def reported_run_dir(child: Child) -> Path:
    """The folder a starting `cifar train` announces on stderr (`run folder: ...`)."""
    wait_until(lambda: "run folder: " in child.stderr, child, "the run folder")
    return Path(re.search(r"^run folder: (.+)$", child.stderr, flags=re.MULTILINE)[1])


def interrupt_chain(
    data_root: Path, runs_root: Path, logs: Path, signals: list[signal.Signals], delay: Callable[[float], float]
) -> Chain:
    """Train; each time a new checkpoint appears, wait `delay(epoch seconds)` and send the next signal,
    load last.pt, then `train --resume`. After the last signal the run finishes."""
    child = Child.start(smoke_args(data_root, runs_root), logs / "start.log", frozen_clock=True)
    try:
        chain = Chain(run_dir=reported_run_dir(child))
        before: Optional[tuple[int, int]] = None
        for number, signum in enumerate(signals, start=1):
            wait_until(lambda previous=before: file_identity(chain.last) not in (None, previous), child, "a new checkpoint")
            rows = read_csv(chain.run_dir / "metrics.csv")  # written just before last.pt
            if len(rows) < EPOCHS - 1:  # near the end (a slow poll), signal at once so it still lands in training
                time.sleep(delay(float(rows[-1]["seconds"])))
            child.send(signum)
            returncode = child.finish()
            FAULTS[signum.name] += 1
            saved = load_checkpoint(chain.last)  # a CheckpointError here is a half-written checkpoint
            chain.interruptions.append(Interruption(
                signum.name, len(rows), returncode, child.stderr, saved["epoch"], saved["batch_in_epoch"], len(saved["history"])
            ))  # fmt: skip
            before = file_identity(chain.last)
            child = Child.start(["train", "--resume", str(chain.run_dir), "--quiet"], logs / f"resume{number}.log")
        chain.final_returncode = child.finish()
        chain.final_stdout, chain.final_stderr = child.stdout, child.stderr
        return chain
    finally:
        child.stop()


def uninterrupted_run(data_root: Path, runs_root: Path, logs: Path) -> Chain:
    child = Child.start(smoke_args(data_root, runs_root), logs / "start.log", frozen_clock=True)
    try:
        chain = Chain(run_dir=reported_run_dir(child))
        chain.final_returncode = child.finish()
        chain.final_stdout, chain.final_stderr = child.stdout, child.stderr
        return chain
    finally:
        child.stop()


@dataclass
class Scenarios:
    """Three runs started together on one run.name in the same (frozen) second, each a Future of a Chain."""

    runs_root: Path
    reference: concurrent.futures.Future  # never interrupted
    kills: concurrent.futures.Future  # SIGKILLed KILLS times
    signals: concurrent.futures.Future  # stopped by SIGTERM, then by SIGINT


@pytest.fixture(scope="module", autouse=True)
def scenarios(tmp_path_factory: pytest.TempPathFactory, cifar10_data_root: Path) -> Iterator[Scenarios]:
    folder = tmp_path_factory.mktemp("process-scenarios")
    runs_root = folder / "runs"
    kill_rng, signal_rng = random.Random(20261121), random.Random(7)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        FAULTS["concurrent start"] += 1
        yield Scenarios(
            runs_root,
            reference=pool.submit(uninterrupted_run, cifar10_data_root, runs_root, folder / "reference"),
            kills=pool.submit(
                interrupt_chain, cifar10_data_root, runs_root, folder / "kills", [signal.SIGKILL] * KILLS,
                lambda epoch_s: kill_rng.uniform(0.0, 1.0) * epoch_s,  # anywhere in the next epoch, its checkpoint write included
            ),
            signals=pool.submit(
                interrupt_chain, cifar10_data_root, runs_root, folder / "signals", [signal.SIGTERM, signal.SIGINT],
                lambda epoch_s: signal_rng.uniform(0.1, 0.6) * epoch_s,  # mid-epoch: the resume must skip the done batches
            ),
        )  # fmt: skip


# --------------------------------------------------------------------------- in-process faults


def assert_same_model(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def train(data_root: Path, runs_root: Path, *sets: str, quiet: bool = True):
    args = ["train", "-c", "smoke", "--set", f"data.root={data_root}", "--set", f"run.root={runs_root}",
            "--set", "run.tensorboard=false", *[arg for value in sets for arg in ("--set", value)]]  # fmt: skip
    return runner.invoke(app, args + (["--quiet"] if quiet else []))


def error_lines(stderr: str) -> list[str]:
    """The `error:` line and what follows it (at most one `hint:` line is allowed)."""
    lines = stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert starts, stderr
    tail = lines[starts[-1] :]
    assert len(tail) <= 2 and all(line.startswith("hint: ") for line in tail[1:]), stderr
    return tail


def single_run_dir(runs_root: Path) -> Path:
    (run_dir,) = list(runs_root.iterdir())
    return run_dir


class CheckpointWrites:
    """Records every checkpoint file the trainer writes (by name, bytes as written), whatever the order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.written: list[tuple[str, bytes]] = []
        real = checkpoint_module.write_atomic

        def recording(path: Path, data: bytes) -> None:
            real(path, data)
            self.written.append((path.name, data))

        monkeypatch.setattr(checkpoint_module, "write_atomic", recording)

    def versions(self, name: str = "last.pt") -> list[bytes]:
        return [data for written, data in self.written if written == name]


class SimulatedKill(BaseException):
    """Stops the process as abruptly as SIGKILL would: nothing catches it, no handler runs."""


def test_a_kill_between_the_two_checkpoint_writes_never_leaves_best_pt_behind(
    cifar10_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a validation split every epoch is the best, so each epoch writes both files; the
    # kill lands after the first file of the last epoch.
    real_write = checkpoint_module.write_atomic
    writes: list[str] = []

    def write_then_die(path: Path, data: bytes) -> None:
        real_write(path, data)
        writes.append(path.name)
        if len(writes) == 3:
            raise SimulatedKill

    monkeypatch.setattr(checkpoint_module, "write_atomic", write_then_die)
    with pytest.raises(SimulatedKill):
        train(cifar10_data_root, tmp_path, "data.val_fraction=0")
    FAULTS["kill between checkpoint writes"] += 1
    monkeypatch.setattr(checkpoint_module, "write_atomic", real_write)
    run_dir = single_run_dir(tmp_path)
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    best, last = (load_checkpoint(run_dir / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == last["epoch"] == 2  # best.pt is the model the final evaluation scores
    assert_same_model(best, last)


def test_nan_loss_stops_at_once_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(
    cifar10_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = CheckpointWrites(monkeypatch)
    # SGD whose LR climbs (cosine rise over 5 epochs) to 100: epoch 1 stays finite, epoch 2 overflows.
    result = train(cifar10_data_root, tmp_path, "optim.name=sgd", "optim.lr=100", "optim.momentum=0", "optim.nesterov=false", "schedule.peak_epoch=5",
                   "schedule.initial_div=1000", "schedule.anneal=cos", f"train.epochs={EPOCHS}")  # fmt: skip
    FAULTS["NaN loss"] += 1
    assert result.exit_code == 1, result.output
    error, hint = error_lines(result.stderr)
    found = re.fullmatch(r"error: loss became (nan|inf|-inf) at epoch (\d+), step (\d+) \(lr [0-9.e+]+\)", error)
    assert found, error
    nan_epoch, nan_step = int(found[2]), int(found[3])
    assert nan_epoch >= 2 and (nan_epoch - 1) * STEPS_PER_EPOCH < nan_step <= nan_epoch * STEPS_PER_EPOCH
    assert "lower optim.lr" in hint and "Traceback" not in result.output
    last = single_run_dir(tmp_path) / "checkpoints" / "last.pt"
    assert len(writes.versions()) == nan_epoch - 1 and last.read_bytes() == writes.versions()[-1]  # untouched since
    kept = load_checkpoint(last)
    assert kept["epoch"] == nan_epoch - 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


def test_out_of_gpu_memory_in_training_names_the_batch_size(
    cifar10_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = loop_module.device_step
    calls = []

    def step_then_oom(*args, **kwargs):
        calls.append(1)
        if len(calls) == STEPS_PER_EPOCH + 2:  # in epoch 2, after a checkpoint exists
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "device_step", step_then_oom)
    writes = CheckpointWrites(monkeypatch)
    result = train(cifar10_data_root, tmp_path)
    FAULTS["CUDA OOM"] += 1
    assert result.exit_code == 1, result.output
    error, hint = error_lines(result.stderr)
    assert error == "error: out of GPU memory with data.batch_size=32"
    assert hint.startswith("hint: lower it (--set data.batch_size=16)") and "checkpoints written so far are intact" in hint
    assert "Traceback" not in result.output and "Tried to allocate" not in result.output
    last = single_run_dir(tmp_path) / "checkpoints" / "last.pt"
    assert last.read_bytes() == writes.versions()[-1] and load_checkpoint(last)["epoch"] == 1


def test_out_of_gpu_memory_in_evaluation_names_the_eval_batch_size(smoke_run: Path, tmp_path: Path, monkeypatch) -> None:
    run = copy_run(smoke_run, tmp_path)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("cifarcli.engine.distributed.predict", oom)  # evaluation predicts through predict_across_ranks
    result = runner.invoke(app, ["evaluate", str(run), "--quiet"])
    FAULTS["CUDA OOM"] += 1
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr)[0] == "error: out of GPU memory with data.eval_batch_size=64"
    assert "--set data.eval_batch_size=32" in result.stderr and "Traceback" not in result.output


def _failing_replace(monkeypatch: pytest.MonkeyPatch, file_name: str, code: int) -> list[bytes]:
    """os.replace raises OSError(code) when it would replace an existing `file_name`; returns the bytes it protected."""
    real_replace = os.replace
    protected: list[bytes] = []

    def replace(source, target, *args, **kwargs):
        target_path = Path(target)
        if target_path.name == file_name and target_path.exists():
            protected.append(target_path.read_bytes())
            raise OSError(code, os.strerror(code))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "replace", replace)
    return protected


@pytest.mark.parametrize("file_name, code", [("last.pt", errno.ENOSPC), ("last.pt", errno.EROFS), ("metrics.csv", errno.ENOSPC)])
def test_full_or_read_only_disk_is_one_clean_error_and_the_previous_checkpoint_stays(
    cifar10_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_name: str, code: int
) -> None:
    writes = CheckpointWrites(monkeypatch)
    protected = _failing_replace(monkeypatch, file_name, code)
    result = train(cifar10_data_root, tmp_path)
    FAULTS[errno.errorcode[code]] += 1
    assert result.exit_code == 1, result.output
    run_dir = single_run_dir(tmp_path)
    target = run_dir / ("checkpoints" if file_name == "last.pt" else "") / file_name
    error, hint = error_lines(result.stderr)
    assert error.startswith("error: cannot write ") and error.endswith(f"{target}: {os.strerror(code)}"), error
    # each hint is true for its errno: disk space only for a full disk
    assert ("free some disk space" in hint) == (code == errno.ENOSPC), hint
    assert ("read-only file system" in hint) == (code == errno.EROFS), hint
    assert hint.endswith("; the previous checkpoint is intact"), hint
    assert "Traceback" not in result.output
    assert protected and target.read_bytes() == protected[-1]  # the old file, byte for byte
    last = run_dir / "checkpoints" / "last.pt"
    assert last.read_bytes() == writes.versions()[0] and load_checkpoint(last)["epoch"] == 1
    leftovers = [p.name for p in run_dir.rglob(".*.tmp")]
    assert leftovers == []


def test_read_only_checkpoint_folder_when_creating_the_temporary_file(
    cifar10_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        folder = Path(kwargs.get("dir", ""))
        if folder.name == "checkpoints" and all((folder / name).exists() for name in ("last.pt", "best.pt")):  # after epoch 1
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    writes = CheckpointWrites(monkeypatch)
    result = train(cifar10_data_root, tmp_path)
    FAULTS["EROFS"] += 1
    assert result.exit_code == 1, result.output
    folder = single_run_dir(tmp_path) / "checkpoints"
    error = error_lines(result.stderr)[0]
    assert re.fullmatch(rf"error: cannot write {re.escape(str(folder))}/(best|last)\.pt: Read-only file system", error)
    assert "Traceback" not in result.output
    for name in ("last.pt", "best.pt"):  # both exactly as the first epoch left them
        assert (folder / name).read_bytes() == writes.versions(name)[-1] and load_checkpoint(folder / name)["epoch"] == 1


@pytest.mark.parametrize("how", ["a file in the way", "permission denied"])
def test_unwritable_run_root_is_a_clean_error(cifar10_data_root: Path, tmp_path: Path, monkeypatch, how: str) -> None:
    if how == "a file in the way":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        root = blocker / "runs"
    else:
        root = tmp_path / "locked" / "runs"
        real_mkdir = Path.mkdir

        def mkdir(self: Path, *args, **kwargs):
            if str(self).startswith(str(tmp_path / "locked")):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    before = sorted(tmp_path.rglob("*"))
    result = train(cifar10_data_root, root)
    FAULTS["unwritable run.root"] += 1
    assert result.exit_code == 1, result.output
    error, hint = error_lines(result.stderr)
    assert error.startswith(f"error: cannot create {root}: ")
    if how == "a file in the way":  # the hint names the file, and says nothing of disk space
        assert hint == f"hint: {blocker} is a file, not a folder; move it away, or set run.root to another folder"
    else:
        assert hint == f"hint: you have no permission to write in {root.parent}, or set run.root to another folder"
    assert "Traceback" not in result.output
    assert sorted(tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- damaged caches and checkpoints


def _copy_data_root(data_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_root, copy)
    return copy


def _assert_cache_equals(root: Path, archive: TinyArchive) -> None:
    arrays = read_cache(root / "cifar10", "cifar10", verify_checksums=True)
    np.testing.assert_array_equal(arrays.train_images, archive.expected.train_images)
    np.testing.assert_array_equal(arrays.test_images, archive.expected.test_images)
    np.testing.assert_array_equal(arrays.train_labels, archive.expected.train_labels)
    np.testing.assert_array_equal(arrays.test_labels, archive.expected.test_labels)


def test_flipped_byte_in_the_cache_is_caught_by_train_and_rebuilt_from_the_kept_archive(
    cifar10_data_root: Path, tiny_cifar10_archive: TinyArchive, tmp_path: Path
) -> None:
    root = _copy_data_root(cifar10_data_root, tmp_path)
    images = root / "cifar10" / "train_images.npy"
    data = bytearray(images.read_bytes())
    data[len(data) // 2] ^= 0x01  # one pixel, one bit: the size and the header stay valid
    images.write_bytes(bytes(data))
    FAULTS["damaged cache"] += 1
    result = train(root, tmp_path / "runs", f"data.source={tiny_cifar10_archive.path}", f"data.md5={tiny_cifar10_archive.md5}",
                   "train.epochs=1", "train.overfit_batches=1", quiet=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"the cache at {root / 'cifar10'} failed its check" in result.stderr
    assert f"cache file {images} fails its sha256 check" in result.stderr and "rebuilding it" in result.stderr
    _assert_cache_equals(root, tiny_cifar10_archive)


def test_truncated_cache_is_rebuilt_by_download_from_the_kept_archive(
    cifar10_data_root: Path, tiny_cifar10_archive: TinyArchive, tmp_path: Path
) -> None:
    root = _copy_data_root(cifar10_data_root, tmp_path)
    labels = root / "cifar10" / "test_labels.npy"
    labels.write_bytes(labels.read_bytes()[:-8])
    FAULTS["damaged cache"] += 1
    result = runner.invoke(app, ["download", "--source", str(tiny_cifar10_archive.path), "--md5", tiny_cifar10_archive.md5,
                                 "--set", f"data.root={root}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cifar10: cache failed its check and was rebuilt" in result.stdout
    assert f"cache file {labels} is missing or has the wrong size" in result.stderr
    _assert_cache_equals(root, tiny_cifar10_archive)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
    elif how == "flipped bit in a tensor":
        data[len(data) // 2] ^= 0x10  # inside the largest tensor's bytes; torch.load alone would not notice
        path.write_bytes(bytes(data))
    else:  # "empty"
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "flipped bit in a tensor", "empty"])
def test_damaged_checkpoint_is_reported_with_the_fix_by_evaluate_and_resume(smoke_run: Path, tmp_path: Path, how: str) -> None:
    run = copy_run(smoke_run, tmp_path)
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    _damage(best, how)
    _damage(last, how)
    FAULTS["damaged checkpoint"] += 2
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_checkpoint(last)
    for args in (["evaluate", str(run), "--quiet"], ["train", "--resume", str(run), "--quiet"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        error, hint = error_lines(result.stderr)
        assert re.match(rf"error: checkpoint {re.escape(str(run))}/checkpoints/(best|last)\.pt is damaged or truncated \(", error)
        assert hint == "hint: resume from the other checkpoint in the same folder (last.pt / best.pt) or re-run `cifar train`"
        assert "Traceback" not in result.output
    if how == "flipped bit in a tensor":
        assert "CRC-32 mismatch" in result.stderr


# --------------------------------------------------------------------------- what the process scenarios left


def train_losses(run_dir: Path) -> list[str]:
    return [row["train_loss"] for row in read_csv(run_dir / "metrics.csv")]


def assert_equals_the_uninterrupted_run(chain: Chain, scenarios: Scenarios) -> None:
    assert chain.final_returncode == 0, chain.final_stderr
    final = load_checkpoint(chain.last)
    assert (final["epoch"], final["batch_in_epoch"], final["global_step"]) == (EPOCHS, 0, EPOCHS * STEPS_PER_EPOCH)
    reference: Chain = scenarios.reference.result(timeout=2 * WAIT_S)
    assert reference.final_returncode == 0, reference.final_stderr
    assert_same_model(final, load_checkpoint(reference.last))
    assert [int(row["epoch"]) for row in read_csv(chain.run_dir / "metrics.csv")] == list(range(1, EPOCHS + 1))
    assert train_losses(chain.run_dir) == train_losses(reference.run_dir)  # interrupted epochs report the same loss


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(scenarios: Scenarios) -> None:
    chain: Chain = scenarios.kills.result(timeout=6 * WAIT_S)
    assert [i.returncode for i in chain.interruptions] == [-signal.SIGKILL] * KILLS
    saved_epochs = [i.saved_epoch for i in chain.interruptions]
    assert saved_epochs == sorted(saved_epochs) and saved_epochs[0] >= 1, chain.interruptions  # progress each time
    assert all(i.saved_history_rows == i.saved_epoch and i.saved_batch_in_epoch == 0 for i in chain.interruptions)
    assert_equals_the_uninterrupted_run(chain, scenarios)


def test_sigterm_and_sigint_save_state_exit_130_and_resume_equals_an_uninterrupted_run(scenarios: Scenarios) -> None:
    chain: Chain = scenarios.signals.result(timeout=6 * WAIT_S)
    assert [i.signal_name for i in chain.interruptions] == ["SIGTERM", "SIGINT"]
    for stop in chain.interruptions:
        assert stop.returncode == 130, stop.stderr
        error, hint = stop.stderr.strip().splitlines()[-2:]
        stopped_by = "Ctrl-C" if stop.signal_name == "SIGINT" else stop.signal_name  # an interruption, not an error:
        found = re.fullmatch(rf"stopped by {stopped_by} at epoch (\d+), step (\d+) of {STEPS_PER_EPOCH}; "
                             rf"state saved to {re.escape(str(chain.last))}", error)  # fmt: skip
        assert found, stop.stderr
        assert hint == f"hint: continue with: cifar train --resume {chain.run_dir}"
        assert "Traceback" not in stop.stderr
        assert (stop.saved_epoch + 1, stop.saved_batch_in_epoch) == (int(found[1]), int(found[2]))
    assert any(0 < stop.saved_batch_in_epoch < STEPS_PER_EPOCH for stop in chain.interruptions)  # a real mid-epoch stop
    assert_equals_the_uninterrupted_run(chain, scenarios)


def test_runs_started_together_on_one_name_get_distinct_complete_folders(scenarios: Scenarios) -> None:
    chains = [future.result(timeout=6 * WAIT_S) for future in (scenarios.reference, scenarios.kills, scenarios.signals)]
    names = sorted(chain.run_dir.name for chain in chains)
    assert names == ["20261121-093000-same", "20261121-093000-same-2", "20261121-093000-same-3"]
    assert sorted(scenarios.runs_root.iterdir()) == sorted(chain.run_dir for chain in chains)
    for chain in chains:
        assert chain.final_returncode == 0, chain.final_stderr
        assert f"wrote {chain.run_dir}/checkpoints/last.pt" in chain.final_stdout  # each wrote where it said it would
        for name in ["config.yaml", "run_info.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                     "evaluations/best-test/evaluation.json", "evaluations/best-test/predictions.csv",
                     "evaluations/best-test/confusion_matrix.csv"]:  # fmt: skip
            assert (chain.run_dir / name).is_file(), (chain.run_dir, name)
        assert load_checkpoint(chain.last)["epoch"] == EPOCHS
        assert len(read_csv(chain.run_dir / "metrics.csv")) == EPOCHS  # not 12 or 18 rows: nobody wrote into another's folder
