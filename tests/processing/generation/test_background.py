"""The background writer: once ``abort`` returns, it never writes again; shards written at once store the same bytes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from synthetic_stores import synthetic_header

from softlabels.errors import InvalidArgumentError, StoreWriteError
from softlabels.processing.generation.background import BackgroundWriter, PendingBatch
from softlabels.processing.generation.select import SCALED
from softlabels.store import FullEncoding, StoreWriter, open_store

ROWS, CLASSES = 64, 5


class BlockingStoreWriter:
    """Stands in for a StoreWriter whose shard writes block until the test releases them."""

    def __init__(self, shards: int = 3) -> None:
        self.header = synthetic_header(FullEncoding("float32"), shards * ROWS, CLASSES, chunk_rows=ROWS)
        self.release = threading.Event()
        self.events: list[tuple[str, int, float]] = []
        self.lock = threading.Lock()
        self.writing = self.most_writing = 0

    def write_shard(
        self, shard: int, fields: dict[str, np.ndarray], targets: np.ndarray, view_params: Any = None
    ) -> None:
        with self.lock:
            self.events.append(("start", shard, time.monotonic()))
            self.writing += 1
            self.most_writing = max(self.most_writing, self.writing)
        self.release.wait(timeout=30)
        with self.lock:
            self.writing -= 1
            self.events.append(("end", shard, time.monotonic()))


def whole_shard(shard: int) -> PendingBatch:
    return logits_batch(shard, shard * ROWS, torch.zeros(ROWS, CLASSES), torch.zeros(ROWS, dtype=torch.long))


def logits_batch(shard: int, first_row: int, rows: torch.Tensor, targets: torch.Tensor) -> PendingBatch:
    """A CPU batch that hands over its scaled logits, as formats encoded on the host do."""
    return PendingBatch(shard, first_row, {SCALED: rows}, targets, None, torch.isfinite(rows).all(dim=1))


def wait_for_starts(store: BlockingStoreWriter, count: int) -> None:
    deadline = time.monotonic() + 30
    while sum(event[0] == "start" for event in store.events) < count and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("write_threads", [1, 2])
def test_no_write_happens_after_abort_returns(monkeypatch: pytest.MonkeyPatch, write_threads: int) -> None:
    # Time is compressed 100-fold for any join with a timeout, so a writer that gave up waiting after
    # a timeout (it used to give up after 30 s) would return while its thread still writes.
    original_join = threading.Thread.join

    def compressed_join(self: threading.Thread, timeout: float | None = None) -> None:
        original_join(self, None if timeout is None else timeout / 100)

    monkeypatch.setattr(threading.Thread, "join", compressed_join)
    store: Any = BlockingStoreWriter(shards=4)
    background = BackgroundWriter(store, FullEncoding("float32"), write_threads=write_threads)
    for shard in range(4):
        background.put(whole_shard(shard))
    wait_for_starts(store, write_threads)
    under_way = [("start", shard) for shard in range(write_threads)]
    assert sorted(event[:2] for event in store.events) == under_way, (
        "the first shard writes must be under way"
    )

    threading.Timer(1.0, store.release.set).start()  # the writes in progress take another second
    background.abort()
    returned = time.monotonic()

    time.sleep(0.3)
    ended = [("end", shard) for shard in range(write_threads)]
    assert sorted(event[:2] for event in store.events) == ended + under_way, "no other shard may start"
    assert max(event[2] for event in store.events) <= returned, (
        "abort returned while a write was still going on"
    )


def test_shards_are_written_at_once_up_to_the_thread_count() -> None:
    store: Any = BlockingStoreWriter(shards=5)
    background = BackgroundWriter(store, FullEncoding("float32"), write_threads=3)
    for shard in range(5):
        background.put(whole_shard(shard))
    wait_for_starts(store, 3)
    time.sleep(0.2)
    assert store.writing == 3
    store.release.set()
    background.close()
    assert store.most_writing == 3 and background.shards_written == 5


def test_the_write_buffer_bounds_the_shards_in_flight() -> None:
    # Each shard's float32 rows take ROWS * CLASSES * 4 bytes; a budget below two shards writes one at a time.
    store: Any = BlockingStoreWriter(shards=4)
    background = BackgroundWriter(
        store, FullEncoding("float32"), write_threads=4, write_buffer_bytes=ROWS * CLASSES * 4 * 2 - 1
    )
    for shard in range(4):
        background.put(whole_shard(shard))
    wait_for_starts(store, 1)
    time.sleep(0.2)
    store.release.set()
    background.close()
    assert store.most_writing == 1 and background.shards_written == 4


def test_write_threads_must_be_positive() -> None:
    store: Any = BlockingStoreWriter()
    with pytest.raises(InvalidArgumentError, match="write threads must be >= 1, got 0"):
        BackgroundWriter(store, FullEncoding("float32"), write_threads=0)


def write_in_background(path: Path, values: np.ndarray, write_threads: int) -> Path:
    encoding = FullEncoding("float16")
    header = synthetic_header(encoding, len(values), CLASSES, chunk_rows=ROWS)
    writer = StoreWriter.open(path, header, encoding)
    background = BackgroundWriter(writer, encoding, write_threads=write_threads)
    for first in range(0, len(values), ROWS // 2):  # two batches per shard
        rows = torch.from_numpy(values[first : first + ROWS // 2])
        background.put(logits_batch(first // ROWS, first, rows, torch.arange(first, first + len(rows)) % 3))
    background.close()
    writer.mark_complete()
    return path


def chunk_files(store: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(store)): path.read_bytes()
        for path in sorted(store.rglob("*"))
        # Each run records its own run id; every other byte must match.
        if path.is_file() and path.name != "zarr.json" and path.parent.parent.name != "shard_runs"
    }


def test_shards_written_at_once_store_the_same_bytes_as_one_at_a_time(tmp_path: Path) -> None:
    values = np.random.default_rng(0).standard_normal((9 * ROWS, CLASSES)).astype(np.float32)
    serial = write_in_background(tmp_path / "serial.zarr", values, write_threads=1)
    concurrent = write_in_background(tmp_path / "concurrent.zarr", values, write_threads=4)
    assert chunk_files(concurrent) == chunk_files(serial)
    rows = open_store(str(concurrent)).read_rows(0, len(values))
    np.testing.assert_array_equal(rows.fields["logits"], values.astype(np.float16).astype(np.float32))


class FailingStoreWriter(BlockingStoreWriter):
    """Fails the write of one shard; the others succeed at once."""

    def write_shard(
        self, shard: int, fields: dict[str, np.ndarray], targets: np.ndarray, view_params: Any = None
    ) -> None:
        with self.lock:
            self.events.append(("start", shard, time.monotonic()))
        if shard == 1:
            raise StoreWriteError("cannot write shard 1: disk full")


def test_a_failed_shard_write_surfaces_at_close_and_no_later_shard_starts() -> None:
    store: Any = FailingStoreWriter(shards=6)
    background = BackgroundWriter(store, FullEncoding("float32"), write_threads=1)
    with pytest.raises(StoreWriteError, match="cannot write shard 1"):
        for shard in range(6):
            background.put(whole_shard(shard))
        background.close()
    background.abort()
    assert [event[1] for event in store.events] == [0, 1]
