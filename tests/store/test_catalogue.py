"""``list_stores``: one entry per store under a folder, damaged ones listed with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic_stores import write_synthetic_store

from softlabels.errors import InvalidArgumentError, StoreNotFoundError
from softlabels.format.encodings import FullEncoding, TopKEncoding
from softlabels.store.catalogue import format_catalogue, list_stores


def store_at(
    path: Path, encoding: FullEncoding | TopKEncoding | None = None, shards: list[int] | None = None
) -> Path:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(100, 5)).astype(np.float32)
    return write_synthetic_store(
        path, encoding or FullEncoding("float16"), values, rng.integers(0, 5, 100), shards=shards
    )


def test_every_store_is_listed_once_and_nothing_else(tmp_path: Path) -> None:
    store_at(tmp_path / "team-a" / "full.zarr")
    store_at(tmp_path / "team-a" / "deeper" / "topk.zarr", TopKEncoding(2))
    store_at(tmp_path / "partial.zarr", shards=[0])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a store")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_array("x", shape=(3,), dtype="int8")
    store_at(tmp_path / ".staged.zarr.creating-1234abcd")  # how a writer stages a store it creates
    entries = list_stores(tmp_path)
    assert [entry.name for entry in entries] == [
        "partial.zarr",
        "team-a/deeper/topk.zarr",
        "team-a/full.zarr",
    ]
    topk = entries[1]
    assert (topk.teacher, topk.dataset, topk.split, topk.format) == (
        "cnn",
        "digits",
        "train",
        "topk k=2 float16",
    )
    assert (topk.rows, topk.classes, topk.temperature, topk.complete) == (100, 5, 2.0, True)
    assert topk.fingerprint == "f" * 12 and topk.created == "2026-01-01T00:00:00+00:00"
    assert topk.bytes is not None and topk.bytes > 0 and topk.problem is None
    assert entries[0].complete is False
    table = format_catalogue(entries, str(tmp_path)).splitlines()
    assert table[0].split() == [
        "name",
        "teacher",
        "data",
        "fingerprint",
        "T",
        "format",
        "rows",
        "classes",
        "size",
        "complete",
        "created",
    ]
    assert table[1].split()[-2] == "NO" and table[3].split()[-2] == "yes"


def test_a_store_inside_a_store_folder_is_not_searched_for(tmp_path: Path) -> None:
    outer = store_at(tmp_path / "outer.zarr")
    store_at(outer / "nested.zarr")
    assert [entry.name for entry in list_stores(tmp_path)] == ["outer.zarr"]


def test_damaged_stores_are_listed_with_the_reason_and_hide_nothing(tmp_path: Path) -> None:
    store_at(tmp_path / "good.zarr")
    truncated = store_at(tmp_path / "truncated.zarr") / "zarr.json"
    truncated.write_bytes(truncated.read_bytes()[:150])
    field = store_at(tmp_path / "field.zarr")
    group = zarr.open_group(str(field), mode="r+")
    document = dict(group.attrs["softlabels"])
    document["layout"] = {**document["layout"], "chunk_rows": -1}
    group.attrs["softlabels"] = document
    entries = {entry.name: entry for entry in list_stores(tmp_path)}
    assert entries["good.zarr"].problem is None
    assert "is not a readable Zarr v3 group" in str(entries["truncated.zarr"].problem)
    assert "layout.chunk_rows must be a positive integer, got -1" in str(entries["field.zarr"].problem)
    lines = format_catalogue(list(entries.values()), str(tmp_path)).splitlines()
    assert any(line.startswith("field.zarr  DAMAGED: has a damaged softlabels header") for line in lines)


def test_a_store_given_itself_is_listed_alone(tmp_path: Path) -> None:
    store = store_at(tmp_path / "one.zarr")
    assert [entry.name for entry in list_stores(store)] == ["one.zarr"]


def test_a_folder_without_stores_says_so(tmp_path: Path) -> None:
    assert list_stores(tmp_path) == []
    assert format_catalogue([], str(tmp_path)) == f"no label stores under {tmp_path}"


def test_urls_and_missing_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"HTTP\(S\) servers offer no listing"):
        list_stores("https://example.org/labels")
    with pytest.raises(StoreNotFoundError, match="no folder at"):
        list_stores(tmp_path / "absent")
