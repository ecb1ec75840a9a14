"""The ``topk`` format: the K largest scaled logits per row, their classes and the row's log-sum-exp."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings.base import (
    Encoding,
    FieldSpec,
    index_dtype,
    logsumexp,
    require_2d,
    require_int,
    scatter_mask,
)
from softlabels.format.encodings.values import check_value_dtype, decode_values, encode_values, value_fields


class TopKEncoding(Encoding):
    """The ``k`` largest scaled logits per row, their classes and the row's log-sum-exp.

    Kept entries are ordered by decreasing value (ties by increasing class). ``log_normalizer``
    is computed from the float32 row before the values are rounded to ``dtype``, so the kept
    probabilities ``exp(values - log_normalizer)`` carry only the rounding of ``values``.
    """

    name = "topk"

    def __init__(self, k: int, dtype: str = "float16") -> None:
        self.k = require_int(k, "--k", minimum=1)
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
        rows = require_2d(scaled_logits)
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

        This is the ``"uniform"`` residual rule of :func:`softlabels.training.losses.topk_kd_loss`.
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
        return scatter_mask(indices, np.ones(indices.shape, dtype=bool), num_classes)


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
