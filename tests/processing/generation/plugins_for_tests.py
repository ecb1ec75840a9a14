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


TOKEN_VOCAB, TOKEN_LENGTH, TOKEN_SAMPLES = 23, 6, 10


class TokenWindows(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Windows of token ids with next-token targets; the last position has no next token (-100)."""

    classes = tuple(f"w{word}" for word in range(TOKEN_VOCAB))

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(5)
        self.stream = torch.randint(0, TOKEN_VOCAB, (TOKEN_SAMPLES * TOKEN_LENGTH,), generator=generator)

    def __len__(self) -> int:
        return TOKEN_SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.stream[index * TOKEN_LENGTH : (index + 1) * TOKEN_LENGTH]
        targets = torch.full((TOKEN_LENGTH,), -100, dtype=torch.int64)
        targets[:-1] = window[1:]
        return window, targets


def token_windows(split: str) -> TokenWindows:
    return TokenWindows()


class TinyLM(nn.Module):
    """Token embedding, a causal running mean over positions, then a linear head: ``[B, L] -> [B, L, V]``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.embedding = nn.Parameter(torch.randn(num_classes, 16, generator=generator))
        self.head = nn.Parameter(torch.randn(num_classes, 16, generator=generator) * 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding[tokens]
        steps = torch.arange(1, tokens.shape[1] + 1, dtype=embedded.dtype)[None, :, None]
        return (embedded.cumsum(dim=1) / steps) @ self.head.T


def tiny_lm(num_classes: int, input_shape: tuple[int, ...], input_dtype: torch.dtype) -> nn.Module:
    return TinyLM(num_classes)


def last_position_lm(num_classes: int, input_shape: tuple[int, ...], input_dtype: torch.dtype) -> nn.Module:
    """A language model that wrongly returns only the last position's logits ``[B, V]``."""
    return nn.Sequential(TinyLM(num_classes), _LastPosition())


class _LastPosition(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1]


class NaNForTokenAt(nn.Module):
    """A language model whose logits are NaN at every position of samples whose first token is ``token``."""

    def __init__(self, num_classes: int, token: int) -> None:
        super().__init__()
        self.model = TinyLM(num_classes)
        self.token = token

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens)
        logits[tokens[:, 0] == self.token] = float("nan")
        return logits


def nan_lm(num_classes: int, input_shape: tuple[int, ...], input_dtype: torch.dtype) -> nn.Module:
    return NaNForTokenAt(num_classes, int(TokenWindows()[2][0][0]))
