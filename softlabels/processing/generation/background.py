"""A bounded background writer: assembles teacher batches into shards, encodes and stores them.

The teacher loop only hands over batches (already on their way to host memory); copying,
encoding, compressing and writing happen on this thread, so the accelerator never waits for disk
and at most ``max_batches`` batches are held in memory.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from softlabels.errors import TeacherOutputError
from softlabels.store import Encoding, StoreWriter

MAX_REPORTED_ROWS = 10


@dataclass
class PendingBatch:
    """One teacher batch on its way to host memory: ``ready`` fires when ``values`` may be read."""

    shard: int
    first_row: int
    values: torch.Tensor
    targets: torch.Tensor
    ready: Any  # a torch.cuda.Event, or None on the CPU


class ShardBuffer:
    """Host memory for the rows of one shard, filled batch by batch."""

    def __init__(self, start: int, stop: int, num_classes: int) -> None:
        self.start = start
        self.values = np.empty((stop - start, num_classes), dtype=np.float32)
        self.targets = np.empty(stop - start, dtype=np.int64)
        self.filled = 0

    def add(self, batch: PendingBatch) -> None:
        offset = batch.first_row - self.start
        rows = batch.values.shape[0]
        self.values[offset : offset + rows] = batch.values.numpy()
        self.targets[offset : offset + rows] = batch.targets.numpy()
        self.filled += rows

    @property
    def full(self) -> bool:
        return self.filled == len(self.targets)


class BackgroundWriter:
    """Runs on its own thread; errors surface in the teacher loop at the next :meth:`put` or at :meth:`close`."""

    def __init__(self, writer: StoreWriter, encoding: Encoding, max_batches: int = 64) -> None:
        self._writer = writer
        self._encoding = encoding
        self._queue: queue.Queue[PendingBatch | None] = queue.Queue(maxsize=max_batches)
        self._buffers: dict[int, ShardBuffer] = {}
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self.shards_written = 0
        self._thread = threading.Thread(target=self._run, name="softlabels-writer", daemon=True)
        self._thread.start()

    def put(self, batch: PendingBatch) -> None:
        self._offer(batch, raise_errors=True)

    def close(self) -> None:
        """Wait until every queued batch is written, then re-raise any error of the writer thread."""
        self.put_end()
        self._thread.join()
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop writing; returns only once the thread has stopped, so no write happens afterwards.

        A shard write in progress finishes (chunk writes are atomic, and the shard is then recorded);
        no other write starts. Shards not yet recorded are redone by a resumed run.
        """
        self._aborted.set()
        self.put_end()
        # No timeout: returning while the thread may still write would let it write into a store
        # that an overwrite has since replaced.
        self._thread.join()

    def put_end(self) -> None:
        self._offer(None, raise_errors=False)

    def _offer(self, item: PendingBatch | None, *, raise_errors: bool) -> None:
        # Short timeouts so that a writer that failed (or finished) never leaves the caller blocked on a full queue.
        while self._thread.is_alive():
            if raise_errors:
                self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        if raise_errors:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (batch := self._queue.get()) is not None and not self._aborted.is_set():
                self._accept(batch)
        except BaseException as exc:  # noqa: BLE001  (handed to the teacher loop, which reports it)
            self._error = exc

    def _accept(self, batch: PendingBatch) -> None:
        if batch.ready is not None:
            batch.ready.synchronize()
        _refuse_non_finite(batch)
        buffer = self._buffers.get(batch.shard)
        if buffer is None:
            start, stop = self._writer.header.layout.shard_bounds(batch.shard)
            buffer = self._buffers[batch.shard] = ShardBuffer(
                start, stop, self._writer.header.layout.num_classes
            )
        buffer.add(batch)
        if buffer.full:
            del self._buffers[batch.shard]
            fields = self._encoding.encode(buffer.values, buffer.start)
            if self._aborted.is_set():  # checked again after encoding, right before the write
                return
            self._writer.write_shard(batch.shard, fields, buffer.targets)
            self.shards_written += 1


def _refuse_non_finite(batch: PendingBatch) -> None:
    finite = torch.isfinite(batch.values).all(dim=1)
    if not bool(finite.all()):
        bad = (torch.nonzero(~finite).flatten()[:MAX_REPORTED_ROWS] + batch.first_row).tolist()
        raise TeacherOutputError(
            f"the teacher produced NaN or Inf for samples {bad}; nothing was stored for them"
        )
