"""Stores of format version 1, written by an earlier softlabels and kept in ``tests/data``, still read exactly.

Each ``v1_digits_<format>.zarr`` was made by ``softlabels generate`` (its header records the command);
``v1_digits_<format>.expected.npz`` holds what that softlabels exported from it. Only read here: no
command may write into ``tests/data``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from softlabels.store import open_store
from softlabels.store.export import HEADER_KEY, export_store
from softlabels.store.info import describe_store, format_description
from softlabels.store.inspect import inspect_store
from softlabels.store.verify import verify_store

DATA = Path(__file__).parent.parent / "data"
FORMATS = ("full", "topk", "sampled")


def kept(name: str) -> Path:
    return DATA / f"v1_digits_{name}.zarr"


def expected(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"v1_digits_{name}.expected.npz") as exported:
        return {key: exported[key] for key in exported.files}


@pytest.mark.parametrize("name", FORMATS)
def test_a_version_1_store_decodes_to_its_exported_rows(name: str) -> None:
    store = open_store(kept(name))
    assert store.header.version == 1 and store.layout.label_axes == ()
    want = expected(name)
    rows = store.read_all()
    assert rows.fields.keys() | {"targets", HEADER_KEY} == want.keys()
    for field, values in rows.fields.items():
        assert values.shape == want[field].shape
        np.testing.assert_array_equal(values, want[field].astype(values.dtype), err_msg=field)
    np.testing.assert_array_equal(rows.targets, want["targets"])
    written_back = json.loads(json.dumps(store.header.to_json()))  # as JSON: tuples become lists
    assert written_back == json.loads(str(want[HEADER_KEY]))  # parsed and written back unchanged


@pytest.mark.parametrize("name", FORMATS)
def test_a_version_1_store_exports_exactly_as_it_did(name: str, tmp_path: Path) -> None:
    export_store(kept(name), tmp_path / "again.npz")
    with np.load(tmp_path / "again.npz") as again:
        for key, values in expected(name).items():
            np.testing.assert_array_equal(again[key], values, err_msg=key)
            assert again[key].dtype == values.dtype


@pytest.mark.parametrize("name", FORMATS)
def test_info_inspect_and_verify_work_on_version_1_stores(name: str) -> None:
    description = describe_store(kept(name))
    assert description["version"] == 1 and description["positions"] is None
    assert "format      softlabels.labels v1" in format_description(description)
    report = inspect_store(kept(name))
    assert report["positions"] is None and 0.0 <= report["teacher"]["accuracy"] <= 1.0
    assert verify_store(kept(name)).ok
