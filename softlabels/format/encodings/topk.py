"""The ``topk`` format: the log-probabilities of the K most probable classes per row, their classes
and the row's log-sum-exp.

Stored ``values`` are the kept classes' log-probabilities ``z - logsumexp(z)`` of the scaled row
``z``, rounded toward -inf in the float dtypes (int8: to nearest, the row's offset then lowered
as little as needed), so the kept mass ``sum(exp(values))`` can never exceed 1 and the residual
``1 - kept mass`` is never negative, in every dtype. ``log_normalizer``
(``logsumexp(z)``, float32) recovers the kept scaled logits as ``values + log_normalizer``.

Stores written before this (``encoding_params`` without ``"values"``) hold the raw kept scaled
logits instead; :meth:`TopKEncoding.decode` turns both into the same in-memory form (kept
log-probabilities), which is what the loss and :meth:`TopKEncoding.reconstruct` take, and both
derive the teacher distribution through the one function :func:`topk_target`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from softlabels.errors import InvalidArgumentError, InvalidSettingError
from softlabels.format.encoding_spec import TOPK_VALUES
from softlabels.format.encodings.base import (
    Encoding,
    FieldSpec,
    index_dtype,
    logsumexp,
    require_2d,
    require_int,
    scatter_mask,
)
from softlabels.format.encodings.values import (
    check_value_dtype,
    decode_values,
    encode_log_probs,
    value_fields,
)

LOG_PROBS = TOPK_VALUES
"""``encoding_params["values"]`` of stores whose ``values`` are kept log-probabilities."""
LEGACY_LOGITS = "logits"
"""What ``values`` held in stores written before ``encoding_params`` recorded it: kept scaled logits."""
VALUE_MEANINGS = (LOG_PROBS, LEGACY_LOGITS)


class TopKEncoding(Encoding):
    """The ``k`` most probable classes per row: their log-probabilities, their classes and the row's log-sum-exp.

    Kept entries are ordered by decreasing value (ties by increasing class).

    Args:
        k: classes kept per row.
        dtype: value dtype of ``values``.
        values: what ``values`` hold: :data:`LOG_PROBS` (what this softlabels writes) or
            :data:`LEGACY_LOGITS` (stores written before, read only through :meth:`decode`).
    """

    name = "topk"

    def __init__(self, k: int, dtype: str = "float16", values: str = LOG_PROBS) -> None:
        self.k = require_int(k, "k", minimum=1)
        self.dtype = check_value_dtype(dtype, self.name)
        if values not in VALUE_MEANINGS:
            raise InvalidArgumentError(f"top-k values '{values}' is not one of {', '.join(VALUE_MEANINGS)}")
        self.values = values

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"k": self.k, "dtype": self.dtype}
        if self.values == LOG_PROBS:
            params["values"] = LOG_PROBS
        return params

    def check_classes(self, num_classes: int) -> None:
        """Refuse keeping more classes than the rows have."""
        if self.k > num_classes:
            raise InvalidSettingError(
                "k",
                f"k = {self.k} exceeds the number of classes ({num_classes}); choose 1 <= k <= {num_classes}",
            )

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        self.check_classes(num_classes)
        return (
            *value_fields("values", self.k, self.dtype, "rank"),
            FieldSpec("indices", (self.k,), index_dtype(num_classes), ("rank",)),
            FieldSpec("log_normalizer", (), "float32"),
        )

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        if self.values != LOG_PROBS:
            raise InvalidArgumentError(
                "top-k stores with raw logit values are read-only; write log-probabilities"
            )
        rows = require_2d(scaled_logits)
        num_classes = rows.shape[1]
        self.check_classes(num_classes)
        kept = top_classes(rows, self.k)
        normalizer = logsumexp(rows)
        log_probs = np.take_along_axis(rows, kept, axis=1).astype(np.float64) - normalizer[:, None]
        return {
            **encode_log_probs("values", log_probs, self.dtype, first_row),
            "indices": kept.astype(index_dtype(num_classes)),
            "log_normalizer": normalizer.astype(np.float32),
        }

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``values``: kept log-probabilities, float32 [n, K] (kept mass <= 1); ``indices`` int64 [n, K];
        ``log_normalizer`` float32 [n].

        Old stores' raw logits become ``values - log_normalizer``, scaled back to a kept mass of 1
        where their rounding had pushed it above (as their reconstruction always did).
        """
        normalizer = np.asarray(fields["log_normalizer"], dtype=np.float32)
        values = decode_values("values", fields, self.dtype)
        if self.values == LEGACY_LOGITS:
            log_probs = values.astype(np.float64) - normalizer.astype(np.float64)[:, None]
            excess = np.log(np.maximum(np.exp(log_probs).sum(axis=1, keepdims=True), 1.0))
            values = (log_probs - excess).astype(np.float32)
        return {
            "values": values,
            "indices": np.asarray(fields["indices"], dtype=np.int64),
            "log_normalizer": normalizer,
        }

    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """The kept probabilities; the residual mass spread uniformly over the ``C - K`` other classes.

        The same distribution as the ``"uniform"`` residual rule of
        :func:`softlabels.training.losses.topk_kd_loss` (both use :func:`topk_target`).
        """
        indices = np.asarray(fields["indices"], dtype=np.int64)
        kept, share = topk_target(np.asarray(fields["values"], dtype=np.float64), num_classes, np)
        probs = np.broadcast_to(share, (len(indices), num_classes)).astype(np.float64, copy=True)
        np.put_along_axis(probs, indices, kept, axis=1)
        return probs

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        indices = np.asarray(fields["indices"], dtype=np.int64)
        return scatter_mask(indices, np.ones(indices.shape, dtype=bool), num_classes)


def topk_target(log_probs: Any, num_classes: int, xp: Any) -> tuple[Any, Any]:
    """The teacher distribution decoded top-k rows stand for: the kept probabilities and each other class's share.

    The one definition used by the loss (torch tensors, ``xp=torch``) and by
    :meth:`TopKEncoding.reconstruct` (numpy arrays, ``xp=numpy``): kept probabilities
    ``exp(log_probs)``; the residual ``max(0, 1 - kept mass)`` spread evenly over the
    ``num_classes - K`` classes not kept. When every class is kept there is no residual: the
    kept probabilities are divided by their sum, which only rounding kept below 1.

    Args:
        log_probs: kept log-probabilities ``[n, K]`` (``decode``'s ``values``).
        num_classes: ``C``.
        xp: the array module of ``log_probs`` (``numpy`` or ``torch``).

    Returns:
        ``(kept [n, K], share [n, 1])``.
    """
    kept = xp.exp(log_probs)
    others = num_classes - log_probs.shape[1]
    if others == 0:  # every class is kept, so the true kept mass is 1: undo the rounding's shortfall
        return kept / kept.sum(axis=1, keepdims=True), kept[:, :1] * 0.0
    residual = (1.0 - kept.sum(axis=1, keepdims=True)).clip(min=0.0)
    return kept, residual / others


def top_classes(rows: np.ndarray, k: int) -> np.ndarray:
    """Classes of the ``k`` largest entries per row, by decreasing value then increasing class.

    Among classes tied at the k-th largest value the lowest are kept (``argpartition`` alone would
    keep any of them), so a selection on another device can match it exactly.
    """
    num_rows, num_classes = rows.shape
    if k < num_classes:
        threshold = -np.partition(-rows, k - 1, axis=1)[:, k - 1 : k]
        above = rows > threshold
        tied = rows == threshold
        room = k - above.sum(axis=1, keepdims=True)
        keep = above | (tied & (np.cumsum(tied, axis=1) <= room))
        candidates = np.nonzero(keep)[1].reshape(num_rows, k)  # increasing class within each row
    else:
        candidates = np.broadcast_to(np.arange(num_classes), rows.shape)
    order = np.argsort(-np.take_along_axis(rows, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1).astype(np.int64)
