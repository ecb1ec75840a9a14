"""Folders of image files laid out as ``ROOT/<split>/<class>/<file>``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from softlabels.errors import DataError
from softlabels.sources.fingerprints import FingerprintBuilder
from softlabels.sources.plugins import first_line

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageFolderScan",
    "fingerprint_image_folder",
    "scan_image_folder",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)

ImageTransform = Callable[[Image.Image], torch.Tensor]

# Key: (absolute split directory, digest of every file's (path, size, mtime)); value: fingerprint.
# Keying on stat data means an edited file is re-hashed while an untouched folder is hashed once.
_FINGERPRINT_CACHE: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class ImageFolderScan:
    """The listing of one split of an image folder.

    Attributes:
        split_dir: Absolute path of ``ROOT/<split>``.
        class_names: Class directory names, sorted.
        samples: ``(relative path with '/' separators, label)`` sorted by relative path.
        stat_key: Digest of every file's relative path, size and change times.
    """

    split_dir: str
    class_names: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    stat_key: str


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """Map-style dataset decoding ``split_dir/<relative path>`` images to float tensors.

    Holds only strings and the transform, so it pickles cheaply into DataLoader workers.

    Args:
        split_dir: Absolute path of the split directory.
        samples: ``(relative path, label)`` pairs.
        transform: Turns an RGB PIL image into a ``[C, H, W]`` float tensor.
    """

    def __init__(
        self, split_dir: str, samples: tuple[tuple[str, int], ...], transform: ImageTransform
    ) -> None:
        self.split_dir = split_dir
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        relative_path, label = self.samples[index]
        return self.transform(self._decode(os.path.join(self.split_dir, relative_path))), label

    @staticmethod
    def _decode(path: str) -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image '{path}': {first_line(exc)}") from exc


def scan_image_folder(root: str, split: str) -> ImageFolderScan:
    """List the classes and image files of ``root/split``.

    Raises:
        DataError: ``root`` or ``root/split`` is missing, or the split holds no images.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a directory")
    split_dir = root_path / split
    if not split_dir.is_dir():
        available = sorted(entry.name for entry in root_path.iterdir() if _is_visible_dir(entry))
        raise DataError(
            f"image folder '{root}' has no split '{split}' (available: {', '.join(available) or 'none'})"
        )
    class_names = tuple(sorted(entry.name for entry in split_dir.iterdir() if _is_visible_dir(entry)))
    stat_hash = hashlib.sha256()
    samples: list[tuple[str, int]] = []
    for label, class_name in enumerate(class_names):
        for relative_path, stat in _image_files(split_dir / class_name, class_name):
            samples.append((relative_path, label))
            # ctime too: tools that copy contents can restore mtime, but not ctime.
            stat_hash.update(
                f"{relative_path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\n".encode()
            )
    if not samples:
        raise DataError(f"image folder '{split_dir}' holds no images in class subfolders")
    samples.sort()
    return ImageFolderScan(str(split_dir.resolve()), class_names, tuple(samples), stat_hash.hexdigest())


def fingerprint_image_folder(scan: ImageFolderScan, split: str) -> str:
    """Fingerprint the relative paths, contents and labels of a scanned split (cached in-process)."""
    key = (scan.split_dir, scan.stat_key)
    cached = _FINGERPRINT_CACHE.get(key)
    if cached is not None:
        return cached
    builder = FingerprintBuilder("imagefolder", split, len(scan.samples), scan.class_names)
    builder.add_labels(label for _, label in scan.samples)
    # A plain loop: with many small files, thread pools measured slower (GIL hand-offs).
    for relative_path, _ in scan.samples:
        builder.add_text(relative_path)
        builder.add_bytes(_read_bytes(os.path.join(scan.split_dir, relative_path)))
    fingerprint = builder.hexdigest()
    _FINGERPRINT_CACHE[key] = fingerprint
    return fingerprint


def _is_visible_dir(entry: Path) -> bool:
    return entry.is_dir() and not entry.name.startswith(".")


def _image_files(class_dir: Path, class_name: str) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative path, stat)`` of the image files below ``class_dir``, at any depth."""
    for directory, subdirs, files in os.walk(class_dir, followlinks=True):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        prefix = Path(directory).relative_to(class_dir).as_posix()
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            inner = name if prefix == "." else f"{prefix}/{name}"
            yield f"{class_name}/{inner}", os.stat(os.path.join(directory, name))


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"cannot read image '{path}': {first_line(exc)}") from exc
