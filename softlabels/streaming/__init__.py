"""Streaming stored soft labels with the raw samples they belong to, a whole chunk at a time.

``plan`` fixes every epoch's order, ``labels`` reads the store (held once or streamed),
``dataset`` pairs rows with samples and checks that they belong together, and ``loader`` makes
the batches a trainer uses, in an order independent of the number of DataLoader workers.
"""

from softlabels.streaming.dataset import SoftLabelDataset
from softlabels.streaming.loader import SoftLabelLoader
from softlabels.streaming.plan import EpochPlan, ReadBlock

__all__ = ["EpochPlan", "ReadBlock", "SoftLabelDataset", "SoftLabelLoader"]
