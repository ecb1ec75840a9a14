"""Replaying views: the student's input equals the teacher's, bit for bit, in any process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from softlabels.errors import DataError
from softlabels.format.views import ViewRecipe
from softlabels.sources.augment import ViewsOf, apply_view


def _images() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(12, 3, 16, 20, generator=generator), torch.arange(12))


def test_a_replayed_view_equals_the_teachers_input_bit_for_bit_across_worker_processes() -> None:
    images = _images()
    views = ViewsOf(images, ViewRecipe.parse("crop=0.35:1,flip"), seed=3, views=4, image_size=(16, 20))
    # The teacher's inputs, made in two DataLoader worker processes.
    teacher_inputs = torch.cat([batch for batch, _ in DataLoader(views, batch_size=5, num_workers=2)])
    stored = views.params(np.arange(12))  # what the store keeps
    for sample in range(12):
        for view in range(4):
            replayed = apply_view(images[sample][0], stored[sample, view])
            assert torch.equal(replayed, teacher_inputs[sample, view])


def test_views_differ_and_the_flip_is_applied() -> None:
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    flipped = apply_view(image, np.array([0, 0, 4, 6, 1], dtype=np.float32))
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(apply_view(image, np.array([0, 0, 4, 6, 0], dtype=np.float32)), image)
    crop = apply_view(image, np.array([1, 2, 2, 3, 0], dtype=np.float32))
    assert crop.shape == image.shape and not torch.equal(crop, image)


@pytest.mark.parametrize("bad", [torch.zeros(4, 4), torch.zeros(3, 4, 4, dtype=torch.int64)])
def test_non_image_inputs_are_refused(bad: torch.Tensor) -> None:
    with pytest.raises(DataError, match=r"float image inputs \[C, H, W\]"):
        apply_view(bad, np.array([0, 0, 1, 1, 0], dtype=np.float32))
