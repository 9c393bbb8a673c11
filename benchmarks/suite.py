"""The benchmark suite: the engine beside the seeds' pipeline, the data path, evaluation, start-up, FLOPs.

For each model, in one process, on one device:
- training images/s of `cifar train`'s own step (the default recipe with the run's precision
  and memory format, as compose builds it) and of the seeds' pipeline (benchmarks/reference.py),
  timed in alternating windows so that a change of load on a shared machine hits both; each
  figure is the median over the windows, with the lowest and highest in brackets; the warm-up
  steps before the first window are not timed;
- the data path alone (augmented batches/s of the device loader, no model) against what the
  model consumes, and the seeds' DataLoader alone;
- evaluation images/s, peak memory, FLOPs per image (torch.utils.flop_counter), the achieved
  FLOP/s and its share of the device's bf16 matmul rate measured in the same run;
- the time from launching `cifar train` to its first optimizer step (from the TensorBoard
  event of step 1), when a data root or the real CIFAR-10 subset is at hand.
Then the start-up of the CLI: `--help`, `--version`, `--print-config`.

It prints one table, writes a JSON file, and appends the table, dated, to benchmarks/RESULTS.md.

    python benchmarks/suite.py                                # cpu or cuda, resnet9 (batch 512) and resnet18 (256)
    python benchmarks/suite.py --models resnet9 --windows 5 --steps 3
    python benchmarks/suite.py --device cuda --steps 50 --windows 5
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from cifarcli.commands import compose
from cifarcli.config import ExperimentConfig, load_config
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.stats import dataset_stats
from cifarcli.engine.loop import train_one_epoch
from cifarcli.engine.predict import predict
from measure import PeakMemory, Spread, device_name, eval_flops_per_image, matmul_flops_per_second, timed, train_flops_per_image
from reference import ReferenceTrainer, on_device, seeds_loader
from startup import cli_start_seconds, seconds_to_first_step

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
NUM_CLASSES = 10
BATCH_SIZES = {"resnet9": 512, "resnet18": 256}
DEFAULTS = {"cpu": {"steps": 2, "windows": 5, "warmup": 1}, "cuda": {"steps": 50, "windows": 5, "warmup": 20}}


def engine_config(model: str, batch_size: int, device: torch.device) -> ExperimentConfig:
    """The default recipe with `model` and `batch_size`: what `cifar train -c default --set ...` trains."""
    return load_config(None, [f"model.name={model}", f"data.batch_size={batch_size}", f"data.device={device.type}"])


def synthetic_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)  # speed does not depend on the pixels
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, NUM_CLASSES, count)


def epochs_of(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


class EngineBench:
    """`cifar train`'s model, optimizer, schedule and step settings, fed by the device loader."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device, images: np.ndarray, labels: np.ndarray) -> None:
        mean, std = dataset_stats("cifar10")
        self.cfg, self.device = cfg, device
        self.loader = DeviceLoader(images, labels, batch_size=cfg.data.batch_size, num_classes=NUM_CLASSES, mean=mean,
                                   std=std, device=device, augment=cfg.augment, shuffle=True, drop_last=True,
                                   seed=cfg.train.seed, channels_last=compose.use_channels_last(cfg))  # fmt: skip
        model = compose.prepare_model(cfg, NUM_CLASSES, device)
        self.state = compose.build_train_state(cfg, model, len(self.loader), device)
        self.settings = compose.step_settings(cfg, device)
        self.state.forward.train()
        self.batches = epochs_of(self.loader)

    def train(self, steps: int) -> None:
        train_one_epoch(self.state, itertools.islice(self.batches, steps), self.settings)  # reads the losses back once

    def data_only(self, batches: int) -> None:
        for images, _ in itertools.islice(self.batches, batches):
            images.sum()  # touch the batch: no lazily skipped work


def bench_model(name: str, args: argparse.Namespace, device: torch.device, matmul_rate: float) -> dict[str, Any]:
    batch = args.batch_size or BATCH_SIZES.get(name, 256)
    steps, windows = args.steps, args.windows
    images, labels = synthetic_images(batch * max(6, steps + 1))
    cfg = engine_config(name, batch, device)
    engine = EngineBench(cfg, device, images, labels)
    reference = ReferenceTrainer(name, NUM_CLASSES, device)
    # Workers live for one window only: left running, they would go on preparing batches (and take
    # the CPU) during the engine's window. Each window pays their start, a few % of it.
    seeds = seeds_loader(images, labels, batch, args.workers, device, persistent_workers=False)
    memory = PeakMemory(device)

    def seeds_window(count: int) -> None:
        reference.train_steps(on_device(seeds, device), count)  # the iterator and its workers end here

    engine.train(args.warmup)  # warm-up, not timed: kernel selection, caches
    seeds_window(args.warmup)
    engine_rates, seeds_rates, engine_peak, seeds_peak = [], [], 0, 0
    for _ in range(windows):  # alternating windows: a change of load hits both pipelines
        memory.reset()
        engine_rates.append(steps * batch / timed(lambda: engine.train(steps), device))
        engine_peak = max(engine_peak, memory.read())
        memory.reset()
        seeds_rates.append(steps * batch / timed(lambda: seeds_window(steps), device))
        seeds_peak = max(seeds_peak, memory.read())

    data_batches = min(max(2 * steps, 6), len(seeds))
    engine.data_only(2)
    data_rates = [data_batches * batch / timed(lambda: engine.data_only(data_batches), device) for _ in range(3)]
    seeds_data_rate = data_batches * batch / timed(lambda: list(itertools.islice(on_device(seeds, device), data_batches)), device)

    eval_loader = DeviceLoader(images[: args.eval_images], labels[: args.eval_images], batch_size=cfg.data.eval_batch_size,
                               num_classes=NUM_CLASSES, mean=dataset_stats("cifar10")[0], std=dataset_stats("cifar10")[1],
                               device=device, channels_last=compose.use_channels_last(cfg))  # fmt: skip
    autocast = compose.run_autocast(cfg, device)
    predict(engine.state.model, itertools.islice(eval_loader, 1), autocast)  # warm-up
    eval_rates = [len(eval_loader.images) / timed(lambda: predict(engine.state.model, eval_loader, autocast), device) for _ in range(2)]

    flops_train = train_flops_per_image(reference.model, device)
    engine_spread, seeds_spread = Spread.of(engine_rates), Spread.of(seeds_rates)
    pair_ratios = [e / s for e, s in zip(engine_rates, seeds_rates)]
    facts = compose.precision_facts(cfg, device)
    first_step = seconds_to_first_step(name, batch, device, args.data_root) if args.data_root else None
    return {
        "model": name, "batch_size": batch, "timed_steps_per_window": steps, "windows": windows, "warmup_steps": args.warmup,
        "precision": facts["precision"], "precision_reason": facts["precision_reason"], "memory_format": facts["memory_format"],
        "engine_images_per_second": vars(engine_spread), "seeds_images_per_second": vars(seeds_spread),
        "speedup_of_medians": engine_spread.median / seeds_spread.median, "speedup_per_window_pair": vars(Spread.of(pair_ratios)),
        "data_path_images_per_second": vars(Spread.of(data_rates)),
        "data_path_over_model_consumption": Spread.of(data_rates).median / engine_spread.median,
        "seeds_data_path_images_per_second": seeds_data_rate, "seeds_workers": args.workers,
        "eval_images_per_second": vars(Spread.of(eval_rates)), "eval_batch_size": cfg.data.eval_batch_size,
        "seconds_to_first_step": first_step,
        "peak_memory_bytes": {"engine": engine_peak, "seeds": seeds_peak, "kind": memory.kind},
        "train_flops_per_image": flops_train, "eval_flops_per_image": eval_flops_per_image(reference.model, device),
        "engine_flops_per_second": flops_train * engine_spread.median, "seeds_flops_per_second": flops_train * seeds_spread.median,
        "engine_share_of_bf16_matmul_rate": flops_train * engine_spread.median / matmul_rate,
    }  # fmt: skip


def table(run: dict[str, Any]) -> str:
    """The run as one markdown table (the rows of RESULTS.md)."""
    gib = 1024**3
    lines = ["| model (batch) | precision, format | train img/s: engine | seeds' pipeline | speed-up | data path img/s (x model) "
             "| eval img/s | first step | peak mem engine / seeds | GFLOP/img (train) | TFLOP/s (share of bf16 matmul) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in run["models"]:
        spread = lambda key: Spread(**m[key]).text()  # noqa: E731
        first = f"{m['seconds_to_first_step']:.1f} s" if m["seconds_to_first_step"] is not None else "n/a"
        peak = m["peak_memory_bytes"]
        lines.append(
            f"| {m['model']} ({m['batch_size']}) | {m['precision']}, {m['memory_format']} | {spread('engine_images_per_second')} "
            f"| {spread('seeds_images_per_second')} | {m['speedup_of_medians']:.2f}x (pairs {Spread(**m['speedup_per_window_pair']).text(2)}) "
            f"| {Spread(**m['data_path_images_per_second']).text(0)} ({m['data_path_over_model_consumption']:.0f}x) "
            f"| {spread('eval_images_per_second')} | {first} | {peak['engine'] / gib:.2f} / {peak['seeds'] / gib:.2f} GiB "
            f"| {m['train_flops_per_image'] / 1e9:.2f} | {m['engine_flops_per_second'] / 1e12:.3f} ({m['engine_share_of_bf16_matmul_rate']:.0%}) |"
        )  # fmt: skip
    start = run["startup_seconds"]
    if not start:
        return "\n".join(lines)
    lines.append("")
    lines.append("| start-up (median of 5, warm disk) | seconds |")
    lines.append("|---|---|")
    lines.extend(f"| `{command}` | {seconds:.2f} |" for command, seconds in start.items())
    return "\n".join(lines)


def header(run: dict[str, Any]) -> str:
    load = run["load_average"]
    return (f"device {run['device']} ({run['device_name']}), torch {run['torch']}, {run['date']}; "
            f"bf16 matmul {run['bf16_matmul_flops_per_second'] / 1e12:.3f} TFLOP/s (best of 5); load average {load[0]:.1f} -> {load[1]:.1f}; "
            f"medians [lowest-highest] of {run['models'][0]['windows'] if run['models'] else 0} alternating windows, "
            f"warm-up excluded; seeds' pipeline with {run['models'][0]['seeds_workers'] if run['models'] else 0} workers")  # fmt: skip


def record(run: dict[str, Any], command: str) -> None:
    """Append the run, dated, to RESULTS.md."""
    text = f"\n### Suite run {run['date']}: {run['device']}, {run['device_name']}, torch {run['torch']}\n\n"
    text += f"`{command}`; {header(run)}.\n\n{table(run)}\n"
    with RESULTS_MD.open("a", encoding="utf-8") as out:
        out.write(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--models", default="resnet9,resnet18", help="comma-separated model names (default: resnet9,resnet18)")
    parser.add_argument("--batch-size", type=int, help="one batch size for every model (default: resnet9 512, resnet18 256)")
    parser.add_argument("--steps", type=int, help="timed steps per window (default: 2 on cpu, 50 on cuda)")
    parser.add_argument("--windows", type=int, help="timed windows per pipeline (default: 3 on cpu, 5 on cuda)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 1 on cpu, 20 on cuda)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers of the seeds' pipeline")
    parser.add_argument("--eval-images", type=int, default=2048, help="images in the evaluation timing")
    parser.add_argument("--data-root", type=Path, help="a prepared data root for the time to first step (default: the real subset, prepared in a temp folder)")
    parser.add_argument("--no-first-step", action="store_true", help="skip the time-to-first-step runs")
    parser.add_argument("--no-startup", action="store_true", help="skip timing the CLI's start-up")
    parser.add_argument("--json", type=Path, help="where the JSON goes (default: benchmarks/results/suite-DATE-DEVICE.json)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    args.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    for key, value in DEFAULTS[args.device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    device = args.device
    if not args.no_first_step and args.data_root is None:
        from startup import prepare_subset

        args.data_root = prepare_subset()
    if args.no_first_step:
        args.data_root = None
    load_before = os.getloadavg()[0]
    matmul_rate = matmul_flops_per_second(device)
    models = [bench_model(name.strip(), args, device, matmul_rate) for name in args.models.split(",") if name.strip()]
    run = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "bf16_matmul_flops_per_second": matmul_rate, "models": models,
        "startup_seconds": {} if args.no_startup else cli_start_seconds(), "load_average": [load_before, os.getloadavg()[0]],
    }  # fmt: skip
    print(header(run))
    print(table(run))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    args.json = args.json or HERE / "results" / f"suite-{stamp}-{device.type}.json"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run, indent=2) + "\n")
    print(f"wrote {args.json}")
    if not args.no_record:
        record(run, "python benchmarks/suite.py " + " ".join(sys.argv[1:]))
        print(f"appended to {RESULTS_MD}")


if __name__ == "__main__":
    main()
