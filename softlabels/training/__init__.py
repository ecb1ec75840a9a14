"""Training loops (students from stored labels, teachers from hard labels), KD losses and run folders.

Names are imported lazily, so that the torch-free :mod:`softlabels.training.config` (which the
CLI imports to check its arguments) does not pull torch in through this package.
"""

from __future__ import annotations

from softlabels.lazy import lazy_attributes

_LAZY = {
    "EpochMetrics": "softlabels.training.config",
    "LoopConfig": "softlabels.training.config",
    "TeacherConfig": "softlabels.training.config",
    "TrainConfig": "softlabels.training.config",
    "TrainSummary": "softlabels.training.config",
    "cross_entropy_loss": "softlabels.training.losses",
    "distillation_loss": "softlabels.training.losses",
    "kd_loss": "softlabels.training.losses",
    "retemper": "softlabels.training.losses",
    "sampled_kd_loss": "softlabels.training.losses",
    "topk_kd_loss": "softlabels.training.losses",
    "train_student": "softlabels.training.train",
    "train_teacher": "softlabels.training.train",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
