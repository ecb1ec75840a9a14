"""``generate`` and ``convert`` on a dask.distributed cluster: a killed worker, resume, refusals.

One LocalCluster (two single-threaded worker processes) serves the whole module, passed to the
jobs by its address: starting one costs seconds. Its workers run the marker teacher
(``cluster_plugins.py:marked_linear``), which tells the test which process is mid-shard.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from distributed import LocalCluster

import softlabels.processing.cluster as cluster_module
from softlabels.errors import ClusterError, InvalidArgumentError, StoreMismatchError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.schema import SHARD_RUNS_ARRAY, SHARDS_DONE_ARRAY
from softlabels.processing.convert import convert_store
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.processing.generation.distributed import cuda_index_of_worker, generate_shard
from softlabels.store import StoreWriter, open_store, read_header

TEACHER = f"{Path(__file__).parent / 'cluster_plugins.py'}:marked_linear"
DELAY_S = "0.1"


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def cluster(markers: Path) -> Iterator[str]:
    """The scheduler address of a two-worker LocalCluster whose workers mark and slow the marker teacher."""
    with (
        cluster_module.environment_kept(),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
            env={"SOFTLABELS_TEST_MARKERS": str(markers), "SOFTLABELS_TEST_DELAY": DELAY_S},
        ) as local,
    ):
        yield local.scheduler_address


def config(out: Path, **overrides: Any) -> GenerateConfig:
    """digits in 23 shards of 64 rows, two batches per shard."""
    settings: dict[str, Any] = {
        "dataset": "digits",
        "teacher": TEACHER,
        "temperature": 3.0,
        "out": str(out),
        "chunk_rows": 64,
        "batch_size": 32,
        "encoding": EncodingSpec.create("topk", k=3),
        "progress": False,
        **overrides,
    }
    return GenerateConfig(**settings)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store an in-process run writes (this process has no marker variables: no delay)."""
    out = tmp_path_factory.mktemp("reference") / "s.zarr"
    generate(config(out))
    return out


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float32 full store of the same teacher, to convert."""
    out = tmp_path_factory.mktemp("full") / "full.zarr"
    generate(config(out, encoding=EncodingSpec.create("full", dtype="float32")))
    return out


def store_files(store: Path) -> dict[str, bytes]:
    """Every file of a store but those that hold the run's own id (the group header, the shards' run ids)."""
    files = {}
    for path in sorted(store.rglob("*")):
        relative = path.relative_to(store)
        if path.is_file() and str(relative) != "zarr.json" and relative.parts[0] != SHARD_RUNS_ARRAY:
            files[str(relative)] = path.read_bytes()
    return files


def assert_bitwise_equal(store: Path, reference: Path) -> None:
    ours, theirs = store_files(store), store_files(reference)
    assert sorted(ours) == sorted(theirs)  # no leftover (*.partial) or missing chunk file
    assert [name for name in ours if ours[name] != theirs[name]] == []
    header, expected = read_header(str(store)), read_header(str(reference))
    assert header.complete and header.layout == expected.layout
    assert header.provenance.compute == expected.provenance.compute
    assert header.provenance.teacher == expected.provenance.teacher
    runs = zarr.open_array(str(store / SHARD_RUNS_ARRAY))[:]
    assert len(set(runs.tolist())) == 1 and runs[0] != 0  # every shard recorded by this one run


class WorkerKiller(threading.Thread):
    """Kills (SIGKILL) the first worker process that marks a batch in ``markers``."""

    def __init__(self, markers: Path) -> None:
        super().__init__(daemon=True)
        self.markers = markers
        self.killed: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = list(self.markers.iterdir())
            if found:
                self.killed = int(found[0].name)
                os.kill(self.killed, signal.SIGKILL)
                return
            time.sleep(0.005)


def test_a_worker_killed_mid_shard_leaves_a_store_bitwise_equal_to_an_in_process_run(
    cluster: str, markers: Path, reference: Path, tmp_path: Path
) -> None:
    for marker in markers.iterdir():
        marker.unlink()
    killer = WorkerKiller(markers)
    killer.start()
    summary = generate(config(tmp_path / "s.zarr", scheduler=cluster))
    killer.join()
    assert killer.killed is not None
    with pytest.raises(ProcessLookupError):
        os.kill(killer.killed, 0)  # really gone: its shard was run again by another worker
    assert summary.shards_written == summary.shards_total == 23
    assert_bitwise_equal(tmp_path / "s.zarr", reference)


def test_a_cluster_run_resumes_an_interrupted_store(cluster: str, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    generate(config(out))
    # As an interruption leaves it: two shards never recorded.
    zarr.open_array(str(out / SHARDS_DONE_ARRAY), mode="r+")[[3, 17]] = 0
    summary = generate(config(out, scheduler=cluster))
    assert summary.shards_written == 2 and summary.rows_written == 128
    assert_bitwise_equal(out, reference)


def test_completing_a_store_removes_the_half_written_chunk_of_a_killed_worker(
    reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.zarr"
    generate(config(out))
    header = read_header(str(out))
    writer = StoreWriter(
        str(out), header, header.layout.encoding_spec.build()
    )  # as the cluster's client holds it
    leftover = out / "targets" / "c" / f"0.{'0' * 32}.partial"  # zarr's name for a chunk being written
    leftover.write_bytes(b"half a chunk")
    writer.mark_complete()
    assert not leftover.exists()
    assert_bitwise_equal(out, reference)


def test_a_cluster_run_refuses_a_store_made_with_other_settings(cluster: str, reference: Path) -> None:
    with pytest.raises(StoreMismatchError, match="temperature"):
        generate(config(reference, temperature=4.0, scheduler=cluster))


def test_a_cuda_run_refuses_a_cluster_without_gpu_workers(cluster: str, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="offers a GPU: start one worker per GPU"):
        generate(config(tmp_path / "s.zarr", scheduler=cluster, device="cuda"))
    assert not (tmp_path / "s.zarr").exists()  # refused before the store was made


def test_a_worker_with_another_teacher_writes_nothing(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    generate(config(out))
    zarr.open_array(str(out / SHARDS_DONE_ARRAY), mode="r+")[0] = 0
    header = read_header(str(out))
    other = replace(header.provenance.teacher, parameters_sha256="0" * 64)
    forged = replace(header, provenance=replace(header.provenance, teacher=other))
    with pytest.raises(StoreMismatchError, match="another teacher than the run"):
        generate_shard(config(out), forged, 0)
    assert not open_store(out, allow_incomplete=True).shards_done()[0]


def test_a_worker_on_another_device_type_writes_nothing(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    generate(config(out))
    zarr.open_array(str(out / SHARDS_DONE_ARRAY), mode="r+")[0] = 0
    header = read_header(str(out))
    on_gpus = replace(
        header, provenance=replace(header.provenance, compute={**header.provenance.compute, "device": "cuda"})
    )
    with pytest.raises(
        InvalidArgumentError, match="device 'cpu' is cpu on dask worker .* but this run computes on cuda"
    ):
        generate_shard(config(out, device="cpu"), on_gpus, 0)
    assert not open_store(out, allow_incomplete=True).shards_done()[0]


def test_convert_on_a_cluster_equals_convert_in_threads(
    cluster: str, full_store: Path, tmp_path: Path
) -> None:
    topk = EncodingSpec.create("topk", k=3)
    convert_store(full_store, tmp_path / "threads.zarr", topk, chunk_rows=64)
    convert_store(full_store, tmp_path / "cluster.zarr", topk, chunk_rows=64, scheduler=cluster)
    ours, theirs = (
        open_store(tmp_path / "cluster.zarr").read_all(),
        open_store(tmp_path / "threads.zarr").read_all(),
    )
    for name, values in theirs.fields.items():
        np.testing.assert_array_equal(ours.fields[name], values, err_msg=name)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"scheduler": "local:0"}, "scheduler 'local:0' must be local:N with N >= 1"),
        ({"scheduler": "yarn"}, "scheduler 'yarn' is not one of threads, processes, synchronous, local:N"),
        ({"scheduler": "local:2", "workers": 2}, "has its own worker processes"),
    ],
)
def test_convert_refuses_bad_cluster_options(
    full_store: Path, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        convert_store(full_store, tmp_path / "out.zarr", EncodingSpec.create("topk", k=2), **options)


def test_generate_refuses_a_dask_local_scheduler(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="scheduler 'threads' is not one of in-process, local:N"):
        config(tmp_path / "s.zarr", scheduler="threads")


def test_an_unreachable_scheduler_is_one_clear_error(
    full_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ClusterError, match="cannot reach a dask scheduler at tcp://127.0.0.1:9"):
        convert_store(
            full_store, tmp_path / "out.zarr", EncodingSpec.create("topk", k=2), scheduler="tcp://127.0.0.1:9"
        )


@pytest.mark.parametrize("name, count, index", [(0, 4, 0), (5, 4, 1), ("tcp://10.0.0.1:4000", 2, 0)])
def test_local_workers_spread_over_the_gpus(name: object, count: int, index: int) -> None:
    assert cuda_index_of_worker(name, count) == index


def test_convert_on_a_local_cluster_it_starts(full_store: Path, tmp_path: Path) -> None:
    topk = EncodingSpec.create("topk", k=3)
    convert_store(full_store, tmp_path / "threads.zarr", topk, chunk_rows=64)
    environment = dict(os.environ)
    summary = convert_store(full_store, tmp_path / "local.zarr", topk, chunk_rows=64, scheduler="local:1")
    assert summary.shards_written == 23
    # dask exports OMP_NUM_THREADS=1 and more while its cluster runs; none of it may outlive the run.
    assert dict(os.environ) == environment
    assert store_files(tmp_path / "local.zarr") == store_files(tmp_path / "threads.zarr")


def test_cli_generate_on_a_cluster_prints_the_dashboard(
    cluster: str, reference: Path, tmp_path: Path, softlabels_main: Any
) -> None:
    out = tmp_path / "s.zarr"
    result = softlabels_main(
        "generate", "--dataset", "digits", "--teacher", TEACHER, "--temperature", "3", "--chunk-rows", "64",
        "--batch-size", "32", "--format", "topk", "--k", "3", "--out", str(out), "--scheduler", cluster,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "23 of 23 shards this run" in result.stdout
    assert f"dask scheduler {cluster}: 2 workers, dashboard http://" in result.stderr
    assert_bitwise_equal(out, reference)


def test_cli_refuses_a_bad_scheduler_in_one_line(softlabels_main: Any, tmp_path: Path) -> None:
    result = softlabels_main(
        "generate", "--dataset", "digits", "--teacher", TEACHER, "--temperature", "3", "--out",
        str(tmp_path / "s.zarr"), "--scheduler", "local:many",
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        "Invalid value for '--scheduler': scheduler 'local:many' must be local:N with N >= 1" in result.stderr
    )
