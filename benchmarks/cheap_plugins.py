"""Plug-ins whose work costs (almost) nothing, so that a benchmark times softlabels' own machinery.

Loaded by spec as ``benchmarks/cheap_plugins.py:cheap_dataset`` and
``benchmarks/cheap_plugins.py:precomputed_teacher``. Sizes come from the environment (a plug-in is
called with the split only): ``CHEAP_ROWS`` samples (default 20,000) of ``CHEAP_CLASSES`` classes
(default 1,000).

* ``cheap_dataset``: sample ``i`` is a ``[1, 1, 1]`` tensor holding ``i``, labelled ``i % C``. It
  declares its fingerprint and targets (no scan) and offers ``get_batch(indices)``, which returns
  the stacked inputs and targets of a whole batch in one call; ``cheap_dataset_one_by_one`` is
  the same data without ``get_batch`` (same fingerprint: a store of one serves the other).
* ``precomputed_teacher``: looks every sample's logits up in a table drawn once from a fixed seed
  (a teacher as fast as a table lookup: what a writer must keep up with).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn


def sizes() -> tuple[int, int]:
    """``(rows, classes)`` from ``CHEAP_ROWS`` and ``CHEAP_CLASSES``."""
    return int(os.environ.get("CHEAP_ROWS", "20000")), int(os.environ.get("CHEAP_CLASSES", "1000"))


class CheapSamples:
    """Samples that cost nothing to load, one at a time or a batch at a time."""

    def __init__(self, split: str, rows: int, classes: int) -> None:
        self.inputs = torch.arange(rows, dtype=torch.float32).view(rows, 1, 1, 1)
        self.labels = torch.arange(rows) % classes
        self.targets = self.labels.tolist()
        self.classes = tuple(f"c{index}" for index in range(classes))
        self.fingerprint = f"cheap-samples-v1-{split}-{rows}x{classes}"

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], self.targets[index]

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        at = torch.as_tensor(indices, dtype=torch.long)
        return self.inputs[at], self.labels[at]


class CheapSamplesOneByOne(CheapSamples):
    """The same samples without ``get_batch``: a loader must read them one at a time."""

    get_batch = None  # type: ignore[assignment]


def cheap_dataset(split: str) -> CheapSamples:
    rows, classes = sizes()
    return CheapSamples(split, rows, classes)


def cheap_dataset_one_by_one(split: str) -> CheapSamples:
    rows, classes = sizes()
    return CheapSamplesOneByOne(split, rows, classes)


class PrecomputedTeacher(nn.Module):
    """Returns the stored logits of the samples whose indices the inputs hold."""

    def __init__(self, rows: int, classes: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.table = torch.randn(rows, classes, generator=generator) * 3
        self.anchor = nn.Parameter(torch.zeros(1))  # a parameter, so that the teacher has an identity to hash

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.table[inputs.flatten(1)[:, 0].long()] + self.anchor


def precomputed_teacher(num_classes: int, in_channels: int) -> nn.Module:
    rows, classes = sizes()
    if classes != num_classes:
        raise ValueError(f"the table has {classes} classes, the dataset {num_classes}")
    return PrecomputedTeacher(rows, classes)
