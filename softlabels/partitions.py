"""Disjoint, deterministic parts of a dataset split, for teachers trained on private data (PATE).

A :class:`Partition` names part ``index`` (counting from 1) of ``count`` parts. The rows of every
part come from one permutation of the split's rows, drawn from a generator seeded with a sha256 of
``seed`` alone, cut into ``count`` slices of nearly equal size (:func:`numpy.array_split`): the
parts of one ``(count, seed)`` are disjoint and cover the split, and the same on every machine.

A part's fingerprint hashes the split's own fingerprint, ``(index, count, seed)`` and the very row
numbers it holds, so two teachers whose recorded parts share the split's fingerprint, ``count``
and ``seed`` but not ``index`` provably trained on disjoint rows, and a part can never be mistaken
for another (nor for the part of a changed split). Torch-free, so configs validate it at once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from softlabels import defaults
from softlabels.errors import InvalidArgumentError

__all__ = ["Partition", "parse_partition"]

_FORMAT = "softlabels.partition/1"
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Partition:
    """Part ``index`` of ``count`` disjoint parts of a split (``1 <= index <= count``).

    Raises:
        InvalidArgumentError: ``count`` < 2, ``index`` outside ``[1, count]``, or a negative seed.
    """

    index: int
    count: int
    seed: int = defaults.PARTITION_SEED

    def __post_init__(self) -> None:
        for name, value in (("index", self.index), ("count", self.count), ("seed", self.seed)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"partition {name} must be an integer, got {value!r}")
        if self.count < 2:
            raise InvalidArgumentError(f"a partition needs at least 2 parts, got {self.count}")
        if not 1 <= self.index <= self.count:
            raise InvalidArgumentError(
                f"partition part {self.index} is outside 1..{self.count} (parts count from 1)"
            )
        if not 0 <= self.seed < 1 << 64:
            raise InvalidArgumentError(f"partition seed must be in [0, 2**64), got {self.seed}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def rows(self, num_rows: int) -> npt.NDArray[np.int64]:
        """The split rows of this part, in increasing order.

        Raises:
            InvalidArgumentError: the split has fewer rows than parts (a part would be empty).
        """
        if num_rows < self.count:
            raise InvalidArgumentError(
                f"a split of {num_rows} samples cannot be cut into {self.count} non-empty parts"
            )
        digest = hashlib.sha256(f"{_FORMAT} seed {self.seed}".encode()).digest()
        order = np.random.default_rng(int.from_bytes(digest, "little")).permutation(num_rows)
        part: npt.NDArray[np.int64] = np.sort(np.array_split(order, self.count)[self.index - 1]).astype(
            np.int64
        )
        return part

    def fingerprint(self, split_fingerprint: str, rows: npt.NDArray[np.int64]) -> str:
        """sha256 hex of the split's fingerprint, this partition and the part's row numbers."""
        digest = hashlib.sha256()
        for text in (_FORMAT, split_fingerprint, str(self.index), str(self.count), str(self.seed)):
            encoded = text.encode()
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
        digest.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
        return digest.hexdigest()

    def record(self, split_fingerprint: str, rows: npt.NDArray[np.int64]) -> dict[str, Any]:
        """What checkpoints record of the part: enough to prove two parts disjoint without the data."""
        return {
            "index": self.index,
            "count": self.count,
            "seed": self.seed,
            "num_samples": len(rows),
            "split_fingerprint": split_fingerprint,
            "fingerprint": self.fingerprint(split_fingerprint, rows),
        }


def parse_partition(text: str, seed: int = defaults.PARTITION_SEED) -> Partition:
    """``"I/N"`` as part I of N (I from 1 to N).

    Raises:
        InvalidArgumentError: the text is not two whole numbers ``I/N``, or they are out of range.
    """
    match = _SPEC.fullmatch(text)
    if match is None:
        raise InvalidArgumentError(f"partition must be I/N (part I of N, e.g. 3/10), got {text!r}")
    return Partition(int(match.group(1)), int(match.group(2)), seed)
