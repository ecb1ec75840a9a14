"""Where a pipeline's inputs are, checked before anything runs (and before torch is imported).

Shipped pipelines name their data through documented places rather than paths of one machine:
an image folder under ``~/.cache/softlabels`` and, to fill it on first use, an archive in the
folder named by the ``SOFTLABELS_DATASETS`` environment variable (``$SOFTLABELS_DATASETS`` in a
pipeline path is expanded like ``~``). When the data is missing, the error says which settings
provide it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from softlabels.errors import PipelineError
from softlabels.pipelines.spec import PipelineSpec

__all__ = ["DATASETS_ENV", "check_inputs"]

DATASETS_ENV = "SOFTLABELS_DATASETS"
"""The folder that holds dataset archives (``cifar10-jpeg.tar.gz``), for pipelines and tests."""

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def check_inputs(spec: PipelineSpec) -> None:
    """Refuse missing inputs now rather than after an hour of teacher training.

    Raises:
        PipelineError: The image folder (and any archive to fill it), a data root or the teacher's
            weights are missing; ``suggestions`` holds ``key=value`` settings that would provide them.
    """
    data = spec.dataset
    if data.archive is not None:
        _check_archive(spec, Path(data.root or ""), data.archive)
    elif data.root is not None and not Path(data.root).is_dir():
        unset = _unset_variables(data.root)
        why = f" ({', '.join(unset)} is not set)" if unset else ""
        raise PipelineError(
            f"{spec.source}: dataset.root: no such folder {data.root}{why}",
            suggestions=("dataset.root=/path/to/your/data",),
        )
    if spec.teacher.weights is not None and not Path(spec.teacher.weights).is_file():
        raise PipelineError(
            f"{spec.source}: teacher.weights: no such file {spec.teacher.weights} (leave teacher.weights out "
            "to train the teacher in this pipeline)"
        )


def _check_archive(spec: PipelineSpec, root: Path, archive: str) -> None:
    """The folder ``root`` must hold an unpacked copy, or ``archive`` must exist to make one."""
    if (root / "train").is_dir() or Path(archive).is_file():
        return
    unset = _unset_variables(archive)
    why = f"{', '.join(unset)} is not set" if unset else f"no such file {archive}"
    name = Path(archive).name
    raise PipelineError(
        f"{spec.source}: dataset: no images in {root} (train/<class>/<image>, test/<class>/<image>) and "
        f"dataset.archive: {why}; give an unpacked copy (dataset.root) or the archive {name} "
        f"(dataset.archive, or {DATASETS_ENV} set to the folder that holds it)",
        suggestions=(f"dataset.root=/path/to/{root.name or 'images'}", f"dataset.archive=/path/to/{name}"),
    )


def _unset_variables(path: str) -> list[str]:
    """The ``$NAME`` / ``${NAME}`` variables left in ``path`` because the environment lacks them."""
    names = [first or second for first, second in _VARIABLE.findall(path)]
    return [name for name in dict.fromkeys(names) if name not in os.environ]
