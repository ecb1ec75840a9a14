"""The chunk-aware visiting order of one epoch, and the seeds every shuffle draws from.

A Zarr row costs about as much to read as its whole chunk, so an :class:`EpochPlan` never visits
rows one by one from the store. It cuts the rows into :class:`ReadBlock` s of whole chunks:

* **streaming** (labels larger than the memory budget): the chunks are shuffled and their rows
  laid end to end; each rank takes one contiguous share of that sequence (whole chunks, plus at
  most one part-chunk at either end) and reads ``buffer_chunks`` of its chunks at a time,
  visiting their rows in a shuffled order;
* **whole** (labels held in memory): each rank visits its contiguous share of one permutation of
  every row, as one block.

A rank's sequence of rows depends only on ``(seed, epoch, rank, world_size)``, never on how many
DataLoader workers load it. **Every rank visits the same number of rows**, ``ceil(N / W)`` for
``N`` rows and ``W`` ranks, so every rank runs the same number of batches (a distributed step
never waits for a rank that has run out). When ``W`` does not divide ``N``, the sequence is
padded by repeating its first ``W * ceil(N / W) - N`` rows (fewer than ``W``) at the end, as
torch's ``DistributedSampler`` does: those rows are visited twice in that epoch (by different
ranks, and different rows each epoch when shuffled; more often only when ``N < W``); every other
row exactly once. One process (``W = 1``) visits every row exactly once.

Every random stream is keyed by :func:`derive_seed`, a hash of fixed-width integers, so two
different keys never share a stream (``numpy.random.default_rng([seed, epoch])`` does not
guarantee that: seed ``2**32`` at epoch 0 and seed 0 at epoch 1 give the same generator).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from softlabels import defaults
from softlabels.errors import InvalidArgumentError

__all__ = ["EpochPlan", "ReadBlock", "RowIndex", "SeedStream", "derive_seed", "keyed_rng"]

RowIndex: TypeAlias = npt.NDArray[np.int64]

_KEY_LIMIT = 1 << 64


class SeedStream(enum.IntEnum):
    """Independent random streams of one run, each keyed by ``(seed, epoch, stream, index)``."""

    CHUNK_ORDER = 0
    BLOCK_ORDER = 1
    AUGMENTATION = 2
    LOADER = 3
    VALIDATION_LOADER = 4
    VIEW = 5  # which stored view a sample shows in an epoch


def _key_bytes(seed: int, epoch: int, stream: int, index: int) -> bytes:
    key = (seed, epoch, stream, index)
    for name, value in zip(("seed", "epoch", "stream", "index"), key, strict=True):
        if not 0 <= value < _KEY_LIMIT:
            raise InvalidArgumentError(f"the {name} must be an integer in [0, 2**64), got {value}")
    return b"".join(value.to_bytes(8, "little") for value in key)


def derive_seed(seed: int, epoch: int, stream: SeedStream | int, index: int = 0) -> int:
    """A 64-bit seed that only this exact key gives: sha256 of four little-endian uint64.

    Raises:
        InvalidArgumentError: A key part is negative or does not fit 64 bits.
    """
    digest = hashlib.sha256(_key_bytes(seed, epoch, int(stream), index)).digest()
    return int.from_bytes(digest[:8], "little")


def keyed_rng(seed: int, epoch: int, stream: SeedStream | int, index: int = 0) -> np.random.Generator:
    """A numpy generator seeded with the whole 256-bit hash of the key (see :func:`derive_seed`)."""
    digest = hashlib.sha256(_key_bytes(seed, epoch, int(stream), index)).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass(frozen=True, eq=False)
class ReadBlock:
    """Rows that are loaded together and then visited in ``rows`` order.

    Attributes:
        ranges: Sorted, disjoint row ranges ``[start, stop)``: whole chunks, except where a
            rank's share of the epoch begins or ends inside a chunk.
        rows: Rows of ``ranges`` in visit order, each at most once.
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
        seed: Seed of every shuffle, in ``[0, 2**64)``.
        shuffle: Off: chunks and rows in store order (each rank still takes a contiguous share).
        buffer_chunks: Chunks a streaming reader loads and shuffles together.
        whole: The labels are held in memory, so one permutation of all rows is used.
    """

    num_rows: int
    chunk_rows: int
    seed: int = defaults.SEED
    shuffle: bool = True
    buffer_chunks: int = defaults.BUFFER_CHUNKS
    whole: bool = False

    def __post_init__(self) -> None:
        if self.num_rows < 1:
            raise InvalidArgumentError(f"an epoch needs at least one row, got {self.num_rows}")
        if self.chunk_rows < 1:
            raise InvalidArgumentError(f"chunk rows must be >= 1, got {self.chunk_rows}")
        if self.buffer_chunks < 1:
            raise InvalidArgumentError(f"buffer chunks must be >= 1, got {self.buffer_chunks}")
        if not 0 <= self.seed < _KEY_LIMIT:
            raise InvalidArgumentError(f"the seed must be an integer in [0, 2**64), got {self.seed}")

    @property
    def num_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_rows)

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of ``chunk``."""
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_rows)

    def chunk_order(self, epoch: int) -> RowIndex:
        """The epoch's order of chunks; the same for every rank, so their shares are disjoint."""
        _check_epoch(epoch)
        if not self.shuffle:
            return np.arange(self.num_chunks, dtype=np.int64)
        return (
            keyed_rng(self.seed, epoch, SeedStream.CHUNK_ORDER).permutation(self.num_chunks).astype(np.int64)
        )

    def blocks(self, epoch: int, rank: int = 0, world_size: int = 1) -> list[ReadBlock]:
        """The blocks rank ``rank`` of ``world_size`` visits in ``epoch``, in order."""
        check_part(rank, world_size)
        if self.whole:
            return [self._whole_block(epoch, rank, world_size)]
        segments = self._rank_segments(epoch, rank, world_size)
        return [
            self._streaming_block(epoch, segments[first : first + self.buffer_chunks])
            for first in range(0, len(segments), self.buffer_chunks)
        ]

    def rows_per_rank(self, world_size: int = 1) -> int:
        """Rows every one of ``world_size`` ranks visits per epoch: ``ceil(num_rows / world_size)``.

        ``world_size * rows_per_rank(world_size) - num_rows`` rows (fewer than ``world_size``)
        are visited twice per epoch: the padding that gives every rank the same count.
        """
        check_part(0, world_size)
        return -(-self.num_rows // world_size)

    def rows(self, epoch: int, rank: int = 0, world_size: int = 1) -> RowIndex:
        """Every row rank ``rank`` visits in ``epoch``, in order."""
        return _concatenated_rows(self.blocks(epoch, rank, world_size))

    def num_rows_of(self, epoch: int, rank: int = 0, world_size: int = 1) -> int:
        """How many rows rank ``rank`` visits in ``epoch``: the same for every rank and epoch."""
        check_part(rank, world_size)
        _check_epoch(epoch)
        return self.rows_per_rank(world_size)

    def worker_blocks(
        self, epoch: int, rank: int, world_size: int, worker: int, num_workers: int
    ) -> list[ReadBlock]:
        """The share of the rank's blocks that DataLoader worker ``worker`` of ``num_workers`` reads.

        Only for a dataset iterated sample by sample inside the workers: streaming workers take
        every ``num_workers``-th block (whole chunks each), in-memory workers every
        ``num_workers``-th row of the single block. The batched loader does not split at all.
        """
        check_part(worker, num_workers)
        own = self.blocks(epoch, rank, world_size)
        if self.whole:
            return [ReadBlock(block.ranges, block.rows[worker::num_workers]) for block in own]
        return own[worker::num_workers]

    def _whole_block(self, epoch: int, rank: int, world_size: int) -> ReadBlock:
        _check_epoch(epoch)
        order = (
            keyed_rng(self.seed, epoch, SeedStream.CHUNK_ORDER).permutation(self.num_rows)
            if self.shuffle
            else np.arange(self.num_rows)
        )
        share = np.concatenate(
            [order[start:stop] for start, stop in self._rank_span(rank, world_size)]
        ).astype(np.int64)
        return ReadBlock(((0, self.num_rows),), share)

    def _rank_span(self, rank: int, world_size: int) -> list[tuple[int, int]]:
        """The rank's positions ``[start, stop)`` in the epoch's sequence of rows, wrapped around.

        Rank ``r`` takes positions ``[r * M, (r + 1) * M)`` of the sequence repeated end to end
        (``M`` rows per rank); as ``M <= num_rows`` it wraps at most once, so it never holds a row twice.
        """
        share = self.rows_per_rank(world_size)
        start = rank * share % self.num_rows
        if start + share <= self.num_rows:
            return [(start, start + share)]
        return [(start, self.num_rows), (0, start + share - self.num_rows)]

    def _rank_segments(self, epoch: int, rank: int, world_size: int) -> list[tuple[int, int, int]]:
        """The rank's share of the epoch as ``(chunk, start, stop)`` row ranges, in chunk order.

        Inner segments are whole chunks; the first and last may be parts of one (a neighbouring
        rank, or the padding, takes the rest).
        """
        order = self.chunk_order(epoch)
        sizes = np.array(
            [stop - start for start, stop in map(self.chunk_bounds, order.tolist())], dtype=np.int64
        )
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)  # sequence position of each chunk
        segments: list[tuple[int, int, int]] = []
        for begin, end in self._rank_span(rank, world_size):
            first = int(np.searchsorted(offsets, begin, side="right")) - 1
            for index in range(first, len(order)):
                if offsets[index] >= end:
                    break
                chunk_start = self.chunk_bounds(int(order[index]))[0]
                low = max(begin, int(offsets[index])) - int(offsets[index])
                high = min(end, int(offsets[index + 1])) - int(offsets[index])
                segments.append((int(order[index]), chunk_start + low, chunk_start + high))
        return segments

    def _streaming_block(self, epoch: int, segments: list[tuple[int, int, int]]) -> ReadBlock:
        ranges = _merge_adjacent(sorted((start, stop) for _, start, stop in segments))
        rows = np.concatenate([np.arange(start, stop, dtype=np.int64) for start, stop in ranges])
        if self.shuffle:
            # Keyed by the block's first chunk, not by the rank, so a block's inner order does not
            # depend on how the chunks were shared out (one process's blocks are unchanged).
            rows = keyed_rng(self.seed, epoch, SeedStream.BLOCK_ORDER, segments[0][0]).permutation(rows)
        return ReadBlock(tuple(ranges), rows)


def check_part(part: int, num_parts: int) -> None:
    """Refuse a rank (or worker) that does not exist among ``num_parts``."""
    if num_parts < 1 or not 0 <= part < num_parts:
        raise InvalidArgumentError(f"reader {part} of {num_parts} does not exist")


def _check_epoch(epoch: int) -> None:
    if epoch < 0:
        raise InvalidArgumentError(f"epochs count from 0, got {epoch}")


def _concatenated_rows(blocks: list[ReadBlock]) -> RowIndex:
    if not blocks:
        return np.empty(0, dtype=np.int64)
    rows: RowIndex = np.concatenate([block.rows for block in blocks])
    return rows


def _merge_adjacent(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join touching ranges so that neighbouring chunks are fetched in one read."""
    merged: list[tuple[int, int]] = []
    for start, stop in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged
