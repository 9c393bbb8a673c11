"""`cifar visualize-filters`: first-layer filters, feature maps and Grad-CAM of a trained run."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cifarcli import escape, runs
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_trained_run
from cifarcli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from cifarcli.config import VisualizeConfig
    from cifarcli.engine.explain import GradCam
    from cifarcli.plots.filters import ImageCaption

VISUALIZE_DIR = "visualize"  # inside the run folder, unless --out is given
FILTERS_FILE = "filters.png"
FEATURE_MAPS_FILE = "feature_maps.png"
GRADCAM_FILE = "gradcam.png"
STRIDE_PADDING_FILE = "stride_padding.png"


def visualize_filters(
    target: Annotated[Path, typer.Argument(help="A run folder (uses checkpoints/best.pt), `latest`, the start of a run's name, or a checkpoint file.", show_default=False)],
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    layer: Annotated[
        Optional[str], typer.Option("--layer", help="Layer for feature maps and Grad-CAM (default: visualize.layer, else the last conv).")
    ] = None,
    list_layers: Annotated[bool, typer.Option("--list-layers", help="Print the conv layer names and exit.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the PNGs (default: RUN/visualize).")] = None,
    ema: Annotated[bool, typer.Option("--ema", help="Show the EMA weights (runs trained with train.ema_decay).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the written paths.")] = False,
    stride_padding: Annotated[bool, typer.Option(
        "--stride-padding", help="Instead: the first conv's filters applied with stride 1, 2, 3 and padding 0, 1, 2 (stride_padding.png).",
    )] = False,  # fmt: skip
) -> None:
    """Show first-layer filters, feature maps and Grad-CAM heatmaps of a trained model.

    Example: cifar visualize-filters runs/20261121-093000-resnet9-cifar10 --layer layer2.conv
    """
    from cifarcli.commands import compose
    from cifarcli.commands.progress import make_console, make_reporter, print_written
    from cifarcli.data.prepare import load_dataset
    from cifarcli.models import conv_layer_names, first_conv, last_conv_layer_name
    from cifarcli.plots.filters import plot_feature_maps, plot_filters, plot_gradcam

    trained = resolve_trained_run(target, config, overrides, print_config, ema)
    path, checkpoint, cfg = trained.path, trained.checkpoint, trained.cfg
    device = compose.device_for(cfg)
    model = compose.load_trained_model(path, cfg, device, use_ema=ema, checkpoint=checkpoint).model
    stem = first_conv(model)  # a model without conv layers stops here, with a one-line error
    if list_layers:
        typer.echo("\n".join(conv_layer_names(model)))
        make_console(quiet).print(f"default: {last_conv_layer_name(model)}")
        raise typer.Exit(0)
    layer_name = layer or cfg.visualize.layer or last_conv_layer_name(model)
    chosen = _layer_named(model, layer_name, target)

    arrays = load_dataset(cfg.data, reporter=make_reporter(quiet))
    labels = compose.select_labels(arrays, cfg.data.label_mode)
    compose.check_checkpoint_classes(checkpoint, labels, path)
    indices = pick_test_images(len(labels.test), cfg.visualize)
    picked = compose.test_images(cfg, arrays, labels, indices, device)
    out_dir = out if out is not None else runs.run_dir_of(path) / VISUALIZE_DIR
    if stride_padding:
        from cifarcli.engine.conv_geometry import stride_padding_maps
        from cifarcli.plots.stride_padding import plot_stride_padding

        captions_sp = [f"test #{i}: {labels.class_names[int(t)]}" for i, t in zip(indices, picked.labels)]
        with runs.locked(runs.run_dir_of(path)) if out is None else contextlib.nullcontext():
            figure = plot_stride_padding(picked.raw, stride_padding_maps(stem, picked.inputs), captions_sp,
                                         out_dir / STRIDE_PADDING_FILE, conv_layer_names(model)[0], stem.kernel_size[0])  # fmt: skip
        print_written([figure])
        return
    activations, cam = _explain(model, chosen, layer_name, picked.inputs)
    captions = _captions(indices, picked.labels, cam, labels.class_names)
    raw_images = picked.raw

    with runs.locked(runs.run_dir_of(path)) if out is None else contextlib.nullcontext():
        written = [
            plot_filters(stem.weight.detach().float().cpu().numpy(), out_dir / FILTERS_FILE, conv_layer_names(model)[0]),
            plot_feature_maps(raw_images, activations, captions, out_dir / FEATURE_MAPS_FILE, layer_name, cfg.visualize.max_feature_maps),
            plot_gradcam(raw_images, cam.heatmaps, captions, out_dir / GRADCAM_FILE, layer_name),
        ]
    make_console(quiet).print(f"layer {escape.terminal(layer_name)}, test images {', '.join(map(str, indices))}")
    print_written(written)


def pick_test_images(test_count: int, cfg: VisualizeConfig) -> np.ndarray:
    """Test-set indices to show: `cfg.image_indices`, else `cfg.num_images` drawn with `cfg.image_seed` (sorted)."""
    import numpy as np

    if cfg.image_indices is not None:
        wrong = [i for i in cfg.image_indices if not 0 <= i < test_count]
        if wrong or not cfg.image_indices:
            raise UsageError(
                f"visualize.image_indices: {wrong or '[]'} not valid for a test set of {test_count} images",
                hint=f"give indices from 0 to {test_count - 1}, e.g. --set 'visualize.image_indices=[0, 7]', or null for random ones",
            )
        return np.asarray(cfg.image_indices, dtype=np.int64)
    if test_count == 0:
        raise UsageError("the test set is empty, so there are no images to show", hint="check data.root holds the prepared data set")
    rng = np.random.default_rng(cfg.image_seed)
    return np.sort(rng.choice(test_count, size=min(cfg.num_images, test_count), replace=False)).astype(np.int64)


def _layer_named(model: nn.Module, name: str, target: Path) -> nn.Module:
    """The module called `name`; an unknown name is a UsageError that lists the conv layers."""
    from cifarcli.models import find_layer

    try:
        return find_layer(model, name)
    except UsageError as exc:
        raise UsageError(exc.message, hint=f"cifar visualize-filters {target} --list-layers prints every conv layer") from None


def _explain(model: nn.Module, layer: nn.Module, layer_name: str, inputs: torch.Tensor) -> tuple[np.ndarray, GradCam]:
    """Feature maps and Grad-CAM of `layer`; a layer without feature maps is named in the error."""
    from cifarcli.engine.explain import grad_cam, layer_activations

    try:
        return layer_activations(model, layer, inputs), grad_cam(model, layer, inputs)
    except UsageError as exc:
        raise UsageError(f"layer {layer_name!r}: {exc.message}", hint=exc.hint) from None


def _captions(indices: np.ndarray, true_labels: np.ndarray, cam: GradCam, class_names: list[str]) -> list[ImageCaption]:
    import numpy as np

    from cifarcli.plots.filters import ImageCaption

    predicted = cam.predicted
    confidence = cam.probabilities[np.arange(len(predicted)), predicted]
    return [
        ImageCaption(int(i), class_names[int(t)], class_names[int(p)], float(c))
        for i, t, p, c in zip(indices, true_labels, predicted, confidence)
    ]
