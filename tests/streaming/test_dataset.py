"""SoftLabelDataset iterated sample by sample: stored rows, worker splits, the memory budget, refusal of foreign stores."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from student_helpers import row_coded_logits, write_store
from torch.utils.data import DataLoader

import softlabels.streaming.labels as labels_module
from softlabels.errors import DataError, IncompleteStoreError, InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import SampledEncoding, TopKEncoding
from softlabels.sources import DatasetSource, load_dataset
from softlabels.store import FullEncoding, LabelStore, default_chunk_rows, open_store
from softlabels.streaming.dataset import SoftLabelDataset
from softlabels.streaming.labels import decoded_row_bytes

# ------------------------------------------------------------------------------- streamed samples


def collect(dataset: SoftLabelDataset, num_workers: int = 0, batch_size: int = 50) -> list[int]:
    """Stream one epoch and check every sample against the store and the data; return the row order."""
    logits = row_coded_logits(len(dataset.source), dataset.num_classes)
    order: list[int] = []
    for inputs, labels, targets in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        assert labels.dtype == torch.float32 and targets.dtype == torch.int64
        for image, row_values, target in zip(inputs, labels, targets, strict=True):
            row = int(row_values[0])
            np.testing.assert_array_equal(row_values.numpy(), logits[row])
            expected_image, expected_label = dataset.source.dataset[row]
            assert torch.equal(image, expected_image) and int(target) == expected_label
            order.append(row)
    return order


@pytest.mark.parametrize("budget", [0, 1 << 30], ids=["streamed", "in-memory"])
def test_streamed_rows_equal_stored_rows_for_every_sample(
    digits_store: Path, digits_train: DatasetSource, budget: int
) -> None:
    dataset = SoftLabelDataset(digits_store, digits_train, memory_budget_bytes=budget)
    assert dataset.in_memory == (budget > 0)
    order = collect(dataset)
    assert sorted(order) == list(range(len(digits_train))) and len(dataset) == len(order)
    assert order != sorted(order)


@pytest.mark.parametrize("budget", [0, 1 << 30], ids=["streamed", "in-memory"])
def test_every_sample_once_per_epoch_with_workers(
    digits_store: Path, digits_train: DatasetSource, budget: int
) -> None:
    dataset = SoftLabelDataset(digits_store, digits_train, memory_budget_bytes=budget, seed=4)
    orders = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        order = collect(dataset, num_workers=2)
        assert Counter(order) == Counter(range(len(digits_train)))
        orders.append(order)
    assert orders[0] != orders[1]
    dataset.set_epoch(1)
    assert collect(dataset, num_workers=2) == orders[1]  # reproducible with the same workers


def test_order_is_reproducible_from_the_seed(digits_store: Path, digits_train: DatasetSource) -> None:
    def epoch_order(seed: int, epoch: int) -> list[int]:
        dataset = SoftLabelDataset(digits_store, digits_train, seed=seed, memory_budget_bytes=0)
        dataset.set_epoch(epoch)
        return collect(dataset, batch_size=500)

    assert epoch_order(7, 2) == epoch_order(7, 2)
    assert epoch_order(7, 2) != epoch_order(7, 3)
    assert epoch_order(7, 2) != epoch_order(8, 2)


def test_ranks_split_the_samples(digits_store: Path, digits_train: DatasetSource) -> None:
    ranks = [
        SoftLabelDataset(digits_store, digits_train, rank=rank, world_size=2, memory_budget_bytes=0)
        for rank in (0, 1)
    ]
    shares = [collect(rank) for rank in ranks]
    assert [len(share) for share in shares] == [len(rank) for rank in ranks] == [719, 719]
    # 1,437 samples: one is visited by both ranks (the padding that equalises their shares).
    assert len(set(shares[0]) & set(shares[1])) == 1
    assert set(shares[0]) | set(shares[1]) == set(range(len(digits_train)))


def record_row_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The ``[start, stop)`` of every :meth:`LabelStore.read_rows` call from now on, in order."""
    reads: list[tuple[int, int]] = []
    original = LabelStore.read_rows

    def recording(self: LabelStore, start: int, stop: int, **options: bool) -> object:
        reads.append((start, stop))
        return original(self, start, stop, **options)

    monkeypatch.setattr(LabelStore, "read_rows", recording)
    return reads


def test_labels_are_read_by_whole_chunks(
    digits_store: Path, digits_train: DatasetSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = record_row_reads(monkeypatch)
    streamed = SoftLabelDataset(digits_store, digits_train, memory_budget_bytes=0, buffer_chunks=4)
    collect(streamed)
    assert all(start % 64 == 0 and (stop % 64 == 0 or stop == len(digits_train)) for start, stop in reads)
    assert sum(stop - start for start, stop in reads) == len(digits_train)  # each chunk read once
    assert len(reads) <= 23  # 23 chunks; neighbours in a buffer are merged into one read
    reads.clear()
    whole = SoftLabelDataset(digits_store, digits_train)
    for epoch in range(3):
        whole.set_epoch(epoch)
        collect(whole)
    assert reads == [(0, len(digits_train))]  # read once, kept for later epochs


def test_pickled_dataset_carries_no_store_handle(digits_store: Path, digits_train: DatasetSource) -> None:
    dataset = SoftLabelDataset(digits_store, digits_train)
    collect(dataset)  # opens the store and loads the labels in this process
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.stored_labels is not None and copy.stored_labels.held_bytes == 0
    assert not any(isinstance(value, LabelStore) for value in vars(copy.stored_labels).values())
    assert copy.stored_labels._process.store is None
    assert len(collect(pickle.loads(pickle.dumps(dataset)))) == len(digits_train)  # reopens on demand


def test_compact_encodings_yield_dicts_of_decoded_fields(tmp_path: Path, digits_train: DatasetSource) -> None:
    logits = np.random.default_rng(0).normal(size=(len(digits_train), 10)).astype(np.float32)
    for encoding, names in (
        (TopKEncoding(3, "float32"), {"values", "indices", "log_normalizer"}),
        (SampledEncoding(samples=8, seed=1), {"indices", "counts"}),
    ):
        path = write_store(tmp_path / f"{encoding.name}.zarr", digits_train, encoding=encoding, logits=logits)
        stored = open_store(path).read_all().fields
        dataset = SoftLabelDataset(path, digits_train, shuffle=False, memory_budget_bytes=0)
        assert dataset.encoding_name == encoding.name
        _, labels, _ = next(iter(DataLoader(dataset, batch_size=len(digits_train))))
        assert set(labels) == names
        for name, values in labels.items():
            assert values.dtype == (torch.int64 if stored[name].dtype.kind in "iu" else torch.float32)
            np.testing.assert_array_equal(values.numpy(), stored[name])


def test_without_a_store_yields_hard_labels_in_the_same_kind_of_order(digits_train: DatasetSource) -> None:
    dataset = SoftLabelDataset(None, digits_train, seed=3)
    assert dataset.encoding_name is None and dataset.in_memory
    seen = []
    for _inputs, labels, targets in DataLoader(dataset, batch_size=100, num_workers=2):
        assert labels.shape == (len(targets), 0)
        seen += targets.tolist()
    assert Counter(seen) == Counter(
        int(label) for _, label in (digits_train.dataset[i] for i in range(len(digits_train)))
    )


def test_without_a_store_the_order_is_that_of_a_default_store(
    tmp_path: Path, digits_train: DatasetSource
) -> None:
    chunk_rows = default_chunk_rows(FullEncoding("float16").bytes_per_row(digits_train.num_classes))
    store = write_store(
        tmp_path / "default.zarr", digits_train, chunk_rows=chunk_rows, encoding=FullEncoding()
    )
    for budget in (0, 1 << 30):
        with_store = SoftLabelDataset(store, digits_train, seed=2, memory_budget_bytes=budget)
        without = SoftLabelDataset(None, digits_train, seed=2, memory_budget_bytes=budget)
        assert with_store.plan == without.plan and with_store.in_memory == without.in_memory
        np.testing.assert_array_equal(with_store.plan.rows(3), without.plan.rows(3))


# ------------------------------------------------------------------------------------ memory budget


@pytest.mark.parametrize(
    ("encoding", "num_classes", "row_bytes"),
    [
        (FullEncoding("float16"), 10, 10 * 4 + 8),  # 20 bytes stored
        (FullEncoding("int8"), 1000, 1000 * 4 + 8),  # 1,008 bytes stored
        (TopKEncoding(3, "float16"), 100, 3 * 4 + 3 * 8 + 4 + 8),  # values, indices, normalizer, target
        (SampledEncoding(samples=8, seed=0), 100, 8 * 8 + 8 * 4 + 8),  # indices, counts, target
    ],
)
def test_decoded_row_bytes_count_what_the_losses_get(
    encoding: FullEncoding | TopKEncoding | SampledEncoding, num_classes: int, row_bytes: int
) -> None:
    assert decoded_row_bytes(encoding, num_classes) == row_bytes


def test_memory_budget_counts_decoded_labels_not_stored_bytes(
    tmp_path: Path, digits_train: DatasetSource
) -> None:
    path = write_store(tmp_path / "f16.zarr", digits_train, encoding=FullEncoding("float16"))
    stored_bytes = FullEncoding("float16").bytes_per_row(10) * len(digits_train)
    held = open_store(path).read_all()
    decoded_bytes = sum(values.nbytes for values in held.fields.values()) + held.targets.nbytes
    assert decoded_bytes > 2 * stored_bytes
    assert not SoftLabelDataset(path, digits_train, memory_budget_bytes=stored_bytes).in_memory
    fits = SoftLabelDataset(path, digits_train, memory_budget_bytes=decoded_bytes)
    assert fits.in_memory and fits.label_bytes == decoded_bytes
    collect(fits)
    assert fits.stored_labels is not None and fits.stored_labels.held_bytes == decoded_bytes


def test_held_labels_are_filled_a_few_whole_chunks_at_a_time(
    digits_store: Path, digits_train: DatasetSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw and decoded copies of the whole store never coexist while labels are loaded."""
    reads = record_row_reads(monkeypatch)
    monkeypatch.setattr(labels_module, "HOLD_READ_BYTES", 3 * 64 * 40)  # three chunks of 64 float32 rows
    dataset = SoftLabelDataset(digits_store, digits_train)
    collect(dataset)  # every row checked against the store
    rows = len(digits_train)
    assert reads == [(start, min(start + 192, rows)) for start in range(0, rows, 192)]


# ------------------------------------------------------------------------------------------ refusals


def test_refuses_a_store_of_another_split(digits_store: Path) -> None:
    with pytest.raises(StoreMismatchError, match="split: store has 'train', data has 'test'"):
        SoftLabelDataset(digits_store, "digits", split="test")


def make_image_folder(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def test_refuses_a_store_of_another_dataset(tmp_path: Path, digits_store: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        SoftLabelDataset(digits_store, f"imagefolder:{folder}")


def test_refuses_a_store_once_a_file_changed(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    spec = f"imagefolder:{folder}"
    store = write_store(tmp_path / "images.zarr", load_dataset(spec, "train"), chunk_rows=2)
    assert len(collect(SoftLabelDataset(store, spec))) == 6
    changed = folder / "train" / "dog" / "1.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    with pytest.raises(StoreMismatchError, match="dataset fingerprint: store has '[0-9a-f]{64}', data has"):
        SoftLabelDataset(store, spec)


def test_refuses_an_incomplete_store(tmp_path: Path, digits_train: DatasetSource) -> None:
    store = write_store(tmp_path / "partial.zarr", digits_train, shards=[0, 1])
    with pytest.raises(IncompleteStoreError, match="2 of 23 shards"):
        SoftLabelDataset(store, digits_train)


def test_stops_on_a_sample_whose_label_differs_from_the_store(
    tmp_path: Path, digits_train: DatasetSource
) -> None:
    targets = np.array([digits_train.dataset[i][1] for i in range(len(digits_train))])
    targets[100] = (targets[100] + 1) % 10
    store = write_store(tmp_path / "relabelled.zarr", digits_train, targets=targets)
    with pytest.raises(DataError, match="sample 100 of digits"):
        collect(SoftLabelDataset(store, digits_train, shuffle=False))


@pytest.mark.parametrize(
    "options", [{"augment": True}, {"rank": 2, "world_size": 2}, {"memory_budget_bytes": -1}]
)
def test_refuses_bad_options(digits_store: Path, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        SoftLabelDataset(digits_store, "digits", **options)  # type: ignore[arg-type]


def test_refuses_loader_options_with_a_ready_source(digits_store: Path, digits_train: DatasetSource) -> None:
    with pytest.raises(InvalidArgumentError, match="ready DatasetSource"):
        SoftLabelDataset(digits_store, digits_train, split="train")


def test_set_epoch_refuses_negative_epochs(digits_store: Path, digits_train: DatasetSource) -> None:
    with pytest.raises(InvalidArgumentError):
        SoftLabelDataset(digits_store, digits_train).set_epoch(-1)
