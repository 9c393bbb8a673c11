"""Finding and reusing runs: `cifar runs`, `latest` and name prefixes, resuming a finished run
(nothing changes) or extending it, and evaluations that never replace each other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cifarcli import runs
from cifarcli.cli import app
from cifarcli.config import load_saved_config
from cifarcli.engine.checkpoint import load_checkpoint
from cifarcli.engine.schedules import lr_trace
from cifarcli.fileio import read_csv
from run_fixtures import copy_run

runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def named_copy(run_dir: Path, root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(run_dir, target)
    return target


# --------------------------------------------------------------------------- resume and extend


def test_resume_of_a_finished_run_says_so_and_changes_no_file(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    before = snapshot(run)
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert f"{run} is already complete (2 of 2 epochs); nothing was changed" in result.output
    assert "--extend-schedule stretch|continue" in result.output and "resuming" not in result.output
    assert snapshot(run) == before


def test_extending_a_run_needs_the_schedule_choice(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    before = snapshot(run)
    result = cli("train", "--resume", run, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert result.output.startswith("error: --extend-schedule is needed to extend a run from 2 to 3 epochs: stretch (")
    assert "continue (" in result.output and "Traceback" not in result.output
    result = cli("train", "--resume", run, "--set", "train.epochs=3", "--extend-schedule", "stretchh")
    assert result.exit_code == 2 and "'stretchh' is not one of them" in result.output
    result = cli("train", "--resume", run, "--set", "train.epochs=1", "--extend-schedule", "stretch")
    assert result.exit_code == 2 and "a resumed run is only extended" in result.output
    result = cli("train", "--resume", run, "--extend-schedule", "stretch")
    assert result.exit_code == 2 and "--extend-schedule applies only when --resume extends a run" in result.output
    assert snapshot(run) == before


def _lrs(run: Path) -> list[float]:
    return [float(row["lr"]) for row in read_csv(run / "metrics.csv")]


def test_extend_continue_trains_the_extra_epochs_at_the_final_lr(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    old_rows = read_csv(run / "metrics.csv")
    result = cli("train", "--resume", run, "--set", "train.epochs=3", "--extend-schedule", "continue", "--quiet")
    assert result.exit_code == 0, result.output
    rows = read_csv(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and rows[:2] == old_rows
    cfg = load_saved_config(run / "config.yaml")
    assert (cfg.train.epochs, cfg.schedule.span_epochs) == (3, 2)
    state = load_checkpoint(run / "checkpoints" / "last.pt", for_resume=True)
    assert state["config"]["schedule"]["span_epochs"] == 2 and state["global_step"] == 15
    trace = lr_trace(cfg.schedule, cfg.optim.lr, 5, 3)
    assert trace[10:] == [trace[9]] * 5  # every extra step at the schedule's last LR
    assert _lrs(run)[2] == pytest.approx(trace[9])
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    again = cli("train", "--resume", run)  # config.yaml and the checkpoint agree: it resumes as complete
    assert again.exit_code == 0 and "already complete (3 of 3 epochs)" in again.output


def test_extend_stretch_redraws_the_schedule_over_the_new_total(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    result = cli("train", "--resume", run, "--set", "train.epochs=4", "--extend-schedule", "stretch")
    assert result.exit_code == 0, result.output
    assert "extending to 4 epochs (stretch schedule)" in result.output and "resuming at epoch 3, step 1" in result.output
    cfg = load_saved_config(run / "config.yaml")
    assert (cfg.train.epochs, cfg.schedule.span_epochs) == (4, None)
    trace = lr_trace(cfg.schedule, cfg.optim.lr, 5, 4)
    # the LR after each extra epoch's last step is the stretched schedule's LR for the next step
    assert _lrs(run)[2:] == pytest.approx([trace[15], trace[19]])
    assert load_checkpoint(run / "checkpoints" / "last.pt", for_resume=True)["scheduler"]["last_epoch"] == 20


# --------------------------------------------------------------------------- cifar runs


def test_runs_lists_newest_first_with_each_status(smoke_run: Path, tmp_path: Path) -> None:
    old = named_copy(smoke_run, tmp_path, "20261120-080000-old")
    killed = named_copy(smoke_run, tmp_path, "20261121-080000-killed")
    failed = named_copy(smoke_run, tmp_path, "20261122-080000-failed")
    live = named_copy(smoke_run, tmp_path, "20261123-080000-live")
    (tmp_path / "not-a-run").mkdir()
    (old / "status.json").unlink()  # a run of an older cifar: finished because every epoch is done and scored
    (killed / "status.json").write_text(json.dumps({"status": "running"}))  # nobody holds it: it was killed
    (failed / "status.json").write_text(json.dumps({"status": "failed"}))
    (live / "status.json").write_text(json.dumps({"status": "running"}))
    with runs.locked(live):
        result = cli("runs", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "-080000-" in line]
    assert [line.split()[1] for line in lines] == [live.name, failed.name, killed.name, old.name]
    assert [line.split()[-2] for line in lines] == ["running", "failed", "interrupted", "finished"]
    summary = json.loads((smoke_run / "evaluations" / "best-test" / "evaluation.json").read_text())
    cells = [cell.strip() for cell in lines[-1].split("│")[1:-1]]
    assert cells[:5] == [old.name, "2026-11-20 08:00", "simple_cnn", "cifar10", "2 / 2"]
    assert cells[6] == f"{summary['top1']:.2%}" and cells[5].endswith("%")
    assert "not-a-run" not in result.output


def test_runs_is_listed_in_the_help_with_an_example() -> None:
    result = cli("--help")
    assert result.exit_code == 0 and "Example: cifar runs --runs-dir runs" in " ".join(result.output.replace("│", " ").split())


def test_runs_of_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = cli("runs", "--runs-dir", tmp_path / "nope")
    assert result.exit_code == 2 and result.output.startswith(f"error: no such folder: {tmp_path / 'nope'}")


# --------------------------------------------------------------------------- latest and prefixes


def test_latest_and_a_unique_prefix_name_a_run_and_an_ambiguous_one_lists_the_matches(
    smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    first = named_copy(smoke_run, root, "20261121-080000-alpha")
    second = named_copy(smoke_run, root, "20261121-090000-beta")
    monkeypatch.chdir(tmp_path)  # `latest` alone is looked up under run.root's default, runs/
    result = cli("train", "--resume", "latest")
    assert result.exit_code == 0 and f"runs/{second.name} is already complete" in result.output
    result = cli("train", "--resume", root / "20261121-08")
    assert result.exit_code == 0 and f"{first} is already complete" in result.output
    result = cli("evaluate", "latest", "--quiet", "--set", "eval.split=val")
    assert result.exit_code == 0, result.output
    assert (second / "evaluations" / "best-val" / "evaluation.json").is_file()
    assert not (first / "evaluations" / "best-val").exists()
    result = cli("report", root / "20261121")
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (f"error: {root / '20261121'} matches 2 run folders: "
                                             "20261121-090000-beta, 20261121-080000-alpha")  # fmt: skip
    result = cli("evaluate", root / "2027")
    assert result.exit_code == 2 and "no such run folder or checkpoint" in result.output


# --------------------------------------------------------------------------- report shows what was evaluated


def test_report_shows_the_most_recent_evaluation_and_rescores_nothing(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    result = cli("evaluate", run / "checkpoints" / "last.pt", "--set", "eval.tta_flip=true", "--quiet")
    assert result.exit_code == 0, result.output
    evaluations = snapshot(run / "evaluations")
    result = cli("report", run)
    assert result.exit_code == 0, result.output
    assert "scoring" not in result.output
    assert f"evaluation: {run / 'evaluations' / 'last-test-tta_flip'}" in result.output
    assert snapshot(run / "evaluations") == evaluations  # neither the TTA evaluation nor train's was replaced
    page = (run / "report" / "index.html").read_text()
    assert "last.pt (epoch 2)" in page and "flip TTA" in page

    result = cli("report", run / "checkpoints" / "best.pt", "--quiet")  # a checkpoint path, as evaluate takes
    assert result.exit_code == 0, result.output
    assert snapshot(run / "evaluations") == evaluations  # best-test was there: shown, not re-scored
    assert "best.pt (epoch" in (run / "report" / "index.html").read_text()

    result = cli("report", run, "--set", "eval.split=val", "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["best-test", "best-val", "last-test-tta_flip"]
    assert {k: v for k, v in snapshot(run / "evaluations").items() if not k.startswith("best-val")} == evaluations

    result = cli("report", run, "--ema")
    assert result.exit_code == 2 and "has no EMA weights" in result.output


def test_a_run_with_its_evaluation_at_the_top_still_reports_and_keeps_it(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path)
    for path in (run / "evaluations" / "best-test").iterdir():
        path.rename(run / path.name)
    shutil.rmtree(run / "evaluations")
    (run / "status.json").unlink()
    before = snapshot(run)
    result = cli("report", run)
    assert result.exit_code == 0, result.output
    assert "scoring" not in result.output and f"evaluation: {run}\n" in result.output
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing read was replaced or deleted
    assert not (run / "evaluations").exists()
    result = cli("train", "--resume", run)  # complete: scored at the top, as older cifars wrote it
    assert result.exit_code == 0 and "already complete" in result.output


# --------------------------------------------------------------------------- after training


def test_training_ends_with_the_next_commands(cifar10_data_root: Path, tmp_path: Path) -> None:
    result = cli("train", "-c", "smoke", "--quiet", "--set", f"data.root={cifar10_data_root}", "--set", f"run.root={tmp_path}",
                 "--set", "train.epochs=1", "--set", "train.overfit_batches=1")  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    lines = result.output.splitlines()
    assert lines[-2:] == [f"next: cifar report {run}", f"      tensorboard --logdir {run / 'tensorboard'}"]
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert yaml.safe_load((run / "config.yaml").read_text())["schedule"]["span_epochs"] is None


def test_report_ema_scores_the_ema_weights_into_their_own_folder(cifar10_data_root: Path, tmp_path: Path) -> None:
    result = cli("train", "-c", "smoke", "--quiet", "--set", f"data.root={cifar10_data_root}", "--set", f"run.root={tmp_path}",
                 "--set", "train.epochs=1", "--set", "train.overfit_batches=1", "--set", "train.ema_decay=0.9",
                 "--set", "run.tensorboard=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    trained = snapshot(run / "evaluations" / "best-test")
    result = cli("report", tmp_path / "latest", "--ema")
    assert result.exit_code == 0, result.output
    assert f"evaluation: {run / 'evaluations' / 'best-test-ema'}" in result.output
    assert json.loads((run / "evaluations" / "best-test-ema" / "evaluation.json").read_text())["ema"] is True
    assert snapshot(run / "evaluations" / "best-test") == trained
    assert "weights: <b>EMA</b>" in (run / "report" / "index.html").read_text()
