"""Epoch time of ``train-student`` with 1 and 2 ranks under ``torchrun`` (gloo on the CPU).

Each arm is a fresh ``torchrun --standalone --nproc-per-node R -m softlabels train-student`` on the
digits store (1,437 samples, a random-weights ``mlp`` teacher's labels) with the ``cnn`` student,
the same *global* batch (``--batch-size`` is per rank, so ``64 / R``) and learning rate. Reported
per arm: the median epoch time after the first epoch (from ``metrics.json``: training plus
validation, without process start-up), the whole command's wall time, and the final validation
accuracy.

Arms:

* ``1 rank, 1 thread``: the plain single-process loop, one torch thread;
* ``1 rank, 2 threads``: one process with as many torch threads as the 2-rank arm has in total;
* ``2 ranks, 1 thread each``: DistributedDataParallel over gloo.

Caveat: measured on a machine with 2 CPU cores, so 2 ranks share the cores a single process
could use itself; the figures show the overhead of DDP on the CPU (gradient all-reduce every step),
not the speed-up of one GPU per rank. Other jobs on the machine change the figures a lot (two
OpenMP threads spin-wait badly on busy cores), so the load average before and after is recorded.

Run: ``python benchmarks/ddp_epoch.py [--epochs 4] [--global-batch 64] [--student cnn]``; the store is
written once to ``data/bench/ddp_epoch/``; results go to ``benchmarks/results/ddp_epoch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import write_results

WORK = Path("data/bench/ddp_epoch")
STORE = WORK / "digits.zarr"
THREADS = 2


def write_store() -> None:
    from softlabels import generate

    generate(
        dataset="digits",
        teacher="mlp",
        random_weights=True,
        temperature=4.0,
        out=str(STORE),
        device="cpu",
        progress=False,
    )


def run_arm(ranks: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    out = WORK / f"run-{ranks}-ranks"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(ranks),
        "-m",
        "softlabels",
        "train-student",
        f"--labels={STORE}",
        "--dataset=digits",
        f"--student={args.student}",
        f"--epochs={args.epochs}",
        f"--batch-size={args.global_batch // ranks}",
        "--device=cpu",
        f"--out={out}",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, env=environment, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [row["seconds"] for row in metrics]
    return {
        "ranks": ranks,
        "threads_per_rank": threads,
        "batch_size_per_rank": args.global_batch // ranks,
        "epoch_seconds_median": statistics.median(epochs[1:] or epochs),
        "epoch_seconds": epochs,
        "command_seconds": wall,
        "final_val_accuracy": metrics[-1]["val_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--student", default="cnn")
    args = parser.parse_args()
    if not (STORE / "zarr.json").exists():
        write_store()
    load_before = os.getloadavg()[0]
    arms = [run_arm(1, 1, args), run_arm(1, THREADS, args), run_arm(2, THREADS // 2, args)]
    load_after = os.getloadavg()[0]
    print("| ranks | threads per rank | batch per rank | s per epoch (median) | s in all | val accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arm in arms:
        print(
            f"| {arm['ranks']} | {arm['threads_per_rank']} | {arm['batch_size_per_rank']} | "
            f"{arm['epoch_seconds_median']:.2f} | {arm['command_seconds']:.1f} | {arm['final_val_accuracy']:.2%} |"
        )
    speedup = min(arm["epoch_seconds_median"] for arm in arms[:2]) / arms[2]["epoch_seconds_median"]
    print(f"2 ranks vs the faster 1-rank arm: {speedup:.2f}x the epoch speed")
    path = write_results(
        "ddp_epoch",
        {
            "command": " ".join(["python", "benchmarks/ddp_epoch.py", *sys.argv[1:]]),
            "dataset": "digits (1,437 train / 360 test samples)",
            "student": args.student,
            "epochs": args.epochs,
            "global_batch": args.global_batch,
            "arms": arms,
            "speedup_2_ranks": speedup,
            "load_average_1min": {"before": load_before, "after": load_after},
            "caveat": "2 CPU cores shared by both ranks; gloo all-reduce every step",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
