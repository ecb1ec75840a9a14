"""Helpers shared by the benchmarks: locating the real datasets, timing, writing results."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
# The folder of dataset archives, as the pipelines and the tests find it.
DATASETS = Path(os.environ.get("SOFTLABELS_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
CIFAR_ARCHIVE = DATASETS / "cifar10-jpeg.tar.gz"


def cifar10_root() -> Path:
    """The CIFAR-10 JPEG image folder, unpacked once into the user's cache."""
    from softlabels.sources import ensure_cifar10

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softlabels" / "cifar10"
    return ensure_cifar10(CIFAR_ARCHIVE, cache)


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Save ``results`` with the machine they were measured on."""
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path.write_text(json.dumps({"machine": machine, **results}, indent=2) + "\n")
    return path
