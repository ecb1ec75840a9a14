"""Row encodings: how a batch of temperature-scaled teacher logits becomes stored arrays.

An encoding names the arrays it stores (one row per sample each) and turns a float32 block of
``logits / T`` rows into them. Encodings are pure numpy and know nothing about Zarr, so a
conversion job and the generator share them.

Three formats exist (``Encoding.name``):

``full``
    All ``C`` scaled logits per row (field ``logits``).
``topk``
    The ``K`` largest scaled logits per row (``values``), their classes (``indices``) and the
    row's ``log_normalizer = logsumexp`` over all ``C`` classes, so the kept probabilities
    ``exp(values - log_normalizer)`` are exact and the residual mass is known.
``sampled``
    ``S`` classes drawn from ``softmax(row)``, stored as the distinct classes (``indices``) and
    how often each was drawn (``counts``); ``counts / S`` is an unbiased estimate of the teacher
    distribution.

Value types (``full`` and ``topk``): ``float16``, ``float32``, ``bfloat16`` (stored as the raw
upper 16 bits of the float32, dtype ``uint16``, rounded to nearest even, because Zarr and numpy
have no bfloat16) and ``int8`` (dtype ``uint8`` codes with a per-row float32 ``scale`` and
``offset``: ``value = offset + code * scale``).

:meth:`Encoding.decode` turns stored arrays into what the losses take: float32 values and
normalisers, int64 class indices, float32 counts, under the exact keys
:func:`softlabels.student.losses.distillation_loss` reads.
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


# --------------------------------------------------------------------------------------------------
# Values: float16 / float32 / bfloat16 / int8 with per-row scale and offset
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


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


def _require_2d(scaled_logits: np.ndarray) -> np.ndarray:
    rows = np.asarray(scaled_logits, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise InvalidArgumentError(f"expected a [rows, classes] block of scaled logits, got {rows.shape}")
    return rows


def _require_int(value: Any, option: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{option} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{option} must be >= {minimum}, got {int(value)}")
    return int(value)


def _row_numbers(shape: tuple[int, ...]) -> np.ndarray:
    """The row number of every entry of a ``[rows, width]`` array (a broadcast view, no copy)."""
    return np.broadcast_to(np.arange(shape[0])[:, None], shape)


def _scatter_mask(indices: np.ndarray, keep: np.ndarray, num_classes: int) -> np.ndarray:
    mask = np.zeros((indices.shape[0], num_classes), dtype=bool)
    mask[_row_numbers(indices.shape)[keep], indices[keep]] = True
    return mask


# --------------------------------------------------------------------------------------------------
# full
# --------------------------------------------------------------------------------------------------


class FullEncoding(Encoding):
    """All C scaled logits per row, as float16, bfloat16, float32 or int8 (per-row scale/offset)."""

    name = "full"

    def __init__(self, dtype: str = "float16") -> None:
        self.dtype = check_value_dtype(dtype, self.name)

    def params(self) -> dict[str, Any]:
        return {"dtype": self.dtype}

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        return value_fields("logits", num_classes, self.dtype, "class")

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        return encode_values("logits", _require_2d(scaled_logits), self.dtype, first_row)

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"logits": float32 [n, C]}``."""
        return {"logits": decode_values("logits", fields, self.dtype)}

    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """``softmax(logits)``."""
        return softmax(fields["logits"])

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        return np.ones((len(fields["logits"]), num_classes), dtype=bool)


# --------------------------------------------------------------------------------------------------
# topk
# --------------------------------------------------------------------------------------------------


class TopKEncoding(Encoding):
    """The ``k`` largest scaled logits per row, their classes and the row's log-sum-exp.

    Kept entries are ordered by decreasing value (ties by increasing class). ``log_normalizer``
    is computed from the float32 row before the values are rounded to ``dtype``, so the kept
    probabilities ``exp(values - log_normalizer)`` carry only the rounding of ``values``.
    """

    name = "topk"

    def __init__(self, k: int, dtype: str = "float16") -> None:
        self.k = _require_int(k, "--k", minimum=1)
        self.dtype = check_value_dtype(dtype, self.name)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "dtype": self.dtype}

    def check_classes(self, num_classes: int) -> None:
        """Refuse keeping more classes than the rows have."""
        if self.k > num_classes:
            raise InvalidArgumentError(
                f"--k {self.k} exceeds the number of classes ({num_classes}); choose 1 <= k <= {num_classes}"
            )

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        self.check_classes(num_classes)
        return (
            *value_fields("values", self.k, self.dtype, "rank"),
            FieldSpec("indices", (self.k,), index_dtype(num_classes), ("rank",)),
            FieldSpec("log_normalizer", (), "float32"),
        )

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        rows = _require_2d(scaled_logits)
        num_classes = rows.shape[1]
        self.check_classes(num_classes)
        kept = top_classes(rows, self.k)
        values = np.take_along_axis(rows, kept, axis=1)
        return {
            **encode_values("values", values, self.dtype, first_row),
            "indices": kept.astype(index_dtype(num_classes)),
            "log_normalizer": logsumexp(rows).astype(np.float32),
        }

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``values`` float32 [n, K], ``indices`` int64 [n, K], ``log_normalizer`` float32 [n]."""
        return {
            "values": decode_values("values", fields, self.dtype),
            "indices": np.asarray(fields["indices"], dtype=np.int64),
            "log_normalizer": np.asarray(fields["log_normalizer"], dtype=np.float32),
        }

    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """Exact kept probabilities; the residual mass spread uniformly over the ``C - K`` other classes.

        This is the ``"uniform"`` residual rule of :func:`softlabels.student.losses.topk_kd_loss`.
        Rounding can push the kept mass slightly above 1; it is then scaled back to exactly 1.
        """
        indices = np.asarray(fields["indices"], dtype=np.int64)
        kept = np.exp(
            np.asarray(fields["values"], dtype=np.float64)
            - np.asarray(fields["log_normalizer"], dtype=np.float64)[:, None]
        )
        kept_mass = kept.sum(axis=1, keepdims=True)
        kept = np.where(kept_mass > 1.0, kept / kept_mass, kept)
        others = num_classes - indices.shape[1]
        share = (1.0 - kept.sum(axis=1, keepdims=True)).clip(min=0.0) / others if others else 0.0
        probs = np.broadcast_to(share, (len(indices), num_classes)).astype(np.float64, copy=True)
        np.put_along_axis(probs, indices, kept, axis=1)
        return probs

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        indices = np.asarray(fields["indices"], dtype=np.int64)
        return _scatter_mask(indices, np.ones(indices.shape, dtype=bool), num_classes)


def top_classes(rows: np.ndarray, k: int) -> np.ndarray:
    """Classes of the ``k`` largest entries per row, by decreasing value then increasing class."""
    num_classes = rows.shape[1]
    candidates = (
        np.argpartition(-rows, k - 1, axis=1)[:, :k]
        if k < num_classes
        else np.broadcast_to(np.arange(num_classes), rows.shape)
    )
    candidates = np.sort(candidates, axis=1)  # a stable order so ties resolve by class index
    order = np.argsort(-np.take_along_axis(rows, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# sampled
# --------------------------------------------------------------------------------------------------

SEED_LIMIT = 1 << 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class SampledEncoding(Encoding):
    """``samples`` classes drawn per row from ``softmax(row)``, stored as distinct classes and counts.

    Slot ``j < d`` of a row holds its ``j``-th distinct drawn class (increasing class order) and
    how often it was drawn; the remaining ``samples - d`` slots hold class 0 with count 0, so the
    varying number of distinct classes costs only fixed-size arrays that compress well.

    Draws are reproducible and independent of how rows are cut into shards: draw ``j`` of store
    row ``r`` uses the uniform number of a counter-based SplitMix64 stream keyed by
    ``(seed, r)`` at position ``j``, mapped to a class by inverse-CDF sampling. Converting a full
    store and generating directly therefore give the same draws from the same logits.
    """

    name = "sampled"

    def __init__(self, samples: int, seed: int = 0, dtype: str | None = None) -> None:
        self.samples = _require_int(samples, "--samples", minimum=1)
        self.seed = _require_int(seed, "--seed")
        if not 0 <= self.seed < SEED_LIMIT:
            raise InvalidArgumentError(f"--seed must be in [0, 2**64), got {self.seed}")
        # The value dtype does not apply: only class indices and counts are stored. The default
        # float16 is accepted so that a command line that leaves --dtype alone still works.
        if dtype not in (None, "float16"):
            raise InvalidArgumentError(
                f"--dtype {dtype} does not apply to format sampled, which stores "
                "class indices and counts only; leave --dtype out"
            )

    def params(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed}

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        return (
            FieldSpec("indices", (self.samples,), index_dtype(num_classes), ("slot",)),
            FieldSpec("counts", (self.samples,), count_dtype(self.samples), ("slot",)),
        )

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        rows = _require_2d(scaled_logits)
        uniforms = row_uniforms(self.seed, first_row, len(rows), self.samples)
        draws = inverse_cdf_draws(rows, uniforms)
        indices, counts = distinct_with_counts(draws)
        return {
            "indices": indices.astype(index_dtype(rows.shape[1])),
            "counts": counts.astype(count_dtype(self.samples)),
        }

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``indices`` int64 [n, S], ``counts`` float32 [n, S] (padding slots: count 0)."""
        return {
            "indices": np.asarray(fields["indices"], dtype=np.int64),
            "counts": np.asarray(fields["counts"], dtype=np.float32),
        }

    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """The empirical distribution ``counts / S`` (zero for classes never drawn)."""
        indices = np.asarray(fields["indices"], dtype=np.int64)
        counts = np.asarray(fields["counts"], dtype=np.float64)
        probs = np.zeros((len(indices), num_classes), dtype=np.float64)
        np.add.at(probs, (_row_numbers(indices.shape), indices), counts)  # padding adds 0 to class 0
        empirical: np.ndarray = probs / probs.sum(axis=1, keepdims=True)
        return empirical

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        indices = np.asarray(fields["indices"], dtype=np.int64)
        return _scatter_mask(indices, np.asarray(fields["counts"]) > 0, num_classes)


def _mix64(state: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function (a bijective 64-bit mixer)."""
    state = (state ^ (state >> np.uint64(30))) * _MIX1
    state = (state ^ (state >> np.uint64(27))) * _MIX2
    mixed: np.ndarray = state ^ (state >> np.uint64(31))
    return mixed


def row_uniforms(seed: int, first_row: int, num_rows: int, samples: int) -> np.ndarray:
    """Uniform numbers in ``[0, 1)``, ``[num_rows, samples]``, a pure function of (seed, row, draw)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        seed_key = _mix64(np.array([seed], dtype=np.uint64) + _GOLDEN)
        rows = np.arange(first_row, first_row + num_rows, dtype=np.uint64)
        row_keys = _mix64(rows ^ seed_key)[:, None]
        draws = np.arange(1, samples + 1, dtype=np.uint64)[None, :]
        bits = _mix64(row_keys + draws * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def inverse_cdf_draws(rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Class drawn for each uniform: the smallest ``c`` with ``cdf[c] > u * total`` of its row.

    A vectorised binary search (``ceil(log2 C)`` gathers) instead of a per-row ``searchsorted``
    keeps rows with many classes exact and rows with few classes fast.
    """
    weights = np.exp(rows.astype(np.float64) - rows.max(axis=1, keepdims=True))
    cdf = np.cumsum(weights, axis=1)
    targets = uniforms * cdf[:, -1:]
    low = np.zeros(uniforms.shape, dtype=np.int64)
    high = np.full(uniforms.shape, rows.shape[1] - 1, dtype=np.int64)
    while np.any(low < high):
        middle = (low + high) // 2
        right = np.take_along_axis(cdf, middle, axis=1) <= targets
        low = np.where(right, middle + 1, low)
        high = np.where(right, high, middle)
    # Only when u * total rounds up to total does the search fall off the end; the last class
    # with positive weight then takes the draw, so a zero-probability class is never drawn.
    last_positive = rows.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    draws: np.ndarray = np.minimum(low, last_positive[:, None])
    return draws


def distinct_with_counts(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the distinct classes of ``draws`` (increasing) and their counts, zero-padded."""
    num_rows, samples = draws.shape
    ordered = np.sort(draws, axis=1)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    slot = np.cumsum(starts, axis=1) - 1
    flat_slot = (np.arange(num_rows)[:, None] * samples + slot).ravel()
    counts = np.bincount(flat_slot, minlength=num_rows * samples).reshape(num_rows, samples)
    indices = np.zeros(ordered.shape, dtype=np.int64)
    indices[_row_numbers(ordered.shape)[starts], slot[starts]] = ordered[starts]
    return indices, counts


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

EncodingFactory = Callable[..., Encoding]
_REGISTRY: dict[str, EncodingFactory] = {
    FullEncoding.name: FullEncoding,
    TopKEncoding.name: TopKEncoding,
    SampledEncoding.name: SampledEncoding,
}


def register_encoding(name: str, factory: EncodingFactory) -> None:
    """Make ``name`` known to :func:`encoding_from_params`."""
    _REGISTRY[name] = factory


def encoding_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def encoding_from_params(name: str, params: Mapping[str, Any]) -> Encoding:
    """Recreate the encoding a store records.

    Raises:
        UnknownNameError: ``name`` is not a known format.
        InvalidArgumentError: ``params`` do not fit the format.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownNameError(f"unknown label format '{name}'; known formats: {', '.join(encoding_names())}")
    try:
        return factory(**params)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad parameters {dict(params)} for format '{name}': {exc}") from exc


def format_options(
    label_format: str, *, k: int | None, samples: int | None, seed: int, option: str = "--format"
) -> dict[str, Any]:
    """Map the command line's ``--k``/``--samples``/``--seed`` onto the parameters of ``label_format``.

    Args:
        label_format: the chosen format.
        k: ``--k`` as given (None when absent).
        samples: ``--samples`` as given (None when absent).
        seed: ``--seed``.
        option: the name of the switch that chose the format, for messages (``--format``, ``--to``).

    Raises:
        InvalidArgumentError: a switch that does not apply to the format, or a missing one it needs.
    """
    if label_format != "topk" and k is not None:
        raise InvalidArgumentError(f"--k applies only to {option} topk")
    if label_format != "sampled" and samples is not None:
        raise InvalidArgumentError(f"--samples applies only to {option} sampled")
    if label_format == "topk":
        if k is None:
            raise InvalidArgumentError(f"{option} topk needs --k")
        return {"k": k}
    if label_format == "sampled":
        if samples is None:
            raise InvalidArgumentError(f"{option} sampled needs --samples")
        return {"samples": samples, "seed": seed}
    return {}


def build_encoding(label_format: str, *, dtype: str = "float16", **options: Any) -> Encoding:
    """The encoding that ``generate --format`` (or ``convert --to``) asks for, with its options."""
    return encoding_from_params(label_format, {"dtype": dtype, **options})
