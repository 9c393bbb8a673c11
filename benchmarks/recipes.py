"""Recipes side by side on the real CIFAR-10 subset: the seeds' own loop against `cifar train`'s recipes.

One after the other on this machine, each over the given seeds:

- `seeds`: the seeds' recipe (seed 004) as its own plain PyTorch loop: ResNet-9, PIL crop (zero
  padding 4) + flip + cutout 8 in a DataLoader with 2 workers, Adam (lr 0.005, weight decay
  1e-4) under torch's OneCycleLR peaking at epoch 5 of 24 (div 100, final div 100, linear),
  batch 512, fp32, trained on all 5,085 training images, scored on the 1,017 test images.
- every other name: `cifar train -c NAME --seeds ...` with the config as shipped (its own epochs,
  its own validation split), scored by the command itself on the same test images. `NAME+KEY=VALUE`
  (repeatable: `speedrun+train.epochs=20`) adds `--set KEY=VALUE` for that recipe alone; `--set`
  applies to every cifar recipe (`--set data.val_fraction=0` trains on all images, as the seeds do).

Printed per recipe: test top-1 mean, standard deviation, min and max over the seeds; wall
time per run (the whole command: data preparation, training, validation, the final test
evaluation with the recipe's TTA) and its ratio to the seeds' wall time; the accuracy gain.
Wall times are only comparable on a quiet machine; the load average is printed with them.

    python benchmarks/recipes.py                                # seeds, default, speedrun; seeds 0,1,2
    python benchmarks/recipes.py --recipes seeds,seed004 --seeds 0,1,2
    python benchmarks/recipes.py --recipes speedrun --seeds 0,1,2 --json figures.json
    python benchmarks/recipes.py --recipes seeds,default,speedrun,speedrun+train.epochs=20 --seeds 0 \
        --set data.val_fraction=0                                # the comparison of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from reference import ReferenceTrainer, on_device, seeds_loader
from train_real_subset import SUBSET_MD5, add_subset_arguments, parse_subset_arguments, subset_settings

SEEDS_EPOCHS = 24
SEEDS_BATCH = 512
SEEDS_LR = 0.005
SEEDS_WEIGHT_DECAY = 1e-4
SEEDS_PEAK_EPOCH = 5
SEEDS_DIV = 100.0
SEEDS_WORKERS = 2


@dataclass(frozen=True)
class RecipeFigures:
    recipe: str
    accuracies: list[float]
    seconds: list[float]
    load_average: float

    def describe(self) -> dict[str, float]:
        values = self.accuracies
        return {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "min": min(values),
            "max": max(values),
            "seconds": statistics.mean(self.seconds),
        }


def load_subset(archive: Path, workdir: Path):
    """The subset's arrays, prepared (md5-checked) once under `workdir/data` by cifar's own data path."""
    from cifarcli.config import DataConfig
    from cifarcli.data.prepare import load_dataset

    return load_dataset(DataConfig(root=workdir / "data", source=str(archive), md5=SUBSET_MD5))


def train_seeds_recipe(archive: Path, workdir: Path, seed: int, epochs: int = SEEDS_EPOCHS) -> tuple[float, float]:
    """The seeds' loop, start to end; returns (test top-1, wall seconds)."""
    started = time.perf_counter()
    arrays = load_subset(archive, workdir)
    device = torch.device("cpu")
    train = seeds_loader(arrays.train_images, arrays.train_labels, SEEDS_BATCH, SEEDS_WORKERS, device)
    test = seeds_loader(arrays.test_images, arrays.test_labels, 1024, SEEDS_WORKERS, device, train=False)
    trainer = ReferenceTrainer("resnet9", num_classes=10, device=device, seed=seed)
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=SEEDS_LR, weight_decay=SEEDS_WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        trainer.optimizer, max_lr=SEEDS_LR, epochs=epochs, steps_per_epoch=len(train), pct_start=SEEDS_PEAK_EPOCH / SEEDS_EPOCHS,
        anneal_strategy="linear", div_factor=SEEDS_DIV, final_div_factor=SEEDS_DIV,
    )  # fmt: skip
    for _ in range(epochs):
        for images, targets in on_device(train, device):
            trainer.step(images, targets)
            schedule.step()
    accuracy = trainer.accuracy(test)
    return accuracy, time.perf_counter() - started


def split_recipe(recipe: str) -> tuple[str, list[str]]:
    """`NAME+KEY=VALUE+...` -> (NAME, [KEY=VALUE, ...]): a shipped config and the settings this recipe adds."""
    name, *settings = recipe.split("+")
    return name, settings


def train_cifar_recipe(archive: Path, workdir: Path, recipe: str, seeds: list[int], overrides: list[str]) -> tuple[list[float], float]:
    """`cifar train -c NAME --seeds ...` on the subset; returns each run's test top-1 and the wall seconds per run."""
    from typer.testing import CliRunner

    from cifarcli.cli import app

    config, own_settings = split_recipe(recipe)
    runs_root = workdir / "runs" / "".join(c if c.isalnum() or c in "-_." else "_" for c in recipe)
    sets = [*subset_settings(archive, workdir, runs_root), *overrides, *own_settings]
    command = ["train", "-c", config, "--quiet", "--seeds", ",".join(map(str, seeds))] + [t for s in sets for t in ("--set", s)]
    before = set(runs_root.iterdir()) if runs_root.is_dir() else set()
    started = time.perf_counter()
    result = CliRunner().invoke(app, command)
    seconds = (time.perf_counter() - started) / len(seeds)
    if result.exit_code != 0:
        raise RuntimeError(f"cifar train -c {recipe} failed ({result.exit_code}): {result.output.strip()}")
    made = sorted(set(runs_root.iterdir()) - before)
    accuracies = [json.loads(next((run / "evaluations").glob("best-test*/evaluation.json")).read_text())["top1"] for run in made]
    return accuracies, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="seeds,default,speedrun", help="comma-separated: seeds and/or cifar config names")
    add_subset_arguments(parser)
    args, seeds, workdir = parse_subset_arguments(parser, "cifar-recipes-")
    figures: list[RecipeFigures] = []
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        load = os.getloadavg()[0]
        if recipe == "seeds":
            runs = [train_seeds_recipe(args.archive, workdir, seed) for seed in seeds]
            accuracies, seconds = [a for a, _ in runs], [s for _, s in runs]
        else:
            try:
                accuracies, per_run = train_cifar_recipe(args.archive, workdir, recipe, seeds, args.overrides)
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
            seconds = [per_run] * len(accuracies)
        figures.append(RecipeFigures(recipe, accuracies, seconds, load))
        f = figures[-1].describe()
        print(f"{recipe}: test top-1 {', '.join(f'{a:.2%}' for a in accuracies)}; {f['seconds']:.0f} s per run (load {load:.1f})", flush=True)

    print(f"\nreal CIFAR-10 subset ({args.archive.name}), seeds {seeds}, {os.cpu_count()} CPUs, "
          f"{len(os.sched_getaffinity(0))} usable, torch threads {torch.get_num_threads()}")
    width = max([12, *(len(fig.recipe) + 2 for fig in figures)])
    print(f"{'recipe':<{width}}{'runs':>5}{'mean':>9}{'std':>8}{'min':>9}{'max':>9}{'s/run':>8}{'x seeds time':>14}{'gain':>9}")
    reference = next((fig.describe() for fig in figures if fig.recipe == "seeds"), None)
    for fig in figures:
        f = fig.describe()
        ratio = f"{f['seconds'] / reference['seconds']:.2f}" if reference else "-"
        gain = f"{(f['mean'] - reference['mean']) * 100:+.1f} pt" if reference else "-"
        print(f"{fig.recipe:<{width}}{len(fig.accuracies):>5}{f['mean']:>9.2%}{'-' if math.isnan(f['std']) else format(f['std'], '.2%'):>8}{f['min']:>9.2%}{f['max']:>9.2%}"
              f"{f['seconds']:>8.0f}{ratio:>14}{gain:>9}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([{**asdict(fig), **fig.describe()} for fig in figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
