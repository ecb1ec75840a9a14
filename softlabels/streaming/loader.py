"""Batches of a :class:`SoftLabelDataset` whose order and contents do not depend on the worker count.

The epoch plan fixes the rank's sequence of rows from ``(seed, epoch)``; a batch sampler cuts it
into batches, the DataLoader's workers load only the raw inputs of those batches (in order; in one
call per batch from a dataset that fetches batches, such as a plug-in with ``get_batch``), and
the main process gathers the matching labels a whole batch at a time, from labels held once or
from blocks of whole chunks read ahead on a thread. So:

* the batches, and a model trained on them, are the same with 0, 1 or any number of workers;
* labels are read once per run when they fit the budget (workers persist across epochs and never
  hold labels), and streamed blocks are read once per epoch;
* every batch's targets are checked against the data's labels;
* rows a store marks unanswered (private labels) are dropped from their batch, which may then be
  shorter (and is skipped when empty).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from softlabels.errors import InvalidArgumentError
from softlabels.streaming.dataset import SeededInputs, SoftLabelDataset
from softlabels.streaming.labels import LabelBatch, Labels, label_batches, label_tensors
from softlabels.streaming.plan import SeedStream, derive_seed

__all__ = ["Batch", "SoftLabelLoader"]

Batch = tuple[torch.Tensor, Labels, torch.Tensor]
"""``(inputs, labels, targets)``: labels as :class:`SoftLabelDataset` yields them, stacked."""


class _PlanBatchSampler(Sampler[list[tuple[int, int]]]):
    """The rank's rows of one epoch cut into batches, as ``(epoch, row)`` keys for the workers."""

    def __init__(self, dataset: SoftLabelDataset, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.epoch = dataset.epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rows = self.dataset.plan.rows(self.epoch, self.dataset.rank, self.dataset.world_size).tolist()
        for start in range(0, len(rows), self.batch_size):
            yield [(self.epoch, row) for row in rows[start : start + self.batch_size]]

    def __len__(self) -> int:
        samples = self.dataset.plan.num_rows_of(self.epoch, self.dataset.rank, self.dataset.world_size)
        return math.ceil(samples / self.batch_size)


class _BatchInputs(Dataset[tuple[torch.Tensor, Any]]):
    """The raw inputs of whole batches: the DataLoader calls ``__getitems__`` once per batch.

    So a dataset that fetches batches is called once per batch instead of once per sample; any
    other is read sample by sample and stacked here, as the DataLoader would.
    """

    def __init__(self, inputs: SeededInputs) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, Any]:
        return self.inputs[key]

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs.batch(keys)


def _already_stacked(batch: Any) -> Any:
    """The DataLoader's collate step: ``_BatchInputs.__getitems__`` already stacked the batch."""
    return batch


class SoftLabelLoader:
    """Iterates one epoch of ``(inputs, labels, targets)`` batches of ``dataset`` per pass.

    Each pass follows ``dataset.epoch`` (call ``dataset.set_epoch`` before it). With workers, they
    are started on the first pass and kept for the next ones; :meth:`close` (or leaving a ``with``
    block) stops them.

    Args:
        dataset: The samples and labels.
        batch_size: Samples per batch; the last batch of an epoch may be smaller.
        num_workers: DataLoader worker processes loading raw inputs (0: in this process).
        pin_memory: Pin the inputs for faster copies to an accelerator.
        read_ahead: Read the next block of a streamed store on a thread while the current one is used.
        prefetch_factor: Batches each worker loads ahead (DataLoader's setting; only with workers).

    Raises:
        InvalidArgumentError: ``batch_size`` < 1 or ``num_workers`` < 0.
    """

    def __init__(
        self,
        dataset: SoftLabelDataset,
        batch_size: int,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        read_ahead: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError(f"the batch size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise InvalidArgumentError(f"the number of workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.read_ahead = read_ahead
        self._sampler = _PlanBatchSampler(dataset, batch_size)
        # A generator of its own keeps the DataLoader from drawing on the global random state,
        # which would then differ between runs with and without workers.
        generator = torch.Generator()
        generator.manual_seed(derive_seed(dataset.plan.seed, 0, SeedStream.LOADER))
        self._loader: DataLoader[Any] = DataLoader(
            _BatchInputs(dataset.inputs),
            batch_sampler=self._sampler,
            collate_fn=_already_stacked,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            generator=generator,
        )

    def __len__(self) -> int:
        """Batches in the current epoch."""
        self._sampler.epoch = self.dataset.epoch
        return len(self._sampler)

    def __iter__(self) -> Iterator[Batch]:
        self._sampler.epoch = epoch = self.dataset.epoch
        stored = self.dataset.stored_labels
        if stored is None:
            for inputs, targets in self._loader:
                yield inputs, torch.empty((len(targets), 0), dtype=torch.float32), targets
            return
        blocks = self.dataset.plan.blocks(epoch, self.dataset.rank, self.dataset.world_size)
        labels = label_batches(blocks, self.batch_size, stored.load, read_ahead=self.read_ahead)
        full = self.dataset.encoding_name == "full"
        answered = self.dataset.answered
        for (inputs, targets), batch in zip(self._loader, labels, strict=True):
            self._check_targets(batch, targets)
            # A store of views: each row's label is that of the view its input was replayed as.
            shown = self.dataset.shown_views(epoch, batch.rows, batch.fields)
            if answered is None:
                yield inputs, label_tensors(shown, full=full), targets
                continue
            # Rows without a label (refused or unasked private queries) leave the batch here, so
            # every loss sees answered rows only; a batch with none is skipped.
            keep = answered[batch.rows]
            if keep.any():
                fields = {name: values[keep] for name, values in shown.items()}
                index = torch.from_numpy(np.flatnonzero(keep))
                yield inputs[index], label_tensors(fields, full=full), targets[index]

    def close(self) -> None:
        """Stop the persistent workers (a later pass starts new ones)."""
        # DataLoader has no public way to stop persistent workers; dropping its iterator is what
        # its own finaliser does.
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._loader._iterator = None

    def __enter__(self) -> SoftLabelLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_targets(self, batch: LabelBatch, targets: torch.Tensor) -> None:
        data = targets.numpy()
        if data.shape != batch.targets.shape:
            self.dataset.check_target(int(batch.rows[0]), data[0], batch.targets[0])
        # One flag per sample, whether its target is a label or a row of per-position labels.
        differ = np.flatnonzero((batch.targets != data).reshape(len(data), -1).any(axis=1))
        if differ.size:
            first = int(differ[0])
            self.dataset.check_target(int(batch.rows[first]), data[first], batch.targets[first])
