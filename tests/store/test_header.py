"""A damaged or hand-edited store header is refused with an error that names the field at fault."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from synthetic_stores import write_synthetic_store

from softlabels.errors import StoreFormatError
from softlabels.format.schema import DatasetInfo, Layout, Provenance, StoreHeader, TeacherInfo
from softlabels.store import FullEncoding, open_store

ROWS, CLASSES = 130, 4


@pytest.fixture
def store(tmp_path: Path) -> Path:
    values = np.random.default_rng(0).normal(size=(ROWS, CLASSES)).astype(np.float32)
    return write_synthetic_store(tmp_path / "s.zarr", FullEncoding(), values, np.zeros(ROWS, dtype=int))


def edit_header(path: Path, edit: Any) -> None:
    """Apply ``edit`` to the stored attribute document (as a user's editor or a torn write could)."""
    group = zarr.open_group(str(path), mode="r+")
    document = group.attrs["softlabels"]
    edit(document)
    group.attrs["softlabels"] = document


def setter(path: str, value: Any) -> Any:
    *parents, last = path.split(".")

    def edit(document: dict[str, Any]) -> None:
        for key in parents:
            document = document[key]
        document[last] = value

    return edit


def remover(path: str) -> Any:
    *parents, last = path.split(".")

    def edit(document: dict[str, Any]) -> None:
        for key in parents:
            document = document[key]
        del document[last]

    return edit


DAMAGE = {
    "shard_rows zero": (
        setter("layout.shard_rows", 0),
        "layout.shard_rows must be a positive integer, got 0",
    ),
    "chunk_rows string": (setter("layout.chunk_rows", "64"), "layout.chunk_rows must be a positive integer"),
    "shard not whole chunks": (setter("layout.shard_rows", 100), "must be a multiple of layout.chunk_rows"),
    "num_rows bool": (setter("layout.num_rows", True), "layout.num_rows must be a positive integer"),
    "num_classes negative": (setter("layout.num_classes", -4), "layout.num_classes must be a positive"),
    "encoding number": (setter("layout.encoding", 3), "layout.encoding must be a string"),
    "encoding_params list": (
        setter("layout.encoding_params", []),
        "layout.encoding_params must be a JSON object",
    ),
    "layout missing": (remover("layout"), "layout is missing"),
    "layout string": (setter("layout", "x"), "layout must be a JSON object"),
    "provenance list": (setter("provenance", [["a", 1]]), "provenance must be a JSON object"),
    "provenance string": (setter("provenance", "abc"), "provenance must be a JSON object"),
    "temperature zero": (
        setter("provenance.temperature", 0),
        "provenance.temperature must be a finite number > 0",
    ),
    "temperature string": (setter("provenance.temperature", "4"), "provenance.temperature must be a finite"),
    "precision null": (setter("provenance.precision", None), "provenance.precision must be a string"),
    "command missing": (remover("provenance.command"), "provenance.command is missing"),
    "config list": (setter("provenance.config", [1]), "provenance.config must be a JSON object"),
    "created number": (setter("provenance.created", 1), "provenance.created must be a string"),
    "versions values": (
        setter("provenance.versions", {"zarr": 3}),
        "provenance.versions.zarr must be a string",
    ),
    "derived_from entries": (setter("provenance.derived_from", [1]), r"provenance.derived_from\[0\] must be"),
    "compute list": (setter("provenance.compute", []), "provenance.compute must be a JSON object"),
    "teacher string": (setter("provenance.teacher", "cnn"), "provenance.teacher must be a JSON object"),
    "teacher spec": (setter("provenance.teacher.spec", None), "provenance.teacher.spec must be a string"),
    "teacher parameters": (
        setter("provenance.teacher.num_parameters", -1),
        "provenance.teacher.num_parameters must be a non-negative integer",
    ),
    "teacher weights": (
        setter("provenance.teacher.weights_sha256", 5),
        "teacher.weights_sha256 must be a string",
    ),
    "teacher path": (setter("provenance.teacher.weights_path", []), "teacher.weights_path must be a string"),
    "teacher parameters sha": (
        setter("provenance.teacher.parameters_sha256", 1.5),
        "provenance.teacher.parameters_sha256 must be a string",
    ),
    "dataset spec": (setter("provenance.dataset.spec", 1), "provenance.dataset.spec must be a string"),
    "dataset split": (setter("provenance.dataset.split", None), "provenance.dataset.split must be a string"),
    "dataset rows": (
        setter("provenance.dataset.num_rows", 0),
        "provenance.dataset.num_rows must be a positive",
    ),
    "dataset classes": (
        setter("provenance.dataset.num_classes", 2.0),
        "dataset.num_classes must be a positive",
    ),
    "dataset names": (
        setter("provenance.dataset.class_names", "abcd"),
        "class_names must be a list of strings",
    ),
    "dataset name types": (
        setter("provenance.dataset.class_names", ["a", "b", "c", 4]),
        r"provenance.dataset.class_names\[3\] must be a string",
    ),
    "dataset names count": (setter("provenance.dataset.class_names", ["a"]), "holds 1 names for"),
    "dataset fingerprint": (
        setter("provenance.dataset.fingerprint", None),
        "dataset.fingerprint must be a string",
    ),
    "dataset preprocessing": (
        setter("provenance.dataset.preprocessing", 2),
        "preprocessing must be a string",
    ),
    "rows disagree": (
        setter("provenance.dataset.num_rows", ROWS + 1),
        r"layout.num_rows \(130\) differs from provenance.dataset.num_rows \(131\)",
    ),
    "complete string": (setter("complete", "yes"), "complete must be true or false"),
    "unknown field": (setter("layout.extra", 1), r"layout has unknown fields \['extra'\]"),
    "unknown format": (setter("layout.encoding", "dense"), "layout.encoding 'dense'"),
    "bad format parameters": (setter("layout.encoding_params", {"dtype": "int4"}), "layout.encoding_params"),
    "views zero": (setter("layout.views", 0), "layout.views must be a positive integer, got 0"),
    "views bool": (setter("layout.views", True), "layout.views must be a positive integer, got True"),
    "positions string": (setter("layout.positions", "64"), "layout.positions must be a positive integer"),
    "positions float": (setter("layout.positions", 8.0), "layout.positions must be a positive integer"),
    "positions in version 1": (
        lambda document: document["layout"].update(positions=4) or document.update(version=1),
        "layout.views and layout.positions need store format version 2, but the header says version 1",
    ),
    "version 3": (setter("version", 3), "has store format version 3; this softlabels reads versions 1 and 2"),
    "version string": (setter("version", "2"), "has store format version '2'"),
    "version bool": (setter("version", True), "has store format version True"),
}


@pytest.mark.parametrize("edit, message", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_header_names_the_field(store: Path, edit: Any, message: str) -> None:
    edit_header(store, edit)
    with pytest.raises(StoreFormatError, match=message) as raised:
        open_store(store)
    assert str(store) in str(raised.value)


def test_damaged_header_is_one_line_on_the_command_line(store: Path, softlabels_main: Any) -> None:
    edit_header(store, setter("layout.shard_rows", 0))
    for command in (["info", str(store)], ["inspect", str(store)]):
        result = softlabels_main(*command)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: {store} has a damaged softlabels header: layout.shard_rows must be a positive integer, got 0"
        ]


def test_stores_written_before_the_optional_fields_still_open(store: Path) -> None:
    edit_header(store, remover("provenance.compute"))
    edit_header(store, remover("provenance.dataset.preprocessing"))
    edit_header(store, remover("provenance.teacher.parameters_sha256"))
    edit_header(store, remover("provenance.derived_from"))
    reopened = open_store(store)
    assert reopened.provenance.compute == {} and reopened.provenance.dataset.preprocessing is None
    assert reopened.provenance.derived_from == () and reopened.provenance.teacher.parameters_sha256 is None


@pytest.mark.parametrize("cls", [TeacherInfo, DatasetInfo, Layout, Provenance, StoreHeader])
def test_every_header_field_is_parsed(cls: Any) -> None:
    assert set(cls._PARSERS) == {item.name for item in dataclasses.fields(cls)}


def test_headers_built_in_code_are_validated_too() -> None:
    with pytest.raises(StoreFormatError, match="layout.shard_rows must be a positive integer, got 0"):
        Layout("full", {"dtype": "float16"}, 10, 3, 64, 0)
    with pytest.raises(StoreFormatError, match="provenance.teacher.num_parameters"):
        TeacherInfo("cnn", -1, None, None)


def test_label_axes_are_left_out_of_plain_headers(store: Path) -> None:
    document = zarr.open_group(str(store), mode="r").attrs["softlabels"]
    assert document["version"] == 2
    assert not {"views", "positions", "answered_mask"} & document["layout"].keys()


def test_a_version_1_header_still_opens(store: Path) -> None:
    edit_header(store, setter("version", 1))
    assert open_store(store).header.version == 1
