"""Streaming stored soft labels together with the raw samples they belong to.

A Zarr row costs about as much to read as its whole chunk, so :class:`SoftLabelDataset` never
reads row by row. Each epoch follows an :class:`EpochPlan`:

* **streaming** (labels larger than the memory budget): the chunks are shuffled, every reader
  (a DataLoader worker of a distributed rank) takes a disjoint, strided share of them, reads
  ``buffer_chunks`` of its chunks at a time and visits their rows in a shuffled order;
* **whole** (labels within the budget): each reader loads all labels once and visits its strided
  share of one permutation of every row.

Either way every row is visited exactly once per epoch over all readers, and the order depends
only on ``(seed, epoch)`` and the number of readers, so it is reproducible and differs between
epochs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import IterableDataset, get_worker_info

from softlabels.errors import DataError, InvalidArgumentError
from softlabels.format.encodings import Encoding
from softlabels.sources import DatasetSource, load_dataset
from softlabels.store import FullEncoding, LabelStore, StoreHeader, default_chunk_rows, open_store

__all__ = [
    "DEFAULT_BUFFER_CHUNKS",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "EpochPlan",
    "Labels",
    "ReadBlock",
    "Sample",
    "SoftLabelDataset",
]

DEFAULT_BUFFER_CHUNKS = 4
DEFAULT_MEMORY_BUDGET_BYTES = 256 << 20

# Seed-sequence keys that keep the chunk order and the in-block shuffles independent streams.
_ORDER_STREAM = 0
_BLOCK_STREAM = 1

Labels: TypeAlias = torch.Tensor | dict[str, torch.Tensor]
"""One soft-label row: the ``full`` logits row, or a dict of the fields of another encoding."""

Sample: TypeAlias = tuple[torch.Tensor, Labels, int]
"""``(input, soft_label_row, target)``."""

RowIndex: TypeAlias = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class ReadBlock:
    """Rows a reader loads together and then visits in ``rows`` order.

    Attributes:
        ranges: Sorted, disjoint row ranges ``[start, stop)`` made of whole chunks.
        rows: Every row of ``ranges`` exactly once, in visit order.
    """

    ranges: tuple[tuple[int, int], ...]
    rows: RowIndex

    def positions(self) -> RowIndex:
        """Where each of ``rows`` sits in the concatenation of ``ranges``."""
        starts = np.array([start for start, _ in self.ranges], dtype=np.int64)
        lengths = np.array([stop - start for start, stop in self.ranges], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        which = np.searchsorted(starts, self.rows, side="right") - 1
        positions: RowIndex = offsets[which] + self.rows - starts[which]
        return positions


@dataclass(frozen=True)
class EpochPlan:
    """The chunk-aware visiting order of ``num_rows`` rows cut into chunks of ``chunk_rows``.

    Args:
        num_rows: Rows in the store (and samples in the dataset).
        chunk_rows: Rows per chunk; the last chunk may be shorter.
        seed: Seed of every shuffle (``>= 0``).
        shuffle: Off: chunks and rows in store order (each reader still takes a strided share).
        buffer_chunks: Chunks a streaming reader loads and shuffles together.
        whole: Every reader holds all labels, so one permutation of all rows is used.
    """

    num_rows: int
    chunk_rows: int
    seed: int = 0
    shuffle: bool = True
    buffer_chunks: int = DEFAULT_BUFFER_CHUNKS
    whole: bool = False

    def __post_init__(self) -> None:
        if self.num_rows < 1:
            raise InvalidArgumentError(f"an epoch needs at least one row, got {self.num_rows}")
        if self.chunk_rows < 1:
            raise InvalidArgumentError(f"chunk rows must be >= 1, got {self.chunk_rows}")
        if self.buffer_chunks < 1:
            raise InvalidArgumentError(f"buffer chunks must be >= 1, got {self.buffer_chunks}")
        if self.seed < 0:
            raise InvalidArgumentError(f"the seed must be >= 0, got {self.seed}")

    @property
    def num_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_rows)

    def chunk_order(self, epoch: int) -> RowIndex:
        """The epoch's order of chunks; the same for every reader, so their shares are disjoint."""
        if not self.shuffle:
            return np.arange(self.num_chunks, dtype=np.int64)
        return self._rng(epoch, _ORDER_STREAM).permutation(self.num_chunks).astype(np.int64)

    def blocks(self, epoch: int, part: int = 0, num_parts: int = 1) -> list[ReadBlock]:
        """The blocks reader ``part`` of ``num_parts`` visits in ``epoch``, in order."""
        _check_part(part, num_parts)
        if epoch < 0:
            raise InvalidArgumentError(f"epochs count from 0, got {epoch}")
        if self.whole:
            return [self._whole_block(epoch, part, num_parts)]
        own_chunks = self.chunk_order(epoch)[part::num_parts]
        return [
            self._streaming_block(epoch, own_chunks[first : first + self.buffer_chunks])
            for first in range(0, len(own_chunks), self.buffer_chunks)
        ]

    def rows(self, epoch: int, part: int = 0, num_parts: int = 1) -> RowIndex:
        """Every row reader ``part`` visits in ``epoch``, in order."""
        blocks = self.blocks(epoch, part, num_parts)
        return np.concatenate([block.rows for block in blocks]) if blocks else np.empty(0, dtype=np.int64)

    def _whole_block(self, epoch: int, part: int, num_parts: int) -> ReadBlock:
        order = (
            self._rng(epoch, _ORDER_STREAM).permutation(self.num_rows)
            if self.shuffle
            else np.arange(self.num_rows)
        )
        return ReadBlock(((0, self.num_rows),), order[part::num_parts].astype(np.int64))

    def _streaming_block(self, epoch: int, chunks: RowIndex) -> ReadBlock:
        ranges = _merge_adjacent([self.chunk_bounds(int(chunk)) for chunk in np.sort(chunks)])
        rows = np.concatenate([np.arange(start, stop, dtype=np.int64) for start, stop in ranges])
        if self.shuffle:
            # Keyed by the block's first chunk (unique within the epoch), not by the reader, so a
            # block's inner order does not depend on how many readers there are.
            rows = self._rng(epoch, _BLOCK_STREAM, int(chunks[0])).permutation(rows)
        return ReadBlock(tuple(ranges), rows)

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of ``chunk``."""
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_rows)

    def _rng(self, epoch: int, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, *stream])


def _merge_adjacent(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join touching ranges so that neighbouring chunks are fetched in one read."""
    merged: list[tuple[int, int]] = []
    for start, stop in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def _check_part(part: int, num_parts: int) -> None:
    if num_parts < 1 or not 0 <= part < num_parts:
        raise InvalidArgumentError(f"reader {part} of {num_parts} does not exist")


@dataclass
class _LoadedLabels:
    """Label fields and targets of a block's rows, in the concatenated order of its ranges."""

    fields: dict[str, np.ndarray]
    targets: np.ndarray


@dataclass
class _ProcessState:
    """Per-process handles, never pickled or inherited: each DataLoader worker opens its own."""

    pid: int = field(default_factory=os.getpid)
    store: LabelStore | None = None
    all_labels: _LoadedLabels | None = None


class SoftLabelDataset(IterableDataset[Sample]):
    """Raw sample ``i`` of a dataset paired with row ``i`` of a label store.

    Yields ``(input, soft_label_row, target)``. ``soft_label_row`` is the stored ``logits`` row
    as a float32 tensor for a ``full`` store, and a dict of tensors (floats as float32, integers
    as int64) named by the encoding's fields for any other encoding. Without a store
    (``labels=None``, the hard-label baseline) it is an empty float32 tensor and the order is the
    one a default ``full`` float16 store of the data would get, so both runs load alike.

    Before anything is read, the store must be complete and made from exactly this data (same
    dataset fingerprint, split, number of samples and classes).

    Call :meth:`set_epoch` before each epoch: the order depends only on ``(seed, epoch)``, the
    number of DataLoader workers and ``world_size``. Each worker opens its own store handle
    and reads a disjoint share of the chunks; ``rank``/``world_size`` split the rows between
    distributed processes the same way (equalising per-rank batch counts is the caller's job).
    Workers copy the epoch when they start, so keep ``persistent_workers=False`` (the default):
    persistent workers would replay their first epoch's order.

    Args:
        labels: The label store location, or None for the store-less hard-label mode.
        dataset: A dataset spec (see :func:`softlabels.sources.load_dataset`) or a ready
            :class:`DatasetSource`.
        split: The split of a spec (default ``train``); not allowed with a DatasetSource.
        data_root: Root of ``torchvision:`` data; not allowed with a DatasetSource.
        augment: Random crop + flip of image-file samples for the student (off by default:
            stored labels describe the unaugmented sample); not allowed with a DatasetSource.
        shuffle: Shuffle chunks and rows (off: store order).
        seed: Seed of the shuffles (``>= 0``).
        buffer_chunks: Chunks read and shuffled together when streaming.
        memory_budget_bytes: Labels of at most this many uncompressed bytes are read whole, once
            per reader process, instead of streamed.
        rank: This process's rank among ``world_size`` distributed processes.
        world_size: Number of distributed processes.

    Raises:
        StoreNotFoundError, StoreFormatError: ``labels`` is not a readable store.
        IncompleteStoreError: The store has unwritten shards.
        StoreMismatchError: The store was made from other data; the message names what differs.
        InvalidArgumentError: A bad option, e.g. ``augment`` for a source that cannot augment.

    Attributes:
        source: The raw data.
        location: The store location (None without a store).
        header: The store's header, with its provenance (None without a store).
        encoding: The store's row encoding (None without a store).
        temperature: The temperature the rows were stored at (None without a store).
        in_memory: Whether the labels fit the memory budget and are read whole.
        plan: The chunk-aware order of every epoch.
    """

    def __init__(
        self,
        labels: str | os.PathLike[str] | None,
        dataset: str | DatasetSource,
        *,
        split: str | None = None,
        data_root: str | None = None,
        augment: bool | None = None,
        shuffle: bool = True,
        seed: int = 0,
        buffer_chunks: int = DEFAULT_BUFFER_CHUNKS,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        _check_part(rank, world_size)
        if memory_budget_bytes < 0:
            raise InvalidArgumentError(f"the memory budget must be >= 0 bytes, got {memory_budget_bytes}")
        self.source = _resolve_source(dataset, split, data_root, augment)
        self.location = None if labels is None else os.fspath(labels)
        self.rank = rank
        self.world_size = world_size
        self._epoch = 0
        self._process: _ProcessState | None = _ProcessState()
        if self.location is None:
            self.header: StoreHeader | None = None
            self.encoding: Encoding | None = None
            self.temperature: float | None = None
            # As if stored: a default ``full`` float16 store of this data, chunked as ``generate`` would.
            row_bytes = FullEncoding().bytes_per_row(self.source.num_classes)
            chunk_rows = default_chunk_rows(row_bytes)
        else:
            store = self._store()
            store.check_matches(self.source)  # so the store has len(source) rows of num_classes
            self.header = store.header
            self.encoding = store.encoding
            self.temperature = store.temperature
            row_bytes = store.encoding.bytes_per_row(store.num_classes)
            chunk_rows = store.layout.chunk_rows
        self.in_memory = row_bytes * len(self.source) <= memory_budget_bytes
        self.plan = EpochPlan(
            len(self.source),
            chunk_rows,
            seed=seed,
            shuffle=shuffle,
            buffer_chunks=buffer_chunks,
            whole=self.in_memory,
        )

    @property
    def encoding_name(self) -> str | None:
        """The store's encoding (``full``, ``topk``, ...), or None without a store."""
        return None if self.encoding is None else self.encoding.name

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (DataLoader workers copy it)."""
        if epoch < 0:
            raise InvalidArgumentError(f"epochs count from 0, got {epoch}")
        self._epoch = epoch

    def __len__(self) -> int:
        """Samples this rank visits in the current epoch (over all of its workers)."""
        if self.plan.whole:
            return len(range(self.rank, len(self.source), self.world_size))
        own_chunks = self.plan.chunk_order(self._epoch)[self.rank :: self.world_size]
        return sum(stop - start for start, stop in map(self.plan.chunk_bounds, own_chunks.tolist()))

    def __iter__(self) -> Iterator[Sample]:
        part, num_parts = self._reader()
        for block in self.plan.blocks(self._epoch, part, num_parts):
            loaded = self._load(block)
            for row, position in zip(block.rows.tolist(), block.positions().tolist(), strict=True):
                yield self._sample(row, position, loaded)

    def __getstate__(self) -> dict[str, Any]:
        # Open store handles and loaded labels stay in the process that made them.
        state = self.__dict__.copy()
        state["_process"] = None
        return state

    def _reader(self) -> tuple[int, int]:
        """This reader's part: worker ``w`` of ``W`` on rank ``r`` of ``R`` is part ``r + R*w`` of ``R*W``.

        Taking ``order[r + R * w :: R * W]`` is taking ``order[r::R][w::W]``: the rank's share does
        not depend on its number of workers, and the workers split exactly that share.
        """
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        return self.rank + self.world_size * worker, self.world_size * num_workers

    def _state(self) -> _ProcessState:
        if self._process is None or self._process.pid != os.getpid():
            self._process = _ProcessState()
        return self._process

    def _store(self) -> LabelStore:
        state = self._state()
        if state.store is None:
            if self.location is None:
                raise InvalidArgumentError("this dataset has no label store")
            state.store = open_store(self.location)
        return state.store

    def _load(self, block: ReadBlock) -> _LoadedLabels | None:
        if self.location is None:
            return None
        if self.in_memory:
            state = self._state()
            if state.all_labels is None:
                everything = self._store().read_all()
                state.all_labels = _LoadedLabels(everything.fields, everything.targets)
            return state.all_labels
        pieces = [self._store().read_rows(start, stop) for start, stop in block.ranges]
        return _LoadedLabels(
            {name: np.concatenate([piece.fields[name] for piece in pieces]) for name in pieces[0].fields},
            np.concatenate([piece.targets for piece in pieces]),
        )

    def _sample(self, row: int, position: int, loaded: _LoadedLabels | None) -> Sample:
        image, label = self.source.dataset[row]
        if loaded is None:
            return image, torch.empty(0, dtype=torch.float32), int(label)
        target = int(loaded.targets[position])
        if int(label) != target:
            raise DataError(
                f"sample {row} of {self.source.spec} [{self.source.split}] has label {int(label)} but "
                f"the store {self.location} has {target}; the data changed since the labels were made"
            )
        return image, _label_row(loaded.fields, position, full=self.encoding_name == "full"), target


def _resolve_source(
    dataset: str | DatasetSource, split: str | None, data_root: str | None, augment: bool | None
) -> DatasetSource:
    if isinstance(dataset, DatasetSource):
        if split is not None or data_root is not None or augment is not None:
            raise InvalidArgumentError(
                "split, data_root and augment belong to load_dataset; a ready DatasetSource already has them"
            )
        return dataset
    source = load_dataset(dataset, split or "train", data_root=data_root, augment=bool(augment))
    if augment and not source.augmented:
        raise InvalidArgumentError(
            f"dataset {dataset} cannot be augmented (only imagefolder: and torchvision: image files can)"
        )
    if len(source) == 0:
        raise DataError(f"dataset {dataset} [{source.split}] has no samples")
    return source


def _label_row(fields: Mapping[str, np.ndarray], position: int, *, full: bool) -> Labels:
    if full:
        return _row_tensor(fields["logits"][position])
    return {name: _row_tensor(values[position]) for name, values in fields.items()}


def _row_tensor(row: Any) -> torch.Tensor:
    """A copy of one row (never a view pinning the whole block): floats as float32, integers as int64."""
    array = np.asarray(row)
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else np.int64))
