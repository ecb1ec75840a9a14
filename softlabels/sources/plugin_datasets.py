"""Datasets supplied by ``module:callable`` / ``file.py:callable`` plug-ins."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, IterableDataset

from softlabels.errors import PluginError, SoftLabelsError
from softlabels.sources.fingerprints import FingerprintBuilder
from softlabels.sources.plugins import first_line, load_callable

__all__ = ["PluginDataset", "PluginDatasetInfo", "open_plugin_dataset"]


class PluginDataset(Dataset[tuple[torch.Tensor, int]]):
    """Wraps a plug-in's map-style dataset and checks every sample it yields.

    Samples must be ``(floating tensor [C, H, W], integer label)``; tensors come back as float32
    and labels as ``int``. Anything else raises :class:`PluginError` naming the sample.

    Args:
        inner: The plug-in's dataset.
        ref: The plug-in reference, for error messages.
        num_classes: Labels must lie in ``[0, num_classes)``; None while still unknown.
    """

    def __init__(self, inner: Any, ref: str, num_classes: int | None = None) -> None:
        self.inner = inner
        self.ref = ref
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            sample = self.inner[index]
        except (IndexError, SoftLabelsError):
            raise  # IndexError ends plain iteration; our own errors already read well
        except Exception as exc:
            raise PluginError(
                f"dataset plug-in '{self.ref}' failed on sample {index}: {first_line(exc)}"
            ) from exc
        return self._checked(sample, index)

    def _checked(self, sample: Any, index: int) -> tuple[torch.Tensor, int]:
        if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
            raise self._bad_sample(index, f"a {type(sample).__name__}, not a (tensor, label) pair")
        tensor, label = sample
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.ndim != 3:
            raise self._bad_sample(index, f"{_describe(tensor)} where a floating tensor [C, H, W] belongs")
        return tensor.to(torch.float32), self._checked_label(label, index)

    def _checked_label(self, label: Any, index: int) -> int:
        if isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point():
            label = label.item()
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise self._bad_sample(index, f"label {_describe(label)} where an integer belongs")
        if label < 0 or (self.num_classes is not None and label >= self.num_classes):
            raise self._bad_sample(index, f"label {int(label)} outside [0, {self.num_classes})")
        return int(label)

    def _bad_sample(self, index: int, problem: str) -> PluginError:
        return PluginError(f"dataset plug-in '{self.ref}' sample {index} is {problem}")


@dataclass(frozen=True)
class PluginDatasetInfo:
    """What :func:`open_plugin_dataset` learns about a plug-in dataset."""

    dataset: PluginDataset
    class_names: tuple[str, ...]
    fingerprint: str
    preprocessing: str | None


def open_plugin_dataset(ref: str, split: str) -> PluginDatasetInfo:
    """Call the plug-in as ``callable(split=split)`` and describe the dataset it returns.

    Classes come from the dataset's ``classes`` (names) or ``num_classes``, else from the largest
    label. The fingerprint always covers split, size, class names and every label; on top of
    those it takes the dataset's own ``fingerprint`` (attribute or method) when it declares one,
    else a digest of every sample's tensor. A dataset declaring its fingerprint is not read
    sample by sample when it also has ``targets`` (one integer label per sample, as torchvision's
    datasets do). ``preprocessing`` (attribute or method, optional) names and versions its
    transform, so that stores of labels for other tensors are refused.

    Raises:
        PluginError: The callable fails or returns something other than a map-style dataset of
            ``(tensor, int)``, or declares a malformed ``classes``, ``fingerprint``,
            ``preprocessing`` or ``targets``.
    """
    factory = load_callable(ref, what="dataset")
    try:
        inner = factory(split=split)
    except SoftLabelsError:
        raise
    except Exception as exc:
        raise PluginError(f"dataset plug-in '{ref}' failed for split '{split}': {first_line(exc)}") from exc
    num_samples = _checked_length(inner, ref)
    declared_names = _declared_class_names(inner, ref)
    own_fingerprint = _declared_text(inner, ref, "fingerprint")
    preprocessing = _declared_text(inner, ref, "preprocessing")
    dataset = PluginDataset(inner, ref, None if declared_names is None else len(declared_names))
    if own_fingerprint is None:
        labels, content = _scan(dataset)
    else:
        labels, content = _labels(inner, dataset), own_fingerprint
    class_names = declared_names or tuple(str(label) for label in range(int(labels.max()) + 1))
    dataset.num_classes = len(class_names)
    builder = FingerprintBuilder("plugin", split, num_samples, class_names)
    builder.add_labels(labels)
    builder.add_text(content)
    return PluginDatasetInfo(dataset, class_names, builder.hexdigest(), preprocessing)


def _checked_length(inner: Any, ref: str) -> int:
    if isinstance(inner, IterableDataset) or not (
        hasattr(inner, "__getitem__") and hasattr(inner, "__len__")
    ):
        raise PluginError(
            f"dataset plug-in '{ref}' returned a {type(inner).__name__}, not a map-style Dataset"
        )
    try:
        num_samples = len(inner)
    except Exception as exc:
        raise PluginError(f"dataset plug-in '{ref}': len() of its dataset failed: {first_line(exc)}") from exc
    if num_samples == 0:
        raise PluginError(f"dataset plug-in '{ref}' returned an empty dataset")
    return num_samples


def _declared_class_names(inner: Any, ref: str) -> tuple[str, ...] | None:
    classes = getattr(inner, "classes", None)
    if isinstance(classes, Sequence) and not isinstance(classes, str) and classes:
        return tuple(str(name) for name in classes)
    num_classes = getattr(inner, "num_classes", None)
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise PluginError(f"dataset plug-in '{ref}': num_classes must be a positive int, got {num_classes!r}")
    return tuple(str(label) for label in range(num_classes))


def _declared_text(inner: Any, ref: str, name: str) -> str | None:
    """The dataset's ``name`` attribute (or the result of calling it), or None when it has none."""
    value = getattr(inner, name, None)
    if callable(value):
        try:
            value = value()
        except Exception as exc:
            raise PluginError(f"dataset plug-in '{ref}': {name}() failed: {first_line(exc)}") from exc
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PluginError(f"dataset plug-in '{ref}': {name} must be a non-empty str, got {_describe(value)}")
    return value


def _labels(inner: Any, dataset: PluginDataset) -> npt.NDArray[np.int64]:
    """Every label in sample order: the dataset's ``targets`` when it has them (checked), else read from the samples."""
    targets = getattr(inner, "targets", None)
    if targets is None:
        return np.fromiter((dataset[index][1] for index in range(len(dataset))), dtype=np.int64)
    labels = np.asarray(targets)
    if labels.shape != (len(dataset),) or labels.dtype.kind not in "iu":
        raise PluginError(
            f"dataset plug-in '{dataset.ref}': targets must hold one integer label per sample "
            f"({len(dataset)}), got {labels.dtype} of shape {list(labels.shape)}"
        )
    out_of_range = (
        labels < 0 if dataset.num_classes is None else (labels < 0) | (labels >= dataset.num_classes)
    )
    first_bad = np.flatnonzero(out_of_range)[:1]
    for index in first_bad.tolist():
        dataset._checked_label(int(labels[index]), index)  # raises, naming the sample and its label
    return labels.astype(np.int64)


def _scan(dataset: PluginDataset) -> tuple[npt.NDArray[np.int64], str]:
    """Read every sample once: return the labels and a digest of all tensors' dtype, shape and bytes."""
    content = hashlib.sha256()
    labels: list[int] = []
    for index in range(len(dataset)):
        tensor, label = dataset[index]
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        content.update(f"{array.shape}".encode())
        content.update(array.data)
        labels.append(label)
    return np.array(labels, dtype=np.int64), content.hexdigest()


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"
