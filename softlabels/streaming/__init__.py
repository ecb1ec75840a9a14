"""Streaming stored soft labels with the raw samples they belong to, a whole chunk at a time."""

from softlabels.streaming.dataset import EpochPlan, ReadBlock, SoftLabelDataset

__all__ = ["EpochPlan", "ReadBlock", "SoftLabelDataset"]
