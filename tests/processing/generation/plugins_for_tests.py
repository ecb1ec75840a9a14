"""Plug-in teachers used by the generate tests (loaded as ``file.py:callable``)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn


class SlowLinear(nn.Module):
    """A deterministic linear teacher that sleeps per batch so a test can kill it mid-run."""

    def __init__(self, num_classes: int, in_features: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(num_classes, in_features, generator=generator))
        self.delay = float(os.environ.get("SOFTLABELS_TEST_DELAY", "0"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return x.flatten(1) @ self.weight.T


def slow_linear(num_classes: int, in_channels: int) -> nn.Module:
    return SlowLinear(num_classes, in_channels * 64)


class NaNAt(nn.Module):
    """Returns NaN for samples whose first pixel is exactly the given value."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.num_classes)
        out[x.flatten(1)[:, 28] > 0.99] = float("nan")
        return out


def nan_teacher(num_classes: int, in_channels: int) -> nn.Module:
    return NaNAt(num_classes)


def three_class_teacher(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, 3))
