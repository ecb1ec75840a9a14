"""Does ``generate`` scale over dask.distributed workers?

1. **Accelerator stand-in.** A plug-in teacher that sleeps a fixed time per batch (holding no
   CPU, as a process waiting on its GPU does) and returns real logits, over samples that cost
   nothing to load. ``generate`` wall time on a LocalCluster of 1, 2, 4 and 8 worker processes;
   goal: speed-up >= 0.8 x N. The cluster is started and its workers have imported softlabels
   before the clock starts (the start-up is reported apart); every store is checked to hold the
   same bytes as the 1-worker store.
2. **Real CPU teacher.** The built-in ``cnn`` (random weights) over the CIFAR-10 test split (10,000
   JPEGs) in this process and on 1 and 2 workers. On a 2-core machine this is bound by the cores,
   not by softlabels.

Run: ``python benchmarks/generate_scaling.py [--workers 1 2 4 8] [--sleep 0.5] [--shards 32] [--skip-real]``
Results: ``benchmarks/results/generate_scaling.json``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from common import CIFAR_ARCHIVE, cifar10_root, timed, write_results
from distributed import Client, LocalCluster

from softlabels.format.encoding_spec import EncodingSpec
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.store import open_store

HERE = Path(__file__).resolve().parent
BATCH = 256
BATCHES_PER_SHARD = 2
CLASSES = 100


def started_cluster(workers: int) -> tuple[LocalCluster, float]:
    """A LocalCluster whose workers have already imported the generate task's module; and its start-up time."""

    def start() -> LocalCluster:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        with Client(cluster) as client:
            client.run(importlib.import_module, "softlabels.processing.generation.distributed")
        return cluster

    seconds, cluster = timed(start)
    return cluster, seconds


def stored(out: Path) -> dict[str, np.ndarray]:
    rows = open_store(out).read_all()
    return {**rows.fields, "targets": rows.targets}


def sleeping_teacher_scaling(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rows = args.shards * BATCHES_PER_SHARD * BATCH
    # Read by the plug-ins in every process, workers included (they inherit this environment).
    os.environ.update(
        {"CHEAP_ROWS": str(rows), "CHEAP_CLASSES": str(CLASSES), "SCALING_SLEEP_S": str(args.sleep)}
    )
    base = GenerateConfig(
        dataset=f"{HERE / 'cheap_plugins.py'}:cheap_dataset",
        teacher=f"{HERE / 'scaling_plugins.py'}:sleeping_teacher",
        temperature=1.0,
        out="",
        batch_size=BATCH,
        chunk_rows=BATCH,
        chunks_per_shard=BATCHES_PER_SHARD,
        encoding=EncodingSpec.create("full", dtype="float16"),
        progress=False,
    )
    runs: list[dict[str, Any]] = []
    reference: dict[str, np.ndarray] | None = None
    for workers in args.workers:
        cluster, start_s = started_cluster(workers)
        with cluster:
            out = root / f"sleeping-{workers}.zarr"
            seconds, _ = timed(
                partial(generate, replace(base, out=str(out), scheduler=cluster.scheduler_address))
            )
        arrays = stored(out)
        reference = reference or arrays
        same = all(np.array_equal(arrays[name], reference[name]) for name in reference)
        runs.append(
            {
                "workers": workers,
                "seconds": round(seconds, 2),
                "cluster_start_s": round(start_s, 2),
                "same_bytes_as_first": same,
            }
        )
        print(
            f"sleeping teacher, {workers} workers: {seconds:.1f} s (cluster start {start_s:.1f} s), same bytes: {same}"
        )
    first = runs[0]
    for run in runs:
        speedup = first["seconds"] * first["workers"] / run["seconds"]
        run["speedup_vs_1"] = round(speedup, 2)
        run["efficiency"] = round(speedup / run["workers"], 2)
        run["goal_met"] = run["efficiency"] >= 0.8
    teacher_bound = args.shards * BATCHES_PER_SHARD * args.sleep
    return {
        "setup": (
            f"{rows} samples x {CLASSES} classes (cheap_dataset), {args.shards} shards of {BATCHES_PER_SHARD} batches "
            f"of {BATCH}, teacher sleeps {args.sleep} s per batch, full float16; LocalCluster with 1 thread per "
            "worker, started and warmed before timing"
        ),
        "teacher_seconds_one_worker": teacher_bound,
        "goal": "speedup >= 0.8 x workers",
        "runs": runs,
    }


def real_teacher_scaling(root: Path) -> dict[str, Any]:
    dataset = f"imagefolder:{cifar10_root()}"
    base = GenerateConfig(
        dataset=dataset,
        split="test",
        teacher="cnn",
        random_weights=True,
        temperature=4.0,
        out="",
        batch_size=BATCH,
        device="cpu",
        progress=False,
    )
    runs: list[dict[str, Any]] = []
    seconds, _ = timed(partial(generate, replace(base, out=str(root / "real-in-process.zarr"))))
    runs.append({"scheduler": "in-process", "seconds": round(seconds, 2)})
    print(f"cnn on CIFAR-10 test, in process: {seconds:.1f} s")
    for workers in (1, 2):
        cluster, start_s = started_cluster(workers)
        with cluster:
            out = root / f"real-{workers}.zarr"
            seconds, _ = timed(
                partial(generate, replace(base, out=str(out), scheduler=cluster.scheduler_address))
            )
        runs.append(
            {
                "scheduler": f"local:{workers}",
                "seconds": round(seconds, 2),
                "cluster_start_s": round(start_s, 2),
            }
        )
        print(f"cnn on CIFAR-10 test, {workers} workers: {seconds:.1f} s (cluster start {start_s:.1f} s)")
    return {
        "setup": "built-in cnn (random weights) over CIFAR-10 test (10,000 JPEGs), batch 256, cpu, full float16",
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--sleep", type=float, default=0.5, help="Seconds the stand-in teacher sleeps per batch."
    )
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--skip-real", action="store_true", help="Skip the real CPU teacher on CIFAR-10.")
    args = parser.parse_args()
    results: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as folder:
        results["sleeping_teacher"] = sleeping_teacher_scaling(args, Path(folder))
        if not args.skip_real and CIFAR_ARCHIVE.exists():
            results["real_cpu_teacher"] = real_teacher_scaling(Path(folder))
    results["load_average_at_end"] = os.getloadavg()[0]
    print(f"wrote {write_results('generate_scaling', results)}")


if __name__ == "__main__":
    main()
