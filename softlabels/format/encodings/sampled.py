"""The ``sampled`` format: S classes drawn per row from the teacher distribution, as classes and counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from softlabels.errors import InvalidSettingError
from softlabels.format.counter import counter_uniforms
from softlabels.format.encodings.base import (
    Encoding,
    FieldSpec,
    count_dtype,
    index_dtype,
    require_2d,
    require_int,
    row_numbers,
    scatter_mask,
)

SEED_LIMIT = 1 << 64


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
        self.samples = require_int(samples, "samples", minimum=1)
        self.seed = require_int(seed, "seed")
        if not 0 <= self.seed < SEED_LIMIT:
            raise InvalidSettingError("seed", f"seed must be in [0, 2**64), got {self.seed}")
        # The value dtype does not apply: only class indices and counts are stored. The default
        # float16 is accepted so that a caller that leaves the value dtype alone still works.
        if dtype not in (None, "float16"):
            raise InvalidSettingError(
                "dtype",
                f"value dtype {dtype} does not apply to format sampled, which stores "
                "class indices and counts only; leave the value dtype out",
            )

    def params(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed}

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        return (
            FieldSpec("indices", (self.samples,), index_dtype(num_classes), ("slot",)),
            FieldSpec("counts", (self.samples,), count_dtype(self.samples), ("slot",)),
        )

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        rows = require_2d(scaled_logits)
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
        np.add.at(probs, (row_numbers(indices.shape), indices), counts)  # padding adds 0 to class 0
        empirical: np.ndarray = probs / probs.sum(axis=1, keepdims=True)
        return empirical

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        indices = np.asarray(fields["indices"], dtype=np.int64)
        return scatter_mask(indices, np.asarray(fields["counts"]) > 0, num_classes)


def row_uniforms(seed: int, first_row: int, num_rows: int, samples: int) -> np.ndarray:
    """Uniform numbers in ``[0, 1)``, ``[num_rows, samples]``, a pure function of (seed, row, draw)."""
    return counter_uniforms(seed, np.arange(first_row, first_row + num_rows, dtype=np.uint64), samples)


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
    indices[row_numbers(ordered.shape)[starts], slot[starts]] = ordered[starts]
    return indices, counts
