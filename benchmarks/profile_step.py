"""Profile `cifar train`'s own optimisation step on synthetic data: images/s, ops per step, top ops.

Builds the model, optimizer, schedule, EMA and step settings exactly as `cifar train` does
(from the config and `--set` overrides), feeds it batches from the device loader, and runs
`train_one_epoch` over a few batches: untimed warm-up first, then timed steps. With
`--profile`, the timed steps run under torch.profiler and the busiest ops are printed.

    python benchmarks/profile_step.py                                  # resnet9, batch 512, the run's precision
    python benchmarks/profile_step.py --set train.amp=off --profile    # fp32, with the op table
    python benchmarks/profile_step.py --model simple_cnn --batch-size 64 --steps 50 --profile --top 0 \\
        --set augment.mix.mixup_alpha=0.2 --set train.ema_decay=0.999    # per-step overheads dominate
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from cifarcli.commands import compose
from cifarcli.config import load_config
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.stats import dataset_stats
from cifarcli.engine.loop import train_one_epoch

NUM_CLASSES = 10
# Ops that copy a value to the host: on a GPU each one waits for the device to finish.
HOST_READS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--profile", action="store_true", help="count ops and host reads per step with torch.profiler")
    parser.add_argument("--top", type=int, default=20, help="with --profile: print this many of the busiest ops (0: none)")
    args = parser.parse_args()

    sets = [f"model.name={args.model}", f"data.batch_size={args.batch_size}", f"data.device={args.device}", *args.overrides]
    cfg = load_config(None, sets)
    device = compose.device_for(cfg)
    total = args.batch_size * (args.warmup + args.steps)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (total, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, total)
    mean, std = dataset_stats("cifar10")
    loader = DeviceLoader(images, labels, batch_size=args.batch_size, num_classes=NUM_CLASSES, mean=mean, std=std,
                          device=device, augment=cfg.augment, shuffle=True, drop_last=True, seed=0,
                          channels_last=compose.use_channels_last(cfg))  # fmt: skip
    model = compose.prepare_model(cfg, NUM_CLASSES, device)
    state = compose.build_train_state(cfg, model, len(loader), device)
    settings = compose.step_settings(cfg, device)
    state.forward.train()
    batches = iter(loader)
    train_one_epoch(state, itertools.islice(batches, args.warmup), settings)
    synchronize(device)
    timed = itertools.islice(batches, args.steps)
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.profiler.profile(activities=activities) as prof:
            started = time.perf_counter()
            train_one_epoch(state, timed, settings)
            synchronize(device)
            seconds = time.perf_counter() - started
    else:
        started = time.perf_counter()
        train_one_epoch(state, timed, settings)
        synchronize(device)
        seconds = time.perf_counter() - started
    print(f"{args.model} batch {args.batch_size} on {device} ({torch.get_num_threads()} threads), "
          f"{args.steps} timed steps after {args.warmup} warm-up: {args.steps * args.batch_size / seconds:,.1f} img/s, "
          f"{seconds / args.steps * 1000:,.1f} ms/step")  # fmt: skip
    if args.profile:
        events = prof.key_averages()
        calls = sum(e.count for e in events if e.key.startswith("aten::"))
        reads = sum(e.count for e in events if e.key in HOST_READS)
        print(f"aten op calls per step: {calls / args.steps:,.1f}; host reads per step: {reads / args.steps:,.2f}")
        if args.top:
            sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(events.table(sort_by=sort_by, row_limit=args.top))


if __name__ == "__main__":
    main()
