"""Pipelines: a TOML file declaring dataset, teacher, label store and students, run by ``softlabels run``.

:func:`load_pipeline` reads and validates a file (or the embedded default, ``digits.toml``);
:func:`run_pipeline` runs the stages that are not finished yet and writes ``report.json`` and
``report.png``; :func:`format_table` renders the results table.

Names are imported lazily, so that reading and checking a pipeline (:mod:`softlabels.pipelines.spec`,
:mod:`softlabels.pipelines.data`) does not import torch.
"""

from __future__ import annotations

from softlabels.lazy import lazy_attributes

_LAZY = {
    "PipelineReport": "softlabels.pipelines.report",
    "format_table": "softlabels.pipelines.report",
    "run_pipeline": "softlabels.pipelines.runner",
    "PipelineSpec": "softlabels.pipelines.spec",
    "load_pipeline": "softlabels.pipelines.spec",
    "parse_override": "softlabels.pipelines.spec",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
