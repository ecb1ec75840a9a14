"""Value types of stored logits: float16, float32, bfloat16 (as uint16 bits) and int8 (per-row affine).

bfloat16 is stored as the raw upper 16 bits of the float32, dtype ``uint16``, rounded to nearest
even, because Zarr and numpy have no bfloat16; int8 as ``uint8`` codes with a per-row float32
``scale`` and ``offset`` (``value = offset + code * scale``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings.base import FieldSpec

VALUE_DTYPES = ("float16", "bfloat16", "float32", "int8")
SCALE_FIELD = "scale"
OFFSET_FIELD = "offset"
INT8_LEVELS = 255
_STORED_VALUE_DTYPE = {"float16": "float16", "float32": "float32", "bfloat16": "uint16", "int8": "uint8"}


def check_value_dtype(dtype: str, label_format: str) -> str:
    """Refuse a value dtype the format cannot store."""
    if dtype not in VALUE_DTYPES:
        raise InvalidArgumentError(
            f"dtype '{dtype}' is not one of {', '.join(VALUE_DTYPES)} (format {label_format})"
        )
    return dtype


def value_fields(name: str, width: int, dtype: str, dim: str) -> tuple[FieldSpec, ...]:
    """The arrays that hold ``width`` values per row in ``dtype`` (int8 adds per-row scale and offset)."""
    values = FieldSpec(name, (width,), _STORED_VALUE_DTYPE[dtype], (dim,))
    if dtype != "int8":
        return (values,)
    return values, FieldSpec(SCALE_FIELD, (), "float32"), FieldSpec(OFFSET_FIELD, (), "float32")


def encode_values(name: str, values: np.ndarray, dtype: str, first_row: int) -> dict[str, np.ndarray]:
    """Store float32 ``[n, W]`` values under ``name`` in ``dtype``, refusing overflow."""
    if dtype == "bfloat16":
        return {name: float32_to_bfloat16_bits(values, first_row)}
    if dtype == "int8":
        codes, scale, offset = quantize_uint8(values, first_row)
        return {name: codes, SCALE_FIELD: scale, OFFSET_FIELD: offset}
    return {name: cast_without_overflow(values, dtype, first_row)}


def decode_values(name: str, fields: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
    """The float32 values stored under ``name`` by :func:`encode_values`."""
    stored = fields[name]
    if dtype == "bfloat16":
        return bfloat16_bits_to_float32(stored)
    if dtype == "int8":
        return dequantize_uint8(stored, fields[SCALE_FIELD], fields[OFFSET_FIELD])
    return np.asarray(stored, dtype=np.float32)


def cast_without_overflow(values: np.ndarray, dtype: str, first_row: int) -> np.ndarray:
    """Cast to ``dtype``, refusing values that are finite before the cast and infinite after."""
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    _refuse_overflow(cast, dtype, first_row)
    return cast


def _refuse_overflow(cast: np.ndarray, dtype: str, first_row: int) -> None:
    overflowed = ~np.isfinite(cast).all(axis=tuple(range(1, cast.ndim)))
    if overflowed.any():
        rows = (np.flatnonzero(overflowed)[:5] + first_row).tolist()
        raise InvalidArgumentError(
            f"scaled logits overflow {dtype} at rows {rows}; use --dtype float32 or a higher temperature"
        )


def float32_to_bfloat16_bits(values: np.ndarray, first_row: int = 0) -> np.ndarray:
    """The upper 16 bits of each float32, rounded to nearest with ties to even, as uint16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds the dropped half to nearest, ties to even.
    lowest_kept = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits.astype(np.uint64) + np.uint64(0x7FFF) + lowest_kept) >> np.uint64(16)
    stored = rounded.astype(np.uint16)
    _refuse_overflow(bfloat16_bits_to_float32(stored), "bfloat16", first_row)
    return stored


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen stored bfloat16 bit patterns back to float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def quantize_uint8(values: np.ndarray, first_row: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row affine 8-bit codes: ``value ~ offset + code * scale`` with error at most ``scale / 2``.

    Returns:
        ``(codes uint8 [n, W], scale float32 [n], offset float32 [n])``; a constant row gets scale 0.
    """
    values = np.asarray(values, dtype=np.float32)
    offset = values.min(axis=1)
    with np.errstate(over="ignore"):
        scale = (values.max(axis=1) - offset) / np.float32(INT8_LEVELS)
    _refuse_overflow(scale, "int8 (the row's value range)", first_row)
    # Computing in float64 keeps the rounding of the codes exact for float32 inputs.
    safe_scale = np.where(scale > 0, scale, 1.0).astype(np.float64)
    steps = (values.astype(np.float64) - offset[:, None].astype(np.float64)) / safe_scale[:, None]
    codes = np.clip(np.rint(steps), 0, INT8_LEVELS).astype(np.uint8)
    return codes, scale.astype(np.float32), offset.astype(np.float32)


def dequantize_uint8(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Float32 values of 8-bit codes (the inverse of :func:`quantize_uint8` up to ``scale / 2``)."""
    scale32 = np.asarray(scale, dtype=np.float32)[:, None]
    offset32 = np.asarray(offset, dtype=np.float32)[:, None]
    return (offset32 + codes.astype(np.float32) * scale32).astype(np.float32)
