"""Creating, resuming and completing label stores.

A store is created whole (every array and the header) in a temporary sibling folder and
renamed into place, so an interruption never leaves a half-made group behind. Rows are then
written one shard at a time; a shard is recorded in the ``shards_done`` array (one chunk per
shard, so concurrent writers never touch the same chunk) only after its rows are written. The
header says ``complete`` only after every shard is recorded.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from softlabels.errors import StoreMismatchError, StoreWriteError
from softlabels.files import folder_bytes
from softlabels.format.encodings import Encoding, FieldSpec
from softlabels.format.identity import Scope, mismatches, store_identity
from softlabels.format.schema import ATTRIBUTE_KEY, SHARDS_DONE_ARRAY, TARGETS_ARRAY, StoreHeader
from softlabels.store.arrays import ArrayHandles
from softlabels.store.codecs import checked_compressors
from softlabels.store.reader import read_header

TARGETS_DTYPE = "int32"


@dataclass(frozen=True)
class WriteSummary:
    """What a job that writes a store (``generate``, ``convert``) did."""

    out: str
    num_rows: int
    num_classes: int
    shards_total: int
    shards_written: int
    bytes_on_disk: int
    seconds: float

    def describe_rows(self) -> str:
        """Rows, shards written this run (and already done before) and size on disk."""
        skipped = self.shards_total - self.shards_written
        resumed = f" ({skipped} shards were already done)" if skipped else ""
        return (
            f"{self.num_rows} samples x {self.num_classes} classes, {self.shards_written} of {self.shards_total} "
            f"shards this run{resumed}, {self.bytes_on_disk / 1e6:.2f} MB on disk "
            f"({self.bytes_on_disk / max(1, self.num_rows):.1f} B/sample)"
        )


class StoreWriter:
    """Writes shards into one store whose header is already on disk."""

    def __init__(self, path: Path, header: StoreHeader, encoding: Encoding) -> None:
        self.path = path
        self.header = header
        self.encoding = encoding
        self._group = zarr.open_group(str(path), mode="r+")
        self._arrays = ArrayHandles(self._group, str(path))

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], header: StoreHeader, encoding: Encoding, *, overwrite: bool = False
    ) -> StoreWriter:
        """Create the store at ``path``, or reopen it to resume when it was made with the same settings.

        Raises:
            StoreMismatchError: ``path`` holds a store made with other settings and ``overwrite`` is off.
            StoreWriteError: ``path`` cannot be written, or holds something that is not a store.
        """
        target = Path(path)
        if _holds_anything(target):
            existing = read_header(str(target), refuse_foreign=True)
            if overwrite:
                _remove_store(target)
            else:
                _refuse_mismatch(existing, header, target)
                return cls(target, existing, encoding)
        _create_atomically(target, header, encoding)
        return cls(target, header, encoding)

    def shards_done(self) -> np.ndarray:
        """Boolean mask over shards, read from the store."""
        return np.asarray(self._arrays[SHARDS_DONE_ARRAY][:], dtype=bool)

    def pending_shards(self) -> list[int]:
        return np.flatnonzero(~self.shards_done()).tolist()

    def write_shard(self, shard: int, fields: dict[str, np.ndarray], targets: np.ndarray) -> None:
        """Write every row of ``shard`` and then record it as done."""
        start, stop = self.header.layout.shard_bounds(shard)
        for name, values in fields.items():
            self._arrays[name][start:stop] = values
        self._arrays[TARGETS_ARRAY][start:stop] = targets.astype(TARGETS_DTYPE, copy=False)
        self._arrays[SHARDS_DONE_ARRAY][shard] = 1

    def bytes_on_disk(self) -> int:
        return folder_bytes(self.path)

    def mark_complete(self) -> StoreHeader:
        """Flag the store complete once every shard is recorded; returns the final header."""
        missing = self.pending_shards()
        if missing:
            raise StoreWriteError(f"cannot complete {self.path}: shards {missing[:10]} are not written")
        self.header = StoreHeader(layout=self.header.layout, provenance=self.header.provenance, complete=True)
        self._group.attrs[ATTRIBUTE_KEY] = self.header.to_json()
        return self.header


def _holds_anything(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _refuse_mismatch(existing: StoreHeader, wanted: StoreHeader, path: Path) -> None:
    found = mismatches(
        store_identity(existing, Scope.RESUME),
        store_identity(wanted, Scope.RESUME),
        have_name="store",
        want_name="this run",
    )
    if found:
        raise StoreMismatchError(
            f"{path} was made with other settings ({'; '.join(found)}); pass --overwrite to replace it"
        )


def _remove_store(path: Path) -> None:
    # Renaming first makes the removal look atomic: a crash leaves a stray folder, never a damaged store.
    doomed = path.with_name(f".{path.name}.removing-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(doomed)
        shutil.rmtree(doomed)
    except OSError as exc:
        raise StoreWriteError(f"cannot replace {path}: {exc.strerror or exc}") from exc


def _create_atomically(path: Path, header: StoreHeader, encoding: Encoding) -> None:
    staging = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_layout(staging, header, encoding)
        if path.exists():  # an empty folder the user made for us
            path.rmdir()
        staging.rename(path)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreWriteError(f"cannot write a store at {path}: {exc.strerror or exc}") from exc


def _create_layout(path: Path, header: StoreHeader, encoding: Encoding) -> None:
    layout = header.layout
    group = zarr.open_group(str(path), mode="w-", attributes={ATTRIBUTE_KEY: header.to_json()})
    for spec in (*encoding.fields(layout.num_classes), FieldSpec(TARGETS_ARRAY, (), TARGETS_DTYPE)):
        _create_row_array(group, spec, layout.num_rows, layout.chunk_rows)
    group.create_array(
        SHARDS_DONE_ARRAY,
        shape=(layout.num_shards,),
        chunks=(1,),
        dtype="uint8",
        fill_value=0,
        compressors=None,
    )


def _create_row_array(group: Any, spec: FieldSpec, num_rows: int, chunk_rows: int) -> None:
    group.create_array(
        spec.name,
        shape=(num_rows, *spec.row_shape),
        chunks=(chunk_rows, *spec.row_shape),
        dtype=spec.dtype,
        fill_value=0,
        compressors=checked_compressors(),
        dimension_names=spec.dimension_names(),
    )
