"""Students: streaming soft-label datasets, distillation losses and training loops."""

from softlabels.student.dataset import EpochPlan, ReadBlock, SoftLabelDataset
from softlabels.student.losses import distillation_loss, kd_loss, retemper, sampled_kd_loss, topk_kd_loss
from softlabels.student.train import (
    EpochMetrics,
    TeacherConfig,
    TrainConfig,
    TrainSummary,
    train_student,
    train_teacher,
)

__all__ = [
    "EpochMetrics",
    "EpochPlan",
    "ReadBlock",
    "SoftLabelDataset",
    "TeacherConfig",
    "TrainConfig",
    "TrainSummary",
    "distillation_loss",
    "kd_loss",
    "retemper",
    "sampled_kd_loss",
    "topk_kd_loss",
    "train_student",
    "train_teacher",
]
