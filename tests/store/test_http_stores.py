"""Stores served over HTTP (a local ``http.server`` on loopback, one per module): readable, never writable."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from object_storage import http_server
from student_helpers import header_for, write_store

from softlabels.errors import IncompleteStoreError, InvalidArgumentError, StoreNotFoundError, StoreWriteError
from softlabels.sources import DatasetSource
from softlabels.store import FullEncoding, StoreWriter, open_store
from softlabels.store.catalogue import list_stores

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, digits_store: Path, digits_train: DatasetSource
) -> Iterator[str]:
    """The base URL of a server publishing ``digits.zarr`` (complete) and ``half.zarr`` (3 of 23 shards)."""
    folder = tmp_path_factory.mktemp("published")
    shutil.copytree(digits_store, folder / "digits.zarr")
    write_store(folder / "half.zarr", digits_train, shards=[0, 1, 2])
    with http_server(folder) as url:
        yield url


def test_a_served_store_reads_as_the_local_one(served: str, digits_store: Path) -> None:
    store, local = open_store(f"{served}/digits.zarr"), open_store(digits_store)
    assert store.complete and store.header == local.header
    np.testing.assert_array_equal(store.read_all().fields["logits"], local.read_all().fields["logits"])
    assert store.bytes_on_disk() is None  # HTTP cannot list what a store holds


def test_a_served_store_that_is_not_complete_is_refused(served: str) -> None:
    with pytest.raises(IncompleteStoreError, match=r"half.zarr is incomplete \(3 of 23 shards written\)"):
        open_store(f"{served}/half.zarr")
    with pytest.raises(StoreNotFoundError, match="no label store at"):
        open_store(f"{served}/missing.zarr")


def test_writing_to_a_served_location_is_refused(served: str, digits_train: DatasetSource) -> None:
    encoding = FullEncoding("float32")
    for location in (f"{served}/new.zarr", f"{served}/digits.zarr"):
        with pytest.raises(StoreWriteError, match=r"stores served over HTTP\(S\) are read-only"):
            StoreWriter.open(location, header_for(digits_train, encoding, 64), encoding)
    with pytest.raises(InvalidArgumentError, match="HTTP.S. servers offer no listing"):
        list_stores(served)


def test_the_commands_read_a_served_store_and_refuse_to_write_there(
    served: str, tmp_path: Path, softlabels_main: Any
) -> None:
    location = f"{served}/digits.zarr"
    info = softlabels_main("info", location, "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["num_rows"] == 1437
    assert softlabels_main("verify", location, "--dataset", "digits").exit_code == 0
    converted = softlabels_main("convert", location, f"{served}/top3.zarr", "--to", "topk", "--k", "3")
    assert converted.exit_code != 0
    assert "read-only" in converted.stderr and "Traceback" not in converted.stderr
    generated = softlabels_main(
        "generate", "--dataset", "digits", "--teacher", "cnn-small", "--random-weights",
        "--temperature", "2", "--device", "cpu", "--out", f"{served}/new.zarr",
    )  # fmt: skip
    assert generated.exit_code != 0 and "read-only" in generated.stderr


def test_a_student_streams_a_served_store_with_dataloader_workers(
    served: str, tmp_path: Path, softlabels_main: Any
) -> None:
    result = softlabels_main(
        "train-student", "--labels", f"{served}/digits.zarr", "--dataset", "digits", "--student", "mlp",
        "--epochs", "1", "--device", "cpu", "--num-workers", "2", "--memory-budget-mb", "0",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["locations"]["labels"] == f"{served}/digits.zarr"
