"""Figures other commands left for a run, shown on its report page when they exist.

- `lr_find.png` of the `cifar lr-find` folder whose suggestion became optim.lr (`lr_source`);
- `filters.png`, `feature_maps.png`, `gradcam.png`, `stride_padding.png` of `cifar visualize-filters`
  in RUN/visualize/.

Each is copied into the report folder (the page embeds the copy), so the report keeps what it
shows even after the lr-find folder is moved or visualize-filters is run again. A file that is
not a PNG is left out.
"""

from __future__ import annotations

from pathlib import Path

from cifarcli import fileio
from cifarcli.commands.lr_find import LR_FIND_JSON
from cifarcli.commands.lr_find_results import LR_FIND_PNG
from cifarcli.commands.visualize_filters import (
    FEATURE_MAPS_FILE, FILTERS_FILE, GRADCAM_FILE, STRIDE_PADDING_FILE, VISUALIZE_DIR,
)  # fmt: skip
from cifarcli.config import ExperimentConfig
from cifarcli.plots.html import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_COPIED_BYTES = 64 << 20  # a figure larger than this is not one of ours

VISUALIZE_FIGURES = (
    (FILTERS_FILE, "First-layer filters", "The first conv layer's filters, one RGB tile each (from `cifar visualize-filters`)."),
    (FEATURE_MAPS_FILE, "Feature maps", "A layer's feature maps for a few test images (from `cifar visualize-filters`)."),
    (GRADCAM_FILE, "Grad-CAM", "Which pixels drove each prediction (from `cifar visualize-filters`)."),
    (STRIDE_PADDING_FILE, "Stride and padding", "The first conv's filters at stride 1-3, padding 0-2 (from `cifar visualize-filters --stride-padding`)."),
)  # fmt: skip


def lr_source_parts(lr_source: str) -> tuple[Path, str]:
    """(the lr-find folder, the suggestion's name) of a config's `lr_source` ("PATH#NAME")."""
    text, _, name = lr_source.rpartition("#")
    path = Path(text or lr_source)
    folder = path if path.is_dir() or path.name != LR_FIND_JSON else path.parent
    return folder, name if text else ""


def run_figures(cfg: ExperimentConfig, run_dir: Path, out_dir: Path) -> list[Figure]:
    """The lr-find and visualize-filters figures of this run, copied into `out_dir`."""
    found: list[Figure] = []
    if cfg.lr_source:
        folder, name = lr_source_parts(cfg.lr_source)
        caption = f"optim.lr = {cfg.optim.lr:.3g} is the {name or 'chosen'} suggestion of this LR range test ({folder / LR_FIND_PNG})."
        found += _copied(folder / LR_FIND_PNG, out_dir / LR_FIND_PNG, "LR range test", caption)
    for file_name, heading, caption in VISUALIZE_FIGURES:
        found += _copied(run_dir / VISUALIZE_DIR / file_name, out_dir / file_name, heading, caption)
    return found


def _copied(source: Path, target: Path, heading: str, caption: str) -> list[Figure]:
    """[the Figure of `source` copied to `target`], or [] when it is missing or not a PNG."""
    try:
        if not source.is_file() or source.stat().st_size > MAX_COPIED_BYTES:
            return []
        data = source.read_bytes()
    except OSError:
        return []
    if not data.startswith(PNG_SIGNATURE):
        return []
    fileio.write_atomic(target, data)
    return [Figure(heading, target, caption)]
