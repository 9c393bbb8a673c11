"""The seeds' pipeline, the baseline `cifar` is measured against: PIL transforms, DataLoader workers, fp32.

What the hand-written loops that `cifar` replaces did: torchvision PIL transforms (RandomCrop
32 after zero padding 4, horizontal flip, cutout 8x8, ToTensor, Normalize) applied per image
in DataLoader worker processes, the model in fp32 with NCHW tensors, and a plain Adam loop
(cross-entropy, no schedule, no mixed precision). The benchmark suite times it beside the
engine; recipe comparisons can reuse it:

    from reference import ReferenceTrainer, seeds_loader   # from a script in benchmarks/
    loader = seeds_loader(images, labels, batch_size=512, workers=2, device=device)
    trainer = ReferenceTrainer("resnet9", num_classes=10, device=device)
    trainer.train_epoch(loader)
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cifarcli.data.stats import dataset_stats
from cifarcli.models import MODELS

SEEDS_LR = 1e-3  # Adam's default, as the seeds used it


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


def seeds_transform(dataset: str = "cifar10", train: bool = True) -> transforms.Compose:
    """The seeds' per-image transform: crop, flip, cutout (training only), ToTensor, Normalize."""
    mean, std = dataset_stats(dataset)
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), Cutout(8)] if train else []
    return transforms.Compose([*augment, transforms.ToTensor(), transforms.Normalize(mean, std)])


class PilDataset(Dataset):
    """The seeds' data set: one PIL image per item, transformed in the worker."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images = [Image.fromarray(image) for image in images]
        self.labels = np.asarray(labels).astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def seeds_loader(
    images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int, device: torch.device, train: bool = True,
    persistent_workers: bool = True,
) -> DataLoader:
    """The seeds' DataLoader over N x 32 x 32 x 3 uint8 images: shuffled, augmented in `workers` processes."""
    return DataLoader(
        PilDataset(images, labels, seeds_transform(train=train)),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent_workers and workers > 0,
    )


def on_device(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass of `batches` (e.g. a DataLoader's epoch), moved to `device` as they come."""
    for images, targets in batches:
        yield images.to(device, non_blocking=True), targets.to(device, non_blocking=True)


class ReferenceTrainer:
    """The seeds' training step: fp32, NCHW, Adam, cross-entropy, nothing else."""

    def __init__(self, model_name: str, num_classes: int, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = device
        self.model = MODELS[model_name](num_classes, dropout=0.0).to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=SEEDS_LR)
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimisation step; returns the loss as a tensor (not read back)."""
        loss = self.loss_fn(self.model(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def train_steps(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int) -> int:
        """Run `steps` steps from `batches`; returns the number of images trained on."""
        images_seen = 0
        for images, targets in itertools.islice(batches, steps):
            self.step(images, targets)
            images_seen += images.shape[0]
        return images_seen

    def train_epoch(self, loader: DataLoader) -> float:
        """One pass over `loader`; returns the mean loss (read back once, at the end)."""
        losses = [self.step(images, targets) for images, targets in on_device(loader, self.device)]
        return float(torch.stack(losses).mean()) if losses else float("nan")

    @torch.no_grad()
    def accuracy(self, loader: DataLoader) -> float:
        """Top-1 accuracy on an evaluation loader (`seeds_loader(..., train=False)`)."""
        self.model.eval()
        correct = total = 0
        for images, targets in loader:
            predicted = self.model(images.to(self.device)).argmax(dim=1).cpu()
            correct += int((predicted == targets).sum())
            total += len(targets)
        self.model.train()
        return correct / total if total else float("nan")
