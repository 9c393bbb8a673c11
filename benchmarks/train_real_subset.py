"""Train a recipe on the real CIFAR-10 subset (../shared/data) and print its test accuracy and time.

This is the real-data check: it proves training learns real images, end to end through the
CLI (download from a local archive with its own md5, train, evaluate on the real test images).

    python benchmarks/train_real_subset.py                      # default recipe, 24 epochs
    python benchmarks/train_real_subset.py --epochs 8 --device cpu
    python benchmarks/train_real_subset.py --config smoke --epochs 10

With fewer epochs than the recipe's, the one-cycle peak keeps its share of the run (5/24).
`precision_accuracy.py` calls `train_on_subset` for each seed and precision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBSET_MD5 = "c1a4f60db235f7b139bf987610f4936c"
DEFAULT_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset-python.tar.gz"


@dataclass(frozen=True)
class SubsetRun:
    """One finished training run on the subset: its test evaluation, run_info.json, wall time and folder."""

    summary: dict[str, Any]
    info: dict[str, Any]
    seconds: float
    run_dir: Path


def add_subset_arguments(parser: argparse.ArgumentParser) -> None:
    """--archive, --seeds, --workdir, --json and --set, as every real-subset benchmark takes them."""
    parser.add_argument("--archive", type=Path, default=Path(os.environ.get("CIFAR_SUBSET_ARCHIVE", DEFAULT_SUBSET)))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values")
    parser.add_argument("--workdir", type=Path, help="where data and runs go (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def parse_subset_arguments(parser: argparse.ArgumentParser, prefix: str) -> tuple[argparse.Namespace, list[int], Path]:
    """The parsed arguments, the seeds and the work folder; exits 2 when the archive is missing."""
    args = parser.parse_args()
    if not args.archive.is_file():
        parser.exit(2, f"error: real subset not found at {args.archive} (pass --archive or set CIFAR_SUBSET_ARCHIVE)\n")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return args, seeds, args.workdir or Path(tempfile.mkdtemp(prefix=prefix))


def subset_settings(archive: Path, workdir: Path, runs_root: Path) -> list[str]:
    """The --set values that point `cifar train` at the subset archive (prepared under `workdir/data`) and `runs_root`."""
    return [f"data.root={workdir / 'data'}", f"data.source={archive}", f"data.md5={SUBSET_MD5}", f"run.root={runs_root}"]


def train_on_subset(archive: Path, workdir: Path, config: str, epochs: int, device: str, overrides: list[str]) -> SubsetRun:
    """Train `config` through the CLI on the subset (prepared under `workdir/data` on first use)."""
    from typer.testing import CliRunner

    from cifarcli.cli import app

    runs_root = workdir / "runs"
    sets = [
        *subset_settings(archive, workdir, runs_root), f"data.device={device}", f"train.epochs={epochs}",
        "schedule.peak_epoch=null", f"schedule.peak_fraction={5 / 24}", *overrides,
    ]  # fmt: skip
    command = ["train", "-c", config, "--quiet"] + [token for s in sets for token in ("--set", s)]
    before = set(runs_root.iterdir()) if runs_root.is_dir() else set()
    started = time.perf_counter()
    result = CliRunner().invoke(app, command)
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise RuntimeError(f"cifar train failed ({result.exit_code}): {result.output.strip()}")
    (run_dir,) = set(runs_root.iterdir()) - before
    summary = json.loads(next((run_dir / "evaluations").glob("best-test*/evaluation.json")).read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    return SubsetRun(summary, info, seconds, run_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=Path(os.environ.get("CIFAR_SUBSET_ARCHIVE", DEFAULT_SUBSET)))
    parser.add_argument("--config", default="default", help="built-in config name or YAML path")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workdir", type=Path, default=None, help="where data and runs go (default: a temp folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not args.archive.is_file():
        print(f"error: real subset not found at {args.archive} (set --archive or CIFAR_SUBSET_ARCHIVE)", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cifar-real-"))
    try:
        run = train_on_subset(args.archive, workdir, args.config, args.epochs, args.device, args.overrides)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    info, summary = run.info, run.summary
    print(f"config            {args.config} ({args.epochs} epochs) on {info['device']}, {info['precision']}")
    print(f"train/val/test    {info['train_images']} / {info['val_images']} / {info['test_images']} real images")
    print(f"test top-1        {summary['top1']:.2%}")
    print(f"test top-5        {summary['top5']:.2%}")
    print(f"wall time         {run.seconds:.0f} s")
    print(f"run folder        {run.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
