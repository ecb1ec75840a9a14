"""Stored soft labels paired with the raw samples they belong to.

:class:`SoftLabelDataset` decides, before anything is read, that a store belongs to the data
(the identity of :mod:`softlabels.format.identity` at the ``DATA`` scope), whether its labels are
held in memory or streamed (the budget counts the *decoded* arrays), and the order of every
epoch (an :class:`~softlabels.streaming.plan.EpochPlan`). It can be iterated sample by sample;
trainers use :class:`~softlabels.streaming.loader.SoftLabelLoader`, which loads the same data in
batches whose order does not depend on the number of DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from softlabels import defaults
from softlabels.errors import DataError, InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import Encoding
from softlabels.format.identity import Scope, data_identity, dataset_info, mismatches, store_identity
from softlabels.sources import DatasetSource, load_dataset
from softlabels.store import FullEncoding, LabelStore, StoreHeader, default_chunk_rows, open_store
from softlabels.streaming.labels import BlockLabels, Labels, StoreLabels, decoded_row_bytes
from softlabels.streaming.plan import EpochPlan, SeedStream, check_part, derive_seed

__all__ = [
    "DEFAULT_BUFFER_CHUNKS",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "Labels",
    "Sample",
    "SeededInputs",
    "SoftLabelDataset",
    "check_store_matches",
]

DEFAULT_BUFFER_CHUNKS = defaults.BUFFER_CHUNKS
DEFAULT_MEMORY_BUDGET_BYTES = defaults.MEMORY_BUDGET_MB << 20

Sample: TypeAlias = tuple[torch.Tensor, Labels, int]
"""``(input, soft_label_row, target)``."""


class SoftLabelDataset(IterableDataset[Sample]):
    """Raw sample ``i`` of a dataset paired with row ``i`` of a label store.

    Iterating yields ``(input, soft_label_row, target)``. ``soft_label_row`` is the stored
    ``logits`` row as a float32 tensor for a ``full`` store, and a dict of tensors (floats as
    float32, integers as int64) named by the encoding's fields for any other encoding. Without a
    store (``labels=None``, the hard-label baseline) it is an empty float32 tensor and the order
    is the one a default ``full`` float16 store of the data would get, so both runs load alike.

    Before anything is read, the store must be complete and made from exactly this data (same
    split, sample and class counts, class names, dataset fingerprint and preprocessing).

    **Memory.** Labels whose decoded arrays (float32 values, int64 indices and targets: 2 to 6
    times the stored bytes) fit ``memory_budget_bytes`` are read once and held by the process
    that reads them; larger stores are streamed ``buffer_chunks`` whole chunks at a time.
    :class:`~softlabels.streaming.loader.SoftLabelLoader` reads them in the main process only, so
    the budget is what a training run holds, whatever its number of workers. Iterating this
    dataset directly in a DataLoader with ``W`` workers makes each worker read its own copy.

    **Order.** Call :meth:`set_epoch` before each epoch: the order depends only on
    ``(seed, epoch)`` and ``rank``/``world_size`` (distributed processes take disjoint shares of
    the chunks; equalising per-rank batch counts is the caller's job). Iterated directly in a
    DataLoader with workers, the workers split the rank's blocks, so the interleaving of samples
    also depends on the number of workers (the batched loader's does not).

    Args:
        labels: The label store location, or None for the store-less hard-label mode.
        dataset: A dataset spec (see :func:`softlabels.sources.load_dataset`) or a ready
            :class:`DatasetSource`.
        split: The split of a spec (default ``train``); not allowed with a DatasetSource.
        data_root: Root of ``torchvision:`` data; not allowed with a DatasetSource.
        augment: Random crop + flip of image-file samples for the student (off by default:
            stored labels describe the unaugmented sample); not allowed with a DatasetSource.
            The crop and flip of a sample are drawn from ``(seed, epoch, row)``.
        shuffle: Shuffle chunks and rows (off: store order).
        seed: Seed of the shuffles and augmentations, in ``[0, 2**64)``.
        buffer_chunks: Chunks read and shuffled together when streaming.
        memory_budget_bytes: Labels whose decoded arrays take at most this many bytes are read
            whole, once, instead of streamed.
        rank: This process's rank among ``world_size`` distributed processes.
        world_size: Number of distributed processes.

    Raises:
        StoreNotFoundError, StoreFormatError: ``labels`` is not a readable store.
        IncompleteStoreError: The store has unwritten shards.
        StoreMismatchError: The store was made from other data; the message names what differs.
        InvalidArgumentError: A bad option, e.g. ``augment`` for a source that cannot augment.

    Attributes:
        source: The raw data.
        inputs: The raw samples keyed by ``(epoch, row)`` (what DataLoader workers load).
        location: The store location (None without a store).
        header: The store's header, with its provenance (None without a store).
        encoding: The store's row encoding (None without a store).
        temperature: The temperature the rows were stored at (None without a store).
        label_bytes: Bytes of every decoded label row and target (what holding them costs).
        in_memory: Whether ``label_bytes`` fit the memory budget, so the labels are held whole.
        plan: The chunk-aware order of every epoch.
        answered: For a store with an answered mask (private labels), one bool per row: rows
            marked False hold no label and are skipped (by iteration and by the batched loader),
            so an epoch yields fewer samples than ``len``; None for every other store.
    """

    def __init__(
        self,
        labels: str | os.PathLike[str] | None,
        dataset: str | DatasetSource,
        *,
        split: str | None = None,
        data_root: str | None = None,
        augment: bool | None = None,
        shuffle: bool = True,
        seed: int = defaults.SEED,
        buffer_chunks: int = DEFAULT_BUFFER_CHUNKS,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        check_part(rank, world_size)
        if memory_budget_bytes < 0:
            raise InvalidArgumentError(f"the memory budget must be >= 0 bytes, got {memory_budget_bytes}")
        self.source = _resolve_source(dataset, split, data_root, augment)
        self.inputs = SeededInputs(self.source, seed)
        self.location = None if labels is None else os.fspath(labels)
        self.rank = rank
        self.world_size = world_size
        self._epoch = 0
        num_classes = self.source.num_classes
        if self.location is None:
            self.header: StoreHeader | None = None
            self.answered: np.ndarray | None = None
            self.encoding: Encoding | None = None
            self.temperature: float | None = None
            # As if stored: a default ``full`` float16 store of this data, chunked as ``generate`` would.
            row_bytes = decoded_row_bytes(FullEncoding(), num_classes)
            chunk_rows = default_chunk_rows(FullEncoding().bytes_per_row(num_classes))
        else:
            store = open_store(self.location)
            check_store_matches(store.header, self.source, self.location)
            self.answered = _answered_rows(store, self.location)
            self.header = store.header
            self.encoding = store.encoding
            self.temperature = store.temperature
            row_bytes = decoded_row_bytes(store.encoding, num_classes)
            chunk_rows = store.layout.chunk_rows
        self.label_bytes = row_bytes * len(self.source)
        self.in_memory = self.label_bytes <= memory_budget_bytes
        self.stored_labels = (
            None if self.location is None else StoreLabels(self.location, hold=self.in_memory)
        )
        self.plan = EpochPlan(
            len(self.source),
            chunk_rows,
            seed=seed,
            shuffle=shuffle,
            buffer_chunks=buffer_chunks,
            whole=self.in_memory,
        )

    @property
    def encoding_name(self) -> str | None:
        """The store's encoding (``full``, ``topk``, ...), or None without a store."""
        return None if self.encoding is None else self.encoding.name

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows."""
        if epoch < 0:
            raise InvalidArgumentError(f"epochs count from 0, got {epoch}")
        self._epoch = epoch

    def __len__(self) -> int:
        """Samples this rank visits in the current epoch (over all of its workers)."""
        return self.plan.num_rows_of(self._epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = self._epoch
        for block in self.plan.worker_blocks(epoch, self.rank, self.world_size, worker, num_workers):
            loaded = None if self.stored_labels is None else self.stored_labels.load(block)
            for row, position in zip(block.rows.tolist(), block.positions().tolist(), strict=True):
                if self.answered is None or self.answered[row]:
                    yield self._sample(epoch, row, position, loaded)

    def check_target(self, row: int, data_label: int, stored_label: int) -> None:
        """Refuse a sample whose label in the data differs from the store's target.

        Raises:
            DataError: naming the sample, both labels and the store.
        """
        if data_label != stored_label:
            raise DataError(
                f"sample {row} of {self.source.spec} [{self.source.split}] has label {data_label} but "
                f"the store {self.location} has {stored_label}; the data changed since the labels were made"
            )

    def _sample(self, epoch: int, row: int, position: int, loaded: BlockLabels | None) -> Sample:
        image, label = self.inputs[epoch, row]
        if loaded is None:
            return image, torch.empty(0, dtype=torch.float32), int(label)
        target = int(loaded.targets[position])
        self.check_target(row, int(label), target)
        return image, _label_row(loaded.fields, position, full=self.encoding_name == "full"), target


class SeededInputs(Dataset[tuple[torch.Tensor, int]]):
    """The raw samples of a source, keyed by ``(epoch, row)``.

    A random augmentation draws from a torch generator seeded with ``(seed, epoch, row)`` (the
    caller's random state is restored afterwards), so a sample is augmented the same way whichever
    process loads it, however many workers there are, and after a resume.
    """

    def __init__(self, source: DatasetSource, seed: int) -> None:
        self.dataset = source.dataset
        self.augmented = source.augmented
        self.seed = seed
        self.num_samples = len(source)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, row = key
        if not self.augmented:
            return self.dataset[row]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, epoch, SeedStream.AUGMENTATION, row))
            return self.dataset[row]


def check_store_matches(header: StoreHeader, source: DatasetSource, location: str) -> None:
    """Prove that the store's rows belong to ``source``, sample for sample.

    Raises:
        StoreMismatchError: naming every property that differs.
    """
    found = mismatches(
        store_identity(header, Scope.DATA),
        data_identity(dataset_info(source)),
        have_name="store",
        want_name="data",
    )
    if found:
        raise StoreMismatchError(
            f"{location} was made from other data than {source.spec} [{source.split}] ({'; '.join(found)})"
        )


def _answered_rows(store: LabelStore, location: str) -> np.ndarray | None:
    """The store's answered mask, or None when every row holds a label.

    Raises:
        DataError: no row of the store holds a label.
    """
    if not store.layout.answered_mask:
        return None
    answered = store.answered
    if not answered.any():
        raise DataError(f"{location} holds no answered row: there is nothing to train on")
    return answered


def _resolve_source(
    dataset: str | DatasetSource, split: str | None, data_root: str | None, augment: bool | None
) -> DatasetSource:
    if isinstance(dataset, DatasetSource):
        if split is not None or data_root is not None or augment is not None:
            raise InvalidArgumentError(
                "split, data_root and augment belong to load_dataset; a ready DatasetSource already has them"
            )
        return dataset
    source = load_dataset(dataset, split or defaults.TRAIN_SPLIT, data_root=data_root, augment=bool(augment))
    if augment and not source.augmented:
        raise InvalidArgumentError(
            f"dataset {dataset} cannot be augmented (only imagefolder: and torchvision: image files can)"
        )
    if len(source) == 0:
        raise DataError(f"dataset {dataset} [{source.split}] has no samples")
    return source


def _label_row(fields: Mapping[str, np.ndarray], position: int, *, full: bool) -> Labels:
    if full:
        return _row_tensor(fields["logits"][position])
    return {name: _row_tensor(values[position]) for name, values in fields.items()}


def _row_tensor(row: Any) -> torch.Tensor:
    """A copy of one row (never a view pinning the whole block): floats as float32, integers as int64."""
    array = np.asarray(row)
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else np.int64))
