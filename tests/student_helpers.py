"""Label stores written straight from a dataset source, without running a teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from synthetic_stores import synthetic_header, write_rows

from softlabels.format.encodings import Encoding
from softlabels.format.identity import dataset_info
from softlabels.sources import DatasetSource
from softlabels.store import (
    FullEncoding,
    StoreHeader,
    TeacherInfo,
)


def row_coded_logits(num_rows: int, num_classes: int) -> np.ndarray:
    """Rows whose first entry is the row number, so any streamed row names the sample it belongs to."""
    values = np.tile(np.arange(num_classes, dtype=np.float32) / 16, (num_rows, 1))
    values[:, 0] = np.arange(num_rows, dtype=np.float32)
    return values


def header_for(
    source: DatasetSource, encoding: Encoding, chunk_rows: int, temperature: float = 2.0
) -> StoreHeader:
    dataset = dataset_info(source)
    return synthetic_header(
        encoding,
        len(source),
        source.num_classes,
        chunk_rows=chunk_rows,
        temperature=temperature,
        dataset=dataset,
        teacher=TeacherInfo("cnn", 1, None, None),
    )


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
    write_rows(path, header, encoding, values, labels, shards)
    return path
