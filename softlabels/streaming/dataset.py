"""Stored soft labels paired with the raw samples they belong to.

:class:`SoftLabelDataset` decides, before anything is read, that a store belongs to the data
(the identity of :mod:`softlabels.format.identity` at the ``DATA`` scope), whether its labels are
held in memory or streamed (the budget counts the *decoded* arrays), and the order of every
epoch (an :class:`~softlabels.streaming.plan.EpochPlan`). It can be iterated sample by sample;
trainers use :class:`~softlabels.streaming.loader.SoftLabelLoader`, which loads the same data in
batches whose order does not depend on the number of DataLoader workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from softlabels import defaults
from softlabels.errors import DataError, InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import Encoding, cell_encoding
from softlabels.format.identity import Scope, data_identity, dataset_info, mismatches, store_identity
from softlabels.sources import DatasetSource, load_dataset
from softlabels.store import FullEncoding, LabelStore, StoreHeader, default_chunk_rows, open_store
from softlabels.streaming.labels import TARGET_BYTES, BlockLabels, Labels, StoreLabels, decoded_row_bytes
from softlabels.streaming.plan import EpochPlan, SeedStream, check_part, derive_seed
from softlabels.streaming.views import ViewReplay

__all__ = [
    "DEFAULT_BUFFER_CHUNKS",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "Labels",
    "Sample",
    "SeededInputs",
    "Target",
    "SoftLabelDataset",
    "check_store_matches",
]

DEFAULT_BUFFER_CHUNKS = defaults.BUFFER_CHUNKS
DEFAULT_MEMORY_BUDGET_BYTES = defaults.MEMORY_BUDGET_MB << 20

Target: TypeAlias = int | torch.Tensor
"""One sample's target: a class, or an int64 ``[L]`` tensor of one class per position (``-100``: ignored)."""

Sample: TypeAlias = tuple[torch.Tensor, Labels, Target]
"""``(input, soft_label_row, target)``."""


class SoftLabelDataset(IterableDataset[Sample]):
    """Raw sample ``i`` of a dataset paired with row ``i`` of a label store.

    Iterating yields ``(input, soft_label_row, target)``. ``soft_label_row`` is the stored
    ``logits`` row as a float32 tensor for a ``full`` store, and a dict of tensors (floats as
    float32, integers as int64) named by the encoding's fields for any other encoding. Without a
    store (``labels=None``, the hard-label baseline) it is an empty float32 tensor and the order
    is the one a default ``full`` float16 store of the data would get, so both runs load alike.

    **Token samples** (a language model's data, e.g. ``text:ROOT``): the input is an int64 ``[L]``
    tensor of token ids, the target an int64 ``[L]`` tensor of next tokens (``-100``: ignored
    position) and every label field has one row per position (``[L, K]``; ``[L, C]`` logits for
    ``full``); the loader stacks them to ``[B, L, ...]``. Every other target is an int.

    Before anything is read, the store must be complete and made from exactly this data (same
    split, sample and class counts, class names, dataset fingerprint and preprocessing).

    **Memory.** Labels whose decoded arrays (float32 values, int64 indices and targets: 2 to 6
    times the stored bytes) fit ``memory_budget_bytes`` are read once and held by the process
    that reads them; larger stores are streamed ``buffer_chunks`` whole chunks at a time.
    :class:`~softlabels.streaming.loader.SoftLabelLoader` reads them in the main process only, so
    the budget is what a training run holds, whatever its number of workers. Iterating this
    dataset directly in a DataLoader with ``W`` workers makes each worker read its own copy.

    **Order.** Call :meth:`set_epoch` before each epoch: the order depends only on
    ``(seed, epoch)`` and ``rank``/``world_size`` (distributed processes take contiguous shares of
    the epoch's chunk sequence, ``ceil(N / W)`` samples each, padded as
    :class:`~softlabels.streaming.plan.EpochPlan` documents). Iterated directly in a
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
        seq_len: The window length of a text dataset (``text:ROOT``); not allowed with a
            DatasetSource.
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
        seq_len: int | None = None,
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
        self.source = _resolve_source(dataset, split, data_root, augment, seq_len)
        self.views: ViewReplay | None = None
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
            target_axes = () if self.source.positions is None else (self.source.positions,)
            default_encoding = cell_encoding(FullEncoding(), target_axes)
            row_bytes = _sample_bytes(default_encoding, num_classes, target_axes)
            chunk_rows = default_chunk_rows(default_encoding.bytes_per_row(num_classes))
        else:
            store = open_store(self.location)
            check_store_matches(store.header, self.source, self.location)
            self.answered = _answered_rows(store, self.location)
            self.header = store.header
            self.views = _view_replay(store, self.source, seed, self.location)
            self.encoding = store.encoding
            self.temperature = store.temperature
            row_bytes = _sample_bytes(store.encoding, num_classes, store.layout.target_axes)
            chunk_rows = store.layout.chunk_rows
        self.inputs = SeededInputs(self.source, seed, self.views)
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

    def check_target(self, row: int, data_label: Any, stored_label: Any) -> None:
        """Refuse a sample whose label in the data differs from the store's target.

        Labels are classes, or arrays of one class per position (language models).

        Raises:
            DataError: naming the sample, both labels (or the first position where they differ)
                and the store.
        """
        data, stored = np.asarray(data_label), np.asarray(stored_label)
        if data.shape == stored.shape and np.array_equal(data, stored):
            return
        sample = f"sample {row} of {self.source.spec} [{self.source.split}]"
        changed = "the data changed since the labels were made"
        if data.shape != stored.shape:
            raise DataError(
                f"{sample} has targets of shape {list(data.shape)} but the store {self.location} has "
                f"{list(stored.shape)}; {changed}"
            )
        if data.ndim == 0:
            raise DataError(
                f"{sample} has label {data} but the store {self.location} has {stored}; {changed}"
            )
        first = int(np.flatnonzero(data.reshape(-1) != stored.reshape(-1))[0])
        raise DataError(
            f"{sample} has label {data.reshape(-1)[first]} at position {first} but the store "
            f"{self.location} has {stored.reshape(-1)[first]}; {changed}"
        )

    def _sample(self, epoch: int, row: int, position: int, loaded: BlockLabels | None) -> Sample:
        sample_input, label = self.inputs[epoch, row]
        if loaded is None:
            return sample_input, torch.empty(0, dtype=torch.float32), _target(label)
        stored = loaded.targets[position]
        self.check_target(row, label, stored)
        # A store of views: the row of the view this sample shows in this epoch (the input is that view).
        cell = position if self.views is None else (position, self.views.view_of(epoch, row))
        return (
            sample_input,
            _label_row(loaded.fields, cell, full=self.encoding_name == "full"),
            _target(stored),
        )

    def shown_views(
        self, epoch: int, rows: np.ndarray, fields: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """``fields`` of ``rows`` (``[n, V, ...]`` for a store of views) cut to the view each row shows in ``epoch``.

        Unchanged for a store without views.
        """
        if self.views is None:
            return fields
        chosen = self.views.views_of(epoch, rows)
        every = np.arange(len(chosen))
        return {name: values[every, chosen] for name, values in fields.items()}


class SeededInputs(Dataset[tuple[torch.Tensor, int]]):
    """The raw samples of a source, keyed by ``(epoch, row)``.

    A random augmentation draws from a torch generator seeded with ``(seed, epoch, row)`` (the
    caller's random state is restored afterwards), so a sample is augmented the same way whichever
    process loads it, however many workers there are, and after a resume. With ``views`` (a store
    of augmented views), each sample is instead the stored view it shows in that epoch, replayed.

    :meth:`batch` loads a whole batch: in one call when the dataset fetches batches (a plug-in
    with ``get_batch``, see :class:`~softlabels.sources.plugin_datasets.PluginDataset`) and is not
    augmented, else sample by sample, stacked as a DataLoader stacks them.
    """

    def __init__(self, source: DatasetSource, seed: int, views: ViewReplay | None = None) -> None:
        self.dataset = source.dataset
        self.views = views
        self.augmented = source.augmented
        self.seed = seed
        self.num_samples = len(source)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, row = key
        if self.views is not None:
            image, label = self.dataset[row]
            return self.views.apply(image, epoch, row), label
        if not self.augmented:
            return self.dataset[row]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, epoch, SeedStream.AUGMENTATION, row))
            return self.dataset[row]

    @property
    def fetches_batches(self) -> bool:
        """Whether :meth:`batch` loads a batch in one call (no per-sample Python path)."""
        return (
            not self.augmented
            and self.views is None
            and bool(getattr(self.dataset, "fetches_batches", False))
        )

    def batch(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked inputs and targets of ``keys`` (``(epoch, row)`` pairs), the same either way."""
        if self.fetches_batches:
            inputs, targets = self.dataset.get_batch([row for _, row in keys])  # type: ignore[attr-defined]
            return inputs, targets
        inputs, targets = default_collate([self[key] for key in keys])
        return inputs, targets


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


def _view_replay(store: LabelStore, source: DatasetSource, seed: int, location: str) -> ViewReplay | None:
    """The replay of a store's views, or None for a store without views.

    Raises:
        InvalidArgumentError: the data are augmented too (the stored views are the augmentation).
    """
    if store.layout.views is None:
        return None
    if source.augmented:
        raise InvalidArgumentError(
            f"{location} holds augmented views that the student replays; augmenting the data as well "
            "would pair inputs with labels of other views (turn augmentation off)"
        )
    return ViewReplay.from_store(store, tuple(source.input_shape), seed)


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
    dataset: str | DatasetSource,
    split: str | None,
    data_root: str | None,
    augment: bool | None,
    seq_len: int | None,
) -> DatasetSource:
    if isinstance(dataset, DatasetSource):
        if split is not None or data_root is not None or augment is not None or seq_len is not None:
            raise InvalidArgumentError(
                "split, data_root, augment and seq_len belong to load_dataset; a ready DatasetSource "
                "already has them"
            )
        return dataset
    source = load_dataset(
        dataset, split or defaults.TRAIN_SPLIT, data_root=data_root, augment=bool(augment), seq_len=seq_len
    )
    if augment and not source.augmented:
        raise InvalidArgumentError(
            f"dataset {dataset} cannot be augmented (only imagefolder: and torchvision: image files can)"
        )
    if len(source) == 0:
        raise DataError(f"dataset {dataset} [{source.split}] has no samples")
    return source


def _label_row(fields: Mapping[str, np.ndarray], position: int | tuple[int, int], *, full: bool) -> Labels:
    if full:
        return _row_tensor(fields["logits"][position])
    return {name: _row_tensor(values[position]) for name, values in fields.items()}


def _sample_bytes(encoding: Encoding, num_classes: int, target_axes: tuple[int, ...]) -> int:
    """Bytes one sample's decoded labels take: its rows (every cell's, for an encoding of whole
    samples) and its targets (one per position of a token sample)."""
    return decoded_row_bytes(encoding, num_classes) + TARGET_BYTES * (math.prod(target_axes) - 1)


def _target(label: Any) -> Target:
    """A class as an int; per-position classes as an int64 tensor (a copy, never a view of a block)."""
    array = np.asarray(label)
    return int(array) if array.ndim == 0 else torch.from_numpy(np.array(array, dtype=np.int64))


def _row_tensor(row: Any) -> torch.Tensor:
    """A copy of one row (never a view pinning the whole block): floats as float32, integers as int64."""
    array = np.asarray(row)
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else np.int64))
