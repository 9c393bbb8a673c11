"""`cifar train --nproc N`, and what a command does differently as one of torchrun's processes.

`--nproc N` starts PyTorch's own launcher (`python -m torch.distributed.run`, i.e. torchrun)
with the same command line less `--nproc`, and waits for it: each of its N processes then runs
`cifar train` as one rank. Only typer and the standard library are imported at the top.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from typing import Iterator, Optional

import typer

from cifarcli.entry import INTERRUPTED_EXIT_CODE, note_interrupt_reported
from cifarcli.errors import Interrupted, RunError, UsageError

NPROC_FLAG = "--nproc"


def check_nproc(nproc: int, seeds: Optional[str]) -> None:
    """`--nproc` starts one multi-process run: refuse what it cannot be combined with."""
    from cifarcli.engine.distributed import launched_by_torchrun

    if seeds is not None:
        raise UsageError("--nproc cannot be combined with --seeds: each seed is its own run",
                         hint="train one seed at a time: cifar train --nproc N --set train.seed=S")  # fmt: skip
    if launched_by_torchrun():
        raise UsageError("--nproc starts torchrun, but this process already runs under torchrun",
                         hint="drop --nproc: torchrun's --nproc_per_node sets the number of processes")  # fmt: skip


def forwarded_arguments(argv: list[str]) -> list[str]:
    """The command line (less the program) without `--nproc N` / `--nproc=N`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == NPROC_FLAG:
            skip = True
        elif not arg.startswith(NPROC_FLAG + "="):
            kept.append(arg)
    if "train" not in kept:
        raise UsageError("--nproc: cannot read the `cifar train` command line to pass on to torchrun",
                         hint="start it as `cifar train --nproc N ...` or `python -m cifarcli train --nproc N ...`")  # fmt: skip
    return kept


def torchrun_command(nproc: int, arguments: list[str]) -> list[str]:
    """The torchrun command line that runs `cifar ARGUMENTS` as `nproc` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "cifarcli", *arguments]  # fmt: skip


def run_under_torchrun(nproc: int, argv: list[str]) -> int:
    """Run the command line `argv` (without the program) as `nproc` torchrun processes; their exit code.

    Ctrl-C reaches torchrun and its processes from the terminal (they save and stop); SIGTERM
    sent to this process alone is passed on to torchrun. A failed job is a RunError.
    """
    process = subprocess.Popen(torchrun_command(nproc, forwarded_arguments(argv)))
    signalled: list[int] = []

    def pass_on(signum: int, frame: object) -> None:
        signalled.append(signum)
        if signum == signal.SIGTERM:
            process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        return 0
    if signalled:
        note_interrupt_reported()  # the processes said where their state was saved
        return INTERRUPTED_EXIT_CODE
    raise RunError(f"torchrun ended with exit code {code}: one of the {nproc} processes failed or was stopped; "
                   "the lines above say which and why",
                   hint=f"fix it and start again; a run folder with a checkpoint continues with: cifar train --resume RUN_DIR --nproc {nproc}")  # fmt: skip


@contextlib.contextmanager
def quiet_interruption(is_main: bool) -> Iterator[None]:
    """On ranks other than 0, an interruption ends the process with 130 without a line of its own:
    rank 0 reports it (and where the state was saved). Other errors are reported by every rank."""
    try:
        yield
    except Interrupted:
        if is_main:
            raise
        note_interrupt_reported()
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
