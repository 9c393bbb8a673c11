"""`cifar sweep`: many trainings of one base config (a grid, a search, or named variants) on Optuna."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_config
from cifarcli.errors import RunError, UsageError

DEFAULT_ROOT = Path("sweeps")


def sweep(
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    grid: Annotated[Optional[list[str]], typer.Option(
        "--grid", metavar="KEY=V1,V2,...|FILE", show_default=False,
        help="A grid axis (repeat for more: every combination runs), or a grid file such as a shipped one (lr-exploration).",
    )] = None,
    space: Annotated[Optional[Path], typer.Option(
        "--space", metavar="SPACE.yaml", show_default=False, help="Search this space (log_uniform, uniform, int, categorical per key) with TPE.",
    )] = None,
    variants: Annotated[Optional[Path], typer.Option(
        "--variants", metavar="VARIANTS.yaml", show_default=False, help="Run these named variants, each switching some keys (an ablation).",
    )] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, show_default=False, help="With --space: how many trials.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, show_default=False, help="With --space: seed of the TPE sampler (default 0).")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Stop trials whose validation accuracy is below the median of earlier trials at that epoch.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", show_default=False, help="Sweep name (folder name, study name in --storage). Default: the sweep file's name.")] = None,
    root: Annotated[Path, typer.Option("--root", help="Folder under which sweep folders are made.")] = DEFAULT_ROOT,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", metavar="URL", show_default=False,
        help="Share the study: an Optuna RDB URL (sqlite:////path/study.db, postgresql://...) or journal:PATH. "
        "Start the same command in several processes or machines to work on one sweep.",
    )] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", metavar="SWEEP_DIR", show_default=False, help="Continue the sweep in this folder.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show each trial's epochs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the results and the files written.")] = False,
) -> None:  # fmt: skip
    """Run a sweep: every trial a normal run folder, summarised in summary.csv, figures and index.html.

    Example: cifar sweep -c default --grid optim.lr=0.1,0.01,0.001,0.0001
    """
    if resume is not None:
        given = [flag for flag, value in (("--config", config), ("--set", overrides), ("--grid", grid), ("--space", space),
                 ("--variants", variants), ("--trials", trials), ("--seed", seed), ("--prune", prune), ("--name", name))
                 if value not in (None, False, [])]  # fmt: skip
        if given:
            raise UsageError(f"--resume continues a sweep as it was defined; drop {', '.join(given)}", hint=f"its definition: {resume / 'sweep.json'}")
        base = None
    else:
        base = resolve_config(config, overrides, print_config)  # before the heavy imports: --print-config stays fast
    # Imported once the command line is checked: optuna, torch and matplotlib load here, not at start-up.
    from cifarcli.commands.progress import make_console
    from cifarcli.commands.sweeping import resume_sweep, start_sweep
    from cifarcli.sweeps.spec import build_spec

    console = make_console(quiet)
    if base is None:
        outcome = resume_sweep(resume, storage, console, verbose and not quiet)
    else:
        spec = build_spec(base, grid or [], space, variants, trials, seed, prune, name)
        outcome = start_sweep(spec, base, root, storage, console, verbose and not quiet)
    best = outcome.best
    if best is not None:
        settings = ", ".join(f"{k}={v}" for k, v in best.settings.items())
        test = f", test {best.test_accuracy:.2%}" if best.test_accuracy is not None else ""
        typer.echo(f"best trial: {best.name} ({settings}): best val {best.best_val_accuracy:.2%}{test}")
    for path in outcome.written:
        typer.echo(f"wrote {path}")
    console.print(f"open {outcome.folder / 'index.html'} in a browser; compare the trials: cifar compare {outcome.folder}", soft_wrap=True, markup=False)
    if outcome.counts["failed"] and outcome.counts["failed"] == outcome.counts["total"]:
        raise RunError(f"every trial of the sweep failed ({outcome.counts['total']})", hint=f"see the error column of {outcome.folder / 'summary.csv'}")
