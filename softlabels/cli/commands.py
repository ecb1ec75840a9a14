"""Imports every command module so that each attaches its commands to ``cli``."""

from softlabels.cli import store_commands  # noqa: F401
from softlabels.cli import format_commands  # noqa: F401
from softlabels.cli import student_commands  # noqa: F401
from softlabels.cli import pipeline_commands  # noqa: F401
