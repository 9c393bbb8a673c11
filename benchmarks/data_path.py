"""Images per second of the device-resident data path against the seeds' PIL + DataLoader pipeline.

Both pipelines apply the seeds' augmentation (random crop 32 after zero padding 4, horizontal
flip 0.5, cutout 8x8, normalise) and feed the same resnet9 training steps (Adam, cross
entropy). Printed: training images/s of each and their ratio, then each data path alone.

    python benchmarks/data_path.py                       # synthetic images, sized for the CPU
    python benchmarks/data_path.py --device cuda         # bigger defaults on a GPU
    python benchmarks/data_path.py --data-root data      # the real CIFAR-10 cache instead
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cifarcli.config import AugmentConfig
from cifarcli.data.loader import DeviceLoader
from cifarcli.data.stats import dataset_stats
from cifarcli.models import MODELS

# (images, batch size, timed steps, warm-up steps) when not given on the command line.
DEFAULTS = {"cpu": (10_000, 128, 8, 2), "cuda": (50_000, 512, 60, 10)}
NUM_CLASSES = 10
SEEDS_AUGMENT = AugmentConfig.model_validate({"crop": {"padding": 4, "padding_mode": "zeros"}, "cutout": {"size": 8, "count": 1}})


class Cutout:
    """PIL transform: black out one size x size square lying fully inside the image."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        top = int(torch.randint(0, image.height - self.size + 1, ()))
        left = int(torch.randint(0, image.width - self.size + 1, ()))
        erased = image.copy()
        erased.paste((0, 0, 0), (left, top, left + self.size, top + self.size))
        return erased


class PilDataset(Dataset):
    """The seeds' data set: one PIL image per item, transformed in the worker."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images = [Image.fromarray(image) for image in images]
        self.labels = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def seeds_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    """The baseline: torchvision PIL transforms in DataLoader workers."""
    mean, std = dataset_stats("cifar10")
    transform = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), Cutout(8), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    return DataLoader(
        PilDataset(images, labels, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def endless(loader: DeviceLoader | DataLoader, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches on `device`, epoch after epoch."""
    for epoch in itertools.count():
        if isinstance(loader, DeviceLoader):
            loader.set_epoch(epoch)
        for images, targets in loader:
            yield images.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_data_only(batches: Iterable, steps: int, warmup_steps: int, device: torch.device) -> float:
    """Seconds for `steps` batches after `warmup_steps`, touching each batch on the device."""
    batches = iter(batches)
    for _ in range(warmup_steps):
        next(batches)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        images, _ = next(batches)
        images.sum()  # consume the batch so lazy work is not skipped
    synchronize(device)
    return time.perf_counter() - start


def time_training(batches: Iterable, steps: int, warmup_steps: int, device: torch.device) -> float:
    """Seconds for `steps` resnet9 Adam steps after `warmup_steps`, fed by `batches`."""
    torch.manual_seed(0)
    model = MODELS["resnet9"](num_classes=NUM_CLASSES, dropout=0.0).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    batches = iter(batches)
    start = 0.0
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        images, targets = next(batches)
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def load_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    if args.data_root is None:
        rng = np.random.default_rng(0)  # speed does not depend on content
        return rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8), rng.integers(0, NUM_CLASSES, args.images)
    from cifarcli.data.cache import cache_folder, read_cache

    arrays = read_cache(cache_folder(args.data_root, "cifar10"), "cifar10")
    count = min(args.images, len(arrays.train_images))
    return np.ascontiguousarray(arrays.train_images[:count]), np.asarray(arrays.train_labels[:count])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, help="images in the data set (default: 10,000 on cpu, 50,000 on cuda)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: 128 on cpu, 512 on cuda)")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default: 8 on cpu, 60 on cuda)")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (default: 2 on cpu, 10 on cuda)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers of the seeds' pipeline")
    parser.add_argument("--data-root", type=Path, help="read CIFAR-10 training images from this cache root instead of random ones")
    args = parser.parse_args()
    images, batch_size, steps, warmup = DEFAULTS[args.device]
    args.images = args.images or images
    args.batch_size = args.batch_size or batch_size
    args.steps = args.steps or steps
    args.warmup_steps = warmup if args.warmup_steps is None else args.warmup_steps
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    images, labels = load_images(args)
    mean, std = dataset_stats("cifar10")
    ours = DeviceLoader(
        images, labels, batch_size=args.batch_size, num_classes=NUM_CLASSES, mean=mean, std=std,
        device=device, augment=SEEDS_AUGMENT, drop_last=True,
    )
    seeds = seeds_loader(images, labels, args.batch_size, args.workers, device)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
        f"{len(images)} images, batch {args.batch_size}, {args.steps} timed steps after {args.warmup_steps}, "
        f"seeds' pipeline with {args.workers} workers"
    )
    timed_images = args.steps * args.batch_size
    train_rates = {}
    for name, loader in (("device data path", ours), ("seeds' PIL + DataLoader", seeds)):
        seconds = time_training(endless(loader, device), args.steps, args.warmup_steps, device)
        train_rates[name] = timed_images / seconds
        print(f"train  {name:<24} {train_rates[name]:>10.0f} images/s")
    ours_rate, seeds_rate = train_rates.values()
    print(f"train  speed-up                 {ours_rate / seeds_rate:>10.2f}x")
    data_steps = max(args.steps, 10)
    for name, loader in (("device data path", ours), ("seeds' PIL + DataLoader", seeds)):
        seconds = time_data_only(endless(loader, device), data_steps, args.warmup_steps, device)
        print(f"data   {name:<24} {data_steps / seconds:>10.1f} batches/s {data_steps * args.batch_size / seconds:>10.0f} images/s")


if __name__ == "__main__":
    main()
