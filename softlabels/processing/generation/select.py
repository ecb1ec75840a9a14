"""What the teacher's logits become on the device, before anything is copied to the host.

A compact format stores a small part of each row, so the generator selects that part where the
logits are (the accelerator): the K largest scaled logits of a top-k row and the row's
log-sum-exp, or the S classes a sampled row draws. Only these ``[B, (L,) K]`` / ``[B, (L,) S]``
arrays travel to the host, never the ``[B, (L,) V]`` floats; :func:`encode_selected` then
finishes the encoding there exactly as the host encoding would have from the whole rows:

* top-k: the kept classes are the ``K`` largest, by decreasing value then increasing class
  (:func:`~softlabels.format.encodings.topk.top_classes`), and the log-probabilities are rounded
  by :func:`~softlabels.format.encodings.values.encode_log_probs` on the host;
* sampled: the draws use the counter-based SplitMix64 stream of
  :mod:`softlabels.format.encodings.sampled`, ported to int64 torch operations (logical shifts,
  wrapping products), keyed by ``(seed, flat cell index)``, and inverse-CDF sampling in float64,
  so they equal the host encoding's draws (up to the summation order of the float64 CDF, which can
  only matter for a uniform number within about 1e-16 of a class boundary).

Every other format (``full``, and any encoding without a device selection) hands over the scaled
logits themselves and is encoded on the host.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from softlabels.errors import InvalidArgumentError
from softlabels.format.counter import GOLDEN, MIX1, MIX2
from softlabels.format.encodings import Encoding, SampledEncoding, TopKEncoding
from softlabels.format.encodings.base import count_dtype, index_dtype
from softlabels.format.encodings.cells import CellEncoding, row_encoding
from softlabels.format.encodings.sampled import distinct_with_counts
from softlabels.format.encodings.values import encode_log_probs

SCALED = "scaled"
"""The selection of formats encoded on the host: the scaled logits ``[B, *label_axes, C]`` themselves."""

KEPT_LOGITS, KEPT_CLASSES, LOG_NORMALIZER = "kept_logits", "kept_classes", "log_normalizer"
DRAWS = "draws"

_UINT64 = 1 << 64
BLOCK_ELEMENTS = 1 << 25
"""Logits selected at once (a float64 copy of them takes 256 MiB of device memory)."""


def select_on_device(encoding: Encoding, scaled: torch.Tensor, first_row: int) -> dict[str, torch.Tensor]:
    """The part of a batch of scaled logits the encoding needs, computed where ``scaled`` is.

    Args:
        encoding: The store's encoding of whole samples (a row encoding, or its cell encoding).
        scaled: Float32 teacher logits divided by the temperature, ``[B, *label_axes, C]``.
        first_row: The store row of the batch's first sample.

    Returns:
        Named tensors on ``scaled``'s device, each ``[B, *label_axes, ...]``: for top-k
        :data:`KEPT_LOGITS` (float32 ``[..., K]``), :data:`KEPT_CLASSES` (int64 ``[..., K]``) and
        :data:`LOG_NORMALIZER` (float64 ``[...]``); for sampled :data:`DRAWS` (int64 ``[..., S]``);
        otherwise :data:`SCALED`.
    """
    rows = row_encoding(encoding)
    flat = scaled.reshape(-1, scaled.shape[-1])
    cell_shape = scaled.shape[:-1]
    if isinstance(rows, TopKEncoding) and rows.k <= flat.shape[1]:
        kept = [
            (*top_classes_on_device(block, rows.k), _logsumexp64(block)) for _, block in _row_blocks(flat)
        ]
        kept_logits, kept_classes, normalizer = (torch.cat(parts) for parts in zip(*kept, strict=True))
        return {
            KEPT_LOGITS: kept_logits.reshape(*cell_shape, rows.k),
            KEPT_CLASSES: kept_classes.reshape(*cell_shape, rows.k),
            LOG_NORMALIZER: normalizer.reshape(cell_shape),
        }
    if isinstance(rows, SampledEncoding):
        first_cell = first_row * _cells(encoding)
        draws = [
            inverse_cdf_draws_on_device(
                block,
                row_uniforms_on_device(rows.seed, first_cell + start, len(block), rows.samples, flat.device),
            )
            for start, block in _row_blocks(flat)
        ]
        return {DRAWS: torch.cat(draws).reshape(*cell_shape, rows.samples)}
    return {SCALED: scaled}


def _row_blocks(flat: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``flat``'s rows in blocks of at most :data:`BLOCK_ELEMENTS` entries (at least one row), with their first row.

    The selection makes float64 and int64 copies of what it works on; blocks bound them.
    """
    step = max(1, BLOCK_ELEMENTS // flat.shape[1])
    return [(start, flat[start : start + step]) for start in range(0, flat.shape[0], step)]


def encode_selected(
    encoding: Encoding, selected: Mapping[str, np.ndarray], first_row: int, num_classes: int
) -> dict[str, np.ndarray]:
    """Finish encoding rows whose selection :func:`select_on_device` made: the store's fields.

    Args:
        encoding: The same encoding as given to :func:`select_on_device`.
        selected: Its tensors as host arrays, for samples ``first_row ...``.
        first_row: The store row of the first sample.
        num_classes: The number of classes ``C`` of the rows.

    Returns:
        The fields ``encoding.encode`` returns for the whole rows, each ``[n, *label_axes, ...]``.

    Raises:
        InvalidArgumentError: ``selected`` is not a selection for ``encoding``.
    """
    if SCALED in selected:
        return encoding.encode(selected[SCALED], first_row)
    rows = row_encoding(encoding)
    if isinstance(rows, TopKEncoding) and KEPT_CLASSES in selected:
        return _encode_kept(rows, selected, first_row * _cells(encoding), num_classes)
    if isinstance(rows, SampledEncoding) and DRAWS in selected:
        draws = np.asarray(selected[DRAWS])
        indices, counts = distinct_with_counts(draws.reshape(-1, draws.shape[-1]))
        flat = {
            "indices": indices.astype(index_dtype(num_classes)),
            "counts": counts.astype(count_dtype(rows.samples)),
        }
        return _unflatten(flat, draws.shape[:-1])
    raise InvalidArgumentError(
        f"a selection of {', '.join(sorted(selected))} cannot be encoded in format {encoding.name}"
    )


def _encode_kept(
    encoding: TopKEncoding, selected: Mapping[str, np.ndarray], first_cell: int, num_classes: int
) -> dict[str, np.ndarray]:
    """Top-k fields from the kept logits, their classes and the rows' log-sum-exp (see ``TopKEncoding.encode``)."""
    kept = np.asarray(selected[KEPT_CLASSES])
    cell_shape = kept.shape[:-1]
    flat_kept = kept.reshape(-1, kept.shape[-1])
    normalizer = np.asarray(selected[LOG_NORMALIZER], dtype=np.float64).reshape(-1)
    kept_logits = np.asarray(selected[KEPT_LOGITS]).reshape(flat_kept.shape)
    log_probs = kept_logits.astype(np.float64) - normalizer[:, None]
    flat = {
        **encode_log_probs("values", log_probs, encoding.dtype, first_cell),
        "indices": flat_kept.astype(index_dtype(num_classes)),
        "log_normalizer": normalizer.astype(np.float32),
    }
    return _unflatten(flat, cell_shape)


def top_classes_on_device(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each ``[n, C]`` row and their classes, by decreasing value then increasing class.

    ``torch.topk`` leaves the order of ties open, so it only finds the k-th largest value; the
    entries above it and the lowest-class ones equal to it are then kept, as
    :func:`~softlabels.format.encodings.topk.top_classes` keeps them.
    """
    threshold = torch.topk(rows, k, dim=1).values[:, -1:]
    above = rows > threshold
    tied = rows == threshold
    room = k - above.sum(dim=1, keepdim=True)
    keep = above | (tied & (torch.cumsum(tied, dim=1) <= room))
    # The kept classes, lowest first: the k largest of a key that is higher the lower a kept class
    # is (and 0 elsewhere). Unlike nonzero() it needs no sync with the device, and a row with NaN
    # (which keeps fewer than k; refused afterwards) still gives k classes.
    descending = torch.arange(rows.shape[1], 0, -1, device=rows.device)
    classes = torch.topk(torch.where(keep, descending, 0), k, dim=1).indices
    values = rows.gather(1, classes)
    ordered, order = torch.sort(values, dim=1, descending=True, stable=True)
    return ordered, classes.gather(1, order)


def row_uniforms_on_device(
    seed: int, first_cell: int, num_cells: int, samples: int, device: torch.device
) -> torch.Tensor:
    """:func:`~softlabels.format.encodings.sampled.row_uniforms` in int64 torch operations: float64 ``[n, S]``."""
    golden = _signed(int(GOLDEN))
    seed_key = _mix64(torch.tensor([_signed(seed)], dtype=torch.int64, device=device) + golden)
    cells = torch.arange(first_cell, first_cell + num_cells, dtype=torch.int64, device=device)
    cell_keys = _mix64(cells ^ seed_key)[:, None]
    draws = torch.arange(1, samples + 1, dtype=torch.int64, device=device)[None, :]
    bits = _mix64(cell_keys + draws * golden)
    return _shift_right(bits, 11).to(torch.float64) * 2.0**-53


def inverse_cdf_draws_on_device(rows: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """:func:`~softlabels.format.encodings.sampled.inverse_cdf_draws` on ``rows``' device: int64 ``[n, S]``."""
    wide = rows.to(torch.float64)
    weights = torch.exp(wide - wide.max(dim=1, keepdim=True).values)
    cdf = torch.cumsum(weights, dim=1)
    targets = uniforms * cdf[:, -1:]
    draws = torch.searchsorted(cdf, targets, right=True)  # the smallest c with cdf[c] > target
    last_positive = rows.shape[1] - 1 - torch.argmax((weights.flip(1) > 0).to(torch.int8), dim=1)
    return torch.minimum(draws, last_positive[:, None])


def _mix64(state: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 output function on int64 bit patterns (products wrap as uint64 ones do)."""
    state = (state ^ _shift_right(state, 30)) * _signed(int(MIX1))
    state = (state ^ _shift_right(state, 27)) * _signed(int(MIX2))
    return state ^ _shift_right(state, 31)


def _shift_right(bits: torch.Tensor, shift: int) -> torch.Tensor:
    """A logical (unsigned) right shift of int64 bit patterns; torch's ``>>`` keeps the sign."""
    return (bits >> shift) & ((1 << (64 - shift)) - 1)


def _signed(value: int) -> int:
    """A uint64 bit pattern as the int64 with the same bits."""
    value %= _UINT64
    return value - _UINT64 if value >= 1 << 63 else value


def _logsumexp64(rows: torch.Tensor) -> torch.Tensor:
    """Row-wise log-sum-exp in float64, as :func:`~softlabels.format.encodings.base.logsumexp` computes it."""
    wide = rows.to(torch.float64)
    peak = wide.max(dim=1).values
    return peak + torch.log(torch.exp(wide - peak[:, None]).sum(dim=1))


def _cells(encoding: Encoding) -> int:
    return encoding.cells if isinstance(encoding, CellEncoding) else 1


def _unflatten(fields: Mapping[str, np.ndarray], cell_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {name: values.reshape(*cell_shape, *values.shape[1:]) for name, values in fields.items()}
