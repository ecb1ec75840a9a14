"""Does the student's loader keep up with inputs that cost nothing? Rows per second, five ways.

A 20,000 x 1,000 ``full`` float16 store (``generate`` with the ``benchmarks/cheap_plugins.py``
plug-ins: samples that cost nothing, a teacher that looks its logits up) is loaded one epoch at a
time, batch 256, in this process (0 DataLoader workers), by:

* ``pt cache``: a torchdistill-style cache, one ``.pt`` file per sample (input, float32 logits,
  target) read in a random order through a DataLoader (``--cache-rows`` of them per epoch);
* ``dataset, per sample``: :class:`SoftLabelDataset` iterated in a DataLoader (a Python path per
  sample: yield, collate);
* ``loader, samples one by one``: :class:`SoftLabelLoader` (labels gathered a batch at a time)
  over the same data without ``get_batch`` (inputs read sample by sample);
* ``loader, batched``: :class:`SoftLabelLoader` with the plug-in's ``get_batch`` (one call per
  batch for inputs and targets, labels sliced from decoded chunks a batch at a time), labels held
  in memory;
* ``loader, batched, streamed``: the same with a memory budget of 0 (blocks of whole chunks read
  and decoded on a thread ahead of use).

Each arm runs ``--epochs`` epochs; reported: the fastest epoch's rows per second, with the arms
alternated over ``--repeats`` and the load average recorded (the figures are ratios on a shared
machine). Goal: ``loader, batched`` >= 50 x ``pt cache``.

Run: ``python benchmarks/loader_batched.py [--epochs 4] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import REPO_ROOT, write_results
from torch.utils.data import DataLoader, Dataset

from softlabels import generate
from softlabels.streaming import SoftLabelDataset, SoftLabelLoader

ROWS, CLASSES, BATCH = 20_000, 1_000, 256
PLUGINS = REPO_ROOT / "benchmarks" / "cheap_plugins.py"
WORK = Path("data/bench/loader_batched")
STORE = WORK / "cheap-full-float16.zarr"
CACHE = WORK / "pt-cache"
BATCHED, ONE_BY_ONE = f"{PLUGINS}:cheap_dataset", f"{PLUGINS}:cheap_dataset_one_by_one"


class PtCache(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """One ``.pt`` file per sample, as torchdistill's file cache keeps teacher outputs."""

    def __init__(self, folder: Path, rows: int) -> None:
        self.paths = [folder / f"{row}.pt" for row in range(rows)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        sample: dict[str, Any] = torch.load(self.paths[row])
        return sample["input"], sample["logits"], sample["target"]


def build_cache(rows: int) -> None:
    """Write the cache once from the store's rows (what a first training epoch would have saved)."""
    if (CACHE / f"{rows - 1}.pt").exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    dataset = SoftLabelDataset(STORE, BATCHED, shuffle=False)
    for row, (sample_input, logits, target) in enumerate(dataset):
        torch.save({"input": sample_input, "logits": logits, "target": target}, CACHE / f"{row}.pt")


def cache_epoch(rows: int, epoch: int) -> int:
    generator = torch.Generator().manual_seed(epoch)
    order = torch.randperm(ROWS, generator=generator)[:rows].tolist()
    loader = DataLoader(PtCache(CACHE, ROWS), batch_size=BATCH, sampler=order)
    return sum(len(targets) for _, _, targets in loader)


def dataset_epoch(dataset: SoftLabelDataset) -> int:
    return sum(len(targets) for _, _, targets in DataLoader(dataset, batch_size=BATCH))


def loader_epoch(loader: SoftLabelLoader) -> int:
    return sum(len(targets) for _, _, targets in loader)


def arm_rates(name: str, epochs: int, cache_rows: int) -> list[float]:
    """Rows per second of each epoch of arm ``name``."""
    if name == "pt cache":
        run = lambda epoch: cache_epoch(cache_rows, epoch)  # noqa: E731
    else:
        spec = ONE_BY_ONE if name == "loader, samples one by one" else BATCHED
        budget = {"memory_budget_bytes": 0} if name.endswith("streamed") else {}
        dataset = SoftLabelDataset(STORE, spec, **budget)
        loader = SoftLabelLoader(dataset, BATCH)

        def run(epoch: int) -> int:
            dataset.set_epoch(epoch)
            return dataset_epoch(dataset) if name == "dataset, per sample" else loader_epoch(loader)

    rates = []
    for epoch in range(epochs):
        started = time.perf_counter()
        rows = run(epoch)
        rates.append(rows / (time.perf_counter() - started))
    return rates


ARMS = (
    "pt cache",
    "dataset, per sample",
    "loader, samples one by one",
    "loader, batched",
    "loader, batched, streamed",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-rows", type=int, default=5_000)
    args = parser.parse_args()
    os.environ["CHEAP_ROWS"], os.environ["CHEAP_CLASSES"] = str(ROWS), str(CLASSES)
    generate(
        dataset=BATCHED,
        teacher=f"{PLUGINS}:precomputed_teacher",
        out=str(STORE),
        temperature=1.0,
        progress=False,
    )
    build_cache(ROWS)
    load_before = [round(value, 2) for value in os.getloadavg()]
    rates: dict[str, list[float]] = {name: [] for name in ARMS}
    for repeat in range(args.repeats):
        for name in ARMS if repeat % 2 == 0 else reversed(ARMS):
            rates[name].extend(arm_rates(name, args.epochs, args.cache_rows))
            print(f"repeat {repeat + 1} {name}: best {max(rates[name]):,.0f} rows/s", flush=True)
    best = {name: max(found) for name, found in rates.items()}
    results = {
        "command": f"python benchmarks/loader_batched.py --epochs {args.epochs} --repeats {args.repeats} "
        f"--cache-rows {args.cache_rows}",
        "store": f"{ROWS} x {CLASSES} full float16, batch {BATCH}, 0 DataLoader workers",
        "load_average_1_5_15_min": {"before": load_before, "after": [round(v, 2) for v in os.getloadavg()]},
        "rows_per_second": rates,
        "fastest_rows_per_second": best,
        "over_pt_cache": {name: rate / best["pt cache"] for name, rate in best.items()},
        "median_over_pt_cache": {
            name: float(np.median(found)) / float(np.median(rates["pt cache"]))
            for name, found in rates.items()
        },
    }
    path = write_results("loader_batched", results)
    lines = ["| arm | rows/s (fastest epoch) | x pt cache |", "| --- | --- | --- |"]
    lines += [
        f"| {name} | {rate:,.0f} | {results['over_pt_cache'][name]:.1f} |" for name, rate in best.items()
    ]
    print("\n".join(lines))
    print(f"load average {load_before} -> {results['load_average_1_5_15_min']['after']}; written to {path}")


if __name__ == "__main__":
    main()
