"""Value types of stored logits: float16, float32, bfloat16 (as uint16 bits) and int8 (per-row affine).

bfloat16 is stored as the raw upper 16 bits of the float32, dtype ``uint16``, rounded to nearest
even, because Zarr and numpy have no bfloat16; int8 as ``uint8`` codes with a per-row float32
``scale`` and ``offset`` (``value = offset + code * scale``).

:func:`encode_values` rounds to nearest; :func:`encode_log_probs` stores log-probabilities so
that the decoded probabilities of a row never sum to more than 1 (what the top-k format needs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from softlabels.defaults import VALUE_DTYPES
from softlabels.errors import InvalidArgumentError, InvalidSettingError
from softlabels.format.encodings.base import FieldSpec

SCALE_FIELD = "scale"
OFFSET_FIELD = "offset"
INT8_LEVELS = 255
_STORED_VALUE_DTYPE = {"float16": "float16", "float32": "float32", "bfloat16": "uint16", "int8": "uint8"}


def check_value_dtype(dtype: str, label_format: str) -> str:
    """Refuse a value dtype the format cannot store."""
    if dtype not in VALUE_DTYPES:
        raise InvalidSettingError(
            "dtype", f"value dtype '{dtype}' is not one of {', '.join(VALUE_DTYPES)} (format {label_format})"
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
            f"scaled logits overflow {dtype} at rows {rows}; use the float32 value dtype or a higher temperature"
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


def encode_log_probs(name: str, log_probs: np.ndarray, dtype: str, first_row: int) -> dict[str, np.ndarray]:
    """Store float64 log-probabilities ``[n, W]`` under ``name`` so that each row's decoded mass is <= 1.

    float32, float16 and bfloat16 round every value toward -inf (one ulp down where the nearest
    value is above; on the bit patterns for bfloat16), so each decoded probability is at most the
    exact one. int8 rounds codes to nearest (half a step, as for full rows) and then lowers the
    row's offset just enough that the row's decoded mass, computed from the float32 values
    exactly as :func:`decode_values` returns them, is at most 1: rounding every code down instead
    would cost the top class, which carries most of the mass, up to a whole step.
    Values below the dtype's most negative finite number are clipped to it (their exponentials
    are 0 in float64 either way).
    """
    values = np.asarray(log_probs, dtype=np.float64)
    if dtype == "int8":
        codes, scale, offset = _quantize_log_probs_uint8(values, first_row)
        return {name: codes, SCALE_FIELD: scale, OFFSET_FIELD: offset}
    if dtype == "bfloat16":
        below = _cast_down(np.maximum(values, -_BFLOAT16_MAX), "float32", first_row)
        bits = float32_to_bfloat16_bits(below, first_row)
        above = bfloat16_bits_to_float32(bits) > below
        # One bfloat16 step toward -inf: a larger magnitude when negative (or zero), smaller when positive.
        negative = (bits & np.uint16(0x8000)) != 0
        zero = bits == 0
        stepped = np.where(
            negative, bits + np.uint16(1), np.where(zero, np.uint16(0x8001), bits - np.uint16(1))
        )
        return {name: np.where(above, stepped, bits).astype(np.uint16)}
    return {name: _cast_down(values, dtype, first_row)}


_BFLOAT16_MAX = float(np.uint32(0x7F7F0000).view(np.float32))  # the largest finite bfloat16


def _cast_down(values: np.ndarray, dtype: str, first_row: int) -> np.ndarray:
    """``values`` (float64) in ``dtype``, each the largest representable number <= the exact one."""
    lowest = float(np.finfo(dtype).min)
    clipped = np.maximum(values, lowest)
    cast = cast_without_overflow(clipped, dtype, first_row)
    above = cast.astype(np.float64) > clipped
    stepped: np.ndarray = np.where(above, np.nextafter(cast, np.asarray(-np.inf, dtype=dtype)), cast)
    return stepped.astype(dtype)


def _quantize_log_probs_uint8(
    log_probs: np.ndarray, first_row: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit codes of log-probabilities, nearest, with each row's offset lowered until its decoded mass is <= 1."""
    codes, scale, offset = quantize_uint8(log_probs.astype(np.float32), first_row)
    mass = np.exp(_decoded_codes(codes, scale, offset)).sum(axis=1)
    lowered = _cast_down(
        (offset.astype(np.float64) - np.log(np.maximum(mass, 1.0)))[:, None], "float32", first_row
    )
    offset = np.where(mass > 1.0, lowered[:, 0], offset)
    # float32 rounding of the decoded values can leave a row a hair above 1: step its offset down.
    while (high := np.exp(_decoded_codes(codes, scale, offset)).sum(axis=1) > 1.0).any():
        offset = np.where(high, np.nextafter(offset, np.float32(-np.inf)), offset)
    return codes, scale, offset


def _decoded_codes(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """What :func:`dequantize_uint8` returns for ``codes``, as float64 (codes may be 256 here)."""
    decoded: np.ndarray = (offset[:, None] + codes.astype(np.float32) * scale[:, None]).astype(np.float32)
    return decoded.astype(np.float64)
