"""Opened arrays of one Zarr group, each opened once, and row reads that name a damaged chunk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import zarr
from zarr.core.array_spec import ArrayConfigParams

from softlabels.errors import StoreCorruptError, StoreFormatError

# What zarr raises for a chunk it cannot decode (a failed crc32c, a truncated zstd frame) or read.
READ_ERRORS = (ValueError, RuntimeError, OSError)


class ArrayHandles:
    """Opening an array reads its metadata (about a millisecond locally, a round trip remotely): do it once."""

    def __init__(self, group: Any, where: str, *, write_every_chunk: bool = False) -> None:
        self.group = group
        self._where = where
        # zarr skips writing a chunk that holds only the fill value, and an absent chunk reads as
        # zeros: a writer writes every chunk, so that a missing chunk is always damage (see verify).
        self._config: ArrayConfigParams | None = {"write_empty_chunks": True} if write_every_chunk else None
        self._arrays: dict[str, zarr.Array[Any]] = {}

    def __getitem__(self, name: str) -> zarr.Array[Any]:
        if name not in self._arrays:
            try:
                array = self.group[name]
            except KeyError as exc:
                raise StoreFormatError(f"{self._where} has no '{name}' array; the store is damaged") from exc
            except READ_ERRORS as exc:  # its zarr.json is truncated or unreadable
                raise StoreFormatError(
                    f"{self._where}: the metadata of the '{name}' array cannot be read ({reason(exc)}); "
                    "the store is damaged"
                ) from exc
            if not isinstance(array, zarr.Array):
                raise StoreFormatError(f"{self._where}/{name} is a group, not an array")
            self._arrays[name] = array if self._config is None else array.with_config(self._config)
        return self._arrays[name]

    def read(self, names: Iterable[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` of each named array.

        Raises:
            StoreCorruptError: a chunk fails its checksum or cannot be read; the message names its
                key (``logits/c/3/0``).
        """
        arrays = {name: self[name] for name in names}
        try:
            return {name: np.asarray(array[start:stop]) for name, array in arrays.items()}
        except READ_ERRORS as exc:
            raise self._damage(arrays, start, stop, exc) from exc

    def _damage(
        self, arrays: dict[str, zarr.Array[Any]], start: int, stop: int, error: BaseException
    ) -> StoreCorruptError:
        # Only on failure: re-reading chunk by chunk is cheap next to the read that failed, and exact.
        for name, array in arrays.items():
            rows = int(array.chunks[0])
            for chunk in range(start // rows, -(-stop // rows)):
                try:
                    array[chunk * rows : min((chunk + 1) * rows, stop)]
                except READ_ERRORS as exc:
                    return StoreCorruptError(
                        f"{self._where}: chunk {chunk_key(array, name, chunk)} cannot be read ({reason(exc)}); the store is "
                        "damaged: generate it again or restore it from a copy"
                    )
        return StoreCorruptError(f"{self._where}: rows [{start}, {stop}) cannot be read ({reason(error)})")


def chunk_key(array: zarr.Array[Any], name: str, chunk: int) -> str:
    """The store key of the ``chunk``-th chunk along the sample axis of array ``name`` (``logits/c/3/0``)."""
    return f"{name}/{array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))}"


def reason(error: BaseException) -> str:
    """The first sentence of an error (zarr's checksum message goes on with the raw checksum bytes)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).split(". ", 1)[0].strip() or type(error).__name__
