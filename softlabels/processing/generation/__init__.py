"""Teacher inference over shards into a label store (``softlabels generate``).

Names are imported lazily, so that the torch-free :mod:`softlabels.processing.generation.config`
(which the CLI imports to check its arguments) does not pull torch in through this package.
"""

from __future__ import annotations

from softlabels.lazy import lazy_attributes

_LAZY = {
    "GenerateConfig": "softlabels.processing.generation.config",
    "GenerateSummary": "softlabels.processing.generation.runner",
    "generate": "softlabels.processing.generation.runner",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
