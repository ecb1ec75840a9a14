"""How much does ``generate`` cost beyond the teacher itself, and how big are its stores?

Measured side by side in one run, alternating the two arms to spread machine noise:

1. ``generate`` wall time / a bare loop with the same DataLoader and teacher forward but no store
   (goal: at most 1.05);
2. the store's write throughput / ``numpy.save`` of the same bytes;
3. bytes on disk per sample.

Run: ``python benchmarks/generate_overhead.py [--split test] [--teacher cnn] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import cifar10_root, timed, write_results
from torch.utils.data import DataLoader

from softlabels.processing.generation import GenerateConfig, generate
from softlabels.processing.generation.runner import shard_batches
from softlabels.runtime import resolve_device
from softlabels.sources import load_dataset, load_model
from softlabels.store import FullEncoding, StoreHeader, StoreWriter, default_chunk_rows, open_store


def bare_loop(config: GenerateConfig) -> np.ndarray:
    """The teacher over the same batches and DataLoader as ``generate``, keeping logits in memory only."""
    source = load_dataset(config.dataset, config.split)
    model = load_model(
        config.teacher,
        num_classes=source.num_classes,
        in_channels=source.in_channels,
        input_size=source.input_shape[-1],
        random_weights=True,
    ).module
    device = resolve_device(config.device)
    model = model.to(device).eval()
    layout = open_store(config.out).layout
    batches = shard_batches(layout, list(range(layout.num_shards)), config.batch_size)
    loader = DataLoader(
        source.dataset,
        batch_sampler=batches,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    outputs = []
    with torch.inference_mode():
        for inputs, _ in loader:
            outputs.append((model(inputs.to(device)).float() / config.temperature).cpu())
    return torch.cat(outputs).numpy()


def write_throughput(logits: np.ndarray, header: StoreHeader, repeats: int) -> dict[str, float]:
    """MB/s of float16 logits written through the store writer (creation to completion) vs ``numpy.save``."""
    values = logits.astype(np.float16)
    targets = np.zeros(len(values), dtype=np.int64)
    store_seconds, save_seconds = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            store_out, npy_out = Path(scratch) / f"w{repeat}.zarr", Path(scratch) / f"w{repeat}.npy"
            store_seconds.append(timed(partial(_write_store, store_out, header, values, targets))[0])
            save_seconds.append(timed(partial(np.save, npy_out, values))[0])
    megabytes = values.nbytes / 1e6
    store_rate = megabytes / statistics.median(store_seconds)
    save_rate = megabytes / statistics.median(save_seconds)
    return {
        "store_MB_per_s": store_rate,
        "numpy_save_MB_per_s": save_rate,
        "ratio": store_rate / save_rate,
        "megabytes": megabytes,
    }


def synthetic_header(header: StoreHeader, rows: int, classes: int) -> StoreHeader:
    """The real store's header resized to ``rows x classes`` with the default chunking for that width."""
    chunk_rows = default_chunk_rows(FullEncoding("float16").bytes_per_row(classes))
    layout = dataclasses.replace(
        header.layout, num_rows=rows, num_classes=classes, chunk_rows=chunk_rows, shard_rows=chunk_rows
    )
    # The header is validated: the dataset it describes must have the same shape as the layout.
    dataset = dataclasses.replace(
        header.provenance.dataset,
        num_rows=rows,
        num_classes=classes,
        class_names=tuple(map(str, range(classes))),
    )
    provenance = dataclasses.replace(header.provenance, dataset=dataset)
    return dataclasses.replace(header, layout=layout, provenance=provenance)


def _write_store(out: Path, header: StoreHeader, values: np.ndarray, targets: np.ndarray) -> None:
    encoding = FullEncoding("float16")
    writer = StoreWriter.open(out, header, encoding)
    for shard in range(header.layout.num_shards):
        start, stop = header.layout.shard_bounds(shard)
        writer.write_shard(shard, encoding.encode(values[start:stop], start), targets[start:stop])
    writer.mark_complete()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--teacher", default="cnn")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = cifar10_root()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as scratch:
        config = GenerateConfig(
            dataset=f"imagefolder:{root}",
            split=args.split,
            teacher=args.teacher,
            random_weights=True,
            temperature=4.0,
            out=str(Path(scratch) / "s.zarr"),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            overwrite=True,
            progress=False,
        )
        generate(config)  # warm-up: fills the page cache and the in-process fingerprint cache
        generate_seconds, bare_seconds = [], []
        for repeat in range(args.repeats):
            # Alternate which arm goes first so that warm-up effects fall on both.
            for arm in ("generate", "bare") if repeat % 2 == 0 else ("bare", "generate"):
                if arm == "generate":
                    generate_seconds.append(timed(partial(generate, config))[0])
                else:
                    seconds, logits = timed(partial(bare_loop, config))
                    bare_seconds.append(seconds)
        store = open_store(config.out)
        size = store.bytes_on_disk() or 0
        results = {
            "command": "python benchmarks/generate_overhead.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
            "dataset": f"CIFAR-10 JPEGs [{args.split}]",
            "rows": store.num_rows,
            "teacher": args.teacher,
            "generate_seconds": generate_seconds,
            "bare_loop_seconds": bare_seconds,
            "generate_over_bare": statistics.median(generate_seconds) / statistics.median(bare_seconds),
            "bytes_on_disk_per_sample": size / store.num_rows,
            "write_cifar_logits": write_throughput(logits, store.header, args.repeats),
            "write_synthetic_50000x1000": write_throughput(
                np.random.default_rng(0).normal(size=(50000, 1000)).astype(np.float32),
                synthetic_header(store.header, 50000, 1000),
                args.repeats,
            ),
        }
    path = write_results(f"generate_overhead_{args.teacher}_{args.split}", results)
    print(
        f"generate / bare loop: {results['generate_over_bare']:.3f} "
        f"(medians of {args.repeats}: {statistics.median(generate_seconds):.2f} s vs "
        f"{statistics.median(bare_seconds):.2f} s)"
    )
    for name in ("write_cifar_logits", "write_synthetic_50000x1000"):
        write = results[name]
        print(
            f"{name}: {write['megabytes']:.1f} MB, store {write['store_MB_per_s']:.0f} MB/s vs numpy.save "
            f"{write['numpy_save_MB_per_s']:.0f} MB/s (ratio {write['ratio']:.2f})"
        )
    print(f"bytes on disk per sample: {results['bytes_on_disk_per_sample']:.1f}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
