"""Keyword-friendly entry points re-exported as ``softlabels.<name>``.

Each takes either a ready config object or the same keywords as the config's fields, so
``softlabels.generate(dataset="digits", teacher="cnn", temperature=4, out="s.zarr", ...)`` works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from softlabels.errors import InvalidArgumentError

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from softlabels.pipelines import PipelineReport, PipelineSpec
    from softlabels.processing.generation import GenerateConfig, GenerateSummary
    from softlabels.training.config import TeacherConfig, TrainConfig, TrainSummary

ConfigT = TypeVar("ConfigT")


def generate(config: GenerateConfig | None = None, /, **options: Any) -> GenerateSummary:
    """Run a teacher over a dataset into a label store (see :class:`softlabels.GenerateConfig`)."""
    from softlabels.processing.generation import GenerateConfig
    from softlabels.processing.generation import generate as run

    return run(_config(GenerateConfig, config, options))


def train_student(config: TrainConfig | None = None, /, **options: Any) -> TrainSummary:
    """Train a student from a label store, or on hard labels with ``no_kd`` (see :class:`TrainConfig`)."""
    from softlabels.training.config import TrainConfig
    from softlabels.training.train import train_student as run

    return run(_config(TrainConfig, config, options))


def train_teacher(config: TeacherConfig | None = None, /, **options: Any) -> TrainSummary:
    """Train a teacher with cross-entropy on a dataset (see :class:`softlabels.TeacherConfig`)."""
    from softlabels.training.config import TeacherConfig
    from softlabels.training.train import train_teacher as run

    return run(_config(TeacherConfig, config, options))


def _config(kind: Callable[..., ConfigT], config: ConfigT | None, options: dict[str, Any]) -> ConfigT:
    if config is not None and options:
        extra = ", ".join(sorted(options))
        raise InvalidArgumentError(f"pass a config or keywords, not both (got {extra} too)")
    return config if config is not None else kind(**options)


def run_pipeline(
    pipeline: PipelineSpec | str | os.PathLike[str] | None = None,
    /,
    *,
    overrides: Sequence[str] = (),
    out: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PipelineReport:
    """Run a pipeline: a TOML file, a loaded :class:`PipelineSpec`, or the built-in digits pipeline (None).

    ``overrides`` are ``--set`` strings (``"students.kd.epochs=3"``) and ``out`` the output folder;
    both apply to files only. Finished stages are reused; see ``softlabels run --help``.
    """
    from softlabels.pipelines import PipelineSpec, load_pipeline
    from softlabels.pipelines import run_pipeline as run

    if isinstance(pipeline, PipelineSpec):
        if overrides or out is not None:
            raise InvalidArgumentError(
                "overrides and out apply to pipeline files; pass a file, not a PipelineSpec"
            )
        spec = pipeline
    else:
        spec = load_pipeline(pipeline, overrides=overrides, output=out)
    return run(spec, progress=progress, overwrite=overwrite)
