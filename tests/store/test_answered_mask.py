"""The optional answered mask: rows of private labels that hold no label (refused or unasked queries)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic_stores import synthetic_header

from softlabels.errors import InvalidArgumentError, StoreFormatError
from softlabels.format.encodings import SampledEncoding
from softlabels.format.schema import ANSWERED_ARRAY, ATTRIBUTE_KEY
from softlabels.store import FullEncoding, StoreWriter, open_store
from softlabels.store.reader import read_header


def masked_store(path: Path, answered: np.ndarray, num_classes: int = 4) -> Path:
    encoding = SampledEncoding(samples=1)
    header = synthetic_header(encoding, len(answered), num_classes, chunk_rows=64, temperature=1.0)
    header = dataclasses.replace(header, layout=dataclasses.replace(header.layout, answered_mask=True))
    writer = StoreWriter.open(path, header, encoding)
    labels = np.arange(len(answered)) % num_classes
    for shard in writer.pending_shards():
        start, stop = header.layout.shard_bounds(shard)
        fields = {
            "indices": labels[start:stop, None].astype("uint8"),
            "counts": answered[start:stop, None].astype("uint8"),
        }
        writer.write_shard(shard, fields, labels[start:stop], answered[start:stop])
    writer.mark_complete()
    return path


def test_a_masked_store_reads_back_its_mask(tmp_path: Path) -> None:
    answered = np.arange(150) % 3 != 0
    store = open_store(masked_store(tmp_path / "m.zarr", answered))
    assert store.layout.answered_mask
    assert np.array_equal(store.answered, answered)
    assert np.array_equal(zarr.open_group(str(tmp_path / "m.zarr"))[ANSWERED_ARRAY][:], answered)


def test_stores_without_a_mask_answer_every_row_and_keep_their_header(tmp_path: Path) -> None:
    encoding = FullEncoding("float32")
    header = synthetic_header(encoding, 10, 3)
    writer = StoreWriter.open(tmp_path / "s.zarr", header, encoding)
    writer.write_shard(0, encoding.encode(np.zeros((10, 3), np.float32), 0), np.zeros(10, np.int64))
    writer.mark_complete()
    store = open_store(tmp_path / "s.zarr")
    assert store.answered.all() and not store.layout.answered_mask
    assert "answered_mask" not in zarr.open_group(str(tmp_path / "s.zarr")).attrs[ATTRIBUTE_KEY]["layout"]
    assert ANSWERED_ARRAY not in zarr.open_group(str(tmp_path / "s.zarr"))


def test_a_masked_store_refuses_a_shard_without_its_mask(tmp_path: Path) -> None:
    encoding = SampledEncoding(samples=1)
    header = synthetic_header(encoding, 10, 3, temperature=1.0)
    header = dataclasses.replace(header, layout=dataclasses.replace(header.layout, answered_mask=True))
    writer = StoreWriter.open(tmp_path / "m.zarr", header, encoding)
    fields = {"indices": np.zeros((10, 1), "uint8"), "counts": np.ones((10, 1), "uint8")}
    with pytest.raises(InvalidArgumentError, match="answered mask is required"):
        writer.write_shard(0, fields, np.zeros(10, np.int64))


def test_a_damaged_mask_is_refused(tmp_path: Path) -> None:
    path = masked_store(tmp_path / "m.zarr", np.ones(70, dtype=bool))
    zarr.open_group(str(path))[ANSWERED_ARRAY][3] = 2
    with pytest.raises(StoreFormatError, match="damaged 'answered' array"):
        _ = open_store(path).answered


def test_a_damaged_mask_flag_is_refused_by_name(tmp_path: Path) -> None:
    path = masked_store(tmp_path / "m.zarr", np.ones(70, dtype=bool))
    group = zarr.open_group(str(path))
    document = dict(group.attrs[ATTRIBUTE_KEY])
    document["layout"] = {**document["layout"], "answered_mask": "yes"}
    group.attrs[ATTRIBUTE_KEY] = document
    with pytest.raises(StoreFormatError, match="layout.answered_mask must be true or false"):
        read_header(str(path))
