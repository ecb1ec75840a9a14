"""Imports every command module so that each attaches its commands to ``cli``."""

from softlabels.cli import (
    ensemble_commands,  # noqa: F401
    format_commands,  # noqa: F401
    pipeline_commands,  # noqa: F401
    sharing_commands,  # noqa: F401
    store_commands,  # noqa: F401
    student_commands,  # noqa: F401
)
