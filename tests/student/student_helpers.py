"""Label stores written straight from a dataset source, without running a teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from softlabels.sources import DatasetSource
from softlabels.store import (
    DatasetInfo,
    FullEncoding,
    Layout,
    Provenance,
    StoreHeader,
    StoreWriter,
    TeacherInfo,
)
from softlabels.store.encodings import Encoding


def row_coded_logits(num_rows: int, num_classes: int) -> np.ndarray:
    """Rows whose first entry is the row number, so any streamed row names the sample it belongs to."""
    values = np.tile(np.arange(num_classes, dtype=np.float32) / 16, (num_rows, 1))
    values[:, 0] = np.arange(num_rows, dtype=np.float32)
    return values


def header_for(
    source: DatasetSource, encoding: Encoding, chunk_rows: int, temperature: float = 2.0
) -> StoreHeader:
    layout = Layout(encoding.name, encoding.params(), len(source), source.num_classes, chunk_rows, chunk_rows)
    provenance = Provenance(
        teacher=TeacherInfo("cnn", 1, None, None),
        dataset=DatasetInfo(
            source.spec, source.split, len(source), source.num_classes, source.class_names, source.fingerprint
        ),
        temperature=temperature,
        precision="fp32",
        command="test",
        config={},
        created="2026-01-01T00:00:00+00:00",
        versions={"softlabels": "test"},
    )
    return StoreHeader(layout=layout, provenance=provenance)


def write_store(
    path: Path,
    source: DatasetSource,
    *,
    chunk_rows: int = 64,
    encoding: Encoding | None = None,
    logits: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    shards: list[int] | None = None,
) -> Path:
    """Write ``logits`` (default: row-coded) of ``source`` into a store; ``shards`` limits what is written."""
    encoding = encoding or FullEncoding("float32")
    header = header_for(source, encoding, chunk_rows)
    values = row_coded_logits(len(source), source.num_classes) if logits is None else logits
    labels = np.array([source.dataset[i][1] for i in range(len(source))]) if targets is None else targets
    writer = StoreWriter.open(path, header, encoding)
    for shard in writer.pending_shards() if shards is None else shards:
        start, stop = header.layout.shard_bounds(shard)
        writer.write_shard(shard, encoding.encode(values[start:stop], start), labels[start:stop])
    if shards is None:
        writer.mark_complete()
    return path
