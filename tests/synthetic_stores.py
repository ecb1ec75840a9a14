"""Label stores written from given rows, without a teacher: the one place tests build store headers.

Stores with label axes (format version 2): pass ``views=V`` and/or ``positions=L`` to
:func:`synthetic_header` / :func:`write_synthetic_store` with values ``[N, *label_axes, C]``
(``(V,)``, ``(L,)`` or ``(V, L)``) and targets ``[N, L]`` when positions are given (``-100`` =
ignored position), else ``[N]``. :func:`token_rows` makes such a token-level block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from softlabels.format.schema import IGNORED_TARGET
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
    views: int | None = None,
    positions: int | None = None,
) -> StoreHeader:
    layout = Layout(
        encoding.name,
        encoding.params(),
        num_rows,
        num_classes,
        chunk_rows,
        chunk_rows,
        views=views,
        positions=positions,
    )
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
    """Write ``values`` (scaled logits ``[N, *label_axes, C]``) into a store; all shards and the completion
    flag unless ``shards`` is given."""
    writer = StoreWriter.open(path, header, encoding)
    for shard in writer.pending_shards() if shards is None else shards:
        start, stop = header.layout.shard_bounds(shard)
        writer.write_shard(shard, writer.encoding.encode(values[start:stop], start), targets[start:stop])
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
    views: int | None = None,
    positions: int | None = None,
) -> Path:
    header = synthetic_header(
        encoding,
        len(values),
        values.shape[-1],
        chunk_rows=chunk_rows,
        temperature=temperature,
        views=views,
        positions=positions,
    )
    write_rows(path, header, encoding, values, targets, shards)
    return path


def token_rows(
    num_rows: int, positions: int, num_classes: int, *, seed: int = 0, ignored_every: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Token-level scaled logits ``[N, L, C]`` (float32) and targets ``[N, L]`` (int64) with ignored positions.

    Every ``ignored_every``-th position (counting all cells in order) and the last position of
    every other sample hold the ignored target ``-100``, as padding and "no next token" would.
    """
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(num_rows, positions, num_classes)) * 2.0).astype(np.float32)
    targets = rng.integers(0, num_classes, size=(num_rows, positions)).astype(np.int64)
    targets.reshape(-1)[::ignored_every] = IGNORED_TARGET
    targets[::2, -1] = IGNORED_TARGET
    return values, targets
