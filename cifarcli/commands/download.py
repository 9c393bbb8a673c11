"""`cifar download`: fetch, verify and convert CIFAR-10/100 into the on-disk cache."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cifarcli import escape
from cifarcli.commands.options import ConfigOption, PrintConfigOption, SetOption, resolve_config
from cifarcli.errors import UsageError


DatasetFlag = Annotated[
    Optional[str], typer.Option("--dataset", help="cifar10 or cifar100 (overrides data.dataset).", show_default=False)
]
SourceFlag = Annotated[
    Optional[str],
    typer.Option("--source", metavar="URL_OR_PATH", show_default=False,
                 help="Mirror URL, or an archive already on disk for offline installs (overrides data.source)."),
]
Md5Flag = Annotated[
    Optional[str],
    typer.Option("--md5", metavar="HEX", show_default=False,
                 help="Your own known md5 of the archive at --source (overrides data.md5)."),
]
NoVerifyFlag = Annotated[bool, typer.Option("--no-verify", help="Accept the archive without checking its md5 (data.verify=false).")]
ForceFlag = Annotated[bool, typer.Option("--force", help="Fetch the archive again and rebuild the cache even if both are present.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result: no progress, no retries (warnings and errors still).")]


def download(
    dataset: DatasetFlag = None,
    source: SourceFlag = None,
    md5: Md5Flag = None,
    no_verify: NoVerifyFlag = False,
    force: ForceFlag = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    quiet: QuietFlag = False,
) -> None:
    """Download CIFAR-10/100, verify its checksum and convert it into a fast on-disk cache.

    Example: cifar download --dataset cifar100

    Offline: cifar download --source ~/Downloads/cifar-10-python.tar.gz
    """
    from cifarcli.config import CUSTOM_DATASET_NAMES
    from cifarcli.commands.progress import make_reporter
    from cifarcli.data.prepare import prepare_dataset

    flags = {"data.dataset": dataset, "data.source": source, "data.md5": md5, "data.verify": False if no_verify else None}
    cfg = resolve_config(config, overrides, print_config, flags)
    if cfg.data.dataset in CUSTOM_DATASET_NAMES:
        raise UsageError(f"cifar download fetches CIFAR-10/100; data.dataset {cfg.data.dataset} is your own data",
                         hint="convert it with `cifar prepare` (train and the other commands also do it when needed)")
    result = prepare_dataset(cfg.data, force=force, reporter=make_reporter(quiet))
    lines = [f"{result.dataset}: {result.action}",
             f"cache:   {result.cache_dir} ({result.train_count} train, {result.test_count} test images)"]  # fmt: skip
    if result.archive_path.is_file():
        lines.append(f"archive: {result.archive_path} (md5 {result.archive_md5})")
    lines.append(f"source:  {result.source}")
    for line in lines:
        typer.echo(escape.terminal(line))
