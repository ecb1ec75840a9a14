"""Where and how models run: device choice and mixed precision, shared by every job.

torch is imported inside the functions, so a config that only checks names (through
:mod:`softlabels.defaults`) can import this module without paying for torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from softlabels.defaults import check_device, check_precision
from softlabels.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

__all__ = ["autocast", "check_device", "check_precision", "resolve_device", "seed_everything"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device '{name}' was asked for but CUDA is not available on this machine")
    return torch.device(name)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for ``bf16``/``fp16``; a no-op for ``fp32``."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(check_precision(precision))
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators and return a dedicated generator for data order."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
