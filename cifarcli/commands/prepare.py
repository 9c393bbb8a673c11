"""`cifar prepare`: convert a data set (CIFAR, an image folder, an .npz) into the cache, and say what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_config

DatasetFlag = Annotated[
    Optional[str],
    typer.Option("--dataset", help="cifar10, cifar100, folder or npz (overrides data.dataset).", show_default=False),
]
PathFlag = Annotated[
    Optional[Path],
    typer.Option("--path", help="Your class folders, or your training .npz file (overrides data.path).", show_default=False),
]
ForceFlag = Annotated[bool, typer.Option("--force", help="Convert again even if a current cache is there (CIFAR: fetch the archive again too).")]


def prepare(
    dataset: DatasetFlag = None,
    path: PathFlag = None,
    force: ForceFlag = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
) -> None:
    """Convert a data set into the on-disk cache once and list its classes (CIFAR, image folders, .npz).

    Example: cifar prepare --dataset folder --path ~/pets --set data.image_size=64
    """
    from cifarcli.commands.progress import make_reporter
    from cifarcli.data.prepare import ALREADY_PRESENT, prepare_dataset  # numpy and the readers load here, not at start-up

    flags = {"data.dataset": dataset, "data.path": str(path) if path is not None else None}
    cfg = resolve_config(config, overrides, print_config, flags)
    result = prepare_dataset(cfg.data, force=force, reporter=make_reporter())
    side = result.image_size
    typer.echo(f"{result.dataset}: {result.action}")
    typer.echo(f"cache:  {result.cache_dir} ({result.train_count} train, {result.test_count} test images, {side}x{side} RGB)")
    typer.echo(f"source: {result.source}")
    width = max([len("class"), *(len(name) for name in result.class_names)])
    typer.echo(f"{'class':<{width}}  {'train':>7}  {'test':>7}")
    for name, train, test in zip(result.class_names, result.train_class_counts, result.test_class_counts):
        typer.echo(f"{name:<{width}}  {train:>7}  {test:>7}")
    if result.action == ALREADY_PRESENT:  # a conversion said these itself as it went
        for entry in result.skipped:
            typer.echo(f"skipped when converted: {entry.path}: {entry.reason}")
        if result.ignored:
            typer.echo(f"ignored when converted: {len(result.ignored)} of its entries are not images (listed in the manifest)")
