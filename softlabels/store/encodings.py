"""Row encodings: how a batch of temperature-scaled teacher logits becomes stored arrays.

An encoding names the arrays it stores (one row per sample each) and turns a float32 block of
``logits / T`` rows into them. Encodings are pure numpy and know nothing about Zarr, so a
conversion job and the generator share them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from softlabels.errors import InvalidArgumentError, UnknownNameError


@dataclass(frozen=True)
class FieldSpec:
    """One stored array: its name, the shape of one row and its dtype."""

    name: str
    row_shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...] = ()

    def dimension_names(self) -> tuple[str, ...]:
        """Zarr dimension names: ``sample`` first, then ``dims`` (or ``axisN``)."""
        named = self.dims or tuple(f"axis{axis}" for axis in range(1, len(self.row_shape) + 1))
        return ("sample", *named)


class Encoding(ABC):
    """Turns rows of scaled logits into stored fields."""

    name: str

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The JSON parameters that recreate this encoding through :func:`encoding_from_params`."""

    @abstractmethod
    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        """The arrays a store of ``num_classes`` classes holds."""

    @abstractmethod
    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        """Encode a float32 ``[n, C]`` block whose first row is store row ``first_row``."""

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn stored fields into the fields the losses take (e.g. dequantise); identity by default."""
        return fields

    def bytes_per_row(self, num_classes: int) -> int:
        """Uncompressed bytes one row occupies."""
        return sum(int(np.prod(f.row_shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize
                   for f in self.fields(num_classes))


FULL_DTYPES = ("float16", "float32")


class FullEncoding(Encoding):
    """All C scaled logits per row, as float16 or float32."""

    name = "full"

    def __init__(self, dtype: str = "float16") -> None:
        if dtype not in FULL_DTYPES:
            raise InvalidArgumentError(f"dtype '{dtype}' is not one of {', '.join(FULL_DTYPES)}")
        self.dtype = dtype

    def params(self) -> dict[str, Any]:
        return {"dtype": self.dtype}

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        return (FieldSpec("logits", (num_classes,), self.dtype, ("class",)),)

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        return {"logits": cast_without_overflow(scaled_logits, self.dtype, first_row)}


def cast_without_overflow(values: np.ndarray, dtype: str, first_row: int) -> np.ndarray:
    """Cast to ``dtype``, refusing values that are finite before the cast and infinite after."""
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    overflowed = ~np.isfinite(cast).all(axis=tuple(range(1, cast.ndim)))
    if overflowed.any():
        rows = (np.flatnonzero(overflowed)[:5] + first_row).tolist()
        raise InvalidArgumentError(f"scaled logits overflow {dtype} at rows {rows}; use --dtype float32 "
                                   "or a higher temperature")
    return cast


EncodingFactory = Callable[..., Encoding]
_REGISTRY: dict[str, EncodingFactory] = {FullEncoding.name: FullEncoding}


def register_encoding(name: str, factory: EncodingFactory) -> None:
    """Make ``name`` known to :func:`encoding_from_params` (used by the compact formats)."""
    _REGISTRY[name] = factory


def encoding_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def encoding_from_params(name: str, params: Mapping[str, Any]) -> Encoding:
    """Recreate the encoding a store records."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownNameError(f"unknown label format '{name}'; known formats: {', '.join(encoding_names())}")
    try:
        return factory(**params)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad parameters {dict(params)} for format '{name}': {exc}") from exc


def build_encoding(label_format: str, *, dtype: str = "float16", **options: Any) -> Encoding:
    """The encoding that ``generate --format`` asks for, with its options."""
    return encoding_from_params(label_format, {"dtype": dtype, **options})
