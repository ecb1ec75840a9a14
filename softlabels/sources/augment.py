"""Replaying a stored view's augmentation on a sample's input tensor.

The parameters come from :meth:`softlabels.format.views.ViewRecipe.draw` (when generating) or
from a store's ``view_params`` array (when training), and the same function applies them in both
places, so the student's input is the teacher's input bit for bit on the same kind of device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torch.utils.data import Dataset

from softlabels.errors import DataError
from softlabels.format.views import ViewRecipe


def apply_view(image: torch.Tensor, params: np.ndarray) -> torch.Tensor:
    """``image`` ``[C, H, W]`` cropped to the box ``params[:4]``, resized back to ``H x W``, flipped if ``params[4]``.

    Raises:
        DataError: the input is not an image tensor ``[C, H, W]``.
    """
    if image.ndim != 3 or not image.is_floating_point():
        raise DataError(
            f"augmented views need float image inputs [C, H, W], got {image.dtype} {tuple(image.shape)}"
        )
    top, left, height, width, flip = (int(value) for value in params)
    size = [int(image.shape[-2]), int(image.shape[-1])]
    view: torch.Tensor = F.resized_crop(image, top, left, height, width, size=size, antialias=True)
    if flip:
        view = F.horizontal_flip(view)
    return view


class ViewsOf(Dataset[tuple[torch.Tensor, Any]]):
    """Each sample of ``dataset`` as ``views`` augmented copies ``[V, C, H, W]`` drawn by ``recipe`` under ``seed``.

    The parameters of view ``v`` of sample ``i`` depend only on ``(seed, i, v)``, so any worker
    draws the same copies; :meth:`params` gives them for a block of samples (what a store keeps).
    """

    def __init__(
        self, dataset: Dataset[Any], recipe: ViewRecipe, seed: int, views: int, image_size: tuple[int, int]
    ):
        self.dataset = dataset
        self.recipe = recipe
        self.seed = seed
        self.views = views
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def params(self, samples: np.ndarray) -> np.ndarray:
        """float32 ``[n, V, 5]`` view parameters of ``samples``."""
        return self.recipe.draw(self.seed, samples, self.views, *self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, target = self.dataset[index]
        params = self.params(np.array([index]))[0]
        return torch.stack([apply_view(image, row) for row in params]), target
