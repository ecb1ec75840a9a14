"""A plug-in student used by the resume tests (loaded as ``file.py:slow_mlp``)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from softlabels.sources.models import MLP


class SlowMLP(nn.Module):
    """The built-in MLP, sleeping ``$SOFTLABELS_TEST_DELAY`` s per training batch so a test can kill it."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = MLP(in_channels, num_classes)
        self.delay = float(os.environ.get("SOFTLABELS_TEST_DELAY", "0"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(self.delay)
        logits: torch.Tensor = self.net(x)
        return logits


def slow_mlp(num_classes: int, in_channels: int) -> nn.Module:
    return SlowMLP(num_classes, in_channels)
