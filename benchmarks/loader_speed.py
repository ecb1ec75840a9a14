"""What does the trainer's loader cost per epoch on digits: hard labels vs a store held in memory or streamed?

The loader alone (:class:`SoftLabelLoader`, no training step), batch 64, over the digits training
split (1,437 samples) with 0 and 2 DataLoader workers, in three arms: ``hard`` (no store: what
``train-student --no-kd`` loads), ``store`` (a float16 ``full`` store held in memory) and
``store-streamed`` (the same store with a memory budget of 0: blocks of whole chunks read ahead).
Each arm runs ``--epochs`` epochs on one loader (workers persist); reported: the fastest epoch
after the first, wall and CPU time of the main process, alternating the arms' order over
``--repeats``. The store comes from a random-weights ``mlp`` teacher (speed does not depend on
its quality) and is written once to ``data/bench/loader_speed/``.

Run: ``python benchmarks/loader_speed.py [--epochs 8] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import write_results

from softlabels import generate
from softlabels.streaming import SoftLabelDataset, SoftLabelLoader
from softlabels.streaming.dataset import DEFAULT_MEMORY_BUDGET_BYTES

ARMS = ("hard", "store", "store-streamed")
STORE = Path("data/bench/loader_speed/digits-full-float16.zarr")


def epoch_times(arm: str, num_workers: int, epochs: int, batch_size: int) -> tuple[float, float]:
    """Milliseconds of the fastest epoch after the first: wall, and CPU of this process."""
    dataset = SoftLabelDataset(
        None if arm == "hard" else STORE,
        "digits",
        memory_budget_bytes=0 if arm == "store-streamed" else DEFAULT_MEMORY_BUDGET_BYTES,
    )
    walls, cpus = [], []
    with SoftLabelLoader(dataset, batch_size, num_workers=num_workers) as loader:
        for epoch in range(epochs):
            dataset.set_epoch(epoch)
            wall, cpu = time.perf_counter(), time.process_time()
            samples = sum(len(targets) for _, _, targets in loader)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            if samples != len(dataset):
                raise RuntimeError(f"{arm}: {samples} samples, expected {len(dataset)}")
    return 1000 * min(walls[1:]), 1000 * min(cpus[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    generate(
        dataset="digits", teacher="mlp", random_weights=True, temperature=4.0, out=str(STORE), progress=False
    )
    best: dict[str, dict[str, float]] = {}
    for repeat in range(args.repeats):
        for workers in args.workers:
            for arm in ARMS if repeat % 2 == 0 else reversed(ARMS):
                wall, cpu = epoch_times(arm, workers, args.epochs, args.batch_size)
                key = f"{arm}, {workers} workers"
                previous = best.get(key, {"wall_ms": wall, "cpu_ms": cpu})
                best[key] = {
                    "wall_ms": min(wall, previous["wall_ms"]),
                    "cpu_ms": min(cpu, previous["cpu_ms"]),
                }
                print(f"repeat {repeat + 1} {key}: {wall:.1f} ms wall, {cpu:.1f} ms CPU", flush=True)
    results: dict[str, Any] = {
        "command": f"python benchmarks/loader_speed.py --epochs {args.epochs} --repeats {args.repeats} "
        f"--batch-size {args.batch_size} --workers {' '.join(map(str, args.workers))}",
        "dataset": "digits [train], 1,437 samples",
        "fastest_epoch_ms": best,
    }
    path = write_results("loader_speed", results)
    lines = ["| arm | workers | epoch wall (ms) | main-process CPU (ms) |", "| --- | --- | --- | --- |"]
    for key, value in best.items():
        arm, workers = key.split(", ")
        lines.append(f"| {arm} | {workers.split()[0]} | {value['wall_ms']:.1f} | {value['cpu_ms']:.1f} |")
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
