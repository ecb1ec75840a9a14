"""Zarr v3 codec pipelines used by label stores.

Only codecs defined by the Zarr v3 specification are used (``bytes``, ``zstd``, ``crc32c``), so
tensorstore, zarr-python and other v3 readers open the arrays. ``crc32c`` comes last so that a
corrupted chunk fails its checksum instead of decoding to wrong labels.
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import Crc32cCodec, ZstdCodec

ZSTD_LEVEL = 3


def checked_compressors() -> list[Any]:
    """zstd compression followed by a crc32c checksum of the compressed chunk."""
    return [ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()]
