"""`cifar landscape`: the loss around a trained model's weights along filter-normalised random directions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifarcli import runs
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_trained_run


def landscape(
    target: Annotated[Path, typer.Argument(help="A run folder (uses checkpoints/best.pt), `latest`, the start of a run's name, or a checkpoint file.", show_default=False)],
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the figures and landscape.json (default: RUN/landscape).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the written paths.")] = False,
) -> None:
    """Map the loss around the trained weights: 1-D slice, contours and surface (optionally beside the initial weights).

    Example: cifar landscape runs/20261121-093000-resnet9-cifar10 --set landscape.points=31 --set landscape.from_init=true
    """
    from cifarcli.commands.console_reporter import ConsoleReporter
    from cifarcli.commands.loss_landscape import compute_landscape, write_landscape
    from cifarcli.commands.progress import make_console

    trained = resolve_trained_run(target, config, overrides, print_config)
    console = make_console(quiet)
    s = trained.cfg.landscape
    console.print(f"{s.points}x{s.points} points{' twice (trained, initial)' if s.from_init else ''} on {s.batches} "
                  f"{s.split} batches of {trained.cfg.data.eval_batch_size} images", markup=False)  # fmt: skip
    points_done = [0]  # compute_landscape says how many points are done; the task takes how many more
    with ConsoleReporter(console).task("loss landscape", total=s.points**2 * (2 if s.from_init else 1)) as task:

        def on_point(done: int, total: int) -> None:
            task.advance(done - points_done[0])
            points_done[0] = done

        result = compute_landscape(trained, on_point)
    out_dir = out if out is not None else runs.run_dir_of(trained.path) / "landscape"
    written = write_landscape(result, trained.cfg, trained.path, out_dir)
    middle = s.points // 2
    console.print(f"loss at the trained weights: {result.trained[middle, middle]:.4f} on {result.images} images", markup=False)
    if result.init_source:
        console.print(f"initial weights {result.init_source}", markup=False)
    for path in written:
        typer.echo(f"wrote {path}")
