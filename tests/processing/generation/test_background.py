"""The background writer: once ``abort`` returns, it never writes again."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from synthetic_stores import synthetic_header

from softlabels.processing.generation.background import BackgroundWriter, PendingBatch
from softlabels.store import FullEncoding

ROWS, CLASSES = 64, 5


class BlockingStoreWriter:
    """Stands in for a StoreWriter whose shard writes block until the test releases them."""

    def __init__(self) -> None:
        self.header = synthetic_header(FullEncoding("float32"), 3 * ROWS, CLASSES, chunk_rows=ROWS)
        self.release = threading.Event()
        self.events: list[tuple[str, int, float]] = []

    def write_shard(self, shard: int, fields: dict[str, np.ndarray], targets: np.ndarray) -> None:
        self.events.append(("start", shard, time.monotonic()))
        self.release.wait(timeout=30)
        self.events.append(("end", shard, time.monotonic()))


def whole_shard(shard: int) -> PendingBatch:
    return PendingBatch(
        shard, shard * ROWS, torch.zeros(ROWS, CLASSES), torch.zeros(ROWS, dtype=torch.long), None
    )


def test_no_write_happens_after_abort_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    # Time is compressed 100-fold for any join with a timeout, so a writer that gave up waiting after
    # a timeout (it used to give up after 30 s) would return while its thread still writes.
    original_join = threading.Thread.join

    def compressed_join(self: threading.Thread, timeout: float | None = None) -> None:
        original_join(self, None if timeout is None else timeout / 100)

    monkeypatch.setattr(threading.Thread, "join", compressed_join)
    store: Any = BlockingStoreWriter()
    background = BackgroundWriter(store, FullEncoding("float32"))
    for shard in range(3):
        background.put(whole_shard(shard))
    deadline = time.monotonic() + 30
    while not store.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.events[0][:2] == ("start", 0), "the first shard write must be under way"

    threading.Timer(1.0, store.release.set).start()  # the write in progress takes another second
    background.abort()
    returned = time.monotonic()

    time.sleep(0.3)
    assert [event[:2] for event in store.events] == [("start", 0), ("end", 0)]
    assert store.events[-1][2] <= returned, "abort returned while a write was still going on"
