"""Augmented views: the recipe, and each view's parameters as a pure function of (seed, sample, view).

A store with views keeps, for every sample, V label rows computed on V augmented copies of the
sample, and the parameters of each copy (:data:`VIEW_PARAMS`: crop box and flip). The parameters
are drawn from a counter-based stream keyed by ``(seed, sample, view)``, so any process can draw
the parameters of any view, in any order, without state; and a student that reads them back from
the store replays the exact augmentation the teacher saw (``softlabels.sources.augment``).

Torch-free: the random-resized-crop rule follows torchvision's ``RandomResizedCrop.get_params``
(ten attempts at an area fraction and a log-uniform aspect ratio, then a centre crop), drawn from
this module's stream instead of torch's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from softlabels.errors import InvalidSettingError
from softlabels.format.counter import counter_uniforms
from softlabels.format.encodings.base import FieldSpec

VIEW_PARAMS = ("top", "left", "height", "width", "flip")
"""The columns of a store's ``view_params`` array ``[N, V, 5]`` (float32; integers stored exactly)."""
CROP_ATTEMPTS = 10
_UNIFORMS_PER_VIEW = 4 * CROP_ATTEMPTS + 1  # per attempt: area, ratio, top, left; then the flip
MAX_VIEWS = 1 << 16
DEFAULT_CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ViewRecipe:
    """How each view is drawn: a random-resized crop (area fraction and aspect-ratio ranges) and a flip.

    The text form (:meth:`parse`, :meth:`spec`) is a comma-separated list of steps:

    - ``crop=LO:HI`` — random-resized crop of an area fraction in ``[LO, HI]`` (``0 < LO <= HI <= 1``),
      aspect ratio log-uniform in ``[3/4, 4/3]`` (``crop=LO:HI:RLO:RHI`` sets the ratio range), resized
      back to the input's size;
    - ``flip`` — horizontal flip with probability 1/2.

    ``crop=0.35:1,flip`` is the default recipe.
    """

    crop_scale: tuple[float, float] | None
    crop_ratio: tuple[float, float]
    flip: bool

    def __post_init__(self) -> None:
        if self.crop_scale is not None:
            low, high = self.crop_scale
            if not 0 < low <= high <= 1:
                raise InvalidSettingError(
                    "augment", f"crop area range must satisfy 0 < LO <= HI <= 1, got {low}:{high}"
                )
            ratio_low, ratio_high = self.crop_ratio
            if not 0 < ratio_low <= ratio_high:
                raise InvalidSettingError(
                    "augment", f"crop ratio range must satisfy 0 < LO <= HI, got {ratio_low}:{ratio_high}"
                )
        if self.crop_scale is None and not self.flip:
            raise InvalidSettingError(
                "augment", "an augmentation recipe needs at least one step (crop=LO:HI, flip)"
            )

    @classmethod
    def parse(cls, text: str) -> ViewRecipe:
        """The recipe a text form names.

        Raises:
            InvalidSettingError: an unknown step or a malformed range (setting ``augment``).
        """
        crop_scale: tuple[float, float] | None = None
        crop_ratio = DEFAULT_CROP_RATIO
        flip = False
        for step in (part.strip() for part in text.split(",")):
            name, _, argument = step.partition("=")
            if name == "flip" and not argument and not flip:
                flip = True
            elif name == "crop" and argument and crop_scale is None:
                numbers = _numbers(argument, step)
                if len(numbers) not in (2, 4):
                    raise InvalidSettingError(
                        "augment", f"'{step}' must be crop=LO:HI or crop=LO:HI:RATIO_LO:RATIO_HI"
                    )
                crop_scale = (numbers[0], numbers[1])
                if len(numbers) == 4:
                    crop_ratio = (numbers[2], numbers[3])
            else:
                raise InvalidSettingError(
                    "augment",
                    f"augmentation step '{step}' is not one of crop=LO:HI, flip (each at most once), in '{text}'",
                )
        return cls(crop_scale, crop_ratio, flip)

    def spec(self) -> str:
        """The canonical text form (what a store records)."""
        steps = []
        if self.crop_scale is not None:
            numbers = [*self.crop_scale]
            if self.crop_ratio != DEFAULT_CROP_RATIO:
                numbers += [*self.crop_ratio]
            steps.append("crop=" + ":".join(f"{value:g}" for value in numbers))
        if self.flip:
            steps.append("flip")
        return ",".join(steps)

    def draw(self, seed: int, samples: np.ndarray, views: int, height: int, width: int) -> np.ndarray:
        """The parameters of views ``0..views-1`` of each sample: float32 ``[n, views, 5]`` (:data:`VIEW_PARAMS`).

        A pure function of ``(seed, sample, view)`` and the image size: the same view draws the same
        parameters whatever else is drawn with it.
        """
        if not 1 <= views <= MAX_VIEWS:
            raise InvalidSettingError("views", f"views must be in [1, {MAX_VIEWS}], got {views}")
        keys = (np.asarray(samples, dtype=np.uint64)[:, None] << np.uint64(16)) | np.arange(
            views, dtype=np.uint64
        )
        uniforms = counter_uniforms(seed, keys.ravel(), _UNIFORMS_PER_VIEW).reshape(*keys.shape, -1)
        if self.crop_scale is None:
            boxes = np.broadcast_to(np.array([0, 0, height, width], dtype=np.float64), (*keys.shape, 4))
        else:
            boxes = self._crop_boxes(self.crop_scale, uniforms, height, width)
        flips = (uniforms[..., -1] < 0.5) if self.flip else np.zeros(keys.shape, dtype=bool)
        return np.concatenate([boxes, flips[..., None]], axis=-1).astype(np.float32)

    def _crop_boxes(
        self, scale: tuple[float, float], uniforms: np.ndarray, height: int, width: int
    ) -> np.ndarray:
        """``[..., 4]`` boxes (top, left, height, width) by torchvision's random-resized-crop rule."""
        area = float(height * width)
        log_low, log_high = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        boxes = _centre_crop(height, width, self.crop_ratio, uniforms.shape[:-1])
        found = np.zeros(uniforms.shape[:-1], dtype=bool)
        for attempt in range(CROP_ATTEMPTS):
            u_area, u_ratio, u_top, u_left = (uniforms[..., 4 * attempt + i] for i in range(4))
            target = area * (scale[0] + u_area * (scale[1] - scale[0]))
            ratio = np.exp(log_low + u_ratio * (log_high - log_low))
            crop_width = np.round(np.sqrt(target * ratio))
            crop_height = np.round(np.sqrt(target / ratio))
            fits = (
                ~found
                & (crop_width > 0)
                & (crop_width <= width)
                & (crop_height > 0)
                & (crop_height <= height)
            )
            top = np.floor(u_top * (height - crop_height + 1))
            left = np.floor(u_left * (width - crop_width + 1))
            boxes[fits] = np.stack([top, left, crop_height, crop_width], axis=-1)[fits]
            found |= fits
        return boxes

    def to_json(self) -> dict[str, Any]:
        """What a store records: the canonical text form."""
        return {"recipe": self.spec()}


def view_params_spec(views: int) -> FieldSpec:
    """A store's ``view_params`` array: ``[N, V, 5]`` float32, one crop box and flip per view."""
    return FieldSpec("view_params", (views, len(VIEW_PARAMS)), "float32", ("view", "view_param"))


def _centre_crop(height: int, width: int, ratio: tuple[float, float], shape: tuple[int, ...]) -> np.ndarray:
    """torchvision's fallback: the whole image, cut to the ratio range, centred."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_width, crop_height = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_height, crop_width = height, int(round(height * ratio[1]))
    else:
        crop_width, crop_height = width, height
    box = np.array(
        [(height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width], dtype=np.float64
    )
    return np.broadcast_to(box, (*shape, 4)).copy()


def _numbers(argument: str, step: str) -> list[float]:
    try:
        return [float(part) for part in argument.split(":")]
    except ValueError:
        raise InvalidSettingError("augment", f"'{step}' holds a value that is not a number") from None
