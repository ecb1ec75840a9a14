"""The interface every row encoding implements, and helpers the formats share.

An encoding names the arrays it stores (one row per sample each) and turns a float32 block of
``logits / T`` rows into them. Encodings are pure numpy and know nothing about Zarr, so a
conversion job and the generator share them. Each format lives in its own module
(:mod:`.full`, :mod:`.topk`, :mod:`.sampled`); value types in :mod:`.values`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from softlabels.errors import InvalidArgumentError, InvalidSettingError


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
        """The arrays a store of ``num_classes`` classes holds.

        Raises:
            InvalidArgumentError: the encoding cannot hold rows of ``num_classes`` classes.
        """

    @abstractmethod
    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        """Encode a float32 ``[n, C]`` block whose first row is store row ``first_row``."""

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn stored fields into the fields the losses take (e.g. dequantise); identity by default."""
        return fields

    @abstractmethod
    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """The teacher distribution that decoded ``fields`` stand for: float64 ``[n, C]`` rows, each sum 1."""

    @abstractmethod
    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """Boolean ``[n, C]`` mask of the classes each decoded row carries information about."""

    def bytes_per_row(self, num_classes: int) -> int:
        """Uncompressed bytes one row occupies."""
        return sum(
            int(np.prod(f.row_shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize
            for f in self.fields(num_classes)
        )


def index_dtype(num_classes: int) -> str:
    """The smallest dtype that holds every class index of ``num_classes`` classes."""
    if num_classes <= 1 << 8:
        return "uint8"
    if num_classes <= 1 << 16:
        return "uint16"
    return "int32"


def count_dtype(samples: int) -> str:
    """The smallest unsigned dtype that holds a count of up to ``samples``."""
    for dtype in ("uint8", "uint16", "uint32"):
        if samples <= np.iinfo(dtype).max:
            return dtype
    return "uint64"


def softmax(rows: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = np.asarray(rows, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    probs: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return probs


def logsumexp(rows: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(row)))`` in float64, without overflow."""
    wide = np.asarray(rows, dtype=np.float64)
    peak = wide.max(axis=1)
    result: np.ndarray = peak + np.log(np.exp(wide - peak[:, None]).sum(axis=1))
    return result


def require_2d(scaled_logits: np.ndarray) -> np.ndarray:
    rows = np.asarray(scaled_logits, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise InvalidArgumentError(f"expected a [rows, classes] block of scaled logits, got {rows.shape}")
    return rows


def require_int(value: Any, setting: str, *, minimum: int | None = None) -> int:
    """``value`` as an int, refused (naming ``setting``, e.g. ``k``) unless an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidSettingError(setting, f"{setting} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidSettingError(setting, f"{setting} must be >= {minimum}, got {int(value)}")
    return int(value)


def row_numbers(shape: tuple[int, ...]) -> np.ndarray:
    """The row number of every entry of a ``[rows, width]`` array (a broadcast view, no copy)."""
    return np.broadcast_to(np.arange(shape[0])[:, None], shape)


def scatter_mask(indices: np.ndarray, keep: np.ndarray, num_classes: int) -> np.ndarray:
    mask = np.zeros((indices.shape[0], num_classes), dtype=bool)
    mask[row_numbers(indices.shape)[keep], indices[keep]] = True
    return mask
