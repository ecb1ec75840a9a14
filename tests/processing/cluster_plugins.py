"""A plug-in teacher for the cluster tests (loaded as ``cluster_plugins.py:marked_linear``).

On a dask worker started with ``SOFTLABELS_TEST_MARKERS`` set, every batch first writes a file named
after the worker's pid into that folder (so a test knows which process is mid-shard and can kill
it), then sleeps ``SOFTLABELS_TEST_DELAY`` seconds. Without those variables it is a plain,
deterministic linear teacher, so an in-process run gives the reference values.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn


class MarkedLinear(nn.Module):
    def __init__(self, num_classes: int, in_features: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(num_classes, in_features, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        markers = os.environ.get("SOFTLABELS_TEST_MARKERS")
        if markers:
            (Path(markers) / str(os.getpid())).touch()
        time.sleep(float(os.environ.get("SOFTLABELS_TEST_DELAY", "0")))
        return x.flatten(1) @ self.weight.T


def marked_linear(num_classes: int, in_channels: int) -> nn.Module:
    return MarkedLinear(num_classes, in_channels * 64)
