"""Keyword-friendly entry points re-exported as ``softlabels.<name>``.

Each takes either a ready config object or the same keywords as the config's fields, so
``softlabels.generate(dataset="digits", teacher="cnn", temperature=4, out="s.zarr", ...)`` works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softlabels.generate import GenerateConfig, GenerateSummary


def generate(config: GenerateConfig | None = None, /, **options: Any) -> GenerateSummary:
    """Run a teacher over a dataset into a label store (see :class:`softlabels.GenerateConfig`)."""
    from softlabels.generate import GenerateConfig
    from softlabels.generate import generate as run

    return run(config if config is not None else GenerateConfig(**options))
