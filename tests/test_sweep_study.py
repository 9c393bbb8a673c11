"""The sweep's Optuna study and trial loop with a stand-in trainer: claiming, failures, pruning, take-over, seeds, processes.

The stand-in reports a made-up validation accuracy per epoch instead of training, so these
tests exercise the study logic in well under a second each; tests/test_cli_sweep.py trains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from cifarcli.config import load_config
from cifarcli.errors import Interrupted
from cifarcli.sweeps import study as sweep_study
from cifarcli.sweeps import trials as sweep_trials
from cifarcli.sweeps.spec import SweepSpec, build_spec
from cifarcli.sweeps.summary import best_record

BASE = load_config(Path("smoke"))
BASE_TREE = BASE.model_dump(mode="json")
REPO = Path(__file__).resolve().parents[1]


def grid_spec(*grid: str, prune: bool = False) -> SweepSpec:
    return build_spec(BASE, list(grid), None, None, None, None, prune, "unit")


def new_sweep(folder: Path, spec: SweepSpec) -> sweep_study.Sweep:
    folder.mkdir(parents=True, exist_ok=True)
    storage = sweep_study.open_storage(sweep_study.default_storage_url(folder))
    return sweep_study.create_study(storage, spec.name, spec, BASE_TREE, folder)


class Recorder(sweep_trials.SweepEvents):
    def __init__(self) -> None:
        self.started: list[sweep_trials.TrialTask] = []
        self.ended: list[tuple[str, str]] = []

    def on_trial_start(self, task: sweep_trials.TrialTask) -> None:
        self.started.append(task)

    def on_trial_end(self, record, counts, error) -> None:
        self.ended.append((record.name, record.state))


def trainer(curve: Callable[[sweep_trials.TrialTask], list[float]], fail: Callable[[sweep_trials.TrialTask], bool] = lambda t: False):
    """A stand-in run_trial: reports `curve(task)` epoch by epoch, or raises for tasks `fail` picks."""

    def run(task: sweep_trials.TrialTask, reporter: sweep_trials.EpochReporter) -> sweep_trials.TrialResult:
        if fail(task):
            raise RuntimeError(f"boom in {task.name}")
        for epoch, value in enumerate(curve(task), start=1):
            reporter.report(epoch, value)
        return sweep_trials.TrialResult(test_accuracy=0.5)

    return run


def by_lr(task: sweep_trials.TrialTask) -> list[float]:
    return [task.overrides["optim.lr"] * 10, task.overrides["optim.lr"] * 20]


def test_grid_runs_every_point_once_and_records_results(tmp_path: Path) -> None:
    sweep = new_sweep(tmp_path / "s", grid_spec("optim.lr=0.01,0.02", "data.batch_size=16,32"))
    events = Recorder()
    assert sweep_trials.work(sweep, trainer(by_lr), events) == 4
    points = sorted((t.overrides["optim.lr"], t.overrides["data.batch_size"]) for t in events.started)
    assert points == [(0.01, 16), (0.01, 32), (0.02, 16), (0.02, 32)]
    assert [t.number for t in events.started] == [0, 1, 2, 3]
    records = sweep_study.records(sweep)
    assert [r.state for r in records] == ["complete"] * 4
    assert all(r.val_curve == pytest.approx([r.settings["optim.lr"] * 10, r.settings["optim.lr"] * 20]) for r in records)
    assert best_record(records).settings["optim.lr"] == 0.02
    assert sweep.study.best_value == pytest.approx(0.4)  # the objective: best validation accuracy
    assert all((sweep.folder / r.name).is_dir() for r in records)
    assert sweep_trials.work(sweep, trainer(by_lr), Recorder()) == 0  # nothing left to claim
    assert sweep_study.counts(sweep) == {"complete": 4, "pruned": 0, "failed": 0, "running": 0, "waiting": 0, "total": 4}


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = new_sweep(tmp_path / "s", grid_spec("optim.lr=0.01,0.02,0.03"))
    events = Recorder()
    assert sweep_trials.work(sweep, trainer(by_lr, fail=lambda t: t.overrides["optim.lr"] == 0.02), events) == 3
    records = {r.settings["optim.lr"]: r for r in sweep_study.records(sweep)}
    assert records[0.02].state == "failed" and records[0.02].error == "RuntimeError: boom in " + records[0.02].name
    assert records[0.01].state == records[0.03].state == "complete"
    assert sweep_trials.work(sweep, trainer(by_lr), Recorder()) == 0  # a failed trial is finished: never run again


def test_median_pruning_stops_a_trial_below_the_others(tmp_path: Path) -> None:
    sweep = new_sweep(tmp_path / "s", grid_spec("optim.lr=0.01,0.02,0.03,0.04", prune=True))
    good = [0.8, 0.85, 0.9]

    def curve(task: sweep_trials.TrialTask) -> list[float]:  # trials run in number order: the fourth is worst
        return good if task.number < sweep_study.PRUNE_AFTER_TRIALS else [0.1, 0.1, 0.1]

    sweep_trials.work(sweep, trainer(curve), Recorder())
    states = [r.state for r in sweep_study.records(sweep)]
    assert states == ["complete", "complete", "complete", "pruned"]
    pruned = sweep_study.records(sweep)[3]
    assert pruned.epochs == sweep_study.PRUNE_FROM_EPOCH and pruned.test_accuracy is None  # stopped at the first epoch allowed


def test_an_interrupted_trial_stays_running_and_is_taken_over_from_its_checkpoint(tmp_path: Path) -> None:
    sweep = new_sweep(tmp_path / "s", grid_spec("optim.lr=0.01,0.02,0.03"))
    calls: list[tuple[str, bool]] = []

    def run(task: sweep_trials.TrialTask, reporter: sweep_trials.EpochReporter) -> sweep_trials.TrialResult:
        calls.append((task.name, task.resume))
        if len(calls) == 2:
            reporter.report(1, 0.3)
            (task.folder / "checkpoints").mkdir()
            (task.folder / "checkpoints" / "last.pt").write_bytes(b"state")  # what fit leaves when stopped
            raise Interrupted("stopped by SIGINT at epoch 2")
        if task.resume:  # fit continues after the saved epoch
            reporter.report(2, 0.4)
            return sweep_trials.TrialResult(0.4)
        return trainer(by_lr)(task, reporter)

    with pytest.raises(Interrupted):
        sweep_trials.work(sweep, run, Recorder())
    assert sweep_study.counts(sweep)["running"] == 1 and sweep_study.counts(sweep)["complete"] == 1
    stopped = calls[1][0]
    again = sweep_study.reopen(sweep_study.open_storage(sweep_study.default_storage_url(sweep.folder)), "unit", sweep.folder)
    assert sweep_trials.work(again, run, Recorder()) == 2
    assert calls[2] == (stopped, True)  # the stopped trial first, continuing in its folder; the first one never again
    assert [name for name, _ in calls].count(calls[0][0]) == 1
    assert sweep_study.counts(again)["complete"] == 3


def test_a_trial_held_by_a_live_process_is_left_alone(tmp_path: Path) -> None:
    sweep = new_sweep(tmp_path / "s", grid_spec("optim.lr=0.01"))
    claim = sweep_trials._claim_waiting(sweep)
    assert claim is not None and sweep_trials._claim_abandoned(sweep) is None  # its lock is held
    assert sweep_trials._claim_waiting(sweep) is None
    claim.lock.release()
    taken = sweep_trials._claim_abandoned(sweep)
    assert taken is not None and taken.task.name == claim.task.name and taken.task.resume is False  # no checkpoint yet
    taken.lock.release()


def search_spec(tmp_path: Path, seed: int) -> SweepSpec:
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  optim.lr: {type: log_uniform, low: 1.0e-4, high: 0.1}\n"
                     "  optim.name: {type: categorical, choices: [adam, sgd]}\n"
                     "  data.batch_size: {type: int, low: 16, high: 64, step: 16}\n")  # fmt: skip
    return build_spec(BASE, [], space, None, 3, seed, False, "search")


def test_search_draws_the_same_settings_for_the_same_seed(tmp_path: Path) -> None:
    drawn = {}
    for run, seed in (("a", 7), ("b", 7), ("c", 8)):
        sweep = new_sweep(tmp_path / run, search_spec(tmp_path, seed))
        events = Recorder()
        sweep_trials.work(sweep, trainer(lambda t: [0.5]), events)
        drawn[run] = [t.overrides for t in events.started]
    assert len(drawn["a"]) == 3 and drawn["a"] == drawn["b"] and drawn["a"] != drawn["c"]
    for overrides in drawn["a"]:
        assert 1e-4 <= overrides["optim.lr"] <= 0.1 and overrides["optim.name"] in ("adam", "sgd")
        assert overrides["data.batch_size"] in (16, 32, 48, 64)
    assert len({json.dumps(o, sort_keys=True) for o in drawn["a"]}) == 3


def test_joining_with_another_sweep_under_the_same_name_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = sweep_study.open_storage(url)
    first, created = sweep_study.join_or_create(storage, "unit", grid_spec("optim.lr=0.01,0.02"), BASE_TREE,
                                                lambda: _mkdir(tmp_path / "root" / "one"), tmp_path / "root")  # fmt: skip
    assert created and first.folder.name == "one"
    joined, created = sweep_study.join_or_create(sweep_study.open_storage(url), "unit", grid_spec("optim.lr=0.01,0.02"), BASE_TREE,
                                                 lambda: _mkdir(tmp_path / "root" / "two"), tmp_path / "root")  # fmt: skip
    assert not created and joined.folder == first.folder
    with pytest.raises(Exception, match="another sweep"):
        sweep_study.join_or_create(sweep_study.open_storage(url), "unit", grid_spec("optim.lr=0.5"), BASE_TREE,
                                   lambda: tmp_path, tmp_path / "root")  # fmt: skip


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


WORKER = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from cifarcli.config import load_config
    from cifarcli.sweeps import study as s, trials as t
    from cifarcli.sweeps.spec import build_spec

    base = load_config(Path("smoke"))
    spec = build_spec(base, ["optim.lr=0.01,0.02,0.03,0.04", "data.batch_size=16,32,64"], None, None, None, None, False, "race")
    root = Path(sys.argv[2])
    def new_folder():  # only the process that creates the study calls it
        path = root / "shared-folder"
        path.mkdir(parents=True, exist_ok=False)
        return path
    sweep, _ = s.join_or_create(s.open_storage(sys.argv[1]), "race", spec, base.model_dump(mode="json"), new_folder, root)
    def run(task, reporter):
        marker = task.folder / "ran"
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # a second run of this trial would fail here
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(0.05)
        reporter.report(1, 0.5)
        return t.TrialResult(0.5)
    print(t.work(sweep, run, t.SweepEvents()))
''')


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_three_processes_share_one_grid_without_running_a_trial_twice(tmp_path: Path, storage: str) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}" if storage == "sqlite" else f"journal:{tmp_path / 'race.journal'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(tmp_path / "sweeps")], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert sum(int(out.strip().splitlines()[-1]) for out, _ in outputs) == 12  # the processes ran 12 trials between them
    folders = [p for p in (tmp_path / "sweeps" / "shared-folder").iterdir() if p.is_dir()]
    assert len(folders) == 12 and all((p / "ran").is_file() for p in folders)
    sweep = sweep_study.reopen(sweep_study.open_storage(url), "race", tmp_path / "sweeps" / "shared-folder")
    records = sweep_study.records(sweep)
    points = {(r.settings["optim.lr"], r.settings["data.batch_size"]) for r in records}
    assert len(records) == 12 and len(points) == 12 and {r.state for r in records} == {"complete"}
