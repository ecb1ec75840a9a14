"""Opened arrays of one Zarr group, each opened once."""

from __future__ import annotations

from typing import Any

import zarr

from softlabels.errors import StoreFormatError


class ArrayHandles:
    """Opening an array reads its metadata (about a millisecond locally, a round trip remotely): do it once."""

    def __init__(self, group: Any, where: str) -> None:
        self.group = group
        self._where = where
        self._arrays: dict[str, zarr.Array[Any]] = {}

    def __getitem__(self, name: str) -> zarr.Array[Any]:
        if name not in self._arrays:
            try:
                array = self.group[name]
            except KeyError as exc:
                raise StoreFormatError(f"{self._where} has no '{name}' array; the store is damaged") from exc
            if not isinstance(array, zarr.Array):
                raise StoreFormatError(f"{self._where}/{name} is a group, not an array")
            self._arrays[name] = array
        return self._arrays[name]
