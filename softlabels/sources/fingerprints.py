"""Stable sha256 fingerprints of dataset contents.

A fingerprint identifies *what* a dataset holds (kind of source, split, size, classes, labels and
sample identities), never *where* it lives, so a label store made on one machine matches the same
data unpacked anywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FingerprintBuilder"]


class FingerprintBuilder:
    """Accumulates length-prefixed fields into one sha256 digest.

    Length prefixes make the encoding unambiguous: ``("ab", "c")`` and ``("a", "bc")`` differ.
    Every fingerprint starts with the kind of source, the split, the size and the class names, so
    data relabelled with other names (or the same names in another order) never matches.

    Args:
        kind: The kind of source (``"digits"``, ``"imagefolder"``, ``"torchvision:MNIST"``, ...).
        split: The split name.
        num_samples: Number of samples in the split.
        class_names: One name per class, in label order.
    """

    # Version 2 added the class names; fingerprints of version 1 never match one of version 2.
    _FORMAT = "softlabels.dataset-fingerprint/2"

    def __init__(self, kind: str, split: str, num_samples: int, class_names: Sequence[str]) -> None:
        self._hash = hashlib.sha256()
        for header in (self._FORMAT, kind, split, str(num_samples), str(len(class_names))):
            self.add_text(header)
        for name in class_names:
            self.add_text(name)

    def add_bytes(self, data: bytes) -> None:
        """Add one opaque field."""
        self._hash.update(len(data).to_bytes(8, "little"))
        self._hash.update(data)

    def add_text(self, text: str) -> None:
        """Add one text field (UTF-8)."""
        self.add_bytes(text.encode("utf-8"))

    def add_array(self, array: npt.ArrayLike) -> None:
        """Add an array's dtype, shape and C-ordered bytes."""
        contiguous = np.ascontiguousarray(array)
        self.add_text(f"{contiguous.dtype.str}{contiguous.shape}")
        self._hash.update(contiguous.nbytes.to_bytes(8, "little"))
        self._hash.update(contiguous.data)  # the buffer itself, without a copy

    def add_labels(self, labels: npt.NDArray[np.integer[Any]] | Iterable[int]) -> None:
        """Add the labels in sample order, as little-endian int64 (an array is cast without a Python loop)."""
        if isinstance(labels, np.ndarray):
            self.add_array(labels.astype("<i8", copy=False))
        else:
            self.add_array(np.fromiter(labels, dtype="<i8"))

    def hexdigest(self) -> str:
        """Return the fingerprint as 64 hex digits."""
        return self._hash.hexdigest()
