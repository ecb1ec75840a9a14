"""A plug-in teacher that stands in for an accelerator (``benchmarks/scaling_plugins.py:sleeping_teacher``).

Each batch sleeps ``SCALING_SLEEP_S`` seconds (default 0.5) while holding no CPU, as a process
waiting for its GPU would, then returns real logits: a fixed linear map of the input. Used with
``cheap_plugins.py:cheap_dataset`` (samples that cost nothing to load), a ``generate`` run then
measures how well shards spread over dask workers, not how fast this machine computes.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn


class SleepingTeacher(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(1, num_classes, generator=generator))
        self.sleep_s = float(os.environ.get("SCALING_SLEEP_S", "0.5"))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep_s)
        # Bounded logits that differ per sample: the sample index modulo 97, times a fixed row.
        return torch.remainder(inputs.flatten(1)[:, :1], 97.0) / 97.0 * self.weight


def sleeping_teacher(num_classes: int, in_channels: int) -> nn.Module:
    return SleepingTeacher(num_classes)
