"""Writer and reader of the label store, on synthetic rows (no teacher involved)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic_stores import synthetic_header, write_rows

from softlabels.errors import (
    IncompleteStoreError,
    InvalidArgumentError,
    StoreCorruptError,
    StoreFormatError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreWriteError,
)
from softlabels.store import FullEncoding, StoreHeader, StoreWriter, open_store
from softlabels.store.info import describe_store, format_description

ROWS, CLASSES, CHUNK = 300, 7, 64


def make_header(temperature: float = 2.0) -> StoreHeader:
    return synthetic_header(FullEncoding(), ROWS, CLASSES, chunk_rows=CHUNK, temperature=temperature)


def write_all(path: Path, values: np.ndarray, targets: np.ndarray) -> StoreWriter:
    return write_rows(path, make_header(), FullEncoding(), values, targets)


@pytest.fixture
def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, CLASSES)).astype(np.float32), rng.integers(0, CLASSES, ROWS)


def test_round_trip_by_chunk_and_whole(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = rows
    write_all(tmp_path / "s.zarr", values, targets)
    store = open_store(tmp_path / "s.zarr")
    assert store.num_chunks == 5 and store.complete
    pieces = [store.read_chunk(i) for i in range(store.num_chunks)]
    stitched = np.concatenate([p.fields["logits"] for p in pieces])
    np.testing.assert_allclose(stitched, values, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(np.concatenate([p.targets for p in pieces]), targets)
    np.testing.assert_array_equal(store.read_all().fields["logits"], stitched)
    assert pieces[-1].start == 256 and pieces[-1].stop == ROWS


def test_plain_zarr_reads_arrays_and_attributes(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = rows
    write_all(tmp_path / "s.zarr", values, targets)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["logits"].dtype == np.float16 and group["logits"].chunks == (CHUNK, CLASSES)
    np.testing.assert_array_equal(group["targets"][:], targets)
    metadata = json.loads((tmp_path / "s.zarr" / "logits" / "zarr.json").read_text())
    assert [c["name"] for c in metadata["codecs"]] == ["bytes", "zstd", "crc32c"]
    assert group.attrs["softlabels"]["format"] == "softlabels.labels"


def test_corrupted_chunk_is_detected(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = rows
    write_all(tmp_path / "s.zarr", values, targets)
    chunk = tmp_path / "s.zarr" / "logits" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(
        StoreCorruptError, match="chunk logits/c/1/0 cannot be read .Stored and computed checksum"
    ):
        open_store(tmp_path / "s.zarr").read_chunk(1)


def test_resume_writes_only_missing_shards(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = rows
    header, encoding = make_header(), FullEncoding()
    writer = StoreWriter.open(tmp_path / "s.zarr", header, encoding)
    writer.write_shard(0, encoding.encode(values[:CHUNK], 0), targets[:CHUNK])
    with pytest.raises(IncompleteStoreError, match="1 of 5 shards"):
        open_store(tmp_path / "s.zarr")
    assert open_store(tmp_path / "s.zarr", allow_incomplete=True).shards_done().tolist() == [1, 0, 0, 0, 0]
    resumed = StoreWriter.open(tmp_path / "s.zarr", make_header(), encoding)
    assert resumed.pending_shards() == [1, 2, 3, 4]
    with pytest.raises(StoreWriteError, match="not written"):
        resumed.mark_complete()


def test_mismatched_settings_refused_then_overwritten(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    values, targets = rows
    write_all(tmp_path / "s.zarr", values, targets)
    with pytest.raises(StoreMismatchError, match="temperature: store has 2.0, this run has 3.0"):
        StoreWriter.open(tmp_path / "s.zarr", make_header(temperature=3.0), FullEncoding())
    writer = StoreWriter.open(
        tmp_path / "s.zarr", make_header(temperature=3.0), FullEncoding(), overwrite=True
    )
    assert writer.pending_shards() == [0, 1, 2, 3, 4]
    assert not open_store(tmp_path / "s.zarr", allow_incomplete=True).complete


def test_refuses_foreign_folder_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(StoreFormatError, match="not a softlabels store"):
            StoreWriter.open(tmp_path / "photos", make_header(), FullEncoding(), overwrite=overwrite)
    assert (tmp_path / "photos" / "cat.jpg").exists()


def test_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreWriteError, match="cannot write a store"):
        StoreWriter.open(blocker / "s.zarr", make_header(), FullEncoding())


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreFormatError, match="not a softlabels store"):
        open_store(tmp_path / "plain.zarr")
    group = zarr.open_group(str(tmp_path / "future.zarr"), mode="w")
    group.attrs["softlabels"] = {"format": "softlabels.labels", "version": 99}
    with pytest.raises(StoreFormatError, match="version 99"):
        open_store(tmp_path / "future.zarr")


def test_float16_overflow_is_refused() -> None:
    with pytest.raises(
        InvalidArgumentError, match="overflow float16 at rows \\[11\\]; use the float32 value dtype"
    ):
        FullEncoding("float16").encode(np.array([[1.0, 1e6]], dtype=np.float32), 11)


def test_info_describes_store(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = rows
    write_all(tmp_path / "s.zarr", values, targets)
    description = describe_store(tmp_path / "s.zarr")
    assert description["shards_done"] == description["shards_total"] == 5
    assert description["provenance"]["teacher"]["weights_sha256"] == "a" * 64
    assert description["bytes_on_disk"] > 0
    json.dumps(description)
    assert "complete: 5 of 5 shards" in format_description(description)
