"""The work behind `cifar landscape`: pick the evaluation batches, map the loss, write figures and numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cifarcli import fileio
from cifarcli.commands import compose
from cifarcli.commands.options import TrainedRun
from cifarcli.config import ExperimentConfig
from cifarcli.data.prepare import load_dataset
from cifarcli.data.split import stratified_split
from cifarcli.engine.landscape import ProgressCallback, filter_normalized_directions, grid_coordinates, loss_surface
from cifarcli.errors import UsageError
from cifarcli.plots.landscape import plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces

LANDSCAPE_DIR = "landscape"  # inside the run folder, unless --out is given
RESULT_FILE = "landscape.json"


@dataclass(frozen=True)
class Landscape:
    coordinates: np.ndarray  # the grid along each direction
    trained: np.ndarray  # losses around the trained weights: rows b, columns a
    initial: Optional[np.ndarray]  # around the initial weights (landscape.from_init)
    images: int  # evaluated at every point
    init_source: str  # how the initial weights were obtained ("" without from_init)


def evaluation_batches(cfg: ExperimentConfig, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `landscape.batches` batches of `landscape.split`, in data order, normalised, not augmented."""
    arrays = load_dataset(cfg.data)
    labels = compose.select_labels(arrays, cfg.data.label_mode)
    split = cfg.landscape.split
    if split == "test":
        images, targets = np.asarray(arrays.test_images), labels.test
    else:
        train_idx, val_idx = stratified_split(labels.train, cfg.data.val_fraction, cfg.data.split_seed)
        chosen = np.sort(val_idx if split == "val" else train_idx)
        if not len(chosen):
            raise UsageError("landscape.split is val but the run has no validation split (data.val_fraction 0)",
                             hint="use --set landscape.split=train or test")  # fmt: skip
        images, targets = np.asarray(arrays.train_images)[chosen], labels.train[chosen]
    count = min(len(targets), cfg.landscape.batches * cfg.data.eval_batch_size)
    return list(compose.eval_loader(cfg, arrays, images[:count], targets[:count], labels.num_classes, device))


def compute_landscape(trained: TrainedRun, on_point: ProgressCallback) -> Landscape:
    """The loss on a points x points grid around the trained weights (and, with from_init, the initial ones)."""
    cfg, settings = trained.cfg, trained.cfg.landscape
    device = compose.device_for(cfg)
    run = compose.load_trained_model(trained.path, cfg, device, checkpoint=trained.checkpoint)
    batches = evaluation_batches(cfg, device)
    coordinates = grid_coordinates(settings.points, settings.span)
    autocast = compose.run_autocast(cfg, device)
    total = settings.points**2 * (2 if settings.from_init else 1)
    with compose.out_of_memory_as_error(cfg.data.eval_batch_size, "data.eval_batch_size"):
        around_trained = loss_surface(run.model, batches, filter_normalized_directions(run.model, settings.seed),
                                      coordinates, autocast, on_point, 0, total)  # fmt: skip
        initial, source = None, ""
        if settings.from_init:
            # A checkpoint holds the weights of its epoch only; the initial ones are rebuilt exactly as
            # training built them: seeded with train.seed (and loading model.pretrained, if set).
            model = compose.prepare_model(cfg, int(trained.checkpoint["num_classes"]), device).eval()
            source = f"rebuilt from train.seed={cfg.train.seed} (checkpoints do not store the initial weights)"
            initial = loss_surface(model, batches, filter_normalized_directions(model, settings.seed),
                                   coordinates, autocast, on_point, settings.points**2, total)  # fmt: skip
    return Landscape(coordinates, around_trained, initial, sum(len(labels) for _, labels in batches), source)


def write_landscape(result: Landscape, cfg: ExperimentConfig, checkpoint: Path, out_dir: Path) -> list[Path]:
    """landscape.json and the 1-D, contour and surface figures; return their paths."""
    s = cfg.landscape
    middle = len(result.coordinates) // 2
    trained_label = f"around the trained weights ({checkpoint.name})"
    surfaces = [(trained_label, result.trained)]
    if result.initial is not None:
        surfaces.append(("around the initial weights", result.initial))
    about = (f"{result.images} {s.split} images, {len(result.coordinates)}x{len(result.coordinates)} points, "
             f"span {s.span:g}, seed {s.seed}")  # fmt: skip
    payload = {
        "checkpoint": str(checkpoint), "split": s.split, "images": result.images, "points": s.points, "span": s.span,
        "seed": s.seed, "coordinates": result.coordinates.tolist(), "trained": result.trained.tolist(),
        "centre_loss": float(result.trained[middle, middle]),
        "initial": None if result.initial is None else result.initial.tolist(), "initial_weights": result.init_source or None,
        "layout": "rows: direction 2 (b), columns: direction 1 (a); BatchNorm in eval mode, biases and norm weights not moved",
    }  # fmt: skip
    json_path = out_dir / RESULT_FILE
    fileio.write_json(json_path, payload)
    one_d = plot_landscape_1d(result.coordinates, [(label, grid[middle]) for label, grid in surfaces], out_dir / "landscape_1d.png",
                              f"Loss along filter-normalised direction 1 ({about})")  # fmt: skip
    contours = plot_landscape_contours(result.coordinates, surfaces, out_dir / "landscape_contour.png", f"Loss landscape ({about})")
    surface = plot_landscape_surfaces(result.coordinates, surfaces, out_dir / "landscape_surface.png", f"Loss landscape ({about})")
    return [json_path, one_d, contours, surface]
