"""How long does an epoch over WikiText-2 take for each built-in language model, on this machine?

For each of ``lm-transformer``, ``lm-transformer-small`` and ``lm-lstm``: a training step
(forward, cross-entropy over every position, backward, AdamW) and a teacher forward pass
(``generate``'s work, under ``inference_mode``) on batches of ``--batch-size`` windows of
``--seq-len`` tokens of ``text:<wikitext-2>`` (``train``: ``valid.txt``, about 216k tokens).
Each figure is the median of ``--steps`` timed steps after two warm-up steps, times the steps
of one epoch, as wall time and as CPU time of all the process's threads. The load average is
recorded: on a shared machine wall times grow with it, and CPU time / threads estimates the wall
time on an idle machine.

Run: ``python benchmarks/lm_epoch_time.py [--seq-len 64] [--batch-size 32] [--steps 8] [--threads 2]``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch
from common import DATASETS, write_results
from torch.nn import functional

from softlabels.sources import DatasetSource, count_parameters, load_dataset, load_model

MODELS = ("lm-transformer", "lm-transformer-small", "lm-lstm")


def median_seconds(step: Callable[[], None], steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of one ``step`` (CPU time counts all threads of the process)."""
    for _ in range(2):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(wall), statistics.median(cpu)


def measure(name: str, source: DatasetSource, batch_size: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = load_model(
        name,
        num_classes=source.num_classes,
        input_shape=source.input_shape,
        input_dtype=source.input_dtype,
        random_weights=True,
    ).module
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = [source.dataset[index] for index in range(batch_size)]
    tokens = torch.stack([row[0] for row in rows])
    targets = torch.stack([row[1] for row in rows])

    def train_step() -> None:
        model.train()
        optimizer.zero_grad()
        logits = model(tokens)
        functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100).backward()
        optimizer.step()

    def teacher_step() -> None:
        model.eval()
        with torch.inference_mode():
            model(tokens)

    batches = math.ceil(len(source) / batch_size)
    train_wall, train_cpu = median_seconds(train_step, steps)
    forward_wall, forward_cpu = median_seconds(teacher_step, steps)
    return {
        "parameters": count_parameters(model),
        "train_epoch_wall_s": round(train_wall * batches, 1),
        "train_epoch_cpu_s": round(train_cpu * batches, 1),
        "teacher_pass_wall_s": round(forward_wall * batches, 1),
        "teacher_pass_cpu_s": round(forward_cpu * batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = load_dataset(f"text:{DATASETS / 'wikitext-2'}", "train", seq_len=args.seq_len)
    results: dict[str, object] = {
        "dataset": "wikitext-2 train (valid.txt)",
        "windows": len(source),
        "vocabulary": source.num_classes,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "load_average_before": os.getloadavg()[0],
    }
    for name in MODELS:
        results[name] = measure(name, source, args.batch_size, args.steps)
        print(name, results[name], flush=True)
    results["load_average_after"] = os.getloadavg()[0]
    print(write_results("lm_epoch_time", results))


if __name__ == "__main__":
    main()
