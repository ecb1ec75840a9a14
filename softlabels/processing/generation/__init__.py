"""Teacher inference over shards into a label store (``softlabels generate``).

Names are imported lazily, so that the torch-free :mod:`softlabels.processing.generation.config`
(which the CLI imports to check its arguments) does not pull torch in through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GenerateConfig": "softlabels.processing.generation.config",
    "GenerateSummary": "softlabels.processing.generation.runner",
    "generate": "softlabels.processing.generation.runner",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'softlabels.processing.generation' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
