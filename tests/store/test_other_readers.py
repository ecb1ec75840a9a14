"""Other Zarr v3 readers open a store without softlabels: xarray with named dimensions, and tensorstore.

Both are test-only dependencies (the ``dev`` extra); without them these tests are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_stores import write_synthetic_store

from softlabels.format.encodings import TopKEncoding
from softlabels.store import FullEncoding, open_store

ROWS, CLASSES = 150, 6


def store_of(path: Path, encoding: FullEncoding | TopKEncoding) -> Path:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(ROWS, CLASSES)).astype(np.float32)
    return write_synthetic_store(path, encoding, values, rng.integers(0, CLASSES, ROWS), chunk_rows=64)


def test_xarray_opens_a_store_with_named_dimensions(tmp_path: Path) -> None:
    xarray = pytest.importorskip("xarray")
    store = store_of(tmp_path / "topk.zarr", TopKEncoding(3, "float16"))
    data = xarray.open_zarr(store, consolidated=False)
    assert data["values"].dims == ("sample", "rank") and data["indices"].dims == ("sample", "rank")
    assert data["targets"].dims == ("sample",) and data["shards_done"].dims == ("shard",)
    assert data.sizes["sample"] == ROWS
    rows = open_store(store).read_rows(0, ROWS, raw=True)
    assert np.array_equal(data["values"].values, rows.fields["values"])
    assert data.attrs["softlabels"]["layout"]["encoding"] == "topk"


def test_tensorstore_reads_the_arrays(tmp_path: Path) -> None:
    tensorstore = pytest.importorskip("tensorstore")
    store = store_of(tmp_path / "full.zarr", FullEncoding("float16"))
    logits = tensorstore.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / "logits")}}, open=True
    ).result()
    assert logits.shape == (ROWS, CLASSES) and logits.domain.labels == ("sample", "class")
    expected = open_store(store).read_all()
    assert np.array_equal(
        np.asarray(logits[0:ROWS].read().result()), expected.fields["logits"].astype(np.float16)
    )
    targets = tensorstore.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / "targets")}}, open=True
    ).result()
    assert np.array_equal(np.asarray(targets.read().result()), expected.targets)
