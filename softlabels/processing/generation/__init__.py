"""Teacher inference over shards into a label store (``softlabels generate``)."""

from softlabels.processing.generation.config import GenerateConfig, format_options_for
from softlabels.processing.generation.runner import GenerateSummary, generate

__all__ = ["GenerateConfig", "GenerateSummary", "format_options_for", "generate"]
