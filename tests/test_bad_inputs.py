"""A sweep of bad inputs through the CLI: each exits with the right code and one clear line naming
the problem, never a traceback, and creates or changes no file it should not.

Each row builds its inputs inside a fresh workspace (bad_input_table.py checks it); a second
table, test_bad_inputs_hostile.py, covers hostile input and damaged run folders class by class.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Callable

import pytest
import torch

from bad_input_table import Row, Workspace, check_row, workspace  # noqa: F401 - a fixture


def _yaml_file(text: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["train", "--print-config", "-c", str(ws.file("exp.yaml", text))]


def _set(*values: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["train", "--print-config", *[a for v in values for a in ("--set", v)]]


def _with_config(model_name: str) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        state["config"]["model"]["name"] = model_name

    return change


def _unreadable_config(state: dict) -> None:
    state["config"] = {**state["config"], "optim": {"lrr": 0.1}}


def _truncated_legacy(ws: Workspace) -> Path:
    """A checkpoint in torch's pre-zip format, cut short (torch.load fails with an IndexError on it)."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3)}}, buffer, _use_new_zipfile_serialization=False)
    return ws.file("legacy.pt", buffer.getvalue()[:200])


def _download(ws: Workspace, *args: str) -> list[str]:
    return ["download", *args, "--set", f"data.root={ws.root / 'data'}"]


ROWS = [
    # ---- config files and --set
    Row("malformed YAML", _yaml_file("optim:\n  lr: [0.1\n"), 2, ("{root}/exp.yaml:", "YAML syntax error")),
    Row("bad indentation", _yaml_file("optim:\n  lr: 0.1\n    momentum: 0.9\n"), 2, ("exp.yaml:3", "YAML syntax error")),
    Row("YAML list at the top", _yaml_file("- 1\n- 2\n"), 2, ("top level must be a mapping",)),
    Row("not UTF-8", lambda ws: ["train", "--print-config", "-c", str(ws.file("bin.yaml", b"\xff\xfe\x00bad"))], 2,
        ("cannot read config file", "bin.yaml")),
    Row("unknown section", _yaml_file("optimizer:\n  lr: 0.1\n"), 2, ("optimizer: unknown key", "did you mean optim?")),
    Row("unknown key", _set("train.epoch=3"), 2, ("train.epoch: unknown key", "did you mean train.epochs?")),
    Row("wrong type: integer", _set("data.batch_size=lots"), 2, ("data.batch_size", "valid integer", "'lots'")),
    Row("wrong type: boolean", _set("train.deterministic=maybe"), 2, ("train.deterministic", "valid boolean")),
    Row("wrong type: list item", _set("schedule.milestones=[1, x]"), 2, ("schedule.milestones.1", "valid number")),
    Row("section given a value", _set("optim=0.1"), 2, ("optim",)),
    Row("negative batch size", _set("data.batch_size=-1"), 2, ("data.batch_size", "greater than or equal to 1", "-1")),
    Row("zero eval batch size", _set("data.eval_batch_size=0"), 2, ("data.eval_batch_size", "greater than or equal to 1")),
    Row("zero epochs", _set("train.epochs=0"), 2, ("train.epochs", "greater than or equal to 1")),
    Row("negative learning rate", _set("optim.lr=-0.1"), 2, ("optim.lr", "greater than 0")),
    Row("probability above 1", _set("augment.flip.probability=1.5"), 2, ("augment.flip.probability", "less than or equal to 1")),
    Row("negative probability", _set("augment.cutout.probability=-0.1"), 2, ("augment.cutout.probability", "greater than or equal to 0")),
    Row("validation fraction of 1", _set("data.val_fraction=1"), 2, ("data.val_fraction", "less than 1")),
    Row("beta out of range", _set("optim.betas=[0.9, 1.5]"), 2, ("optim.betas", "each beta must be in [0, 1)")),
    Row("two kinds of clipping", _set("train.grad_clip_norm=1", "train.grad_clip_value=1"), 2, ("train", "not both")),
    Row("LR sweep backwards", _set("lr_find.start_lr=1", "lr_find.end_lr=0.1"), 2, ("end_lr must be greater than start_lr",)),
    Row("unknown model", _set("model.name=resnet101"), 2, ("model.name", "'resnet101' is not valid", "resnet9", "resnet50")),
    Row("unknown optimizer", _set("optim.name=lamb"), 2, ("optim.name", "'lamb'", "sgd, adam, adamw, rmsprop")),
    Row("unknown schedule", _set("schedule.name=step"), 2, ("schedule.name", "'step'", "onecycle", "multistep")),
    Row("unknown dataset", lambda ws: _download(ws, "--dataset", "cifar1000"), 2, ("data.dataset", "cifar10, cifar100")),
    Row("md5 that is not hex", lambda ws: _download(ws, "--md5", "xyz"), 2, ("data.md5", "'xyz'")),
    Row("run name escaping its folder", _set("run.name=../escape"), 2, ("run.name", "should match pattern", "'../escape'")),
    Row("pretrained weights on an MLP", _yaml_file("model:\n  name: mlp\n  pretrained: w.pth\n"), 2,
        ("model.pretrained", "resnet18")),
    Row("schedule peak after the last epoch", lambda ws: ws.train("schedule.peak_epoch=30"), 2,
        ("schedule.peak_epoch: 30.0 must be less than train.epochs (2)",)),
    Row("config file missing", lambda ws: ["train", "--print-config", "-c", str(ws.root / "nope.yaml")], 2,
        ("config file not found: {root}/nope.yaml", "default")),
    Row("config path is a folder", lambda ws: ["train", "--print-config", "-c", str(ws.root)], 2, ("config file not found",)),
    Row("YAML value that does not convert", _yaml_file("optim:\n  lr: !!float fast\n"), 2,
        ("{root}/exp.yaml: a YAML value cannot be converted", "'fast'", "hint: quote the value or drop its !! tag")),
    # ---- --set syntax
    Row("--set value that does not convert", _set("optim.lr=!!float fast"), 2, ("--set optim.lr: value '!!float fast' is not valid YAML",)),
    Row("--set key with a control character", _set("optim.l\x1br=1"), 2, ("'optim.l\\x1br': unknown key", "did you mean optim.lr?")),
    Row("--set without =", _set("optim.lr"), 2, ("--set 'optim.lr'", "expected KEY=VALUE")),
    Row("--set with an empty key", _set("=3"), 2, ("expected KEY=VALUE",)),
    Row("--set with an empty part", _set("optim..lr=3"), 2, ("empty part in the dotted key",)),
    Row("--set into a value", _set("optim.lr.x=3"), 2, ("optim.lr is a value, not a section",)),
    Row("--set with broken YAML", _set("schedule.milestones=[1, 2"), 2, ("schedule.milestones", "not valid YAML")),
    # ---- the command line itself
    Row("unknown subcommand", lambda ws: ["trian"], 2, ("no such command 'trian'", "Did you mean 'train'?")),
    Row("missing argument", lambda ws: ["evaluate"], 2, ("missing argument 'TARGET'",)),
    Row("unknown option", lambda ws: ["train", "--epochs", "3"], 2, ("no such option: --epochs",)),
    # ---- run folders and checkpoints
    Row("missing run folder", lambda ws: ["evaluate", str(ws.root / "runs" / "nope")], 2,
        ("no such run folder or checkpoint: {root}/runs/nope",)),
    Row("run folder without checkpoints", lambda ws: ["evaluate", str(ws.file("empty/config.yaml", "").parent)], 2,
        ("{root}/empty holds no checkpoint",)),
    Row("--resume of a folder with no checkpoint", lambda ws: ["train", "--resume", str(ws.file("fresh/config.yaml", "").parent)], 2,
        ("cannot resume {root}/fresh: it has no checkpoint yet",)),
    Row("--resume of a folder that is not a run", lambda ws: ["train", "--resume", str(ws.root)], 2,
        ("cannot resume {root}: no config.yaml there",)),
    Row("--resume with --set", lambda ws: ["train", "--resume", str(ws.run_copy()), "--set", "optim.lr=1"], 2,
        ("--resume continues a run with its own config",)),
    Row("--resume with --lr-from", lambda ws: ["train", "--resume", str(ws.run_copy()), "--lr-from", str(ws.root / "x.json")], 2,
        ("--resume continues a run with its own config", "--lr-from")),
    Row("checkpoint of another model", lambda ws: ["evaluate", str(ws.checkpoint("other.pt", _with_config("resnet9"))), "--quiet"], 1,
        ("{root}/other.pt does not match model resnet9 with 10 classes", "hint: evaluate it with the config it was trained with")),
    Row("checkpoint naming a standard-library model", lambda ws: ["evaluate", str(ws.checkpoint("os.pt", _with_config("os:system")))], 1,
        ("{root}/os.pt holds a config this cifar cannot read", "'os:system' names Python's standard library")),
    Row("checkpoint with an unreadable config", lambda ws: ["evaluate", str(ws.checkpoint("old.pt", _unreadable_config))], 1,
        ("{root}/old.pt holds a config this cifar cannot read", "optim.lrr")),
    Row("a tensor instead of a checkpoint", lambda ws: ["evaluate", str(ws.checkpoint("t.pt", lambda s: torch.zeros(3)))], 1,
        ("{root}/t.pt is not a cifar checkpoint (missing format_version, model, epoch, config)",)),
    Row("a text file named .pt", lambda ws: ["evaluate", str(ws.file("notes.pt", "not a checkpoint\n"))], 1,
        ("checkpoint {root}/notes.pt is damaged or truncated",)),
    Row("a truncated legacy-format checkpoint", lambda ws: ["evaluate", str(_truncated_legacy(ws))], 1,
        ("checkpoint {root}/legacy.pt is damaged or truncated",)),
    Row("a plain pickle named .pt", lambda ws: ["evaluate", str(ws.file("plain.pt", pickle.dumps({"model": 1}, protocol=2)))], 1,
        ("checkpoint {root}/plain.pt is damaged or truncated",)),
    Row("--ema without EMA weights", lambda ws: ["evaluate", str(ws.run_copy()), "--ema"], 2,
        ("has no EMA weights", "train.ema_decay")),
    Row("changing what was trained", lambda ws: ["evaluate", str(ws.run_copy()), "--set", "model.name=resnet9"], 2,
        ("--set model.name: cannot change a trained run's setting here",)),
    Row("--lr-from a missing file", lambda ws: ws.train(extra=("--lr-from", str(ws.root / "lr_find.json"))), 2,
        ("--lr-from {root}/lr_find.json: no such file",)),
    Row("--lr-from a file that is not JSON", lambda ws: ws.train(extra=("--lr-from", str(ws.file("lr.json", "{not json")))), 2,
        ("--lr-from {root}/lr.json: not a readable JSON file",)),
    Row("--lr-from JSON without a suggestion", lambda ws: ws.train(extra=("--lr-from", str(ws.file("lr.json", json.dumps({"chosen": None}))))),
        2, ("--lr-from {root}/lr.json: holds no chosen LR suggestion",)),
    # ---- data
    Row("missing data root and missing source", lambda ws: ws.train(f"data.root={ws.root / 'no-data'}", f"data.source={ws.root / 'gone.tar.gz'}"),
        2, ("source archive not found: {root}/gone.tar.gz",)),
    Row("download from a missing file", lambda ws: _download(ws, "--source", str(ws.root / "gone.tar.gz")), 2,
        ("source archive not found: {root}/gone.tar.gz",)),
    Row("unsupported URL scheme", lambda ws: _download(ws, "--source", "gopher://example.org/c.tar.gz"), 2,
        ("unsupported URL scheme 'gopher'",)),
    Row("archive with the wrong md5", lambda ws: _download(ws, "--source", str(ws.cifar10.path), "--md5", "ab" * 16), 1,
        ("failed its checksum", f"expected {'ab' * 16}", "hint: if you trust this file"), ("data",)),
    Row("CIFAR-100 archive as CIFAR-10", lambda ws: _download(ws, "--dataset", "cifar10", "--source", str(ws.cifar100.path),
                                                              "--md5", ws.cifar100.md5), 1,
        ("has no file 'cifar-10-batches-py/batches.meta'", "check --dataset"), ("data",)),
    Row("CIFAR-10 archive as CIFAR-100", lambda ws: _download(ws, "--dataset", "cifar100", "--source", str(ws.cifar10.path),
                                                              "--md5", ws.cifar10.md5), 1,
        ("has no file 'cifar-100-python/meta'", "check --dataset"), ("data",)),
    Row("not an archive at all", lambda ws: _download(ws, "--source", str(ws.file("junk.tar.gz", b"junk" * 100)), "--no-verify"), 1,
        ("cannot open archive {root}/data/cifar-10-python.tar.gz",), ("data",)),
]  # fmt: skip


def test_the_sweep_tries_at_least_thirty_bad_inputs() -> None:
    assert len(ROWS) >= 30
    assert len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input_is_one_clear_line_and_changes_nothing(row: Row, workspace: Workspace) -> None:
    check_row(row, workspace)
