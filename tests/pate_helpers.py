"""Teachers' stores of one split for PATE tests, written without training a teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from student_helpers import write_store

from softlabels.sources import DatasetSource


def member_stores(tmp_path: Path, source: DatasetSource, count: int = 5) -> list[str]:
    """``count`` teachers' full stores of ``source``: each votes right on about 80% of rows, at random elsewhere."""
    targets = np.array([source.dataset[i][1] for i in range(len(source))])
    rng = np.random.default_rng(0)
    stores = []
    for teacher in range(count):
        logits = rng.normal(size=(len(source), source.num_classes)).astype(np.float32)
        votes = np.where(
            rng.random(len(source)) < 0.8, targets, rng.integers(0, source.num_classes, len(source))
        )
        logits[np.arange(len(source)), votes] += 10.0
        stores.append(str(write_store(tmp_path / f"t{teacher}.zarr", source, logits=logits, targets=targets)))
    return stores
