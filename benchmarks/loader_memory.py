"""How much memory does the student loader hold, with 1 and 4 DataLoader workers, on a 1,000-class store?

A float16 ``full`` store of 30,000 rows x 1,000 classes (60 MB of values stored, 120 MB decoded
to float32 with int64 targets: within the default 256 MiB budget, so held in memory) over a
synthetic 1,000-class dataset of tiny inputs, so that labels dominate. Each arm runs in a fresh
process, iterates ``--epochs`` epochs and samples every 20 ms the memory of its main process and
of its workers:

* ``hard-labels``: the trainer's loader without a store (``--no-kd``): what workers and batching
  cost without any labels;
* ``loader``: what the trainer runs (:class:`SoftLabelLoader`): labels read once, in the main
  process; persistent workers load raw inputs only;
* ``loader-streamed``: the same with a memory budget of 0 (blocks of whole chunks, read ahead);
* ``dataset-in-workers``: the previous trainer's way: the :class:`SoftLabelDataset` iterated
  inside the workers of a new DataLoader each epoch, so every worker reads and decodes its own
  copy of the labels every epoch.

Reported per arm: the peak memory the loader adds (the main process's RSS growth since the dataset
was built plus its workers' private memory, USS: pages a worker shares with the main process, such
as torch itself, are not counted twice), the peaks of the main process's RSS and of the workers'
USS and RSS (RSS counts shared pages in every process), the number of label reads, and seconds per
epoch.

Run: ``python benchmarks/loader_memory.py [--workers 1 4] [--epochs 2] [--batch-size 256]``; the
store is written once to ``data/bench/loader_memory/`` with a random-weights ``mlp`` teacher.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

ROWS = 30_000
CLASSES = 1_000
SPEC = f"{Path(__file__).resolve()}:thousand_classes"
STORE = Path("data/bench/loader_memory/full-float16-1000.zarr")
ARMS = ("hard-labels", "loader", "loader-streamed", "dataset-in-workers")
MB = 1 << 20


class ThousandClasses(Dataset[tuple[torch.Tensor, int]]):
    """``ROWS`` tiny inputs (3 x 8 x 8) of ``CLASSES`` classes; sample ``i`` has label ``i % CLASSES``."""

    def __init__(self, split: str) -> None:
        self.classes = [f"class {index}" for index in range(CLASSES)]
        self.targets = [index % CLASSES for index in range(ROWS)]
        self.fingerprint = hashlib.sha256(f"{split} {ROWS} x {CLASSES}".encode()).hexdigest()
        self.preprocessing = "synthetic-3x8x8/v1"

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index >= ROWS:
            raise IndexError(index)
        return torch.full((3, 8, 8), (index % 251) / 251), self.targets[index]


def thousand_classes(split: str) -> ThousandClasses:
    """The plug-in callable (``loader_memory.py:thousand_classes``)."""
    return ThousandClasses(split)


def write_store() -> None:
    from softlabels import generate

    generate(
        dataset=SPEC,
        teacher="mlp",
        random_weights=True,
        temperature=4.0,
        out=str(STORE),
        device="cpu",
        progress=False,
    )


class MemoryMonitor:
    """Peak memory of this process and its children, sampled on a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.baseline_rss = self.process.memory_info().rss
        self.peaks = dict.fromkeys(("added", "main_rss", "workers_uss", "workers_rss"), 0)
        self.max_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        import psutil

        main = self.process.memory_full_info()
        workers_rss = workers_uss = count = 0
        for child in self.process.children(recursive=True):
            try:
                info = child.memory_full_info()
            except psutil.Error:  # a worker that just exited
                continue
            workers_rss += info.rss
            workers_uss += info.uss
            count += 1
        self.max_workers = max(self.max_workers, count)
        return {
            "added": main.rss - self.baseline_rss + workers_uss,
            "main_rss": main.rss,
            "workers_uss": workers_uss,
            "workers_rss": workers_rss,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, value in self.sample().items():
                self.peaks[name] = max(self.peaks[name], value)
            time.sleep(self.interval)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def count_label_reads(log: Path) -> None:
    """Append a line to ``log`` for every label read, from whichever process reads it."""
    from softlabels.store import LabelStore

    original = LabelStore.read_rows

    def recording(self: LabelStore, start: int, stop: int, **options: bool) -> Any:
        with log.open("a") as file:
            file.write(f"{start} {stop}\n")
        return original(self, start, stop, **options)

    LabelStore.read_rows = recording  # type: ignore[method-assign]


def run_arm(arm: str, num_workers: int, epochs: int, batch_size: int) -> dict[str, Any]:
    """One arm, in this (fresh) process."""
    from torch.utils.data import DataLoader

    from softlabels.streaming import SoftLabelDataset, SoftLabelLoader
    from softlabels.streaming.dataset import DEFAULT_MEMORY_BUDGET_BYTES

    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "reads.txt"
        count_label_reads(log)
        budget = 0 if arm == "loader-streamed" else DEFAULT_MEMORY_BUDGET_BYTES
        dataset = SoftLabelDataset(None if arm == "hard-labels" else STORE, SPEC, memory_budget_bytes=budget)
        monitor = MemoryMonitor()
        epoch_seconds = []
        with monitor:
            in_workers = arm == "dataset-in-workers"
            loader = None if in_workers else SoftLabelLoader(dataset, batch_size, num_workers=num_workers)
            for epoch in range(epochs):
                dataset.set_epoch(epoch)
                started = time.perf_counter()
                batches = (
                    loader if loader is not None else DataLoader(dataset, batch_size, num_workers=num_workers)
                )
                samples = sum(len(targets) for _, _, targets in batches)
                epoch_seconds.append(time.perf_counter() - started)
                if samples != ROWS:
                    raise RuntimeError(f"{arm}: {samples} samples in epoch {epoch}, expected {ROWS}")
            if loader is not None:
                loader.close()
        reads = log.read_text().splitlines() if log.exists() else []
    return {
        "arm": arm,
        "num_workers": num_workers,
        "in_memory": dataset.in_memory,
        "label_bytes_decoded_mb": dataset.label_bytes / MB,
        "baseline_main_rss_mb": monitor.baseline_rss / MB,
        "peak_mb": {name: value / MB for name, value in monitor.peaks.items()},
        "worker_processes_seen": monitor.max_workers,
        "label_reads": len(reads),
        "rows_read": sum(int(stop) - int(start) for start, stop in (line.split() for line in reads)),
        "epoch_seconds": epoch_seconds,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| arm | workers | labels held | memory added (MB) | main RSS (MB) | workers' USS, summed (MB) "
        "| workers' RSS, summed (MB) | label reads (rows read) | s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        peak = result["peak_mb"]
        held = "none" if result["arm"] == "hard-labels" else ("whole" if result["in_memory"] else "streamed")
        lines.append(
            f"| {result['arm']} | {result['num_workers']} | {held} | {peak['added']:.0f} "
            f"| {peak['main_rss']:.0f} | {peak['workers_uss']:.0f} | {peak['workers_rss']:.0f} "
            f"| {result['label_reads']} ({result['rows_read']:,}) "
            f"| {sum(result['epoch_seconds']) / len(result['epoch_seconds']):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument(
        "--child", nargs=4, metavar=("ARM", "WORKERS", "EPOCHS", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        arm, workers, epochs, batch = args.child
        print(json.dumps(run_arm(arm, int(workers), int(epochs), int(batch))))
        return
    write_store()
    results = []
    for arm in args.arms:
        for workers in args.workers:
            child = [
                sys.executable,
                __file__,
                "--child",
                arm,
                str(workers),
                str(args.epochs),
                str(args.batch_size),
            ]
            output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            added = results[-1]["peak_mb"]["added"]
            print(f"{arm}, {workers} workers: +{added:.0f} MB", flush=True)
    from common import write_results

    from softlabels.store import open_store

    store = open_store(STORE)
    command = "python benchmarks/loader_memory.py " + " ".join(
        f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in vars(args).items()
        if key != "child"
    )
    path = write_results(
        "loader_memory",
        {
            "command": command,
            "store": {
                "rows": ROWS,
                "classes": CLASSES,
                "format": "full float16",
                "bytes_on_disk_mb": (store.bytes_on_disk() or 0) / MB,
                "values_stored_mb": store.encoding.bytes_per_row(CLASSES) * ROWS / MB,
                "chunk_rows": store.layout.chunk_rows,
            },
            "threads": torch.get_num_threads(),
            "arms": results,
        },
    )
    print(markdown(results))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
