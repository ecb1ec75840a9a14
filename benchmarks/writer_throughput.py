"""Does the store's writer keep up? Its write throughput vs ``numpy.save``, and ``generate`` with a fast teacher.

1. **Throughput.** 50,000 x 1,000 scaled logits (float32, as a teacher hands them over in batches
   of 256) written into a ``full`` float16 store by ``generate``'s background writer with 1 write
   thread (shards one after another, as before) and with ``--threads`` write threads, next to
   ``numpy.save`` of the same rows already cast to float16 (the same bytes, 100 MB). The store
   arms include encoding (the float16 cast), zstd, crc32c, the per-shard lock and fencing, and
   creating and completing the store. Each arm is timed twice: when it returns (the bytes are in
   the page cache) and after an ``fsync`` of every file it wrote (the bytes are on disk). Arms
   alternate over ``--repeats``; the fastest of each is reported, with the load average.
2. **generate with a fast teacher.** ``generate`` over ``--generate-rows`` x 1,000 with the
   ``benchmarks/cheap_plugins.py`` plug-ins (the teacher looks its logits up in a table), its
   background writer timed from the teacher loop: the time ``put`` waits for room in the queue
   (the writer is behind) and the time ``close`` waits for the last shards. When both are a small
   part of the run, the teacher side (loading, forward, selection) is the bound, not the writer.

Run: ``python benchmarks/writer_throughput.py [--repeats 3] [--threads 4]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import REPO_ROOT, write_results

from softlabels import defaults, generate
from softlabels.processing.generation import runner
from softlabels.processing.generation.background import BackgroundWriter, PendingBatch
from softlabels.processing.generation.select import select_on_device
from softlabels.store import (
    DatasetInfo,
    FullEncoding,
    Layout,
    Provenance,
    StoreHeader,
    StoreWriter,
    TeacherInfo,
    default_chunk_rows,
)

ROWS, CLASSES, BATCH = 50_000, 1_000, 256
PLUGINS = REPO_ROOT / "benchmarks" / "cheap_plugins.py"
GENERATE_OUT = Path("data/bench/writer_throughput/cheap-full-float16.zarr")


def header(rows: int, classes: int) -> StoreHeader:
    encoding = FullEncoding("float16")
    chunk_rows = default_chunk_rows(encoding.bytes_per_row(classes))
    dataset = DatasetInfo("bench", "train", rows, classes, tuple(map(str, range(classes))), "0" * 64)
    return StoreHeader(
        layout=Layout(encoding.name, encoding.params(), rows, classes, chunk_rows, chunk_rows),
        provenance=Provenance(
            teacher=TeacherInfo("bench", 0, None, None),
            dataset=dataset,
            temperature=1.0,
            precision="fp32",
            command="benchmarks/writer_throughput.py",
            config={},
            created="2026-01-01T00:00:00+00:00",
            versions={},
        ),
    )


def fsync_tree(path: Path) -> None:
    files = [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
    for item in files:
        handle = os.open(item, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_store(
    out: Path, values: torch.Tensor, targets: torch.Tensor, finite: torch.Tensor, threads: int
) -> None:
    encoding = FullEncoding("float16")
    writer = StoreWriter.open(out, header(len(values), values.shape[1]), encoding)
    background = BackgroundWriter(writer, writer.encoding, write_threads=threads)
    shard_rows = writer.header.layout.shard_rows
    for first in range(0, len(values), BATCH):
        stop = min(first + BATCH, (first // shard_rows + 1) * shard_rows)  # batches never cross a shard
        rows = values[first:stop]
        # The teacher loop's side (selection, finiteness) is not the writer's work: made outside the write.
        background.put(
            PendingBatch(
                shard=first // shard_rows,
                first_row=first,
                selected=select_on_device(writer.encoding, rows, first),
                targets=targets[first:stop],
                ready=None,
                finite=finite[first:stop],
            )
        )
    background.close()
    writer.mark_complete()


def timed_arm(write: Any, out: Path) -> dict[str, float]:
    """Seconds to return, seconds to return and fsync, and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    write(out)
    returned = time.perf_counter() - wall
    fsync_tree(out)
    return {"written_s": returned, "synced_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def throughput(repeats: int, threads: int, scratch: Path) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(ROWS, CLASSES, generator=generator) * 3
    targets = torch.zeros(ROWS, dtype=torch.long)
    finite = torch.ones(ROWS, dtype=torch.bool)
    half = values.numpy().astype(np.float16)
    arms: dict[str, Any] = {
        "numpy.save": lambda out: np.save(out, half),
        "store, 1 write thread": lambda out: write_store(out, values, targets, finite, 1),
        f"store, {threads} write threads": lambda out: write_store(out, values, targets, finite, threads),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for index, name in enumerate(arms if repeat % 2 == 0 else reversed(list(arms))):
            out = scratch / f"arm{index}-{repeat}{'.npy' if name == 'numpy.save' else '.zarr'}"
            runs[name].append(timed_arm(arms[name], out))
            print(f"repeat {repeat + 1} {name}: {runs[name][-1]}", flush=True)
            shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink()
    megabytes = half.nbytes / 1e6
    best = {name: {key: min(run[key] for run in found) for key in found[0]} for name, found in runs.items()}
    result: dict[str, Any] = {
        "megabytes": megabytes,
        "runs": runs,
        "fastest": best,
        "ratios_to_numpy_save": {},
    }
    for name, figures in best.items():
        for key in ("written_s", "synced_s"):
            result["ratios_to_numpy_save"][f"{name}, {key[:-2]}"] = best["numpy.save"][key] / figures[key]
    return result


class TimedBackgroundWriter(BackgroundWriter):
    """``generate``'s background writer, timing how long the teacher loop waits for it."""

    put_wait_s = 0.0
    close_wait_s = 0.0

    def put(self, batch: PendingBatch) -> None:
        started = time.perf_counter()
        super().put(batch)  # returns at once unless the queue is full: the writer is behind
        TimedBackgroundWriter.put_wait_s += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        super().close()  # the shards still queued or being written when the teacher is done
        TimedBackgroundWriter.close_wait_s += time.perf_counter() - started


def generate_side_by_side(repeats: int) -> dict[str, Any]:
    """``generate`` wall time, and how much of it the teacher loop spent waiting for the writer."""
    spec, teacher = f"{PLUGINS}:cheap_dataset", f"{PLUGINS}:precomputed_teacher"
    runner.BackgroundWriter = TimedBackgroundWriter  # type: ignore[misc]
    runs = []
    for repeat in range(repeats):
        TimedBackgroundWriter.put_wait_s = TimedBackgroundWriter.close_wait_s = 0.0
        cpu = time.process_time()
        summary = generate(
            dataset=spec,
            teacher=teacher,
            out=str(GENERATE_OUT),
            temperature=1.0,
            overwrite=True,
            progress=False,
        )
        waited = TimedBackgroundWriter.put_wait_s + TimedBackgroundWriter.close_wait_s
        runs.append(
            {
                "generate_s": summary.seconds,
                "cpu_s": time.process_time() - cpu,
                "waiting_for_queue_room_s": TimedBackgroundWriter.put_wait_s,
                "draining_at_close_s": TimedBackgroundWriter.close_wait_s,
                "waiting_fraction": waited / summary.seconds,
            }
        )
        print(f"repeat {repeat + 1}: {runs[-1]}", flush=True)
    return {
        "rows": int(os.environ["CHEAP_ROWS"]),
        "classes": CLASSES,
        "runs": runs,
        "smallest_waiting_fraction": min(run["waiting_fraction"] for run in runs),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=defaults.WRITE_THREADS)
    parser.add_argument("--generate-rows", type=int, default=ROWS)
    args = parser.parse_args()
    os.environ["CHEAP_ROWS"], os.environ["CHEAP_CLASSES"] = str(args.generate_rows), str(CLASSES)
    load_before = load_average()
    with tempfile.TemporaryDirectory(dir=REPO_ROOT / "data") as scratch:  # the disk the stores go to
        write = throughput(args.repeats, args.threads, Path(scratch))
    fast_teacher = generate_side_by_side(args.repeats)
    results = {
        "command": f"python benchmarks/writer_throughput.py --repeats {args.repeats} --threads {args.threads} "
        f"--generate-rows {args.generate_rows}",
        "load_average_1_5_15_min": {"before": load_before, "after": load_average()},
        "write_50000x1000_float16": write,
        "generate_fast_teacher": fast_teacher,
    }
    path = write_results("writer_throughput", results)
    lines = [
        "| arm | written (s) | MB/s | vs numpy.save | synced (s) | vs numpy.save |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ratios = write["ratios_to_numpy_save"]
    for name, figures in write["fastest"].items():
        lines.append(
            f"| {name} | {figures['written_s']:.3f} | {write['megabytes'] / figures['written_s']:.0f} | "
            f"{ratios[f'{name}, written']:.2f} | {figures['synced_s']:.3f} | {ratios[f'{name}, synced']:.2f} |"
        )
    print("\n".join(lines))
    for run in fast_teacher["runs"]:
        print(
            f"generate {run['generate_s']:.2f} s, of which waiting for the writer "
            f"{run['waiting_for_queue_room_s']:.2f} s + {run['draining_at_close_s']:.2f} s at the end"
        )
    print(f"load average {load_before} -> {results['load_average_1_5_15_min']['after']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
