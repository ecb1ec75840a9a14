"""Opening label stores and reading them a whole chunk at a time.

Readers never read row by row: one Zarr row costs about as much as a whole chunk, so every read
here is a range of whole chunks. The store's ``version`` picks the reader class, so a later format
version gets its own reader beside this one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from softlabels.errors import (
    IncompleteStoreError,
    InvalidArgumentError,
    StoreFormatError,
    StoreMismatchError,
    StoreNotFoundError,
)
from softlabels.files import differences, folder_bytes
from softlabels.format.encodings import Encoding, encoding_from_params
from softlabels.format.schema import (
    ATTRIBUTE_KEY,
    FORMAT_VERSION,
    SHARDS_DONE_ARRAY,
    TARGETS_ARRAY,
    Layout,
    Provenance,
    StoreHeader,
)
from softlabels.store.arrays import ArrayHandles

if TYPE_CHECKING:
    from softlabels.sources import DatasetSource


@dataclass(frozen=True)
class LabelChunk:
    """Rows ``[start, stop)`` of a store: the encoded label fields and the ground-truth targets."""

    start: int
    stop: int
    fields: dict[str, np.ndarray]
    targets: np.ndarray


def _open_group(location: str) -> Any:
    try:
        return zarr.open_group(location, mode="r")
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
    if refuse_foreign and not (Path(location) / "zarr.json").exists():
        raise StoreFormatError(
            f"{location} exists and is not a softlabels store; refusing to touch it (choose another --out)"
        )
    group = _open_group(location)
    return StoreHeader.from_json(group.attrs.get(ATTRIBUTE_KEY), where=location)


class LabelStore:
    """A read-only view of a version-1 label store."""

    def __init__(self, location: str, group: Any, header: StoreHeader) -> None:
        self.location = location
        self.header = header
        self.encoding: Encoding = encoding_from_params(header.layout.encoding, header.layout.encoding_params)
        self._arrays = ArrayHandles(group, location)
        self._field_names = tuple(spec.name for spec in self.encoding.fields(header.layout.num_classes))

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

    @property
    def complete(self) -> bool:
        return self.header.complete

    def shards_done(self) -> np.ndarray:
        return np.asarray(self._arrays[SHARDS_DONE_ARRAY][:], dtype=bool)

    def read_rows(self, start: int, stop: int, *, raw: bool = False) -> LabelChunk:
        """Read rows ``[start, stop)``; callers pass chunk boundaries so no chunk is decoded twice.

        Fields come decoded for the losses (see :meth:`Encoding.decode`) unless ``raw`` is set.
        """
        if not 0 <= start <= stop <= self.num_rows:
            raise InvalidArgumentError(f"rows [{start}, {stop}) are outside the store's {self.num_rows} rows")
        fields = {name: np.asarray(self._arrays[name][start:stop]) for name in self._field_names}
        if not raw:
            fields = self.encoding.decode(fields)
        return LabelChunk(
            start, stop, fields, np.asarray(self._arrays[TARGETS_ARRAY][start:stop], dtype=np.int64)
        )

    def read_chunk(self, chunk: int) -> LabelChunk:
        if not 0 <= chunk < self.num_chunks:
            raise InvalidArgumentError(f"chunk {chunk} is outside the store's {self.num_chunks} chunks")
        return self.read_rows(*self.layout.chunk_bounds(chunk))

    def read_all(self) -> LabelChunk:
        return self.read_rows(0, self.num_rows)

    def check_matches(self, source: DatasetSource) -> None:
        """Prove the store's rows belong to ``source``, sample for sample.

        Raises:
            StoreMismatchError: naming every property that differs.
        """
        stored = self.provenance.dataset
        wanted = {
            "split": source.split,
            "number of samples": len(source),
            "number of classes": source.num_classes,
            "dataset fingerprint": source.fingerprint,
        }
        have = {
            "split": stored.split,
            "number of samples": stored.num_rows,
            "number of classes": stored.num_classes,
            "dataset fingerprint": stored.fingerprint,
        }
        found = differences(have, wanted, have_name="store", want_name="data")
        if found:
            raise StoreMismatchError(
                f"{self.location} was made from other data than {source.spec} "
                f"[{source.split}] ({'; '.join(found)})"
            )

    def bytes_on_disk(self) -> int | None:
        """Total size of the store's files, or None when it is not a local folder."""
        root = Path(self.location)
        if not root.is_dir():
            return None
        return folder_bytes(root)


_READERS: dict[int, type[LabelStore]] = {FORMAT_VERSION: LabelStore}


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
    if not store.complete and not allow_incomplete:
        done = int(store.shards_done().sum())
        raise IncompleteStoreError(
            f"{where} is incomplete ({done} of {header.layout.num_shards} shards written); "
            "re-run the generate command to finish it"
        )
    return store
