"""Run folders and atomic writes."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from cifarcli import runs
from cifarcli.errors import StorageError, UsageError
from cifarcli.fileio import read_csv, write_atomic, write_csv


def test_runs_started_in_the_same_second_get_distinct_folders(tmp_path: Path) -> None:
    now = datetime(2026, 11, 21, 9, 30, 0)
    first = runs.create_run_dir(tmp_path, "exp", now)
    second = runs.create_run_dir(tmp_path, "exp", now)
    assert first.name == "20261121-093000-exp" and second.name == "20261121-093000-exp-2"
    assert first.is_dir() and second.is_dir() and not any(first.iterdir())


def test_write_atomic_leaves_old_file_when_write_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "file.bin"
    write_atomic(target, b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cifarcli.fileio.os.replace", broken_replace)
    with pytest.raises(StorageError, match="cannot write .*file.bin: No space left on device"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temp file left behind


def test_csv_round_trip_quotes_commas(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, ["a", "b"], [[1, "x,y"], [2.5, "z"]])
    assert read_csv(path) == [{"a": "1", "b": "x,y"}, {"a": "2.5", "b": "z"}]


def test_find_checkpoint_prefers_best_then_last(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"x")
    assert runs.find_checkpoint(tmp_path) == ckpt / "last.pt"
    (ckpt / "best.pt").write_bytes(b"x")
    assert runs.find_checkpoint(tmp_path) == ckpt / "best.pt"
    assert runs.run_dir_of(ckpt / "best.pt") == tmp_path
    with pytest.raises(UsageError, match="no such run folder"):
        runs.find_checkpoint(tmp_path / "missing")


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    write_atomic(target, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_exclusive_lock_makes_holders_take_turns(tmp_path: Path) -> None:
    import threading
    import time

    from cifarcli.fileio import exclusive_lock

    lock = tmp_path / "x.lock"
    events: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with exclusive_lock(lock):
            events.append("first in")
            inside.set()
            time.sleep(0.3)
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with exclusive_lock(lock):  # blocks until the thread lets go
        events.append("second in")
    thread.join(5)
    assert events == ["first in", "first out", "second in"]


def test_evaluation_keys_name_what_was_scored() -> None:
    from cifarcli.runs import evaluation_key

    assert evaluation_key("best.pt", "test") == "best-test"
    assert evaluation_key("runs/x/checkpoints/last.pt", "test", tta_flip=True) == "last-test-tta_flip"
    assert evaluation_key("best.pt", "val", tta_flip=True, tta_shift=True, ema=True) == "best-val-tta_flip-tta_shift-ema"
    assert evaluation_key("my model (v2).pt", "test") == "my_model_v2-test"  # a folder name, whatever the file is called


@pytest.mark.parametrize(("split", "checkpoint", "counts"), [
    ("test", "runs/r/checkpoints/best.pt", True), ("val", "runs/r/checkpoints/best.pt", False),
    ("test", "runs/r/checkpoints/last.pt", False),
])  # fmt: skip
def test_an_older_top_level_evaluation_is_training_s_scoring_only_if_it_scored_best_on_test(
    tmp_path: Path, split: str, checkpoint: str, counts: bool
) -> None:
    (tmp_path / "evaluation.json").write_text(json.dumps({"top1": 0.5, "split": split, "checkpoint": checkpoint}))
    assert runs.training_evaluation(tmp_path) == (tmp_path / "evaluation.json" if counts else None)
    keyed = tmp_path / "evaluations" / "best-test"
    keyed.mkdir(parents=True)
    (keyed / "evaluation.json").write_text("{}")
    assert runs.training_evaluation(tmp_path) == keyed / "evaluation.json"  # this cifar's own scoring wins
