"""Training loops (students from stored labels, teachers from hard labels), KD losses and run folders."""

from softlabels.training.losses import distillation_loss, kd_loss, retemper, sampled_kd_loss, topk_kd_loss
from softlabels.training.train import (
    EpochMetrics,
    TeacherConfig,
    TrainConfig,
    TrainSummary,
    train_student,
    train_teacher,
)

__all__ = [
    "EpochMetrics",
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
