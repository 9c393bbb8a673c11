"""Hostile and damaged input, class by class: each row exits with the right code and one clear line,
and creates or changes nothing (bad_input_table.check_row).

The classes: values that would pass a loose schema and fail later (non-finite floats, huge
ints, YAML nesting and aliases), text that is markup or escape codes, run folders whose files
were edited, truncated or swapped, a hostile environment (files where folders should be,
malformed URLs), archives built to exhaust memory, and a run folder another process holds.
Most rows stop before any training.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from bad_input_table import Row, Workspace, alias_bomb, check_row, nested_yaml, workspace  # noqa: F401 - a fixture
from cifarcli import runs
from cifarcli.cli import app
from conftest import py2_pickle, write_tar_gz
from run_fixtures import copy_run

BATCH = "cifar-10-batches-py/data_batch_1"


# --------------------------------------------------------------------------- builders


def _train(*sets: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: ws.train(*sets)


def _lr_find(*sets: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["lr-find", "-c", "smoke", "--quiet", *[a for s in (f"data.root={ws.data_root}", *sets) for a in ("--set", s)]]


def _yaml(text: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["train", "--print-config", "-c", str(ws.file("exp.yaml", text))]


def _edited_config(change: Callable[[dict], None]) -> Callable[[Workspace], list[str]]:
    """`train --resume` of a copy of the smoke run whose config.yaml was edited by `change`."""

    def args(ws: Workspace) -> list[str]:
        run = ws.run_copy()
        tree = yaml.safe_load((run / "config.yaml").read_text())
        change(tree)
        (run / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
        return ["train", "--resume", str(run), "--quiet"]

    return args


def _set_key(dotted: str, value: Any) -> Callable[[dict], None]:
    def change(tree: dict) -> None:
        *sections, key = dotted.split(".")
        node = tree
        for part in sections:
            node = node[part]
        node[key] = value

    return change


def _damaged_last(change: Callable[[dict], None]) -> Callable[[Workspace], list[str]]:
    """`train --resume` of a copy of the smoke run whose last.pt was changed by `change`, after
    marking it stopped mid-epoch (a finished run resumes as complete, reading nothing more)."""

    def args(ws: Workspace) -> list[str]:
        run = ws.run_copy()
        last = run / "checkpoints" / "last.pt"
        state = torch.load(last, weights_only=True)
        state["batch_in_epoch"] = 2
        change(state)
        torch.save(state, last)
        return ["train", "--resume", str(run), "--quiet"]

    return args


def _drop(key: str) -> Callable[[dict], None]:
    return lambda state: state.pop(key)


def _put(key: str, value: Any) -> Callable[[dict], None]:
    return lambda state: state.__setitem__(key, value)


def _evaluate_changed(change: Callable[[dict], None]) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["evaluate", str(ws.checkpoint("changed.pt", lambda state: (change(state), None)[1])), "--quiet"]


def _report_with(name: str, write: Callable[[Path], None]) -> Callable[[Workspace], list[str]]:
    """`report` of a copy of the smoke run whose file `name` was replaced by `write(path)`."""

    def args(ws: Workspace) -> list[str]:
        run = ws.run_copy()
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        write(path)
        return ["report", str(run), "--quiet"]

    return args


def _text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


def _json_edit(change: Callable[[Any], Any]) -> Callable[[Workspace], list[str]]:
    def args(ws: Workspace) -> list[str]:
        run = ws.run_copy()
        path = run / "evaluations" / "best-test" / "evaluation.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
        return ["report", str(run), "--quiet"]

    return args


def _without(key: str) -> Callable[[dict], dict]:
    return lambda summary: {k: v for k, v in summary.items() if k != key}


def _predictions_edit(row: int, column: int, value: str) -> Callable[[Workspace], list[str]]:
    def args(ws: Workspace) -> list[str]:
        run = ws.run_copy()
        path = run / "evaluations" / "best-test" / "predictions.csv"
        lines = path.read_text().splitlines()
        cells = lines[row + 1].split(",")
        cells[column] = value
        lines[row + 1] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
        return ["report", str(run), "--quiet"]

    return args


def _archive_with(ws: Workspace, member: str, batch: dict) -> Path:
    members = dict(ws.cifar10.members)
    members[member] = py2_pickle(batch)
    path = ws.root / "hostile.tar.gz"
    write_tar_gz(path, members, "cifar-10-batches-py")
    return path


def _download_batch(make_batch: Callable[[], dict]) -> Callable[[Workspace], list[str]]:
    """`download` of the tiny archive with data_batch_1 replaced by `make_batch()` (no md5 check)."""

    def args(ws: Workspace) -> list[str]:
        archive = _archive_with(ws, BATCH, make_batch())
        return ["download", "--source", str(archive), "--no-verify", "--set", f"data.root={ws.root / 'data'}"]

    return args


def _shared_labels(levels: int) -> dict:
    value: list = [0] * 100
    for _ in range(levels - 1):
        value = [value] * 100
    return {b"data": np.zeros((40, 3072), np.uint8), b"labels": value}


def _nested_labels() -> dict:
    return {b"data": np.zeros((40, 3072), np.uint8), b"labels": [[1]] * 40}


def _self_containing() -> dict:
    labels: list = [1]
    labels.append(labels)
    return {b"data": np.zeros((40, 3072), np.uint8), b"labels": labels}


def _visualize(out: Callable[[Workspace], str]) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["visualize-filters", str(ws.smoke_run), "--out", out(ws), "--quiet"]


def _held(ws: Workspace):
    return runs.locked(ws.copied_run)


ROWS = [
    # ---- non-finite floats: refused at validation, before any data is loaded or folder made
    Row("mixup alpha of infinity", _train("augment.mix.mixup_alpha=.inf"), 2, ("augment.mix.mixup_alpha: input should be a finite number",)),
    Row("warm-up of infinite epochs", _train("schedule.name=cosine", "schedule.warmup_epochs=.inf"), 2,
        ("schedule.warmup_epochs: input should be a finite number",)),
    Row("a NaN milestone", _train("schedule.milestones=[.nan]"), 2, ("schedule.milestones.0: input should be a finite number",)),
    Row("infinite download timeout", _train("data.download_timeout_s=.inf"), 2, ("data.download_timeout_s", "finite number")),
    Row("lr-find to an infinite LR", _lr_find("lr_find.end_lr=.inf"), 2, ("lr_find.end_lr: input should be a finite number",)),
    Row("NaN beta in a YAML file", _yaml("optim:\n  betas: [.nan, 0.999]\n"), 2, ("optim.betas.0: input should be a finite number",)),
    Row("negative infinite clip norm", _train("train.grad_clip_norm=-.inf"), 2, ("train.grad_clip_norm", "finite number")),
    # ---- integers beyond what torch, numpy or the OS take
    Row("seed of 2**70", _train(f"train.seed={2**70}"), 2, ("train.seed: input should be less than or equal to 9223372036854775807",)),
    Row("split seed of 2**64", _train(f"data.split_seed={2**64}"), 2, ("data.split_seed", "less than or equal to")),
    Row("mixing off at epoch 10**30", _train(f"augment.mix.off_epoch={10**30}"), 2, ("augment.mix.off_epoch", "less than or equal to 10000")),
    Row("restart multiplier of a million", _train("schedule.restart_mult=1000000"), 2, ("schedule.restart_mult", "less than or equal to 100")),
    Row("an image index of 2**40", _train(f"visualize.image_indices=[{2**40}]"), 2, ("visualize.image_indices.0", "less than or equal to")),
    Row("a digit string too long to convert", _train("train.seed=" + "9" * 5000), 2, ("train.seed",)),
    # ---- YAML nesting, aliases and keys, in files and --set
    Row("YAML nested 100,000 levels", _yaml("optim:\n  betas: " + nested_yaml(100_000) + "\n"), 2,
        ("{root}/exp.yaml:2: it nests more than 32 levels deep",)),
    Row("--set nested 100,000 levels", _train("optim.betas=" + nested_yaml(100_000)), 2,
        ("--set optim.betas: value", "characters) is not valid YAML (it nests more than 32 levels deep)")),
    Row("a billion values from aliases", _yaml(alias_bomb(9)), 2, ("expands to more than 10000 values",)),
    Row("an alias inside itself", _yaml("schedule:\n  milestones: &m [1, *m]\n"), 2, ("alias refers to a list or mapping that contains it",)),
    Row("a list as a key", _yaml("[1, 2]: 3\n"), 2, ("{root}/exp.yaml:1: a list or mapping is used as a key",)),
    Row("a mapping as a key", _yaml("optim:\n  {lr: 1}: 2\n"), 2, ("a list or mapping is used as a key",)),
    Row("--set key of 20 parts", _train("a." * 19 + "b=1"), 2, ("more than 8 parts in the key",)),
    Row("a 2 MB config file", _yaml("# " + "x" * (2 << 20) + "\n"), 2, ("too large for a config file",)),
    # ---- text from the user, shown as written
    Row("a path holding [old]", lambda ws: ["evaluate", str(ws.root / "[old]" / "run")], 2,
        ("no such run folder or checkpoint: {root}/[old]/run",)),
    Row("a path holding an escape sequence", lambda ws: ["evaluate", str(ws.root / "a\x1b[31mb")], 2, ("{root}/a\\x1b[31mb",)),
    Row("a config value holding markup", _train('model.name="[/]"'), 2, ("model.name: '[/]' is not valid",)),
    # ---- --resume: the checkpoint is the truth
    Row("--resume after config.yaml changed the model", _edited_config(_set_key("model.name", "resnet9")), 1,
        ("config.yaml differs from the config saved in last.pt (model.name)", "undo the edit")),
    Row("--resume after config.yaml changed the batch size", _edited_config(_set_key("data.batch_size", 8)), 1,
        ("differs from the config saved in last.pt (data.batch_size)",)),
    Row("--resume after config.yaml changed the optimizer", _edited_config(_set_key("optim.name", "sgd")), 1,
        ("differs from the config saved in last.pt (optim.name)",)),
    Row("--resume after config.yaml lost its validity", _edited_config(_set_key("optim.lr", "fast")), 1,
        ("config.yaml does not validate (optim.lr: input should be a valid number",)),
    Row("--resume of a checkpoint without optimizer state", _damaged_last(_drop("optimizer")), 1,
        ("last.pt is damaged: 'optimizer' is missing",)),
    Row("--resume of a checkpoint with a text epoch", _damaged_last(_put("epoch", "2")), 1,
        ("last.pt is damaged: 'epoch' is not valid (found a str)",)),
    Row("--resume of a checkpoint without RNG state", _damaged_last(_put("rng", {})), 1, ("last.pt is damaged: 'rng' is not valid",)),
    Row("--resume of a checkpoint whose optimizer lost a group", _damaged_last(
        lambda s: s["optimizer"].__setitem__("param_groups", s["optimizer"]["param_groups"] * 2)), 1,
        ("last.pt does not fit the model and optimizer of its own config",)),
    Row("--resume of a checkpoint with a foreign scheduler state", _damaged_last(_put("scheduler", {"gamma": "x"})), 1,
        ("scheduler state is of another kind",)),
    Row("--resume of a checkpoint whose history lacks columns", _damaged_last(_put("history", [{"epoch": 1}])), 1,
        ("last.pt does not fit the model and optimizer of its own config ('train_loss')",)),
    Row("--resume of a checkpoint stopped past the end of an epoch", _damaged_last(_put("batch_in_epoch", 999)), 1,
        ("last.pt is damaged: it stopped after step 999 of an epoch of 5 steps",)),
    Row("--resume with tensorboard/ as a file", lambda ws: ["train", "--resume", str(_tensorboard_file(ws)), "--quiet"], 1,
        ("tensorboard: File exists", "tensorboard is a file, not a folder; move it away, or set run.tensorboard: false")),
    # ---- checkpoints read by evaluate
    Row("a checkpoint without num_classes", _evaluate_changed(_drop("num_classes")), 1, ("changed.pt is damaged: 'num_classes' is missing",)),
    Row("a checkpoint with a text epoch", _evaluate_changed(_put("epoch", "one")), 1, ("changed.pt is damaged: 'epoch' is not valid",)),
    Row("a checkpoint with model weights that are no tensors", _evaluate_changed(_put("model", {"w": [1, 2]})), 1,
        ("'model' is not valid",)),
    Row("a checkpoint naming 3 classes of 10", _evaluate_changed(_put("class_names", ["a", "b", "c"])), 1,
        ("it names 3 classes but has num_classes 10",)),
    Row("a checkpoint of 7 classes on a 10-class data set", _evaluate_changed(
        lambda s: (s.__setitem__("num_classes", 7), s.__setitem__("class_names", list("abcdefg")))), 1,
        ("changed.pt was trained on 7 classes", "has 10")),
    # ---- report reads the run folder back
    Row("evaluation.json that is a list", _json_edit(lambda summary: [summary]), 1,
        ("evaluation.json: it is damaged or not from `cifar evaluate`: it holds a list", "re-scores the best checkpoint")),
    Row("evaluation.json without top1", _json_edit(_without("top1")), 1, ("'top1' is missing",)),
    Row("evaluation.json with an unknown split", _json_edit(lambda s: {**s, "split": "train"}), 1, ("'split' is not valid",)),
    Row("predictions.csv with a negative index", _predictions_edit(0, 0, "-5"), 1, ("predictions.csv: an image index is outside 0..99",)),
    Row("predictions.csv with an unknown class", _predictions_edit(3, 3, "12"), 1, ("predictions.csv: a class is outside 0..9",)),
    Row("predictions.csv with a probability of 7", _predictions_edit(1, 5, "7"), 1, ("a probability is outside [0, 1]",)),
    Row("predictions.csv with a negative loss", _predictions_edit(2, 7, "-1"), 1, ("predictions.csv: a loss is negative or not a number",)),
    Row("predictions.csv cut short", _report_with("evaluations/best-test/predictions.csv", _text("index,true,predicted,confidence,true_probability\n0,1,1,0.5,0.5\n")), 1,
        ("predictions.csv: it has 1 rows, evaluation.json counts 100 images",)),
    Row("confusion_matrix.csv with other counts", _report_with("evaluations/best-test/confusion_matrix.csv", _text(
        "true\\predicted," + ",".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]) + "\n"
        + "".join(f"{n}," + ",".join(["2"] * 10) + "\n" for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]))), 1,
        ("confusion_matrix.csv: its counts are not 100 images",)),
    Row("metrics.csv without its columns", _report_with("metrics.csv", _text("a,b\n1,2\n")), 1,
        ("metrics.csv: it lacks the column(s) epoch", "written by `cifar train`")),
    Row("run_info.json without steps_per_epoch", _report_with("run_info.json", _text("{}")), 1, ("run_info.json: it has no valid steps_per_epoch",)),
    Row("report/ existing as a file", _report_with("report", _text("not a folder")), 1,
        ("report: File exists", "report is a file, not a folder; move it away")),
    # ---- the environment
    Row("data root that is a file", lambda ws: ws.train(f"data.root={ws.file('afile', 'x')}"), 1,
        ("cannot create {root}/afile: File exists", "{root}/afile is a file, not a folder; move it away, or set data.root")),
    Row("data root below a file", lambda ws: ws.train(f"data.root={ws.file('afile', 'x')}/sub"), 1,
        ("{root}/afile is a file, not a folder",)),
    Row("data root below /dev/null", _train("data.root=/dev/null/data"), 1, ("/dev/null is a file, not a folder",)),
    Row("data root with a 300-character name", lambda ws: ws.train(f"data.root={ws.root / ('d' * 300)}"), 2,
        ("data.root: the name 'ddd", "is longer than 255 bytes, the file system limit")),
    Row("run root that is a file", lambda ws: ws.train(f"run.root={ws.file('runs', 'x')}"), 1,
        ("{root}/runs is a file, not a folder; move it away, or set run.root to another folder",)),
    Row("--out that is a file", _visualize(lambda ws: str(ws.file("out.png", "x"))), 1, ("{root}/out.png is a file, not a folder",)),
    Row("--out /dev/null", _visualize(lambda ws: "/dev/null"), 1, ("/dev/null is a file, not a folder",)),
    Row("a path argument too long for the file system", lambda ws: ["evaluate", str(ws.root / ("x" * 300))], 1,
        ("File name too long", "longer than the file system allows")),
    Row("--source with an unclosed IPv6 host", lambda ws: ["download", "--source", "http://[::1", "--set", f"data.root={ws.root / 'd'}"], 2,
        ("source 'http://[::1': not a valid URL (Invalid IPv6 URL)",)),
    Row("--source http://", lambda ws: ["download", "--source", "http://", "--set", f"data.root={ws.root / 'd'}"], 2,
        ("source 'http://': the URL names no host",)),
    Row("--source with a bad port", lambda ws: ["download", "--source", "http://h:99999/a", "--set", f"data.root={ws.root / 'd'}"], 2,
        ("not a valid URL (Port out of range",)),
    Row("--source with a space", lambda ws: ["download", "--source", "http://h/a b", "--set", f"data.root={ws.root / 'd'}"], 2,
        ("a URL cannot hold spaces or control characters",)),
    # ---- archives built to exhaust memory
    Row("labels from shared references (10**10 when expanded)", _download_batch(lambda: _shared_labels(5)), 1,
        ("data_batch_1: refusing the batch file: its lists expand to more than 1000000 elements",), ("data",)),
    Row("labels as a list of lists", _download_batch(_nested_labels), 1, ("data_batch_1: b'labels' must be a list of 40 integers",), ("data",)),
    Row("labels that contain themselves", _download_batch(_self_containing), 1, ("a list contains itself",), ("data",)),
    Row("lists nested 50 levels", _download_batch(lambda: {b"labels": _deep_list(50)}), 1, ("lists nest more than 8 levels deep",), ("data",)),
    # ---- a run folder another process holds
    Row("--resume of a run in use", lambda ws: ["train", "--resume", str(ws.run_copy()), "--quiet"], 1,
        ("run folder {root}/copied/", f"is in use by pid {os.getpid()}", "hint: wait for that command to finish"), hold=_held),
    Row("evaluate of a run in use", lambda ws: ["evaluate", str(ws.run_copy()), "--quiet"], 1, ("is in use by pid",), hold=_held),
    Row("report of a run in use", lambda ws: ["report", str(ws.run_copy()), "--quiet"], 1, ("is in use by pid",), hold=_held),
]  # fmt: skip


def _tensorboard_file(ws: Workspace) -> Path:
    run = ws.run_copy()
    shutil.rmtree(run / "tensorboard")
    (run / "tensorboard").write_text("not a folder")
    shutil.rmtree(run / "evaluations")  # killed after its last epoch, before scoring: --resume has work to do
    return run


def _deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_every_class_has_several_cases() -> None:
    assert len(ROWS) >= 60 and len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_input_is_one_clear_line_and_changes_nothing(row: Row, workspace: Workspace) -> None:
    check_row(row, workspace)


# --------------------------------------------------------------------------- beyond one process


def test_a_second_process_is_told_which_process_holds_the_run(smoke_run: Path, tmp_path: Path) -> None:
    """Another process holds the run folder (as a running `cifar train --resume` would): --resume stops at once."""
    run = copy_run(smoke_run, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from cifarcli import runs
            with runs.locked(Path({str(run)!r})):
                print("held", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        result = CliRunner().invoke(app, ["train", "--resume", str(run), "--quiet"])
        assert result.exit_code == 1, result.output
        assert f"error: run folder {run} is in use by pid {holder.pid} (" in result.stderr
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    finally:
        holder.communicate("", timeout=60)
    result = CliRunner().invoke(app, ["evaluate", str(run), "--quiet"])  # released: it works again
    assert result.exit_code == 0, result.output


def test_a_file_size_limit_during_evaluate_is_one_line_and_keeps_the_old_files(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    done = subprocess.run([sys.executable, "-m", "cifarcli", "evaluate", str(run), "--quiet"], capture_output=True, text=True,
                          preexec_fn=limit, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith(f"error: cannot write {run}/") and lines[-2].endswith(": File too large"), done.stderr
    assert lines[-1] == "hint: the file is larger than this process may write (see `ulimit -f`); raise that limit"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_cifar_debug_still_shows_the_traceback_of_a_file_system_fault(tmp_path: Path) -> None:
    target = str(tmp_path / ("x" * 300))
    assert CliRunner().invoke(app, ["evaluate", target]).exit_code == 1
    result = CliRunner().invoke(app, ["evaluate", target], env={"CIFAR_DEBUG": "1"})
    assert isinstance(result.exception, OSError) and result.exception.errno == 36  # ENAMETOOLONG, raised as is
