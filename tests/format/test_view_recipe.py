"""The view recipe: parsing, and view parameters drawn as a pure function of (seed, sample, view)."""

from __future__ import annotations

import numpy as np
import pytest

from softlabels.errors import InvalidSettingError
from softlabels.format.views import VIEW_PARAMS, ViewRecipe

DEFAULT = "crop=0.35:1,flip"


def test_text_form_round_trips() -> None:
    for text in (DEFAULT, "flip", "crop=0.08:1", "crop=0.5:0.9:0.5:2,flip"):
        assert ViewRecipe.parse(text).spec() == text
    assert ViewRecipe.parse(" flip , crop=0.35:1.0 ").spec() == DEFAULT


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is not one of"),
        ("rotate=10", "'rotate=10' is not one of"),
        ("flip,flip", "each at most once"),
        ("crop=0:1", "0 < LO <= HI <= 1"),
        ("crop=0.9:0.5", "0 < LO <= HI <= 1"),
        ("crop=0.5", "crop=LO:HI"),
        ("crop=a:1", "not a number"),
        ("crop=0.5:1:2:1", "ratio range"),
    ],
)
def test_bad_recipes_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSettingError, match=fragment) as caught:
        ViewRecipe.parse(text)
    assert caught.value.setting == "augment"


def test_a_view_draws_the_same_parameters_whatever_is_drawn_with_it() -> None:
    recipe = ViewRecipe.parse(DEFAULT)
    many = recipe.draw(5, np.arange(100), 8, 32, 32)
    assert many.shape == (100, 8, len(VIEW_PARAMS)) and many.dtype == np.float32
    np.testing.assert_array_equal(recipe.draw(5, np.arange(100), 3, 32, 32), many[:, :3])
    np.testing.assert_array_equal(recipe.draw(5, np.array([42, 7]), 8, 32, 32), many[[42, 7]])
    assert not np.array_equal(recipe.draw(6, np.arange(100), 8, 32, 32), many)


def test_boxes_lie_inside_the_image_with_the_recipes_area_and_ratio() -> None:
    height, width = 32, 48
    params = ViewRecipe.parse("crop=0.25:0.5,flip").draw(0, np.arange(2000), 4, height, width).reshape(-1, 5)
    top, left, box_height, box_width, flip = params.T
    assert (top >= 0).all() and (left >= 0).all() and (box_height >= 1).all() and (box_width >= 1).all()
    assert (top + box_height <= height).all() and (left + box_width <= width).all()
    area = box_height * box_width / (height * width)
    # Rounding the sides to whole pixels moves the area a little outside the drawn range.
    assert area.min() > 0.25 * 0.85 and area.max() < 0.5 * 1.15
    ratio = box_width / box_height
    assert ratio.min() > 0.75 * 0.9 and ratio.max() < 4 / 3 * 1.1
    assert set(np.unique(flip)) == {0.0, 1.0} and abs(flip.mean() - 0.5) < 0.03
    assert len(np.unique(params[:, :4], axis=0)) > 1000  # the boxes do vary


def test_flip_only_keeps_the_whole_image() -> None:
    params = ViewRecipe.parse("flip").draw(0, np.arange(10), 2, 8, 8)
    np.testing.assert_array_equal(params[..., :4], np.broadcast_to([0, 0, 8, 8], (10, 2, 4)))


def test_a_ratio_no_attempt_can_meet_falls_back_to_a_centre_crop() -> None:
    # A 100 x 4 strip cannot hold a crop of ratio 1..1 covering over half its area: every attempt fails.
    params = ViewRecipe.parse("crop=0.9:1:1:1").draw(0, np.arange(5), 2, 100, 4)
    np.testing.assert_array_equal(params[..., :4], np.broadcast_to([48, 0, 4, 4], (5, 2, 4)))


def test_view_counts_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidSettingError, match="views must be in"):
        ViewRecipe.parse(DEFAULT).draw(0, np.arange(2), 0, 8, 8)
