"""The ``softlabels`` command line."""

from softlabels.cli.main import cli, main

__all__ = ["cli", "main"]
