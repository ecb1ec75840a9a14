"""``generate`` on a dask.distributed cluster: one task computes and writes one whole shard.

The client opens (or resumes) the store exactly as an in-process run does and submits one task
per pending shard. Each worker process loads the dataset and the teacher once and keeps them for
the tasks that follow; it checks that they are the very data and teacher the store records (a
worker on another host with another copy of either would otherwise mix labels into the store),
computes the shard in the same batches as an in-process run and writes it under the run's id. A
worker killed mid-shard leaves the shard unrecorded; dask runs the task again elsewhere and the
shard is rewritten whole, so the store ends bitwise equal to an uninterrupted run. The client
marks the store complete once every shard is recorded.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from softlabels.errors import InvalidArgumentError, StoreMismatchError
from softlabels.format.identity import data_identity, dataset_info, mismatches
from softlabels.processing.cluster import GPU_RESOURCE, cluster_client, require_gpu_workers, run_shard_tasks
from softlabels.processing.generation.config import GenerateConfig
from softlabels.processing.generation.runner import _load_source, _load_teacher, _new_header, _run_teacher
from softlabels.processing.shards import absolute_location, interrupted_keeping
from softlabels.runtime import resolve_device
from softlabels.sources import DatasetSource, ModelSource, parameters_sha256
from softlabels.store import Encoding, StoreHeader, StoreWriter

if TYPE_CHECKING:
    from distributed import Client

_LOADED: dict[str, tuple[tuple[Any, ...], DatasetSource, ModelSource]] = {}
"""This worker process's dataset and teacher, under the key of what they were loaded from (one at a time)."""


def generate_on_cluster(
    config: GenerateConfig, source: DatasetSource, teacher: ModelSource, encoding: Encoding
) -> tuple[StoreWriter, list[int]]:
    """Open (or resume) the store and compute its pending shards on ``config.scheduler``; returns the writer and those shards.

    Raises:
        ClusterError: the cluster cannot be reached, has no GPU worker for a CUDA run, or keeps losing
            the workers that run one shard.
    """
    with cluster_client(config.scheduler) as client:
        device = _cluster_device(client, config.device)
        resources = None
        if device.type == "cuda":  # one task per GPU at a time, and only on workers that have one
            require_gpu_workers(client, config.scheduler)
            resources = {GPU_RESOURCE: 1}
        header = _new_header(config, source, teacher, encoding, device)
        writer = StoreWriter.open(config.out, header, encoding, overwrite=config.overwrite)
        pending = writer.pending_shards()
        if pending:
            # Workers may run elsewhere: they get the store's absolute path, and draw no progress bar.
            task_config = replace(config, out=absolute_location(str(writer.path)), progress=False)
            calls = [(generate_shard, (task_config, writer.header, shard)) for shard in pending]
            with interrupted_keeping(writer):
                run_shard_tasks(client, calls, progress=config.progress, desc="generate", resources=resources)
    return writer, pending


def _cluster_device(client: Client, name: str) -> torch.device:
    """The device type the workers compute on (``auto`` is resolved on a worker, not on this client)."""
    if name == "auto":
        return torch.device(client.submit(_device_type, name, pure=False).result())
    return torch.device("cuda" if name.startswith("cuda") else "cpu")


def _device_type(name: str) -> str:
    return resolve_device(name).type


def generate_shard(config: GenerateConfig, header: StoreHeader, shard: int) -> int:
    """Compute and record one shard of the store at ``config.out`` on this worker; one dask task.

    Raises:
        StoreMismatchError: this worker's dataset or teacher is not the one the store records.
        InvalidArgumentError: this worker computes on another kind of device than the run.
        StoreConflictError: the store was replaced since the run opened it.
    """
    source, teacher = _worker_inputs(config, header)
    device = _worker_device(config.device, header)
    encoding = config.encoding.build()
    writer = StoreWriter(config.out, header, encoding)
    if multiprocessing.current_process().daemon:
        # dask's worker processes are daemons by default, and daemons may not start DataLoader workers.
        config = replace(config, num_workers=0)
    _run_teacher(config, source, teacher, writer, encoding, [shard], device)
    return shard


def _worker_inputs(config: GenerateConfig, header: StoreHeader) -> tuple[DatasetSource, ModelSource]:
    recorded = header.provenance.teacher
    key = (
        config.dataset,
        config.split,
        config.data_root,
        config.teacher,
        config.teacher_weights,
        config.random_weights,
        recorded.parameters_sha256,
    )
    loaded = _LOADED.get("inputs")
    if loaded is None or loaded[0] != key:
        _LOADED.clear()  # drop the previous teacher before loading the next one
        source = _load_source(config)
        _refuse_other_data(source, header)
        teacher = _load_teacher(config, source)
        _refuse_other_teacher(teacher, recorded.parameters_sha256)
        loaded = _LOADED["inputs"] = (key, source, teacher)
    return loaded[1], loaded[2]


def _refuse_other_data(source: DatasetSource, header: StoreHeader) -> None:
    found = mismatches(
        data_identity(dataset_info(source)),
        data_identity(header.provenance.dataset),
        have_name="this worker's dataset",
        want_name="the run's",
    )
    if found:
        raise StoreMismatchError(
            f"a dask worker loaded other data than the run ({'; '.join(found)}); every worker must see the same dataset"
        )


def _refuse_other_teacher(teacher: ModelSource, expected: str | None) -> None:
    loaded = parameters_sha256(teacher.module)
    if loaded != expected:
        raise StoreMismatchError(
            f"a dask worker loaded another teacher than the run (parameters sha256 {loaded} instead of "
            f"{expected}); every worker must load the same teacher code and weights"
        )


def _worker_device(name: str, header: StoreHeader) -> torch.device:
    device = resolve_device(name)
    if name == "cuda" and torch.cuda.device_count() > 1:
        device = torch.device("cuda", cuda_index_of_worker(_worker_name(), torch.cuda.device_count()))
    recorded = header.provenance.compute.get("device")
    if device.type != recorded:
        raise InvalidArgumentError(
            f"device '{name}' is {device.type} on dask worker {_worker_name()} but this run computes on "
            f"{recorded} (the device type decides the stored values); give every worker the same kind of device"
        )
    return device


def cuda_index_of_worker(worker_name: object, device_count: int) -> int:
    """The GPU of a worker that sees several: local:N names its workers 0..N-1, spread over the GPUs.

    A worker started for one GPU (``CUDA_VISIBLE_DEVICES``) sees one and never gets here; a worker
    with another name takes the first GPU.
    """
    return worker_name % device_count if isinstance(worker_name, int) else 0


def _worker_name() -> object:
    from distributed import get_worker

    try:
        return get_worker().name
    except ValueError:  # called outside a dask worker (a task run in-process)
        return "(none: this process)"
