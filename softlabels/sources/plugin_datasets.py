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
from softlabels.sources.collate import DEFAULT_PAD_ID, IGNORE_INDEX, pad_sample
from softlabels.sources.fingerprints import FingerprintBuilder
from softlabels.sources.plugins import first_line, load_callable

__all__ = ["InputKind", "PluginDataset", "PluginDatasetInfo", "describe_input", "open_plugin_dataset"]


@dataclass(frozen=True)
class InputKind:
    """What every input of a plug-in dataset must be like: the first sample's dtype and shape.

    ``[L]`` and ``[T, F]`` inputs (sequences) may differ in length (their first axis); any other
    input must have exactly the first sample's shape.
    """

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def is_sequence(self) -> bool:
        """Whether the first axis is a length that may vary from sample to sample."""
        return len(self.shape) in (1, 2)

    def admits(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` (already cast to float32/int64) is an input of this kind."""
        shape = tuple(tensor.shape)
        if tensor.dtype != self.dtype or len(shape) != len(self.shape):
            return False
        return shape[1:] == self.shape[1:] if self.is_sequence else shape == self.shape


class PluginDataset(Dataset[tuple[torch.Tensor, Any]]):
    """Wraps a plug-in's map-style dataset and checks every sample it yields.

    Samples must be ``(input, target)``. The input is a tensor: floating ones come back as
    float32, integer ones (token ids) as int64, and all must be of the first sample's kind (see
    :class:`InputKind`). The target is an integer label (returned as ``int``) or, for sequence
    inputs, an integer tensor ``[L]`` of the input's length (one label per position, ``-100``
    for ignored positions; returned as int64). Anything else raises :class:`PluginError`
    naming the sample. Once ``pad_length`` is set, shorter sequences are padded at the end to
    that length (see :func:`~softlabels.sources.collate.pad_sample`).

    Args:
        inner: The plug-in's dataset.
        ref: The plug-in reference, for error messages.
        num_classes: Labels must lie in ``[0, num_classes)``; None while still unknown.
    """

    def __init__(self, inner: Any, ref: str, num_classes: int | None = None) -> None:
        self.inner = inner
        self.ref = ref
        self.num_classes = num_classes
        self.kind: InputKind | None = None
        self.per_position: bool | None = None
        self.pad_length: int | None = None
        self.pad_id = DEFAULT_PAD_ID

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        tensor, target = self.unpadded(index)
        if self.pad_length is None:
            return tensor, target
        return pad_sample(tensor, target, self.pad_length, pad_id=self.pad_id)

    def unpadded(self, index: int) -> tuple[torch.Tensor, Any]:
        """Sample ``index``, checked but not padded."""
        try:
            sample = self.inner[index]
        except (IndexError, SoftLabelsError):
            raise  # IndexError ends plain iteration; our own errors already read well
        except Exception as exc:
            raise PluginError(
                f"dataset plug-in '{self.ref}' failed on sample {index}: {first_line(exc)}"
            ) from exc
        return self._checked(sample, index)

    @property
    def fetches_batches(self) -> bool:
        """Whether whole batches come from one call of the plug-in's ``get_batch(indices)``.

        Only once the first sample fixed the input kind, and only for inputs that need no padding.
        """
        return (
            callable(getattr(self.inner, "get_batch", None))
            and self.kind is not None
            and self.pad_length is None
        )

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``indices`` stacked, from one call of the plug-in's ``get_batch(indices)``.

        The plug-in returns ``(inputs, targets)``: inputs ``[B, *input shape]`` and integer targets
        ``[B]`` (``[B, L]`` for labels per position), what stacking its samples would give. They
        are checked as a whole, as :meth:`__getitem__` checks one sample, and come back as
        float32/int64 inputs and int64 targets.

        Raises:
            PluginError: The call fails, or returns anything else; the message names the batch.
        """
        rows = list(indices)
        try:
            batch = self.inner.get_batch(rows)
        except SoftLabelsError:
            raise
        except Exception as exc:
            raise PluginError(
                f"dataset plug-in '{self.ref}' get_batch failed on samples {_shown_rows(rows)}: {first_line(exc)}"
            ) from exc
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise self._bad_batch(rows, f"a {type(batch).__name__}, not an (inputs, targets) pair")
        return self._checked_inputs(batch[0], rows), self._checked_targets(batch[1], rows)

    def _checked_inputs(self, value: Any, rows: list[int]) -> torch.Tensor:
        kind = self._fixed_kind()
        shape = (len(rows), *kind.shape)
        if (
            not isinstance(value, torch.Tensor)
            or value.dtype == torch.bool
            or value.is_complex()
            or value.is_floating_point() != kind.dtype.is_floating_point
            or tuple(value.shape) != shape
        ):
            raise self._bad_batch(
                rows, f"inputs {describe_value(value)} where {describe_input(kind.dtype, shape)} belong"
            )
        return value.to(kind.dtype)

    def _checked_targets(self, value: Any, rows: list[int]) -> torch.Tensor:
        shape = (len(rows), self._fixed_kind().shape[0]) if self.per_position else (len(rows),)
        labels = torch.as_tensor(value) if isinstance(value, (torch.Tensor, np.ndarray)) else None
        if (
            labels is None
            or labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
            or tuple(labels.shape) != shape
        ):
            raise self._bad_batch(
                rows, f"targets {describe_value(value)} where integer labels {list(shape)} belong"
            )
        labels = labels.to(torch.int64)
        kept = labels[labels != IGNORE_INDEX] if self.per_position else labels
        upper = self.num_classes
        bad = kept[(kept < 0) | (kept >= upper)] if upper is not None else kept[kept < 0]
        if bad.numel():
            raise self._bad_batch(rows, f"label {int(bad[0])} outside [0, {upper})")
        return labels

    def _fixed_kind(self) -> InputKind:
        if self.kind is None:  # fetches_batches requires it: the first sample fixes it
            raise PluginError(f"dataset plug-in '{self.ref}': no sample was read before a batch")
        return self.kind

    def _bad_batch(self, rows: list[int], problem: str) -> PluginError:
        return PluginError(
            f"dataset plug-in '{self.ref}' get_batch of samples {_shown_rows(rows)} returned {problem}"
        )

    def _checked(self, sample: Any, index: int) -> tuple[torch.Tensor, Any]:
        if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
            raise self._bad_sample(index, f"a {type(sample).__name__}, not an (input, target) pair")
        tensor = self._checked_input(sample[0], index)
        target = sample[1]
        per_position = isinstance(target, torch.Tensor) and target.ndim > 0
        if self.per_position is None:
            self.per_position = per_position
        elif per_position != self.per_position:
            found, before = (
                ("labels per position", "one label") if per_position else ("one label", "labels per position")
            )
            raise self._bad_sample(index, f"{found} where the samples before have {before}")
        if per_position:
            return tensor, self._checked_positions(target, tensor, index)
        return tensor, self._checked_label(target, index)

    def _checked_input(self, value: Any, index: int) -> torch.Tensor:
        if (
            not isinstance(value, torch.Tensor)
            or value.ndim == 0
            or value.dtype == torch.bool
            or value.is_complex()
        ):
            raise self._bad_sample(
                index, f"{describe_value(value)} where a float or integer input tensor belongs"
            )
        tensor: torch.Tensor = value.to(torch.float32 if value.is_floating_point() else torch.int64)
        if self.kind is None:
            self.kind = InputKind(tensor.dtype, tuple(tensor.shape))
        elif not self.kind.admits(tensor):
            raise self._bad_sample(
                index,
                f"{describe_value(tensor)} where samples are {describe_input(self.kind.dtype, self.kind.shape)}"
                + (" (only the length may vary)" if self.kind.is_sequence else ""),
            )
        return tensor

    def _checked_positions(self, target: torch.Tensor, tensor: torch.Tensor, index: int) -> torch.Tensor:
        if (
            target.is_floating_point()
            or target.is_complex()
            or target.dtype == torch.bool
            or target.ndim != 1
        ):
            raise self._bad_sample(index, f"target {describe_value(target)} where int64 labels [L] belong")
        if target.shape[0] != tensor.shape[0] or tensor.ndim > 2:
            raise self._bad_sample(
                index,
                f"target of shape {list(target.shape)} for an input of shape {list(tensor.shape)}: "
                "labels per position need a sequence input [L] of the same length",
            )
        labels = target.to(torch.int64)
        kept = labels[labels != IGNORE_INDEX]
        upper = self.num_classes
        bad = kept[(kept < 0) | (kept >= upper)] if upper is not None else kept[kept < 0]
        if bad.numel():
            allowed = f"[0, {upper})" if upper is not None else "[0, number of classes)"
            raise self._bad_sample(
                index, f"label {int(bad[0])} outside {allowed} and not {IGNORE_INDEX} (ignored)"
            )
        return labels

    def _checked_label(self, label: Any, index: int) -> int:
        if isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point():
            label = label.item()
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise self._bad_sample(index, f"label {describe_value(label)} where an integer belongs")
        if label < 0 or (self.num_classes is not None and label >= self.num_classes):
            raise self._bad_sample(index, f"label {int(label)} outside [0, {self.num_classes})")
        return int(label)

    def _bad_sample(self, index: int, problem: str) -> PluginError:
        return PluginError(f"dataset plug-in '{self.ref}' sample {index} is {problem}")


@dataclass(frozen=True)
class PluginDatasetInfo:
    """What :func:`open_plugin_dataset` learns about a plug-in dataset.

    Attributes:
        dataset: The checked (and, for sequences of varying length, padded) dataset.
        class_names: One name per class.
        fingerprint: sha256 hex of the split's contents.
        preprocessing: The plug-in's declared preprocessing, or None.
        input_shape: Shape of every input the dataset yields (sequences padded to the longest).
        input_dtype: ``torch.float32`` or ``torch.int64``.
        positions: Labelled positions per sample (the padded length) when targets are per
            position, else None.
    """

    dataset: PluginDataset
    class_names: tuple[str, ...]
    fingerprint: str
    preprocessing: str | None
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    positions: int | None


def open_plugin_dataset(ref: str, split: str) -> PluginDatasetInfo:
    """Call the plug-in as ``callable(split=split)`` and describe the dataset it returns.

    Classes come from the dataset's ``classes`` (names) or ``num_classes``, else from the largest
    label. The fingerprint always covers split, size, class names and every label; on top of
    those it takes the dataset's own ``fingerprint`` (attribute or method) when it declares one,
    else a digest of every sample's input (dtype, shape and values; token ids exactly). A dataset
    declaring its fingerprint is not read sample by sample when its inputs are not sequences and
    it also has ``targets`` (one integer label per sample, as torchvision's datasets do).
    ``preprocessing`` (attribute or method, optional) names and versions its transform, so that
    stores of labels for other tensors are refused. ``pad_id`` (int, default 0) is the token id
    that pads integer sequences of varying length.

    Raises:
        PluginError: The callable fails or returns something other than a map-style dataset of
            ``(tensor, target)``, or declares a malformed ``classes``, ``fingerprint``,
            ``preprocessing``, ``pad_id`` or ``targets``.
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
    dataset.pad_id = _declared_pad_id(inner, ref)
    dataset.unpadded(0)  # fixes the input kind and whether targets are per position
    kind = dataset.kind
    if kind is None:  # unpadded() always sets it; this narrows the type
        raise PluginError(f"dataset plug-in '{ref}' yielded no input")
    declared_targets = getattr(inner, "targets", None)
    if own_fingerprint is not None and declared_targets is not None and not kind.is_sequence:
        labels, content, longest = _declared_labels(declared_targets, dataset), own_fingerprint, kind.shape[0]
    else:
        labels, digest, longest = _scan(dataset, hash_inputs=own_fingerprint is None)
        content = own_fingerprint or digest
    kept = labels[labels != IGNORE_INDEX]
    if declared_names is None and kept.size == 0:
        raise PluginError(
            f"dataset plug-in '{ref}': every position is ignored ({IGNORE_INDEX}); no labels to count"
        )
    class_names = declared_names or tuple(str(label) for label in range(int(kept.max()) + 1))
    dataset.num_classes = len(class_names)
    builder = FingerprintBuilder("plugin", split, num_samples, class_names)
    builder.add_labels(labels)
    builder.add_text(content)
    input_shape = (longest, *kind.shape[1:])
    if kind.is_sequence and input_shape != kind.shape:
        dataset.pad_length = longest
    return PluginDatasetInfo(
        dataset,
        class_names,
        builder.hexdigest(),
        preprocessing,
        input_shape,
        kind.dtype,
        longest if dataset.per_position else None,
    )


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
        raise PluginError(
            f"dataset plug-in '{ref}': {name} must be a non-empty str, got {describe_value(value)}"
        )
    return value


def _declared_pad_id(inner: Any, ref: str) -> int:
    pad_id = getattr(inner, "pad_id", None)
    if pad_id is None:
        return DEFAULT_PAD_ID
    if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
        raise PluginError(f"dataset plug-in '{ref}': pad_id must be an int, got {describe_value(pad_id)}")
    return int(pad_id)


def _declared_labels(targets: Any, dataset: PluginDataset) -> npt.NDArray[np.int64]:
    """The dataset's ``targets``, checked: one integer label per sample."""
    labels = np.asarray(targets)
    if dataset.per_position or labels.shape != (len(dataset),) or labels.dtype.kind not in "iu":
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


def _scan(dataset: PluginDataset, *, hash_inputs: bool) -> tuple[npt.NDArray[np.int64], str, int]:
    """Read every sample once.

    Returns:
        The labels (``[N]``, or ``[N, longest]`` padded with -100 for labels per position), a
        digest of every input's dtype, shape and bytes (empty unless ``hash_inputs``), and the
        longest input's length (its first axis).
    """
    content = hashlib.sha256()
    targets: list[Any] = []
    longest = 0
    for index in range(len(dataset)):
        tensor, target = dataset.unpadded(index)
        longest = max(longest, int(tensor.shape[0]))
        targets.append(target)
        if hash_inputs:
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            # float32 inputs hash as they always have (shape and bytes), so older fingerprints of
            # float plug-ins still match; other dtypes add their name (a shape text starts with "(").
            prefix = "" if array.dtype == np.float32 else array.dtype.str
            content.update(f"{prefix}{array.shape}".encode())
            content.update(array.data)
    digest = content.hexdigest() if hash_inputs else ""
    if not dataset.per_position:
        return np.array(targets, dtype=np.int64), digest, longest
    labels = np.full((len(targets), longest), IGNORE_INDEX, dtype=np.int64)
    for row, target in enumerate(targets):
        labels[row, : len(target)] = target.numpy()
    return labels, digest, longest


def _shown_rows(rows: list[int]) -> str:
    """The first few of a batch's sample indices, for error messages."""
    return f"{rows[:5]}{' ...' if len(rows) > 5 else ''}"


def describe_value(value: Any) -> str:
    """``a <dtype> tensor of shape [...]`` or ``a <type name>``, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def describe_input(dtype: torch.dtype, shape: tuple[int, ...]) -> str:
    """``int64 [64]``-style words for an input kind."""
    return f"{str(dtype).removeprefix('torch.')} {list(shape)}"
