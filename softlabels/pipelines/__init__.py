"""Pipelines: a TOML file declaring dataset, teacher, label store and students, run by ``softlabels run``.

:func:`load_pipeline` reads and validates a file (or the embedded default, ``digits.toml``);
:func:`run_pipeline` runs the stages that are not finished yet and writes ``report.json`` and
``report.png``; :func:`format_table` renders the results table.
"""

from softlabels.pipelines.report import PipelineReport, format_table
from softlabels.pipelines.runner import run_pipeline
from softlabels.pipelines.spec import PipelineSpec, load_pipeline, parse_override

__all__ = [
    "PipelineReport",
    "PipelineSpec",
    "format_table",
    "load_pipeline",
    "parse_override",
    "run_pipeline",
]
