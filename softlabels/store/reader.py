"""Opening label stores and reading them a whole chunk at a time.

Readers never read row by row: one Zarr row costs about as much as a whole chunk, so every read
here is a range of whole chunks. The store's ``version`` picks the reader class, so a later format
version gets its own reader beside this one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from softlabels.errors import (
    IncompleteStoreError,
    InvalidArgumentError,
    StoreFormatError,
    StoreNotFoundError,
    UnknownNameError,
)
from softlabels.files import folder_bytes
from softlabels.format.encodings import Encoding, FieldSpec, layout_encoding
from softlabels.format.schema import (
    ANSWERED_ARRAY,
    ATTRIBUTE_KEY,
    READABLE_VERSIONS,
    SHARD_RUNS_ARRAY,
    SHARDS_DONE_ARRAY,
    TARGETS_ARRAY,
    VIEW_PARAMS_ARRAY,
    Layout,
    Provenance,
    StoreHeader,
    run_token,
)
from softlabels.format.views import VIEW_PARAMS
from softlabels.store.arrays import ArrayHandles
from softlabels.store.location import is_remote, remote_bytes, zarr_store


@dataclass(frozen=True)
class LabelChunk:
    """Rows ``[start, stop)`` of a store: the encoded label fields and the ground-truth targets.

    Every field is ``[n, *layout.label_axes, ...]``; targets are int64 ``[n, *layout.target_axes]``
    (``[n]``, or ``[n, L]`` for per-position labels with ``-100`` at ignored positions).
    """

    start: int
    stop: int
    fields: dict[str, np.ndarray]
    targets: np.ndarray


def _open_group(location: str) -> Any:
    store = zarr_store(location, read_only=True)
    try:
        return zarr.open_group(store, mode="r")
    except FileNotFoundError as exc:
        raise StoreNotFoundError(f"no label store at {location}") from exc
    except (ValueError, KeyError, OSError) as exc:
        raise StoreFormatError(f"{location} is not a readable Zarr v3 group: {exc}") from exc


def read_header(location: str, *, refuse_foreign: bool = False) -> StoreHeader:
    """Read and parse a store's attribute document.

    Args:
        location: a path or URL of the store.
        refuse_foreign: phrase the error for a writer that found something else at ``location``.
    """
    # Writers of remote stores check for foreign objects themselves (see StoreWriter.open).
    if refuse_foreign and not is_remote(location) and not (Path(location) / "zarr.json").exists():
        raise StoreFormatError(
            f"{location} exists and is not a softlabels store; refusing to touch it (choose another destination)"
        )
    group = _open_group(location)
    return StoreHeader.from_json(group.attrs.get(ATTRIBUTE_KEY), where=location)


class LabelStore:
    """A read-only view of a label store of format version 1 or 2.

    ``encoding`` works on whole samples: for a store with label axes it is a
    :class:`~softlabels.format.encodings.CellEncoding` (``encoding.row_encoding`` is the format of
    one label row); for a plain store it is the row encoding itself.
    """

    def __init__(self, location: str, group: Any, header: StoreHeader) -> None:
        self.location = location
        self.header = header
        self.encoding, fields = _stored_encoding(header.layout, location)
        self._arrays = ArrayHandles(group, location)
        self._field_names = tuple(spec.name for spec in fields)
        # What one row of each array holds: a header edited to other label axes must not be read.
        self._row_shapes = {spec.name: spec.row_shape for spec in fields}
        self._row_shapes[TARGETS_ARRAY] = header.layout.target_axes

    @property
    def layout(self) -> Layout:
        return self.header.layout

    @property
    def provenance(self) -> Provenance:
        return self.header.provenance

    @property
    def num_rows(self) -> int:
        return self.layout.num_rows

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    @property
    def num_chunks(self) -> int:
        return self.layout.num_chunks

    @property
    def temperature(self) -> float:
        return self.provenance.temperature

    @functools.cached_property
    def complete(self) -> bool:
        """The header says complete and every shard was written by the header's run (never a mixed store)."""
        return self.header.complete and bool(self.shards_done().all())

    def shards_done(self) -> np.ndarray:
        """Boolean mask over shards written by the run the header names (stores without run ids: all recorded)."""
        shards = self.layout.num_shards
        if self.header.run_id is None:  # made before run ids: no per-shard record to check
            record = self._arrays.read([SHARDS_DONE_ARRAY], 0, shards)
            return np.asarray(record[SHARDS_DONE_ARRAY], dtype=bool)
        record = self._arrays.read([SHARDS_DONE_ARRAY, SHARD_RUNS_ARRAY], 0, shards)
        written_by_this_run: np.ndarray = np.asarray(record[SHARDS_DONE_ARRAY], dtype=bool) & (
            record[SHARD_RUNS_ARRAY] == run_token(self.header.run_id)
        )
        return written_by_this_run

    @functools.cached_property
    def answered(self) -> np.ndarray:
        """One bool per row: whether it holds a label (all True unless the layout has an answered mask).

        Rows marked False (private labels: queries refused or never asked) hold no label; their
        stored fields are zeros and must not be trained on.

        Raises:
            StoreFormatError: the mask holds a value other than 0 and 1.
            StoreCorruptError: a chunk of the mask cannot be read.
        """
        if not self.layout.answered_mask:
            return np.ones(self.num_rows, dtype=bool)
        stored = self._arrays.read([ANSWERED_ARRAY], 0, self.num_rows)[ANSWERED_ARRAY]
        if stored.shape != (self.num_rows,) or not np.isin(stored, (0, 1)).all():
            raise StoreFormatError(
                f"{self.location} has a damaged '{ANSWERED_ARRAY}' array: one 0 or 1 per row is expected"
            )
        return stored.astype(bool)

    def read_view_params(self, start: int, stop: int) -> np.ndarray:
        """float32 ``[n, V, 5]``: the crop box and flip (``format.views.VIEW_PARAMS``) of each view of rows ``[start, stop)``.

        Raises:
            InvalidArgumentError: the store records no view recipe (it has no view parameters).
            StoreFormatError: the array is missing or of the wrong shape.
        """
        layout = self.layout
        if layout.views is None or layout.view_recipe is None:
            raise InvalidArgumentError(
                f"{self.location} holds no view parameters (it records no view recipe)"
            )
        if not 0 <= start <= stop <= self.num_rows:
            raise InvalidArgumentError(f"rows [{start}, {stop}) are outside the store's {self.num_rows} rows")
        params = self._arrays.read([VIEW_PARAMS_ARRAY], start, stop)[VIEW_PARAMS_ARRAY]
        if params.shape[1:] != (layout.views, len(VIEW_PARAMS)):
            raise StoreFormatError(
                f"{self.location}: the '{VIEW_PARAMS_ARRAY}' array holds rows of shape {params.shape[1:]}, "
                f"but the layout implies {(layout.views, len(VIEW_PARAMS))}; the store is damaged"
            )
        return params.astype(np.float32, copy=False)

    def read_rows(self, start: int, stop: int, *, raw: bool = False) -> LabelChunk:
        """Read rows ``[start, stop)``; callers pass chunk boundaries so no chunk is decoded twice.

        Fields come decoded for the losses (see :meth:`Encoding.decode`) unless ``raw`` is set.
        """
        if not 0 <= start <= stop <= self.num_rows:
            raise InvalidArgumentError(f"rows [{start}, {stop}) are outside the store's {self.num_rows} rows")
        fields = self._arrays.read((*self._field_names, TARGETS_ARRAY), start, stop)
        self._check_row_shapes(fields)
        targets = fields.pop(TARGETS_ARRAY).astype(np.int64)
        if not raw:
            fields = self.encoding.decode(fields)
        return LabelChunk(start, stop, fields, targets)

    def _check_row_shapes(self, arrays: dict[str, np.ndarray]) -> None:
        for name, values in arrays.items():
            if values.shape[1:] != self._row_shapes[name]:
                raise StoreFormatError(
                    f"{self.location}: the '{name}' array holds rows of shape {values.shape[1:]}, but the "
                    f"header's layout implies {self._row_shapes[name]}; the store is damaged"
                )

    def read_chunk(self, chunk: int) -> LabelChunk:
        if not 0 <= chunk < self.num_chunks:
            raise InvalidArgumentError(f"chunk {chunk} is outside the store's {self.num_chunks} chunks")
        return self.read_rows(*self.layout.chunk_bounds(chunk))

    def read_all(self) -> LabelChunk:
        return self.read_rows(0, self.num_rows)

    def bytes_on_disk(self) -> int | None:
        """Total size of the store's files or objects, or None when the location cannot be listed (HTTP)."""
        if is_remote(self.location):
            return remote_bytes(self.location)
        root = Path(self.location)
        if not root.is_dir():
            return None
        return folder_bytes(root)


def _stored_encoding(layout: Layout, where: str) -> tuple[Encoding, tuple[FieldSpec, ...]]:
    """The encoding a store's layout records and the arrays it implies, or a header error naming them."""
    try:
        encoding = layout_encoding(layout)
        return encoding, encoding.fields(layout.num_classes)
    except (UnknownNameError, InvalidArgumentError) as exc:
        raise StoreFormatError(
            f"{where} has a damaged softlabels header: layout.encoding '{layout.encoding}' with "
            f"layout.encoding_params {layout.encoding_params} cannot be read ({exc})"
        ) from exc


# Version 2 only added optional label axes, so one reader serves both versions.
_READERS: dict[int, type[LabelStore]] = dict.fromkeys(READABLE_VERSIONS, LabelStore)


def open_store(location: str | os.PathLike[str], *, allow_incomplete: bool = False) -> LabelStore:
    """Open a label store for reading.

    Args:
        location: a local path, or any URL zarr-python understands (``s3://...``, ``https://...``).
        allow_incomplete: open a store that still has unwritten shards (its unwritten rows read as zeros).

    Raises:
        StoreNotFoundError: nothing is at ``location``.
        StoreFormatError: it is not a softlabels store, or one of a version this reader does not know.
        IncompleteStoreError: the store is not complete and ``allow_incomplete`` is off.
    """
    where = os.fspath(location)
    group = _open_group(where)
    header = StoreHeader.from_json(group.attrs.get(ATTRIBUTE_KEY), where=where)
    store = _READERS[header.version](where, group, header)
    if not allow_incomplete and not store.complete:  # reading every shard's record only when it matters
        done = int(store.shards_done().sum())
        raise IncompleteStoreError(
            f"{where} is incomplete ({done} of {header.layout.num_shards} shards written); "
            "re-run the generate command to finish it"
        )
    return store
