"""Where and how models run: device choice and mixed precision, shared by every job."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from softlabels.errors import InvalidArgumentError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InvalidArgumentError(f"device '{name}' is not one of {', '.join(DEVICES)} (or cuda:N)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device '{name}' was asked for but CUDA is not available on this machine")
    return torch.device(name)


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise InvalidArgumentError(f"precision '{name}' is not one of {', '.join(PRECISIONS)}")
    return name


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for ``bf16``/``fp16``; a no-op for ``fp32``."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators and return a dedicated generator for data order."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
