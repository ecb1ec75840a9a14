"""Bytes per sample of every label format at 10, 100 and 1,000 classes, on synthetic teacher logits.

Each format is written as a real store (zstd + crc32c chunks, as ``generate`` writes them) from
the same synthetic rows: Gaussian logits with a margin on a random "true" class, divided by the
temperature, which is roughly what a trained classifier produces. Reported per sample:

* ``raw``: uncompressed bytes of the label arrays (what a reader holds in memory);
* ``disk``: bytes of the label arrays on disk, after compression;
* ``ratio``: float32 full logits (``4 * C`` bytes) over ``disk``.

Usage::

    python benchmarks/format_sizes.py [--rows 20000] [--temperature 4] [--seed 0]

Writes ``benchmarks/results/format_sizes.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from softlabels.format.encoding_spec import EncodingSpec
from softlabels.store import (
    DatasetInfo,
    Encoding,
    Layout,
    Provenance,
    StoreHeader,
    StoreWriter,
    TeacherInfo,
    default_chunk_rows,
)
from softlabels.store.inspect import stored_bytes

CLASS_COUNTS = (10, 100, 1000)
# (label, format, options): top-k and sampled settings that are typical of published KD setups.
FORMATS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("full float32", "full", {"dtype": "float32"}),
    ("full float16", "full", {"dtype": "float16"}),
    ("full bfloat16", "full", {"dtype": "bfloat16"}),
    ("full int8", "full", {"dtype": "int8"}),
    ("topk k=5 float16", "topk", {"k": 5, "dtype": "float16"}),
    ("topk k=5 int8", "topk", {"k": 5, "dtype": "int8"}),
    ("topk k=20 float16", "topk", {"k": 20, "dtype": "float16"}),
    ("sampled S=8", "sampled", {"samples": 8, "seed": 0}),
    ("sampled S=32", "sampled", {"samples": 32, "seed": 0}),
)
RESULTS = Path(__file__).parent / "results" / "format_sizes.json"
MARGIN = 6.0


def synthetic_rows(
    num_rows: int, num_classes: int, temperature: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled logits ``z / T`` of a confident but imperfect classifier, and the true classes."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, num_rows)
    logits = rng.normal(0.0, 2.0, (num_rows, num_classes))
    logits[np.arange(num_rows), targets] += MARGIN
    return (logits / temperature).astype(np.float32), targets


def header_for(encoding: Encoding, num_rows: int, num_classes: int, temperature: float) -> StoreHeader:
    chunk_rows = default_chunk_rows(encoding.bytes_per_row(num_classes))
    layout = Layout(encoding.name, encoding.params(), num_rows, num_classes, chunk_rows, chunk_rows)
    provenance = Provenance(
        teacher=TeacherInfo("synthetic", 0, None, None),
        dataset=DatasetInfo(
            "synthetic", "train", num_rows, num_classes, tuple(map(str, range(num_classes))), "0" * 64
        ),
        temperature=temperature,
        precision="fp32",
        command="benchmarks/format_sizes.py",
        config={},
        created="",
        versions={},
    )
    return StoreHeader(layout=layout, provenance=provenance)


def measure(
    path: Path, encoding: Encoding, rows: np.ndarray, targets: np.ndarray, temperature: float
) -> dict[str, float]:
    """Write ``rows`` as a store in ``encoding`` and return its bytes per sample."""
    num_rows, num_classes = rows.shape
    header = header_for(encoding, num_rows, num_classes, temperature)
    writer = StoreWriter.open(path, header, encoding)
    for shard in writer.pending_shards():
        start, stop = header.layout.shard_bounds(shard)
        writer.write_shard(shard, encoding.encode(rows[start:stop], start), targets[start:stop])
    writer.mark_complete()
    disk = stored_bytes(str(path), [spec.name for spec in encoding.fields(num_classes)])
    return {
        "raw": float(encoding.bytes_per_row(num_classes)),
        "disk": disk / num_rows,
        "ratio": 4 * num_classes * num_rows / disk,
    }


def run(num_rows: int, temperature: float, seed: int) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for num_classes in CLASS_COUNTS:
            rows, targets = synthetic_rows(num_rows, num_classes, temperature, seed)
            for number, (label, label_format, options) in enumerate(FORMATS):
                if options.get("k", 0) >= num_classes:
                    continue  # top-k keeping every class is the full format with extra indices
                encoding = EncodingSpec.create(label_format, **options).build()
                path = Path(scratch) / f"{num_classes}-{number}.zarr"
                sizes = measure(path, encoding, rows, targets, temperature)
                results.append(
                    {
                        "classes": num_classes,
                        "format": label,
                        "encoding": encoding.name,
                        "params": encoding.params(),
                        **sizes,
                    }
                )
    return {"rows": num_rows, "temperature": temperature, "seed": seed, "results": results}


def markdown(report: dict[str, Any]) -> str:
    """One row per format, one column per class count: disk B/sample (raw B/sample, ratio vs fp32)."""
    cells = {
        (r["format"], r["classes"]): f"{r['disk']:.1f} ({r['raw']:.0f}, {r['ratio']:.1f}x)"
        for r in report["results"]
    }
    header = "| format | " + " | ".join(f"{c} classes" for c in CLASS_COUNTS) + " |"
    lines = [header, "|" + " --- |" * (len(CLASS_COUNTS) + 1)]
    for label, _, _ in FORMATS:
        lines.append(f"| {label} | " + " | ".join(cells.get((label, c), "n/a") for c in CLASS_COUNTS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = run(args.rows, args.temperature, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"Bytes per sample on disk (uncompressed, ratio vs float32 full), {args.rows} synthetic rows, "
        f"T = {args.temperature}; written to {args.out}\n"
    )
    print(markdown(report))


if __name__ == "__main__":
    main()
