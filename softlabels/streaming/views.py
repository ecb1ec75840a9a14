"""Stored views replayed: which view a sample shows in an epoch, and the exact augmentation of that view.

A store made with ``generate --views V`` holds, per sample, V label rows computed on V augmented
copies and the parameters of each copy (crop box and flip). Each epoch the student shows every
sample as one of its views, chosen from ``(seed, epoch, sample)``; it replays that view's crop and
flip on the raw input with the function the teacher's copies were made with
(:func:`softlabels.sources.augment.apply_view`), so it sees the teacher's input bit for bit, and
pairs it with that view's label row.
"""

from __future__ import annotations

import numpy as np
import torch

from softlabels.errors import DataError, InvalidArgumentError
from softlabels.sources.augment import apply_view
from softlabels.store import LabelStore
from softlabels.streaming.plan import SeedStream, derive_seed

__all__ = ["ViewReplay"]


class ViewReplay:
    """The view parameters of every sample ``[N, V, 5]`` and the choice of one view per sample per epoch.

    Args:
        params: float32 ``[N, V, 5]``: top, left, height, width, flip of each view.
        seed: The run's seed; the view of ``row`` in ``epoch`` depends only on ``(seed, epoch, row)``.
    """

    def __init__(self, params: np.ndarray, seed: int) -> None:
        self.params = params
        self.seed = seed

    @property
    def views(self) -> int:
        return int(self.params.shape[1])

    @classmethod
    def from_store(cls, store: LabelStore, image_shape: tuple[int, ...], seed: int) -> ViewReplay:
        """The views of ``store``, checked to lie inside images of ``image_shape`` ``[C, H, W]``.

        Raises:
            DataError: the store has views but no parameters to replay them, the data are not
                images, or a stored crop box reaches outside the images.
        """
        layout = store.layout
        if layout.view_recipe is None:
            raise DataError(
                f"{store.location} holds {layout.views} views per sample but no view parameters "
                "to replay them (it records no view recipe)"
            )
        if len(image_shape) != 3:
            raise DataError(
                f"{store.location} holds augmented views of images, but the data's inputs have shape "
                f"{list(image_shape)}, not [C, H, W]"
            )
        params = store.read_view_params(0, store.num_rows)
        height, width = image_shape[-2:]
        reach = params[..., :2] + params[..., 2:4]
        outside = (reach[..., 0] > height) | (reach[..., 1] > width)
        if outside.any():
            row, view = (int(axis[0]) for axis in np.nonzero(outside))
            raise DataError(
                f"{store.location}: view {view} of sample {row} crops {params[row, view, :4].tolist()} "
                f"(top, left, height, width), outside the data's {height}x{width} images; the store was "
                "made from images of another size"
            )
        return cls(params, seed)

    def view_of(self, epoch: int, row: int) -> int:
        """The view sample ``row`` shows in ``epoch``."""
        return derive_seed(self.seed, epoch, SeedStream.VIEW, row) % self.views

    def views_of(self, epoch: int, rows: np.ndarray) -> np.ndarray:
        """:meth:`view_of` of each of ``rows`` (int64)."""
        return np.array([self.view_of(epoch, int(row)) for row in rows], dtype=np.int64)

    def apply(self, image: torch.Tensor, epoch: int, row: int) -> torch.Tensor:
        """``image`` (sample ``row``'s raw input) as the view it shows in ``epoch``."""
        if not 0 <= row < len(self.params):
            raise InvalidArgumentError(f"sample {row} is outside the store's {len(self.params)} samples")
        return apply_view(image, self.params[row, self.view_of(epoch, row)])
