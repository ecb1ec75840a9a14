"""softlabels: offline knowledge distillation with teacher soft labels in chunked Zarr stores.

The public API is imported lazily so that ``import softlabels`` (and ``softlabels --help``) stays
instant; torch and zarr load on first use of a name that needs them.
"""

from __future__ import annotations

from softlabels.lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "generate": "softlabels.api",
    "GenerateConfig": "softlabels.processing.generation",
    "EncodingSpec": "softlabels.format.encoding_spec",
    "open_store": "softlabels.store",
    "LabelStore": "softlabels.store",
    "train_student": "softlabels.api",
    "train_teacher": "softlabels.api",
    "TrainConfig": "softlabels.training.config",
    "TeacherConfig": "softlabels.training.config",
    "TrainSummary": "softlabels.training.config",
    "SoftLabelDataset": "softlabels.streaming.dataset",
    "kd_loss": "softlabels.training.losses",
    "run_pipeline": "softlabels.api",
    "load_pipeline": "softlabels.pipelines",
}

__all__ = ["__version__", *_LAZY]

__getattr__ = lazy_attributes(__name__, _LAZY)
