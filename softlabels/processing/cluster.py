"""Shard tasks on a dask.distributed cluster: ``local:N`` worker processes here, or an existing cluster.

``generate``, ``convert`` and ``merge`` split their work into whole shards; on a cluster each shard
is one task (``client.submit``) that computes the shard and writes it straight into the store, so
the client only waits and counts. A worker that dies mid-shard loses its task and dask runs it
again on another worker; the shard is rewritten whole, so the store ends the same as if nothing
had happened. Every path a task receives must mean the same file on every worker (one machine, or
a shared file system with absolute paths).
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from softlabels.defaults import local_cluster_workers
from softlabels.errors import ClusterError
from softlabels.progress import progress as show_progress

if TYPE_CHECKING:
    from distributed import Client

GPU_RESOURCE = "GPU"
"""The worker resource a task on a GPU asks for: start one worker per GPU with ``--resources GPU=1``."""

CONNECT_TIMEOUT_S = 30


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Give this process back its environment variables when the block ends.

    dask's nannies export their workers' settings (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``,
    ``PYTHONHASHSEED``...) into the environment of the process that starts a LocalCluster. Left
    there, every later subprocess (a DataLoader worker, a training run) would compute with one
    thread, and so not reproduce the same run made before.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


@contextlib.contextmanager
def cluster_client(scheduler: str) -> Iterator[Client]:
    """A client of ``local:N`` (a LocalCluster started here and stopped afterwards) or of a scheduler address.

    Prints one line on stderr: the scheduler, its workers and the dashboard address.

    Raises:
        ClusterError: no scheduler answers at the address.
    """
    from distributed import Client, LocalCluster

    workers = local_cluster_workers(scheduler)
    with contextlib.ExitStack() as stack:
        if workers is not None:
            stack.enter_context(environment_kept())
            # One thread per worker process: a teacher (or torch's own threads) per process, no GIL contention.
            # Every local worker stands for one device, so tasks that ask for a GPU find one.
            cluster = stack.enter_context(
                LocalCluster(  # type: ignore[no-untyped-call]  # distributed ships without annotations
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    resources={GPU_RESOURCE: 1},
                )
            )
            client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S))  # type: ignore[no-untyped-call]
            except OSError as exc:
                raise ClusterError(f"cannot reach a dask scheduler at {scheduler}: {exc}") from exc
        print(describe_cluster(client), file=sys.stderr, flush=True)
        yield client


def describe_cluster(client: Client) -> str:
    """One line: the scheduler's address, its worker count and the dashboard's address (when it has one)."""
    info = client.scheduler_info()
    dashboard = client.dashboard_link if "dashboard" in info.get("services", {}) else "off (needs bokeh)"
    return f"dask scheduler {info.get('address', '?')}: {len(info.get('workers', {}))} workers, dashboard {dashboard}"


def require_gpu_workers(client: Client, where: str) -> None:
    """Refuse a cluster on which no worker offers the GPU resource (GPU tasks would wait forever).

    Raises:
        ClusterError: no worker declares the resource.
    """
    workers = client.scheduler_info().get("workers", {}).values()
    if not any(worker.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for worker in workers):
        raise ClusterError(
            f"no worker of the dask cluster at {where} offers a GPU: start one worker per GPU with "
            f"'dask worker SCHEDULER --nworkers 1 --nthreads 1 --resources {GPU_RESOURCE}=1' "
            "(CUDA_VISIBLE_DEVICES set to that GPU)"
        )


def run_shard_tasks(
    client: Client,
    calls: Sequence[tuple[Callable[..., int], tuple[Any, ...]]],
    *,
    progress: bool,
    desc: str,
    resources: dict[str, int] | None = None,
) -> None:
    """Run ``task(*arguments)`` for every ``(task, arguments)`` in ``calls`` on the cluster; returns once all finished.

    The bar counts finished shards, whichever worker ran them. On the first failure (or Ctrl-C) the
    tasks not started yet are cancelled and the error is raised; shards already written stay recorded.

    Raises:
        ClusterError: a shard's task was running on workers that died, again and again (dask gives up).
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    run = uuid.uuid4().hex[:8]
    futures = [
        client.submit(task, *arguments, key=f"{desc}-{index}-{run}", resources=resources, pure=False)
        for index, (task, arguments) in enumerate(calls)
    ]
    try:
        with show_progress(len(futures), desc=desc, unit="shard", enabled=progress) as bar:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                future.result()
                bar.update(1)
    except KilledWorker as exc:
        raise ClusterError(
            f"a {desc} task killed every worker that ran it ({exc}); the shards already written are kept, "
            "run the same command again to finish"
        ) from None
    finally:
        client.cancel([future for future in futures if not future.done()])  # type: ignore[no-untyped-call]
