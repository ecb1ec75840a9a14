"""Dataset specs: ``digits``, ``imagefolder:ROOT``, ``torchvision:NAME``, ``text:ROOT`` and plug-ins.

:func:`load_dataset` turns a spec and a split into a :class:`DatasetSource`, the one description of
a dataset that every command shares. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from softlabels.errors import DataError, InvalidArgumentError, UnknownNameError
from softlabels.sources.fingerprints import FingerprintBuilder
from softlabels.sources.imagefolder import (
    ImageFolderDataset,
    ImageTransform,
    fingerprint_image_folder,
    scan_image_folder,
)
from softlabels.sources.plugin_datasets import describe_input as _describe_input
from softlabels.sources.plugin_datasets import open_plugin_dataset
from softlabels.sources.plugins import first_line, is_plugin_ref
from softlabels.sources.text import TEXT_PREPROCESSING, open_text_split
from softlabels.sources.torchvision_datasets import (
    TransformedDataset,
    fingerprint_torchvision_dataset,
    open_torchvision_dataset,
    torchvision_class_names,
    torchvision_labels,
)

__all__ = [
    "DIGITS_SPLITS",
    "DatasetSource",
    "DigitsDataset",
    "ensure_cifar10",
    "image_transform",
    "load_dataset",
]

DIGITS_SPLITS = ("train", "test")
# The transforms from stored sample to tensor, named and versioned: change a transform, bump its
# version, and stores of labels for the old samples stop matching.
DIGITS_PREPROCESSING = "digits-8x8-[0,1]/v1"
IMAGEFOLDER_PREPROCESSING = "imagefolder-rgb-[-1,1]/v1"
TORCHVISION_PREPROCESSING = "torchvision-[-1,1]/v1"
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0
_SPEC_FORMS = "digits, imagefolder:ROOT, torchvision:NAME, text:ROOT, package.module:callable or path/to/file.py:callable"


@dataclass(frozen=True)
class DatasetSource:
    """One split of a dataset, ready for a DataLoader.

    Attributes:
        spec: The dataset spec as given.
        split: The split name.
        dataset: Map-style dataset of ``(input, target)``; picklable. Inputs are float32
            (``[C, H, W]`` images, ``[D]`` features, ``[T]`` signals) or int64 (``[L]`` token
            ids), all of one shape (variable-length plug-in sequences come padded to the
            longest, see :func:`~softlabels.sources.pad_collate`). Targets are an ``int`` per
            sample, or an int64 ``[L]`` tensor per position (``-100``: ignored position).
        num_classes: Number of classes (the vocabulary size for token-level labels).
        class_names: One name per class, in label order (the vocabulary of a text source).
        input_shape: Shape of every sample's input.
        fingerprint: sha256 hex of the split's contents, independent of where the files live.
        preprocessing: Name and version of the transform from stored sample to tensor (e.g.
            ``imagefolder-rgb-[-1,1]/v1``); a store of labels for one preprocessing never serves
            another. None for plug-ins that do not declare theirs.
        num_samples: Number of samples (also ``len(source)``).
        augmented: Whether random crops and flips are applied (only image-file sources augment).
        input_dtype: dtype of the inputs: ``torch.float32`` or ``torch.int64`` (token ids).
        positions: Labelled positions per sample ``L`` when targets are per position, else None.
    """

    spec: str
    split: str
    dataset: Dataset[tuple[torch.Tensor, Any]]
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    fingerprint: str
    preprocessing: str | None
    num_samples: int
    augmented: bool = False
    input_dtype: torch.dtype = torch.float32
    positions: int | None = None

    @property
    def in_channels(self) -> int:
        """Number of input channels of images, ``input_shape[0]``.

        Raises:
            InvalidArgumentError: The inputs are not images ``[C, H, W]``.
        """
        if not self.is_image:
            raise InvalidArgumentError(
                f"{self.spec} has {_describe_input(self.input_dtype, self.input_shape)}, not images with channels"
            )
        return self.input_shape[0]

    @property
    def is_image(self) -> bool:
        """Whether the inputs are float ``[C, H, W]`` images."""
        return self.input_dtype.is_floating_point and len(self.input_shape) == 3

    @property
    def per_position(self) -> bool:
        """Whether targets are int64 ``[L]`` tensors (one label per position) rather than ints."""
        return self.positions is not None

    def __len__(self) -> int:
        return self.num_samples


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    data_root: str | None = None,
    augment: bool = False,
    seq_len: int | None = None,
) -> DatasetSource:
    """Open one split of the dataset that ``spec`` names.

    Args:
        spec: ``digits`` (scikit-learn's 8x8 digits, 80/20 stratified train/test split),
            ``imagefolder:ROOT`` (``ROOT/<split>/<class>/<image>``), ``torchvision:NAME``
            (files under ``data_root``), ``text:ROOT`` (``ROOT/<split>.txt``, windows of
            ``seq_len`` word ids, see :mod:`softlabels.sources.text`), or a plug-in
            ``package.module:callable`` / ``path/to/file.py:callable`` called as
            ``callable(split=split)``.
        split: Split name, e.g. ``train`` or ``test`` (``validation`` for text too).
        data_root: Folder holding the files of a ``torchvision:`` dataset (required there,
            unused by other specs).
        augment: Add ``RandomCrop(size, padding=size // 8)`` and ``RandomHorizontalFlip`` to
            image-file sources (``imagefolder:``, ``torchvision:``); ``digits``, ``text:`` and
            plug-ins are returned unaugmented (see ``DatasetSource.augmented``).
        seq_len: Tokens per sample of a ``text:`` source (required there, refused elsewhere).

    Returns:
        The described split.

    Raises:
        UnknownNameError: The spec has none of the accepted forms, or names an unknown dataset.
        InvalidArgumentError: Unknown split for ``digits``/``torchvision:``, missing
            ``data_root``, or a sequence length missing for text or given for other data.
        DataError: Files are missing or unreadable.
        PluginError: A plug-in cannot be loaded or misbehaves.
    """
    kind, separator, argument = spec.partition(":")
    is_text = bool(separator) and kind == "text"
    if seq_len is not None and not is_text:
        raise InvalidArgumentError(
            f"a sequence length applies to text datasets (text:ROOT) only, not '{spec}'"
        )
    if spec == "digits":
        return _load_digits(spec, split)
    if separator and kind in ("imagefolder", "torchvision", "text"):
        if not argument:
            raise InvalidArgumentError(f"dataset spec '{spec}' lacks the part after ':'")
        if kind == "imagefolder":
            return _load_image_folder(spec, argument, split, augment)
        if kind == "text":
            return _load_text(spec, argument, split, seq_len)
        return _load_torchvision(spec, argument, split, data_root, augment)
    if is_plugin_ref(spec):
        return _load_plugin(spec, split)
    raise UnknownNameError(f"unknown dataset '{spec}'; use one of: {_SPEC_FORMS}")


def ensure_cifar10(archive: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """Unpack the CIFAR-10 JPEG archive into ``cache_dir`` once and return ``cache_dir``.

    The archive holds ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``. It is unpacked into a
    temporary sibling folder that is renamed into place only when complete, so an interrupted
    unpack never looks finished and concurrent callers cannot see half a folder.

    Args:
        archive: Path of ``cifar10-jpeg.tar.gz``.
        cache_dir: Where the unpacked folder lives; reused when it already exists.

    Returns:
        ``cache_dir``, usable as ``imagefolder:<cache_dir>``.

    Raises:
        DataError: The archive is missing or broken, or ``cache_dir`` holds something else.
    """
    target = Path(cache_dir)
    if _has_train_and_test(target):
        return target
    if target.exists():
        raise DataError(f"'{target}' exists but holds no train/ and test/ folders; remove it to unpack again")
    archive_path = Path(archive)
    if not archive_path.is_file():
        raise DataError(f"CIFAR-10 archive '{archive_path}' does not exist")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-unpacking-", dir=target.parent))
    except OSError as exc:
        raise DataError(
            f"cannot unpack '{archive_path}' into '{target}': {_why_not_writable(target, exc)}"
        ) from exc
    try:
        _unpack_into(archive_path, staging)
        os.rename(staging, target)
    except OSError as exc:
        if not _has_train_and_test(target):  # else another process finished first: use its copy
            raise DataError(
                f"cannot unpack '{archive_path}' into '{target}': {_why_not_writable(target, exc)}"
            ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _why_not_writable(target: Path, error: OSError) -> str:
    """The reason a folder cannot be made at ``target``: a file in the way, else the system's words."""
    blocking = next((parent for parent in target.parents if parent.is_file()), None)
    return f"'{blocking}' is a file, not a folder" if blocking else str(error.strerror or error)


def _unpack_into(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")  # the "data" filter refuses paths escaping staging
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot unpack '{archive}': {first_line(exc)}") from exc
    if not _has_train_and_test(staging):
        raise DataError(f"archive '{archive}' holds no top-level train/ and test/ folders")


def _has_train_and_test(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def image_transform(augment_size: tuple[int, int] | None = None) -> transforms.Compose:
    """ToTensor and Normalize(0.5, 0.5), after a padded random crop and flip when augmenting."""
    steps: list[Any] = []
    if augment_size is not None:
        steps += [
            transforms.RandomCrop(augment_size, padding=min(augment_size) // 8),
            transforms.RandomHorizontalFlip(),
        ]
    # A one-element mean/std broadcasts over any number of channels.
    steps += [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]
    return transforms.Compose(steps)


class DigitsDataset(Dataset[tuple[torch.Tensor, int]]):
    """scikit-learn's 8x8 digits as ``[1, 8, 8]`` float32 tensors in ``[0, 1]``.

    Args:
        images: ``float32`` array ``[N, 1, 8, 8]``.
        labels: ``int64`` array ``[N]``.
    """

    def __init__(self, images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[index].copy()), int(self.labels[index])


def _load_digits(spec: str, split: str) -> DatasetSource:
    if split not in DIGITS_SPLITS:
        raise InvalidArgumentError(f"digits has splits {' and '.join(DIGITS_SPLITS)}, not '{split}'")
    images, labels = _digits_split(split)
    dataset = DigitsDataset(images, labels)
    num_classes = 10
    class_names = tuple(str(digit) for digit in range(num_classes))
    builder = FingerprintBuilder("digits", split, len(labels), class_names)
    builder.add_labels(labels)
    builder.add_array(images)
    return DatasetSource(
        spec=spec,
        split=split,
        dataset=dataset,
        num_classes=num_classes,
        class_names=class_names,
        input_shape=(1, 8, 8),
        fingerprint=builder.hexdigest(),
        preprocessing=DIGITS_PREPROCESSING,
        num_samples=len(labels),
    )


def _digits_split(split: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    # Imported here: scikit-learn is slow to import and only this source needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_index, test_index = train_test_split(
        np.arange(len(labels)),
        test_size=_DIGITS_TEST_FRACTION,
        random_state=_DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    index = np.sort(train_index if split == "train" else test_index)
    images = (np.asarray(bunch.images, dtype=np.float32)[index] / 16.0).reshape(-1, 1, 8, 8)
    return np.ascontiguousarray(images, dtype=np.float32), labels[index]


def _load_image_folder(spec: str, root: str, split: str, augment: bool) -> DatasetSource:
    scan = scan_image_folder(root, split)
    dataset, input_shape = _image_dataset(
        lambda transform: ImageFolderDataset(scan.split_dir, scan.samples, transform), augment
    )
    return DatasetSource(
        spec=spec,
        split=split,
        dataset=dataset,
        num_classes=len(scan.class_names),
        class_names=scan.class_names,
        input_shape=input_shape,
        fingerprint=fingerprint_image_folder(scan, split),
        preprocessing=IMAGEFOLDER_PREPROCESSING,
        num_samples=len(scan.samples),
        augmented=augment,
    )


def _load_torchvision(
    spec: str, name: str, split: str, data_root: str | None, augment: bool
) -> DatasetSource:
    base = open_torchvision_dataset(name, split, data_root)
    if len(base) == 0:
        raise DataError(f"torchvision:{name} ({split}) under '{data_root}' is empty")
    dataset, input_shape = _image_dataset(lambda transform: TransformedDataset(base, transform), augment)
    labels = torchvision_labels(base)
    class_names = torchvision_class_names(base, labels)
    return DatasetSource(
        spec=spec,
        split=split,
        dataset=dataset,
        num_classes=len(class_names),
        class_names=class_names,
        input_shape=input_shape,
        fingerprint=fingerprint_torchvision_dataset(name, split, base, labels, class_names),
        preprocessing=TORCHVISION_PREPROCESSING,
        num_samples=len(base),
        augmented=augment,
    )


def _load_plugin(spec: str, split: str) -> DatasetSource:
    info = open_plugin_dataset(spec, split)
    return DatasetSource(
        spec=spec,
        split=split,
        dataset=info.dataset,
        num_classes=len(info.class_names),
        class_names=info.class_names,
        input_shape=info.input_shape,
        fingerprint=info.fingerprint,
        preprocessing=info.preprocessing,
        num_samples=len(info.dataset),
        input_dtype=info.input_dtype,
        positions=info.positions,
    )


def _load_text(spec: str, root: str, split: str, seq_len: int | None) -> DatasetSource:
    if seq_len is None:
        raise InvalidArgumentError(f"text dataset '{spec}' needs a sequence length (tokens per sample)")
    corpus = open_text_split(root, split, seq_len)
    return DatasetSource(
        spec=spec,
        split=split,
        dataset=corpus.dataset,
        num_classes=len(corpus.vocabulary),
        class_names=corpus.vocabulary,
        input_shape=(seq_len,),
        fingerprint=corpus.fingerprint,
        preprocessing=TEXT_PREPROCESSING,
        num_samples=len(corpus.dataset),
        input_dtype=torch.int64,
        positions=seq_len,
    )


def _image_dataset(
    make: Callable[[ImageTransform], Dataset[tuple[torch.Tensor, int]]], augment: bool
) -> tuple[Dataset[tuple[torch.Tensor, int]], tuple[int, int, int]]:
    """An image-file dataset and its sample shape; augmenting crops to the shape of the plain samples."""
    plain = make(image_transform())
    input_shape = _shape_of_first(plain)
    return (make(image_transform(input_shape[1:])) if augment else plain), input_shape


def _shape_of_first(dataset: Dataset[tuple[torch.Tensor, int]]) -> tuple[int, int, int]:
    tensor = dataset[0][0]
    if tensor.ndim != 3:
        raise DataError(f"samples have shape {list(tensor.shape)}, expected [C, H, W]")
    channels, height, width = (int(size) for size in tensor.shape)
    return channels, height, width
