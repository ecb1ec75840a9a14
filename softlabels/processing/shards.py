"""Writing a store's pending shards as parallel :mod:`dask` tasks: what ``convert`` and ``merge`` share.

A job that derives a store from existing stores opens its :class:`StoreWriter` (which creates the
store or reopens it to resume), then hands this module one task function that computes and
records one shard from picklable arguments. Only the shards the store has not recorded yet run,
so an interrupted job resumes with the shards still pending; a task writes whole chunks of its
own shard and then records it, so tasks never touch the same chunk.

The scheduler is one of dask's in this process (``threads``, ``processes``, ``synchronous``) or a
dask.distributed cluster (``local:N``, ``tcp://HOST:PORT``; see :mod:`softlabels.processing.cluster`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from softlabels.defaults import SCHEDULERS, check_scheduler, is_cluster
from softlabels.errors import Interrupted, InvalidArgumentError, SoftLabelsError, StoreWriteError
from softlabels.progress import Progress
from softlabels.progress import progress as show_progress
from softlabels.store import StoreWriter

ShardTask = Callable[..., int]


def check_run_options(
    scheduler: str, workers: int | None, chunk_rows: int | None, chunks_per_shard: int
) -> None:
    """Refuse an unknown scheduler and counts below 1, before any store is opened."""
    check_scheduler(scheduler, SCHEDULERS)
    if workers is not None and is_cluster(scheduler):
        raise InvalidArgumentError(
            f"workers count threads or processes of this machine; the cluster scheduler '{scheduler}' "
            "has its own worker processes (local:N starts N)"
        )
    for setting, value in (
        ("workers", workers),
        ("chunk rows", chunk_rows),
        ("chunks per shard", chunks_per_shard),
    ):
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{setting} must be >= 1, got {value}")


def absolute_location(location: str) -> str:
    """A local path made absolute, so a record still names the source when read elsewhere; URLs as given."""
    return location if "://" in location else str(Path(location).resolve())


def write_pending_shards(
    writer: StoreWriter,
    task: ShardTask,
    arguments: Callable[[int], tuple[Any, ...]],
    *,
    scheduler: str,
    workers: int | None,
    progress: bool,
    desc: str,
) -> list[int]:
    """Run ``task(*arguments(shard))`` for every shard ``writer``'s store has not recorded; returns them.

    Raises:
        Interrupted: Ctrl-C; the message says how many shards were kept.
        StoreWriteError: a task failed with an operating-system error (the shards already written are kept).
    """
    pending = writer.pending_shards()
    if not pending:
        return pending
    with interrupted_keeping(writer):
        _compute(
            [(task, arguments(shard)) for shard in pending],
            str(writer.path),
            scheduler,
            workers,
            progress,
            desc,
        )
    return pending


@contextlib.contextmanager
def interrupted_keeping(writer: StoreWriter) -> Iterator[None]:
    """Turn Ctrl-C into :class:`Interrupted`, whose message says how many shards ``writer``'s store kept."""
    try:
        yield
    except KeyboardInterrupt:
        total = writer.header.layout.num_shards
        kept = total - len(writer.pending_shards())
        what = f"{kept} of {total} shards in {writer.path}"
        raise Interrupted(f"interrupted: kept {what}; re-run the same command to finish", what) from None


def _compute(
    calls: list[tuple[ShardTask, tuple[Any, ...]]],
    out: str,
    scheduler: str,
    workers: int | None,
    progress: bool,
    desc: str,
) -> None:
    if is_cluster(scheduler):
        _compute_on_cluster(calls, out, scheduler, progress, desc)
        return
    from dask.base import compute
    from dask.delayed import delayed

    tasks = [delayed(task)(*arguments) for task, arguments in calls]
    options: dict[str, Any] = {"scheduler": scheduler}
    if workers is not None and scheduler != "synchronous":
        options["num_workers"] = workers
    names = {task.__name__ for task, _ in calls}
    # A bar on a terminal, a plain line every 30 s in a log file; dask reports each finished shard.
    with show_progress(len(calls), desc=desc, unit="shard", enabled=progress) as bar:
        with _count_shards(bar, names):
            try:
                compute(*tasks, **options)  # type: ignore[no-untyped-call]  # dask ships without annotations
            except OSError as exc:
                if isinstance(exc, SoftLabelsError):
                    raise
                raise _write_error(out, exc) from exc


def _compute_on_cluster(
    calls: list[tuple[ShardTask, tuple[Any, ...]]], out: str, scheduler: str, progress: bool, desc: str
) -> None:
    from softlabels.processing.cluster import cluster_client, run_shard_tasks

    with cluster_client(scheduler) as client:
        try:
            run_shard_tasks(client, calls, progress=progress, desc=desc)
        except OSError as exc:
            if isinstance(exc, SoftLabelsError):
                raise
            raise _write_error(out, exc) from exc


def _write_error(out: str, error: OSError) -> StoreWriteError:
    """A shard task's operating-system error as one line naming the file and the reason."""
    where = error.filename or out
    return StoreWriteError(
        f"cannot write {where}: {error.strerror or error} (the shards already written into {out} are kept; "
        "run the same command again to finish it)"
    )


def _count_shards(bar: Progress, task_names: set[str]) -> Any:
    """A dask callback that counts every finished shard task (a task named in ``task_names``) on ``bar``."""
    from dask.callbacks import Callback

    def count(key: Any, *_: Any) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        if any(name.startswith(task) for task in task_names):
            bar.update(1)

    return Callback(posttask=count)  # type: ignore[no-untyped-call]
