"""Padding for inputs of varying length: token ids ``[L]``, signals ``[T]``, frames ``[T, F]``.

Sequences are padded at the end, along their first axis: integer inputs (token ids) with a pad
id, floating inputs with 0, and labels per position with :data:`IGNORE_INDEX`, which every loss
and statistic skips. Because padding comes last, a causal model's outputs at the real positions
are the same as without padding.

Use :class:`PadCollate` (picklable, for DataLoader workers) or :func:`pad_collate` as a
DataLoader's ``collate_fn``::

    DataLoader(dataset, batch_size=32, collate_fn=PadCollate(pad_id=0))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from softlabels.errors import InvalidArgumentError

__all__ = ["DEFAULT_PAD_ID", "IGNORE_INDEX", "PadCollate", "pad_collate", "pad_sample", "pad_to_length"]

IGNORE_INDEX = -100
"""The label of an ignored position (padding, or no next token), as in ``torch.nn.CrossEntropyLoss``."""
DEFAULT_PAD_ID = 0


def pad_to_length(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """``tensor`` with its first axis extended to ``length`` by ``value`` (itself when already that long).

    Raises:
        InvalidArgumentError: ``tensor`` is longer than ``length``.
    """
    missing = length - tensor.shape[0]
    if missing < 0:
        raise InvalidArgumentError(
            f"a sequence of length {tensor.shape[0]} does not fit a padded length of {length}"
        )
    if missing == 0:
        return tensor
    filler = torch.full((missing, *tensor.shape[1:]), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, filler])


def pad_sample(
    tensor: torch.Tensor, target: Any, length: int, *, pad_id: int = DEFAULT_PAD_ID
) -> tuple[torch.Tensor, Any]:
    """One ``(input, target)`` sample padded to ``length``: see the module's rules.

    An integer target (one label per sample) is returned unchanged.
    """
    padded = pad_to_length(tensor, length, pad_id if not tensor.is_floating_point() else 0.0)
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        return padded, pad_to_length(target, length, IGNORE_INDEX)
    return padded, target


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, Any]], *, pad_id: int = DEFAULT_PAD_ID, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(input, target)`` samples of varying length into one batch.

    Args:
        batch: Samples whose inputs share dtype and all axes but the first.
        pad_id: Pads integer inputs (token ids); floating inputs are padded with 0.
        length: Length to pad to; None pads to the longest sample of the batch.

    Returns:
        ``inputs [B, length, ...]`` and targets: int64 ``[B]`` for integer labels, int64
        ``[B, length]`` padded with :data:`IGNORE_INDEX` for labels per position.

    Raises:
        InvalidArgumentError: The batch is empty, or a sample is longer than ``length``.
    """
    if not batch:
        raise InvalidArgumentError("cannot collate an empty batch")
    target_length = max(int(tensor.shape[0]) for tensor, _ in batch) if length is None else length
    padded = [pad_sample(tensor, target, target_length, pad_id=pad_id) for tensor, target in batch]
    inputs = torch.stack([tensor for tensor, _ in padded])
    targets = [target for _, target in padded]
    if isinstance(targets[0], torch.Tensor):
        return inputs, torch.stack(targets).to(torch.int64)
    return inputs, torch.tensor(targets, dtype=torch.int64)


@dataclass(frozen=True)
class PadCollate:
    """:func:`pad_collate` with fixed settings, as a picklable ``collate_fn``.

    Attributes:
        pad_id: Pads integer inputs.
        length: Length to pad to; None pads each batch to its longest sample.
    """

    pad_id: int = DEFAULT_PAD_ID
    length: int | None = None

    def __call__(self, batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_collate(batch, pad_id=self.pad_id, length=self.length)
