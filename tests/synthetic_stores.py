"""Label stores written from given rows, without a teacher: the one place tests build store headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from softlabels.store import DatasetInfo, Encoding, Layout, Provenance, StoreHeader, StoreWriter, TeacherInfo

TEACHER = TeacherInfo("cnn", 1234, "a" * 64, "/w.pt")


def synthetic_dataset(num_rows: int, num_classes: int, fingerprint: str = "f" * 64) -> DatasetInfo:
    return DatasetInfo(
        "digits", "train", num_rows, num_classes, tuple(f"c{i}" for i in range(num_classes)), fingerprint
    )


def synthetic_header(
    encoding: Encoding,
    num_rows: int,
    num_classes: int,
    *,
    chunk_rows: int = 64,
    temperature: float = 2.0,
    dataset: DatasetInfo | None = None,
    teacher: TeacherInfo = TEACHER,
) -> StoreHeader:
    layout = Layout(encoding.name, encoding.params(), num_rows, num_classes, chunk_rows, chunk_rows)
    provenance = Provenance(
        teacher=teacher,
        dataset=dataset or synthetic_dataset(num_rows, num_classes),
        temperature=temperature,
        precision="fp32",
        command="test",
        config={},
        created="2026-01-01T00:00:00+00:00",
        versions={"softlabels": "test"},
    )
    return StoreHeader(layout=layout, provenance=provenance)


def write_rows(
    path: Path,
    header: StoreHeader,
    encoding: Encoding,
    values: np.ndarray,
    targets: np.ndarray,
    shards: list[int] | None = None,
) -> StoreWriter:
    """Write ``values`` (scaled logits) into a store; all shards and the completion flag unless ``shards`` is given."""
    writer = StoreWriter.open(path, header, encoding)
    for shard in writer.pending_shards() if shards is None else shards:
        start, stop = header.layout.shard_bounds(shard)
        writer.write_shard(shard, encoding.encode(values[start:stop], start), targets[start:stop])
    if shards is None:
        writer.mark_complete()
    return writer


def write_synthetic_store(
    path: Path,
    encoding: Encoding,
    values: np.ndarray,
    targets: np.ndarray,
    *,
    chunk_rows: int = 64,
    temperature: float = 2.0,
    shards: list[int] | None = None,
) -> Path:
    header = synthetic_header(
        encoding, len(values), values.shape[1], chunk_rows=chunk_rows, temperature=temperature
    )
    write_rows(path, header, encoding, values, targets, shards)
    return path
