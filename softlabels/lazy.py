"""Lazy package attributes: a package names where each public name lives, and imports it on first use.

``softlabels``, ``softlabels.pipelines``, ``softlabels.training`` and
``softlabels.processing.generation`` use it so that their torch-free modules (configs, specs) can be
imported, and ``softlabels --help`` shown, without importing torch through the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``names[name]`` and returns its ``name``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(module), name)

    return __getattr__
