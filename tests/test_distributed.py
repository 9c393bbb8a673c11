"""Training and evaluating as several processes under torchrun (engine.distributed), on the CPU with gloo.

The end-to-end tests start real 2-process jobs through PyTorch's launcher on a tiny data set
whose test split has an odd number of images (99), so the world size does not divide it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_cifar10, py2_pickle, write_tar_gz
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.config import DataConfig
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.prepare import prepare_dataset
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.distributed import DistContext, batch_range, check_even_last_batch, rank_batch_size
from cifarcli.errors import ConfigError

TEST_IMAGES = 99
JOB_TIMEOUT_S = 240  # a hung job fails the test instead of hanging the suite
LONG_EPOCHS = 10  # long enough to signal a rank mid-run, short enough to resume quickly
# Tiny and fast: the MLP, one core per process, no TensorBoard. Without augmentation a 2-process
# step sees the very images of the 1-process step, so the two runs' figures agree.
RECIPE = ["-c", "smoke", "--set", "model.name=mlp", "--set", "run.tensorboard=false", "--set", "train.epochs=1",
          *[f"--set=augment.{name}.enabled=false" for name in ("crop", "flip", "cutout")]]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cifarcli", *args]


@pytest.fixture(scope="module")
def odd_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny CIFAR-10 (200 training images) whose test batch holds 99 images."""
    folder = tmp_path_factory.mktemp("odd-archive")
    archive = build_tiny_cifar10(folder / "full.tar.gz")
    members = dict(archive.members)
    labels = archive.expected.test_labels[:TEST_IMAGES]
    members["cifar-10-batches-py/test_batch"] = py2_pickle({
        b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in labels],
        b"data": archive.test_rows[:TEST_IMAGES], b"filenames": [f"test_{j:05d}.png".encode() for j in range(TEST_IMAGES)],
    })  # fmt: skip
    path = folder / "odd.tar.gz"
    md5 = write_tar_gz(path, members, "cifar-10-batches-py")
    root = tmp_path_factory.mktemp("odd-root")
    prepare_dataset(DataConfig(dataset="cifar10", root=root, source=str(path), md5=md5))
    return root


def _where(data_root: Path, runs_root: Path) -> list[str]:
    return ["--set", f"data.root={data_root}", "--set", f"run.root={runs_root}"]


def _only_run(runs_root: Path) -> Path:
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def two_process_run(odd_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One epoch trained by `cifar train --nproc 2` (torchrun, gloo)."""
    runs_root = tmp_path_factory.mktemp("ddp-runs")
    done = subprocess.run([sys.executable, "-m", "cifarcli", "train", "--nproc", "2", *RECIPE, *_where(odd_data_root, runs_root)],
                          capture_output=True, text=True, timeout=JOB_TIMEOUT_S, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return _only_run(runs_root), done


# --------------------------------------------------------------------------- contracts without processes


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_disjoint_and_complete(world_size: int, drop_last: bool) -> None:
    images, labels = np.zeros((50, 8, 8, 3), np.uint8), np.arange(50) % 10
    shards = []
    for rank in range(world_size):
        loader = DeviceLoader(images, labels, batch_size=4, num_classes=10, mean=(0, 0, 0), std=(1, 1, 1), device="cpu",
                              shuffle=True, drop_last=drop_last, seed=3, rank=rank, world_size=world_size)  # fmt: skip
        loader.set_epoch(1)
        shards.append(loader.epoch_indices().tolist())
        assert len(loader) == len(list(loader))
    together = [i for shard in shards for i in shard]
    assert len(together) == len(set(together))  # disjoint
    if drop_last:  # every rank the same full batches, fewer than world_size * (batch + 1) images left out
        assert {len(s) for s in shards} == {50 // world_size // 4 * 4}
        assert 50 - len(together) < world_size * 5
    else:
        assert sorted(together) == list(range(50))  # complete


def test_evaluation_batches_are_split_in_order_once_each() -> None:
    for batches in (0, 1, 2, 7):
        for world in (1, 2, 3):
            ranges = [batch_range(batches, DistContext(rank=r, world_size=world)) for r in range(world)]
            assert [b for r in ranges for b in r] == list(range(batches))


def test_the_global_batch_must_split_into_equal_shares() -> None:
    assert rank_batch_size(32, DistContext(world_size=2)) == 16
    with pytest.raises(ConfigError, match=r"data.batch_size: 30 does not divide by the 4 processes"):
        rank_batch_size(30, DistContext(world_size=4))
    check_even_last_batch(161, 32, True, DistContext(world_size=2))  # dropped anyway
    with pytest.raises(ConfigError, match=r"data.drop_last: false leaves a last batch of 1 training image"):
        check_even_last_batch(161, 32, False, DistContext(world_size=2))


def test_nproc_with_seeds_is_refused_in_one_line() -> None:
    result = CliRunner().invoke(app, ["train", "--nproc", "2", "--seeds", "0,1"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: --nproc cannot be combined with --seeds: each seed is its own run"


@pytest.mark.parametrize(
    ("nproc", "setting", "message"),
    [
        ("3", "data.batch_size=32", "error: data.batch_size: 32 does not divide by the 3 processes"),
        ("2", "train.sync_batchnorm=true", "error: train.sync_batchnorm: PyTorch synchronises BatchNorm on GPUs only"),
        ("2", "train.nonfinite_loss=skip", "error: train.nonfinite_loss: skip decides per process"),
    ],
)
def test_nproc_refuses_what_the_processes_cannot_train_before_starting(tmp_path: Path, nproc: str, setting: str, message: str) -> None:
    result = CliRunner().invoke(app, ["train", "--nproc", nproc, *RECIPE, "--set", setting, "--set", f"run.root={tmp_path}"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- real 2-process jobs


def test_two_processes_train_to_the_end_with_one_process_steps(two_process_run, odd_data_root: Path, tmp_path: Path) -> None:
    run_dir, done = two_process_run
    assert done.stdout.count("test set, best checkpoint") == 1  # rank 0 alone prints
    info = json.loads((run_dir / "run_info.json").read_text())
    one = CliRunner().invoke(app, ["train", "--quiet", *RECIPE, *_where(odd_data_root, tmp_path)])
    assert one.exit_code == 0, one.output
    single = _only_run(tmp_path)
    assert info["steps_per_epoch"] == json.loads((single / "run_info.json").read_text())["steps_per_epoch"] == 5
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    single_rows = list(csv.DictReader((single / "metrics.csv").open()))
    assert len(rows) == 1 and rows[0]["lr"] == single_rows[0]["lr"]  # the schedule counted the same global steps
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):  # averaged gradients: the same training
        assert float(rows[0][column]) == pytest.approx(float(single_rows[0][column]), rel=1e-4), column
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["global_step"] == 5 and not any(k.startswith("module.") for k in checkpoint["model"])
    assert json.loads((run_dir / "evaluations" / "best-test" / "evaluation.json").read_text())["num_images"] == TEST_IMAGES


def test_evaluation_by_two_processes_equals_one_process(two_process_run) -> None:
    run_dir, _ = two_process_run
    files = ("evaluation.json", "predictions.csv", "confusion_matrix.csv")
    args = ["evaluate", str(run_dir), "--quiet", "--set", "data.eval_batch_size=16"]  # 7 batches: 3 on rank 0, 4 on rank 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank computes (OMP_NUM_THREADS=1): the same kernels, so the same last digits
    try:
        one = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 0, one.output
    scored = run_dir / "evaluations" / "best-test"  # best.pt on the test split, no TTA
    single = {name: (scored / name).read_text() for name in files}
    done = subprocess.run(torchrun(*args), capture_output=True, text=True, timeout=JOB_TIMEOUT_S, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 3  # rank 0 alone writes
    assert {name: (scored / name).read_text() for name in files} == single
    assert json.loads(single["evaluation.json"])["num_images"] == TEST_IMAGES


def _worker_pid(tag: str, local_rank: int, timeout_s: float = 60) -> int:
    """The pid of the process torchrun started for `local_rank` in the job whose environment holds `tag`."""
    wanted = {f"CIFAR_TEST_JOB={tag}".encode(), f"LOCAL_RANK={local_rank}".encode()}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                    return int(entry.name)
            except OSError:  # ended meanwhile, or not ours
                continue
        time.sleep(0.05)
    raise AssertionError("torchrun's worker did not start")


def _start_long_job(odd_data_root: Path, runs_root: Path) -> subprocess.Popen:
    """LONG_EPOCHS epochs of 5 steps under torchrun, checking for a stop request after every step; tagged with `runs_root`."""
    args = [*RECIPE, "--set", f"train.epochs={LONG_EPOCHS}", "--set", "train.sync_every_steps=1", *_where(odd_data_root, runs_root)]
    return subprocess.Popen(torchrun("train", "--quiet", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(), "CIFAR_TEST_JOB": str(runs_root)})  # fmt: skip


def test_sigterm_to_one_rank_stops_every_rank_resumably_and_one_process_resumes(odd_data_root: Path, tmp_path: Path) -> None:
    job = _start_long_job(odd_data_root, tmp_path)
    try:
        _wait_for_run_checkpoint(tmp_path, job)
        os.kill(_worker_pid(str(tmp_path), local_rank=1), signal.SIGTERM)
        _, stderr = job.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        job.kill()
    assert job.returncode != 0
    assert "stopped by a signal to another process at epoch" in stderr  # rank 0 stopped for rank 1
    run_dir = _only_run(tmp_path)
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["epoch"] in range(1, LONG_EPOCHS)  # stopped mid-run: neither before epoch 1 nor at the end
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert len(list(csv.DictReader((run_dir / "metrics.csv").open()))) == LONG_EPOCHS
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["global_step"] == LONG_EPOCHS * 5


def _wait_for_run_checkpoint(runs_root: Path, job: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not any(runs_root.glob("*/checkpoints/last.pt")):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before its first checkpoint"
        time.sleep(0.05)


def test_ctrl_c_on_nproc_stops_every_process_resumably_and_two_processes_resume(odd_data_root: Path, tmp_path: Path) -> None:
    """Ctrl-C in a terminal reaches the whole foreground group: cifar, torchrun and every rank."""
    args = [*RECIPE, "--set", f"train.epochs={LONG_EPOCHS}", "--set", "train.sync_every_steps=1", *_where(odd_data_root, tmp_path)]
    job = subprocess.Popen([sys.executable, "-m", "cifarcli", "train", "--nproc", "2", "--quiet", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)  # fmt: skip
    try:
        _wait_for_run_checkpoint(tmp_path, job)
        os.killpg(job.pid, signal.SIGINT)
        _, stderr = job.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        job.kill()
    assert job.returncode == 130, stderr[-3000:]
    run_dir = _only_run(tmp_path)
    assert f"hint: continue with: cifar train --resume {run_dir}" in stderr
    assert stderr.count("stopped by Ctrl-C at epoch") == 1  # rank 0 alone says it
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt", for_resume=True)["epoch"] in range(1, LONG_EPOCHS)
    resumed = subprocess.run([sys.executable, "-m", "cifarcli", "train", "--resume", str(run_dir), "--nproc", "2", "--quiet"],
                             capture_output=True, text=True, timeout=JOB_TIMEOUT_S, env=_env())  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list(csv.DictReader((run_dir / "metrics.csv").open()))) == LONG_EPOCHS
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["global_step"] == LONG_EPOCHS * 5


def test_a_killed_rank_ends_the_job_with_a_message(odd_data_root: Path, tmp_path: Path) -> None:
    job = _start_long_job(odd_data_root, tmp_path)
    try:
        _wait_for_run_checkpoint(tmp_path, job)
        os.kill(_worker_pid(str(tmp_path), local_rank=1), signal.SIGKILL)
        _, stderr = job.communicate(timeout=JOB_TIMEOUT_S)  # a hang fails here
    finally:
        job.kill()
    assert job.returncode != 0
    assert "Signal 9 (SIGKILL) received by PID" in stderr and "local_rank: 1" in stderr  # torchrun's summary
    assert "error: rank 0 stops: another process of this torchrun job ended or stopped answering" in stderr
