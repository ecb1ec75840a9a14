"""Datasets of ``torchvision.datasets``, read from files already on disk (never downloaded)."""

from __future__ import annotations

import gzip
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset

from softlabels.errors import DataError, InvalidArgumentError, SoftLabelsError, UnknownNameError
from softlabels.sources.fingerprints import FingerprintBuilder
from softlabels.sources.imagefolder import ImageTransform
from softlabels.sources.plugins import first_line

__all__ = [
    "KNOWN_TORCHVISION_DATASETS",
    "IdxImageDataset",
    "TransformedDataset",
    "fingerprint_torchvision_dataset",
    "open_torchvision_dataset",
    "torchvision_class_names",
    "torchvision_labels",
]

# Names quoted in error messages; any torchvision dataset taking ``train`` or ``split`` works.
KNOWN_TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10")

# MNIST-style classes whose files are ``<prefix>-images-idx3-ubyte`` / ``<prefix>-labels-idx1-ubyte``.
_IDX_CLASSES = ("MNIST", "FashionMNIST", "KMNIST")
_TRAIN_TEST = ("train", "test")


class TransformedDataset(Dataset[tuple[torch.Tensor, int]]):
    """Applies an image transform to a dataset of ``(PIL image, label)`` and makes labels ``int``.

    Args:
        base: A map-style dataset yielding ``(PIL image, label)``.
        transform: Turns the PIL image into a ``[C, H, W]`` float tensor.
    """

    def __init__(self, base: Any, transform: ImageTransform) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), int(label)


class IdxImageDataset(Dataset[tuple[Image.Image, int]]):
    """MNIST-style images and labels read from IDX files, with torchvision's ``data``/``targets``.

    Used when only one split's files are present, which torchvision's own classes refuse.

    Args:
        data: ``uint8`` images ``[N, H, W]``.
        targets: ``int64`` labels ``[N]``.
        classes: Class names.
    """

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]) -> None:
        self.data = data
        self.targets = targets
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index].numpy()), int(self.targets[index])


def open_torchvision_dataset(name: str, split: str, data_root: str | None) -> Any:
    """Construct ``torchvision.datasets.<name>`` for ``split`` from files under ``data_root``.

    Returns:
        The dataset, yielding ``(PIL image, label)``.

    Raises:
        InvalidArgumentError: No ``data_root``, or a split or argument the class does not accept.
        UnknownNameError: ``name`` is not a torchvision dataset taking ``train`` or ``split``.
        DataError: The files are missing or unreadable.
    """
    if not data_root:
        raise InvalidArgumentError(f"torchvision:{name} needs a data root (the folder holding its files)")
    dataset_class = _dataset_class(name)
    kwargs = _split_kwargs(name, split, inspect.signature(dataset_class).parameters)
    try:
        return dataset_class(data_root, **kwargs)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        fallback = _open_single_idx_split(name, split, Path(data_root))
        if fallback is not None:
            return fallback
        # torchvision's own message suggests download=True, which softlabels never does.
        raise DataError(
            f"torchvision:{name} ({split}) files not found or damaged under '{data_root}'; "
            "softlabels never downloads: place the dataset's files there first"
        ) from exc
    except SoftLabelsError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"torchvision:{name} ({split}) cannot be opened: {first_line(exc)}"
        ) from exc


def torchvision_class_names(dataset: Any, labels: npt.NDArray[np.int64]) -> tuple[str, ...]:
    """Class names from the dataset's ``classes``, else ``"0"`` .. ``str(max label)``."""
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, Sequence) and classes and not isinstance(classes, str):
        return tuple(str(name) for name in classes)
    return tuple(str(label) for label in range(int(labels.max()) + 1 if labels.size else 0))


def torchvision_labels(dataset: Any) -> npt.NDArray[np.int64]:
    """All labels in sample order, from ``targets``/``labels`` when present, else by reading samples."""
    for attribute in ("targets", "labels"):
        labels = getattr(dataset, attribute, None)
        if labels is not None:
            return np.asarray(labels, dtype=np.int64).reshape(-1)
    return np.fromiter((int(dataset[index][1]) for index in range(len(dataset))), dtype=np.int64)


def fingerprint_torchvision_dataset(
    name: str, split: str, dataset: Any, labels: npt.NDArray[np.int64], class_names: Sequence[str]
) -> str:
    """Fingerprint a torchvision dataset over its class names, labels and raw data bytes."""
    builder = FingerprintBuilder(f"torchvision:{name}", split, len(labels), class_names)
    builder.add_labels(labels)
    data = getattr(dataset, "data", None)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        builder.add_array(np.asarray(data))
    else:  # no in-memory array (file-backed datasets): hash every decoded image instead
        for index in range(len(dataset)):
            builder.add_array(np.asarray(dataset[index][0]))
    return builder.hexdigest()


def _dataset_class(name: str) -> Any:
    dataset_class = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(dataset_class) and issubclass(dataset_class, torchvision.datasets.VisionDataset)):
        raise UnknownNameError(
            f"unknown torchvision dataset '{name}' (known: {', '.join(KNOWN_TORCHVISION_DATASETS)}, ...)"
        )
    return dataset_class


def _split_kwargs(name: str, split: str, parameters: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"download": False} if "download" in parameters else {}
    if "train" in parameters:
        if split not in _TRAIN_TEST:
            raise InvalidArgumentError(f"torchvision:{name} has splits train and test, not '{split}'")
        kwargs["train"] = split == "train"
    elif "split" in parameters:
        kwargs["split"] = split
    else:
        raise UnknownNameError(f"torchvision dataset '{name}' has no train/test split softlabels can select")
    return kwargs


def _open_single_idx_split(name: str, split: str, data_root: Path) -> IdxImageDataset | None:
    """Read one MNIST-style split directly, or return None when its files are not there.

    torchvision insists on finding both splits unpacked; users often have only one, gzip'd.
    """
    if name not in _IDX_CLASSES:
        return None
    prefix = "train" if split == "train" else "t10k"
    for folder in (data_root / name / "raw", data_root):
        images_file = _find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
        labels_file = _find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
        if images_file is not None and labels_file is not None:
            data = _read_idx(images_file)
            targets = _read_idx(labels_file).to(torch.int64)
            if data.ndim != 3 or targets.ndim != 1 or len(data) != len(targets):
                raise DataError(f"IDX files '{images_file}' and '{labels_file}' do not form an image set")
            return IdxImageDataset(data, targets, getattr(torchvision.datasets, name).classes)
    return None


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> torch.Tensor:
    """Parse an unsigned-byte IDX file (plain or gzip'd): magic ``0 0 8 ndim``, big-endian dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file '{path}': {first_line(exc)}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"'{path}' is not an unsigned-byte IDX file")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    values = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if values.size != int(np.prod(shape)):
        raise DataError(f"IDX file '{path}' is truncated: expected shape {list(shape)}")
    return torch.from_numpy(values.reshape(shape).copy())
