"""Training and evaluating on several processes under torchrun (DistributedDataParallel).

torchrun starts one process per device and tells each who it is through the environment
(RANK, WORLD_SIZE, LOCAL_RANK). Outside torchrun a process is world 1: no process group,
every helper here returns at once, and nothing is communicated.

Sync discipline: every collective below is reached by every rank in the same order, at the
points the single-process loop already reads back from the device (the loss window, the end
of an epoch, evaluation), so a multi-process run adds no host syncs to the step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, ContextManager, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cifarcli.engine.loop import EpochStats, EpochTotals
from cifarcli.engine.predict import Predictions, predict
from cifarcli.errors import ConfigError, RunError, UsageError

# A collective that waits longer than this (a peer lost mid-run, stuck or killed) fails the job
# instead of hanging it; torchrun then stops the other ranks. Long enough for rank 0 to write
# checkpoints and the others to load the data set while the rest wait.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Who this process is among the ranks of a torchrun job (world 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "nccl" or "gloo" with a process group, "" without

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder, TensorBoard and the console."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher speaking its protocol) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def env_rank() -> int:
    """This process's rank from torchrun's environment, before any process group exists (0 without torchrun)."""
    return _env_int("RANK") if launched_by_torchrun() else 0


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    if not text.isdigit():
        raise UsageError(f"{name}={text!r} in the environment is not a whole number", hint="start cifar with torchrun, which sets it")
    return int(text)


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: under torchrun on CUDA the GPU numbered LOCAL_RANK, else `device` itself."""
    if device.type != "cuda" or not launched_by_torchrun():
        return device
    local_rank = _env_int("LOCAL_RANK")
    if local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but this machine shows {torch.cuda.device_count()}",
            hint="start at most one process per GPU: torchrun --nproc_per_node=<number of GPUs>",
        )
    return torch.device("cuda", local_rank)


def current() -> DistContext:
    """The context of the process group this process joined (`process_group`), or SINGLE."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK"), dist.get_backend())


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[DistContext]:
    """Join torchrun's process group for the block (NCCL on CUDA, gloo on the CPU); SINGLE without torchrun."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT, **init)
    try:
        yield current()
    except RuntimeError as exc:
        if _lost_peer(exc):
            raise RunError(
                f"rank {dist.get_rank()} stops: another process of this torchrun job ended or stopped answering ({_first_line(exc)})",
                hint="that process's own error is shown above (torchrun's summary names its rank); "
                "a run with a checkpoint continues with: cifar train --resume RUN_DIR",
            ) from exc
        raise
    finally:
        dist.destroy_process_group()


def _lost_peer(exc: RuntimeError) -> bool:
    """Whether a collective failed because a peer went away or timed out (not a bug in this process)."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        mark in text for mark in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "NCCL")
    )


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:200]


def rank_batch_size(global_batch: int, ctx: DistContext) -> int:
    """Each rank's share of `data.batch_size`, which is the global batch of one optimizer step."""
    if global_batch % ctx.world_size:
        raise ConfigError(
            f"data.batch_size: {global_batch} does not divide by the {ctx.world_size} processes (world size)",
            hint=f"set data.batch_size to a multiple of {ctx.world_size}, e.g. --set data.batch_size={global_batch // ctx.world_size * ctx.world_size or ctx.world_size}",
        )
    return global_batch // ctx.world_size


def check_even_last_batch(images: int, global_batch: int, drop_last: bool, ctx: DistContext) -> None:
    """Every rank must take the same number of steps: a last global batch smaller than the world size
    would leave some ranks without images while the others wait for their gradients."""
    leftover = images % global_batch
    if ctx.is_distributed and not drop_last and 0 < leftover < ctx.world_size:
        raise ConfigError(
            f"data.drop_last: false leaves a last batch of {leftover} training image(s) per epoch, "
            f"fewer than the {ctx.world_size} processes",
            hint="set --set data.drop_last=true, or a data.batch_size that leaves at least one image per process",
        )


def wrap_model(forward: nn.Module, ctx: DistContext, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """`forward` in DistributedDataParallel when there are several ranks; itself otherwise.

    `find_unused_parameters` is for runs whose epoch hooks freeze layers part-way (their
    parameters then get no gradient, which plain DDP takes for an error).
    """
    if not ctx.is_distributed:
        return forward
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(forward, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel: evaluation calls it directly, so that ranks
    predicting different numbers of batches run no collective per batch."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _collective_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is true on at least one (one small all-reduce)."""
    if not ctx.is_distributed:
        return flag
    value = torch.tensor([int(flag)], device=_collective_device(ctx))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class AgreedStop:
    """The stop flag every rank agrees on: the local signal flag (`local`), combined across ranks at
    the global steps where the loop reads its losses back (every `every_steps`, `step()` being the
    global step), so that all ranks stop after the same step and the step gains no sync of its own."""

    def __init__(self, local: Callable[[], bool], ctx: DistContext, every_steps: int, step: Callable[[], int]) -> None:
        self.local, self.ctx, self.every, self.step = local, ctx, max(1, every_steps), step
        self.checked_step = -1
        self.agreed = False

    def __call__(self) -> bool:
        if not self.ctx.is_distributed:
            return self.local()
        step = self.step()
        if not self.agreed and step % self.every == 0 and step != self.checked_step:
            self.checked_step = step
            self.agreed = any_rank(self.local(), self.ctx)
        return self.agreed


def barrier(ctx: DistContext) -> None:
    """Wait until every rank reaches this point (e.g. rank 0 has written a checkpoint the others read)."""
    if ctx.is_distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. a download into the shared data root)."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def from_main(make: Callable[[], T], ctx: DistContext) -> T:
    """`make()` called on rank 0 only, its (picklable) result handed to every rank."""
    if not ctx.is_distributed:
        return make()
    box = [make() if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=_collective_device(ctx))
    return box[0]  # type: ignore[return-value]


def gather_in_rank_order(value: T, ctx: DistContext) -> list[T]:
    """Every rank's (picklable) `value`, rank 0's first, on every rank."""
    if not ctx.is_distributed:
        return [value]
    values: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(values, value)
    return values


def batch_range(batches: int, ctx: DistContext) -> range:
    """The contiguous run of whole evaluation batches this rank predicts: together the ranks cover
    each batch once, in order, with the same batch boundaries as one process (so the same figures)."""
    return range(batches * ctx.rank // ctx.world_size, batches * (ctx.rank + 1) // ctx.world_size)


def predict_across_ranks(
    model: nn.Module, loader: Any, ctx: DistContext, autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    tta_flip: bool = False, tta_shift: bool = False,
) -> Predictions:  # fmt: skip
    """`predict` over the whole of an in-order evaluation `loader`, each rank predicting its `batch_range`,
    gathered in data order: every rank gets exactly the predictions one process computes."""
    model = unwrapped(model)
    if not ctx.is_distributed:
        return predict(model, loader, autocast, tta_flip, tta_shift)
    mine = batch_range(len(loader), ctx)
    own = predict(model, itertools.islice(loader, mine.start, mine.stop), autocast, tta_flip, tta_shift)
    parts = [p for p in gather_in_rank_order((own.probabilities, own.targets, own.losses), ctx) if len(p[1])]
    if not parts:
        return own
    losses = np.concatenate([p[2] for p in parts])
    mean_loss = float(torch.from_numpy(losses).double().sum()) / len(losses)  # as `predict` sums them
    return Predictions(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), mean_loss, losses)


def combine_epoch_stats(stats: EpochStats, ctx: DistContext) -> EpochStats:
    """One epoch's training figures over all ranks: loss and accuracy over every rank's images, their
    total images, and the slowest rank's seconds (so images per second is the job's throughput)."""
    if not ctx.is_distributed:
        return stats
    sums = [stats.loss * stats.images if stats.images else 0.0, stats.accuracy * stats.images if stats.images else 0.0,
            float(stats.images), float(stats.skipped_steps)]  # fmt: skip
    total = torch.tensor(sums, dtype=torch.float64, device=_collective_device(ctx))
    seconds = torch.tensor([stats.seconds], dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(total)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    loss_sum, correct, images, skipped = total.tolist()
    return dataclasses.replace(
        stats, loss=loss_sum / images if images else math.nan, accuracy=round(correct) / images if images else math.nan,
        images=int(images), skipped_steps=int(skipped), seconds=float(seconds.item()),
    )  # fmt: skip


def combine_totals(totals: EpochTotals, ctx: DistContext) -> EpochTotals:
    """An interrupted epoch's sums over all ranks, as the checkpoint keeps them (see `local_share`)."""
    if not ctx.is_distributed:
        return totals
    sums = torch.tensor([totals.loss_sum, totals.correct, totals.images, totals.skipped_steps],
                        dtype=torch.float64, device=_collective_device(ctx))  # fmt: skip
    seconds = torch.tensor([totals.seconds], dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(sums)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    loss_sum, correct, images, skipped = sums.tolist()
    return EpochTotals(loss_sum, round(correct), round(images), round(skipped), float(seconds.item()))


def local_share(totals: EpochTotals, ctx: DistContext) -> EpochTotals:
    """What this rank carries of a checkpoint's (all-rank) epoch sums when it resumes: rank 0 all of
    them, the others none, so that `combine_epoch_stats` counts every image once in any world size."""
    return totals if ctx.is_main else EpochTotals(seconds=totals.seconds)
