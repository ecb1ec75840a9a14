"""Training under ``torchrun``: one process per device, kept in step by DistributedDataParallel.

``torchrun --nproc-per-node N -m softlabels train-student ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address) in their environment. A
process that finds them trains its share of every epoch (see
:class:`~softlabels.streaming.plan.EpochPlan`: every rank gets ``ceil(N / W)`` samples, so the
same number of batches) with its model wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`: gloo on the CPU, NCCL on ``cuda:LOCAL_RANK``.
Without them (or with ``WORLD_SIZE=1``) a run is the plain single-process loop.

Only rank 0 touches the run folder; it reads the resume state and hands it to the other ranks,
so a resumed run restores the same model, optimizer, schedule and random state everywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel

from softlabels.errors import ClusterError, InvalidArgumentError

__all__ = [
    "SINGLE_PROCESS",
    "Distributed",
    "barrier",
    "device_for",
    "from_environment",
    "process_group",
    "share_from_main",
    "sum_over_ranks",
    "uneven_batches",
    "wrap",
]

_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands among the processes of one run.

    Attributes:
        rank: This process, from 0.
        world_size: Processes in the run.
        local_rank: This process among those on its host (its GPU index).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and reports progress."""
        return self.rank == 0


SINGLE_PROCESS = Distributed()


def from_environment(environ: Mapping[str, str] | None = None) -> Distributed:
    """The run's shape from the variables ``torchrun`` sets; a single process when they are absent.

    Raises:
        InvalidArgumentError: Only some of them are set, or one is not a valid number.
    """
    environ = os.environ if environ is None else environ
    present = [name for name in _VARIABLES if name in environ]
    if not present:
        return SINGLE_PROCESS
    missing = [name for name in _VARIABLES if name not in environ]
    if missing:
        raise InvalidArgumentError(
            f"a distributed run needs {', '.join(_VARIABLES)} in the environment (torchrun sets them); "
            f"missing: {', '.join(missing)}"
        )
    rank, world_size, local_rank = (_whole_number(name, environ[name]) for name in _VARIABLES)
    if world_size < 1 or rank >= world_size:
        raise InvalidArgumentError(f"rank {rank} does not exist among WORLD_SIZE={world_size} processes")
    return Distributed(rank, world_size, local_rank)


def _whole_number(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidArgumentError(f"environment variable {name} must be a whole number >= 0, got '{text}'")
    return value


def device_for(context: Distributed, device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when several processes train on CUDA.

    Raises:
        InvalidArgumentError: The host has fewer GPUs than processes.
    """
    if not context.active or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if context.local_rank >= count:
        raise InvalidArgumentError(
            f"local rank {context.local_rank} has no GPU of its own: this host has {count}; "
            "start at most one process per GPU"
        )
    return torch.device("cuda", context.local_rank)


@contextlib.contextmanager
def process_group(context: Distributed, device: torch.device) -> Iterator[None]:
    """Join the run's process group (gloo on the CPU, NCCL on CUDA) for the duration of the block.

    A group the caller already initialised is used as it is and left open.

    Raises:
        InvalidArgumentError: The rendezvous address is missing from the environment.
    """
    if not context.active or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=context.rank, world_size=context.world_size
        )
    except ValueError as exc:  # env:// without MASTER_ADDR/MASTER_PORT
        raise InvalidArgumentError(f"cannot join the distributed run: {exc}") from exc
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Distributed, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train; else ``model`` itself.

    The wrapper copies rank 0's parameters and buffers to every rank and averages gradients; the
    bare ``model`` stays the one that is evaluated and saved.
    """
    if not context.active:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def uneven_batches(
    model: nn.Module, context: Distributed, *, possible: bool
) -> contextlib.AbstractContextManager[Any]:
    """Let ranks that run out of batches early shadow the others' gradient exchange.

    Plans give every rank the same number of batches; only a loader that drops empty batches
    (stores whose rows are not all answered) can make them differ, and only then is torch's
    ``Join`` (one extra small all-reduce per step) used.
    """
    if context.active and possible and isinstance(model, DistributedDataParallel):
        return Join([model])
    return contextlib.nullcontext()


def sum_over_ranks(context: Distributed, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each scalar summed over every rank (float64, in one exchange); unchanged in a single process."""
    if not context.active:
        return values
    stacked = torch.stack([value.to(torch.float64).reshape(()) for value in values])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return tuple(stacked.unbind())


def share_from_main(context: Distributed, value: T) -> T:
    """Rank 0's ``value`` on every rank (the others pass None or anything: theirs is discarded).

    Raises:
        ClusterError: Rank 0 stopped first (e.g. it refused the run folder and said why).
    """
    if not context.active:
        return value
    box = [value if context.is_main else None]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as exc:  # the connection to rank 0 was closed
        raise ClusterError(
            f"rank {context.rank}: rank 0 stopped before the run began; its message says why"
        ) from exc
    return box[0]  # type: ignore[return-value]


def barrier(context: Distributed) -> None:
    """Wait until every rank gets here (a no-op in a single process)."""
    if context.active:
        dist.barrier()
