"""Reading stored labels for a plan: held once in memory, or streamed block by block with read-ahead.

:class:`StoreLabels` is the only owner of a store handle on the reading side. The handle is
per-process (opened on first use, never pickled), and labels held in memory stay with the object
that loaded them: the batched loader keeps them in the main process only, so the DataLoader
workers never hold a copy.

:func:`label_batches` turns a rank's blocks into consecutive batches of labels, gathered with one
fancy index per field and batch (no per-sample Python path), while a background thread reads the
next block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import torch

from softlabels.format.encodings import Encoding
from softlabels.store import LabelStore, open_store
from softlabels.streaming.plan import ReadBlock, RowIndex

__all__ = [
    "TARGET_BYTES",
    "BlockLabels",
    "LabelBatch",
    "Labels",
    "StoreLabels",
    "decoded_row_bytes",
    "label_batches",
    "label_tensors",
]

TARGET_BYTES = np.dtype(np.int64).itemsize
"""Bytes of one decoded target (int64)."""

HOLD_READ_BYTES = 4 << 20
"""Stored bytes read and decoded at a time while filling held labels, so that the raw and decoded
copies of the whole store never coexist."""

Labels: TypeAlias = torch.Tensor | dict[str, torch.Tensor]
"""Soft labels: the ``full`` logits, or a dict of the fields of another encoding."""


def decoded_row_bytes(encoding: Encoding, num_classes: int) -> int:
    """Bytes one row takes once decoded for the losses (float32/int64 fields), its target included.

    This, not the stored width, is what a loader holds: a float16 ``full`` row of 10 classes is
    20 bytes stored and 48 decoded.
    """
    zeros = {
        spec.name: np.zeros((1, *spec.row_shape), dtype=spec.dtype) for spec in encoding.fields(num_classes)
    }
    return sum(int(array.nbytes) for array in encoding.decode(zeros).values()) + TARGET_BYTES


@dataclass(frozen=True)
class BlockLabels:
    """Decoded label fields and targets of a block's ranges, concatenated in range order."""

    fields: dict[str, np.ndarray]
    targets: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(int(array.nbytes) for array in self.fields.values()) + int(self.targets.nbytes)


@dataclass(frozen=True)
class LabelBatch:
    """One batch of stored labels: the rows it covers, their decoded fields and stored targets."""

    rows: RowIndex
    fields: dict[str, np.ndarray]
    targets: np.ndarray


@dataclass
class _ProcessState:
    """A store handle belongs to the process that opened it."""

    pid: int = field(default_factory=os.getpid)
    store: LabelStore | None = None


class StoreLabels:
    """Reads a store's labels for :class:`ReadBlock` s, whole chunks at a time.

    Args:
        location: The store.
        hold: Read every row once, on first use, and keep them (the in-memory mode); otherwise
            each block reads its own ranges.
    """

    def __init__(self, location: str, *, hold: bool) -> None:
        self.location = location
        self.hold = hold
        self._held: BlockLabels | None = None
        self._process = _ProcessState()

    def store(self) -> LabelStore:
        """This process's handle, opened on first use."""
        if self._process.pid != os.getpid():
            self._process = _ProcessState()
        if self._process.store is None:
            self._process.store = open_store(self.location)
        return self._process.store

    @property
    def held_bytes(self) -> int:
        """Bytes of the labels held in memory now (0 until they are read, and when streaming)."""
        return 0 if self._held is None else self._held.nbytes

    def load(self, block: ReadBlock) -> BlockLabels:
        """The labels of ``block``'s ranges (all rows when they are held)."""
        if self.hold:
            if self._held is None:
                self._held = self._read_all()
            return self._held
        return self._read(list(block.ranges))

    def _read(self, ranges: list[tuple[int, int]]) -> BlockLabels:
        pieces = [self.store().read_rows(start, stop) for start, stop in ranges]
        if len(pieces) == 1:
            return BlockLabels(pieces[0].fields, pieces[0].targets)
        return BlockLabels(
            {name: np.concatenate([piece.fields[name] for piece in pieces]) for name in pieces[0].fields},
            np.concatenate([piece.targets for piece in pieces]),
        )

    def _read_all(self) -> BlockLabels:
        """Every row, decoded into arrays allocated once, read a few whole chunks at a time."""
        store = self.store()
        chunk_rows, num_rows = store.layout.chunk_rows, store.num_rows
        chunk_bytes = chunk_rows * store.encoding.bytes_per_row(store.num_classes)
        step = chunk_rows * max(1, HOLD_READ_BYTES // max(1, chunk_bytes))
        fields: dict[str, np.ndarray] = {}
        targets = np.empty((num_rows, *store.layout.target_axes), dtype=np.int64)
        for start in range(0, num_rows, step):
            piece = store.read_rows(start, min(start + step, num_rows))
            for name, values in piece.fields.items():
                if name not in fields:
                    fields[name] = np.empty((num_rows, *values.shape[1:]), dtype=values.dtype)
                fields[name][start : piece.stop] = values
            targets[start : piece.stop] = piece.targets
        return BlockLabels(fields, targets)

    def __getstate__(self) -> dict[str, Any]:
        # Store handles and held labels stay in the process that made them.
        state = self.__dict__.copy()
        state["_process"] = None
        state["_held"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._process = _ProcessState()


def label_batches(
    blocks: list[ReadBlock],
    batch_size: int,
    load: Callable[[ReadBlock], BlockLabels],
    *,
    read_ahead: bool = True,
) -> Iterator[LabelBatch]:
    """The labels of ``blocks``' rows in visit order, cut into batches of ``batch_size`` (the last may be short).

    A batch may straddle two blocks. With ``read_ahead`` the next block is read on a thread while
    the current one is consumed, so at most two blocks are held at once.
    """
    pieces: list[tuple[BlockLabels, RowIndex, RowIndex]] = []
    pending = 0
    for block, loaded in _loaded_blocks(blocks, load, read_ahead):
        positions = block.positions()
        start = 0
        while start < len(positions):
            take = min(batch_size - pending, len(positions) - start)
            pieces.append((loaded, block.rows[start : start + take], positions[start : start + take]))
            pending += take
            start += take
            if pending == batch_size:
                yield _gather(pieces)
                pieces, pending = [], 0
    if pieces:
        yield _gather(pieces)


def _gather(pieces: list[tuple[BlockLabels, RowIndex, RowIndex]]) -> LabelBatch:
    """One fancy index per field and piece: the result owns its memory (no view pins a block)."""
    names = list(pieces[0][0].fields)
    if len(pieces) == 1:
        loaded, rows, positions = pieces[0]
        return LabelBatch(
            rows, {name: loaded.fields[name][positions] for name in names}, loaded.targets[positions]
        )
    return LabelBatch(
        np.concatenate([rows for _, rows, _ in pieces]),
        {name: np.concatenate([loaded.fields[name][at] for loaded, _, at in pieces]) for name in names},
        np.concatenate([loaded.targets[at] for loaded, _, at in pieces]),
    )


def _loaded_blocks(
    blocks: list[ReadBlock], load: Callable[[ReadBlock], BlockLabels], read_ahead: bool
) -> Iterator[tuple[ReadBlock, BlockLabels]]:
    if not read_ahead or len(blocks) < 2:
        for block in blocks:
            yield block, load(block)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="softlabels-read-ahead") as pool:
        upcoming: Future[BlockLabels] = pool.submit(load, blocks[0])
        for index, block in enumerate(blocks):
            loaded = upcoming.result()
            if index + 1 < len(blocks):
                upcoming = pool.submit(load, blocks[index + 1])
            yield block, loaded


def label_tensors(fields: dict[str, np.ndarray], *, full: bool) -> Labels:
    """Decoded fields as tensors: the ``logits`` tensor of a ``full`` store, else a dict of tensors."""
    if full:
        return _tensor(fields["logits"])
    return {name: _tensor(values) for name, values in fields.items()}


def _tensor(values: np.ndarray) -> torch.Tensor:
    """Floats as float32 and integers as int64 (decoded fields already are: then no copy)."""
    return torch.from_numpy(np.asarray(values, dtype=np.float32 if values.dtype.kind == "f" else np.int64))
