"""One part of a dataset split as a :class:`DatasetSource` of its own (``train-teacher --partition``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch.utils.data import Subset

from softlabels.partitions import Partition
from softlabels.sources.datasets import DatasetSource

__all__ = ["PartSource", "partition_source"]


@dataclasses.dataclass(frozen=True)
class PartSource:
    """A part of a split: the part's source (its own fingerprint) and the record checkpoints keep of it."""

    source: DatasetSource
    record: dict[str, Any]


def partition_source(source: DatasetSource, partition: Partition) -> PartSource:
    """The rows of ``partition`` of ``source``, in increasing row order.

    The part's fingerprint (see :meth:`Partition.fingerprint`) replaces the split's, so a run or a
    store made from one part never passes for the whole split or for another part.

    Raises:
        InvalidArgumentError: the split has fewer samples than parts.
    """
    rows = partition.rows(len(source))
    record = partition.record(source.fingerprint, rows)
    part = dataclasses.replace(
        source,
        dataset=Subset(source.dataset, rows.tolist()),
        fingerprint=record["fingerprint"],
        num_samples=len(rows),
    )
    return PartSource(part, record)
