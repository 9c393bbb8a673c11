"""Does bf16 cost accuracy? Train one recipe on the real CIFAR-10 subset in bf16 and in fp32, over several seeds.

Every seed trains once per precision (train.amp=bf16, then train.amp=off), same epochs and
settings, seeds interleaved. Printed per precision: test top-1 mean, standard deviation, lowest
and highest over the seeds; then the difference of the means against the noise, which is the
seed-to-seed spread: the standard deviation within each precision and the standard error of
the difference, sqrt(s_bf16^2/n + s_fp32^2/n). Within noise means |difference| <= 2 standard errors.

    python benchmarks/precision_accuracy.py                         # default recipe, 24 epochs, seeds 0,1,2
    python benchmarks/precision_accuracy.py --epochs 3 --seeds 0,1  # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

from train_real_subset import add_subset_arguments, parse_subset_arguments, train_on_subset

PRECISIONS = {"bf16": "train.amp=bf16", "fp32": "train.amp=off"}


def describe(values: list[float]) -> dict[str, float]:
    spread = statistics.stdev(values) if len(values) > 1 else math.nan
    return {"mean": statistics.mean(values), "std": spread, "min": min(values), "max": max(values), "runs": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="built-in config name or YAML path")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_subset_arguments(parser)
    args, seeds, workdir = parse_subset_arguments(parser, "cifar-precision-")
    accuracy: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    seconds: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    for seed in seeds:  # interleaved, so a change of machine load hits both precisions
        for name, setting in PRECISIONS.items():
            run = train_on_subset(args.archive, workdir, args.config, args.epochs, args.device,
                                  [f"train.seed={seed}", setting, *args.overrides])  # fmt: skip
            accuracy[name].append(run.summary["top1"])
            seconds[name].append(run.seconds)
            print(f"seed {seed} {name}: test top-1 {run.summary['top1']:.2%} in {run.seconds:.0f} s ({run.info['precision']})", flush=True)

    figures = {name: {**describe(values), "seconds_per_run": statistics.mean(seconds[name])} for name, values in accuracy.items()}
    print(f"\n{args.config}, {args.epochs} epochs, seeds {seeds}, real subset ({args.archive.name})")
    print(f"{'precision':<10}{'runs':>5}{'mean':>9}{'std':>8}{'min':>9}{'max':>9}{'s/run':>8}")
    for name, f in figures.items():
        print(f"{name:<10}{f['runs']:>5}{f['mean']:>9.2%}{f['std']:>8.2%}{f['min']:>9.2%}{f['max']:>9.2%}{f['seconds_per_run']:>8.0f}")
    b, f32 = figures["bf16"], figures["fp32"]
    difference = b["mean"] - f32["mean"]
    standard_error = math.sqrt(b["std"] ** 2 / b["runs"] + f32["std"] ** 2 / f32["runs"]) if len(seeds) > 1 else math.nan
    verdict = "within noise" if abs(difference) <= 2 * standard_error else "outside the seed noise" if math.isfinite(standard_error) else "needs 2+ seeds"
    print(f"bf16 - fp32: {difference:+.2%} (seed spread: std {b['std']:.2%} bf16, {f32['std']:.2%} fp32; "
          f"standard error of the difference {standard_error:.2%}): {verdict}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "epochs": args.epochs, "seeds": seeds, "figures": figures,
                                         "difference": difference, "standard_error": standard_error, "verdict": verdict},
                                        indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
