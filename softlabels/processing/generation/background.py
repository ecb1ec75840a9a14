"""A bounded background writer: assembles teacher batches into shards, encodes and stores them.

The teacher loop only hands over batches (already on their way to host memory); copying
happens on this thread, and every full shard is encoded, compressed and written on a small pool
of threads (numpy casts, zstd and file writes release the GIL), so the accelerator never waits
for disk. At most ``max_batches`` batches are queued, and the shards being encoded or written
hold at most ``write_buffer_bytes`` of rows (always at least one shard).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from softlabels import defaults
from softlabels.errors import InvalidArgumentError, TeacherOutputError
from softlabels.processing.generation.select import encode_selected
from softlabels.store import Encoding, StoreWriter

MAX_REPORTED_ROWS = 10


@dataclass
class PendingBatch:
    """One teacher batch on its way to host memory: ``ready`` fires when its tensors may be read.

    ``selected`` is what :func:`~softlabels.processing.generation.select.select_on_device` made of
    the batch's scaled logits (the logits themselves only for formats encoded on the host);
    ``finite`` says, per sample, whether all its logits were finite; ``view_params`` holds the
    crop box and flip of each view ``[B, V, 5]`` for a store with views (None otherwise).
    """

    shard: int
    first_row: int
    selected: dict[str, torch.Tensor]
    targets: torch.Tensor
    ready: Any  # a torch.cuda.Event, or None on the CPU
    finite: torch.Tensor
    view_params: np.ndarray | None = None


class ShardBuffer:
    """Host memory for the selections and targets of one shard's samples, filled batch by batch."""

    def __init__(self, start: int, stop: int, target_axes: tuple[int, ...]) -> None:
        self.start = start
        self.num_rows = stop - start
        self.selected: dict[str, np.ndarray] = {}
        self.targets = np.empty((self.num_rows, *target_axes), dtype=np.int64)  # [L] axis per position
        self.view_params: np.ndarray | None = None
        self.filled = 0

    def add(self, batch: PendingBatch) -> None:
        offset = batch.first_row - self.start
        rows = len(batch.targets)
        for name, tensor in batch.selected.items():
            self._buffer(name, tensor)[offset : offset + rows] = tensor.numpy()
        self.targets[offset : offset + rows] = batch.targets.numpy()
        if batch.view_params is not None:
            if self.view_params is None:
                self.view_params = np.empty((self.num_rows, *batch.view_params.shape[1:]), dtype=np.float32)
            self.view_params[offset : offset + rows] = batch.view_params
        self.filled += rows

    def _buffer(self, name: str, tensor: torch.Tensor) -> np.ndarray:
        if name not in self.selected:
            dtype = torch.empty((), dtype=tensor.dtype).numpy().dtype
            self.selected[name] = np.empty((self.num_rows, *tensor.shape[1:]), dtype=dtype)
        return self.selected[name]

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.selected.values())

    @property
    def full(self) -> bool:
        return self.filled == self.num_rows


class BackgroundWriter:
    """Runs on its own thread; errors surface in the teacher loop at the next :meth:`put` or at :meth:`close`.

    Args:
        writer: The store's writer.
        encoding: The encoding of the store's rows.
        max_batches: Teacher batches queued before :meth:`put` waits.
        write_threads: Shards encoded and written at once.
        write_buffer_bytes: Bytes of rows that the shards being encoded or written may hold together
            (one shard is always allowed, however large).

    Raises:
        InvalidArgumentError: ``write_threads`` < 1.
    """

    def __init__(
        self,
        writer: StoreWriter,
        encoding: Encoding,
        max_batches: int = 64,
        *,
        write_threads: int = defaults.WRITE_THREADS,
        write_buffer_bytes: int = defaults.WRITE_BUFFER_MB << 20,
    ) -> None:
        if write_threads < 1:
            raise InvalidArgumentError(f"the number of write threads must be >= 1, got {write_threads}")
        self._writer = writer
        self._encoding = encoding
        self._queue: queue.Queue[PendingBatch | None] = queue.Queue(maxsize=max_batches)
        self._buffers: dict[int, ShardBuffer] = {}
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self.shards_written = 0
        self._pool = ThreadPoolExecutor(
            max_workers=write_threads, thread_name_prefix="softlabels-shard-writer"
        )
        self._write_threads = write_threads
        self._write_buffer_bytes = write_buffer_bytes
        self._in_flight = _InFlight()
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
        """Stop writing; returns only once every thread has stopped, so no write happens afterwards.

        Shard writes in progress finish (chunk writes are atomic, and the shard is then recorded);
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

    def _fail(self, error: BaseException) -> None:
        """Keep the first error and start no further write (the queue's other shards are redone on resume)."""
        with self._in_flight.changed:
            if self._error is None:
                self._error = error
        self._aborted.set()

    def _run(self) -> None:
        try:
            while (batch := self._queue.get()) is not None and not self._aborted.is_set():
                self._accept(batch)
        except BaseException as exc:  # noqa: BLE001  (handed to the teacher loop, which reports it)
            self._fail(exc)
        finally:
            # Writes under way finish; queued ones that an abort or a failure left behind never start.
            self._pool.shutdown(wait=True, cancel_futures=self._aborted.is_set())

    def _accept(self, batch: PendingBatch) -> None:
        if batch.ready is not None:
            batch.ready.synchronize()
        _refuse_non_finite(batch)
        buffer = self._buffers.get(batch.shard)
        if buffer is None:
            start, stop = self._writer.header.layout.shard_bounds(batch.shard)
            buffer = self._buffers[batch.shard] = ShardBuffer(
                start, stop, self._writer.header.layout.target_axes
            )
        buffer.add(batch)
        if buffer.full:
            del self._buffers[batch.shard]
            nbytes = buffer.nbytes
            if not self._in_flight.reserve(
                nbytes, self._write_threads, self._write_buffer_bytes, self._aborted
            ):
                return
            future = self._pool.submit(self._write, batch.shard, buffer)
            future.add_done_callback(lambda done: self._written(done, nbytes))

    def _write(self, shard: int, buffer: ShardBuffer) -> None:
        if self._aborted.is_set():
            return
        num_classes = self._writer.header.layout.num_classes
        fields = encode_selected(self._encoding, buffer.selected, buffer.start, num_classes)
        if self._aborted.is_set():  # checked again after encoding, right before the write
            return
        self._writer.write_shard(shard, fields, buffer.targets, view_params=buffer.view_params)
        with self._in_flight.changed:
            self.shards_written += 1

    def _written(self, future: Future[None], nbytes: int) -> None:
        self._in_flight.release(nbytes)
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self._fail(error)


class _InFlight:
    """Counts the shards handed to the write pool and the bytes of rows they hold."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.shards = 0
        self.nbytes = 0

    def reserve(self, nbytes: int, max_shards: int, max_bytes: int, aborted: threading.Event) -> bool:
        """Wait until a shard of ``nbytes`` fits, then count it; False (nothing counted) once ``aborted`` is set."""
        with self.changed:
            while self.shards and (self.shards >= max_shards or self.nbytes + nbytes > max_bytes):
                if aborted.is_set():
                    return False
                self.changed.wait(timeout=0.1)
            if aborted.is_set():
                return False
            self.shards += 1
            self.nbytes += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self.changed:
            self.shards -= 1
            self.nbytes -= nbytes
            self.changed.notify_all()


def _refuse_non_finite(batch: PendingBatch) -> None:
    if not bool(batch.finite.all()):
        bad = (torch.nonzero(~batch.finite).flatten()[:MAX_REPORTED_ROWS] + batch.first_row).tolist()
        raise TeacherOutputError(
            f"the teacher produced NaN or Inf for samples {bad}; nothing was stored for them"
        )
