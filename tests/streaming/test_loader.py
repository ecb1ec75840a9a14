"""SoftLabelLoader: batches independent of the worker count, labels read once, checked targets."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from student_helpers import row_coded_logits, write_store

from softlabels.errors import DataError, InvalidArgumentError
from softlabels.format.encodings import TopKEncoding
from softlabels.sources import DatasetSource, load_dataset
from softlabels.store import LabelStore, open_store
from softlabels.streaming import SoftLabelDataset, SoftLabelLoader

BUDGETS = pytest.mark.parametrize("budget", [0, 1 << 30], ids=["streamed", "in-memory"])


def epoch_batches(loader: SoftLabelLoader, epoch: int) -> list[tuple[torch.Tensor, Any, torch.Tensor]]:
    loader.dataset.set_epoch(epoch)
    return list(loader)


def rows_of(batches: list[tuple[torch.Tensor, Any, torch.Tensor]]) -> list[int]:
    """Row-coded full stores: the first logit of a stored row is its row number."""
    return [int(row) for _, labels, _ in batches for row in labels[:, 0]]


def assert_same_batches(
    first: list[tuple[torch.Tensor, Any, torch.Tensor]], second: list[tuple[torch.Tensor, Any, torch.Tensor]]
) -> None:
    assert len(first) == len(second)
    for (inputs_a, labels_a, targets_a), (inputs_b, labels_b, targets_b) in zip(first, second, strict=True):
        assert torch.equal(inputs_a, inputs_b) and torch.equal(labels_a, labels_b)
        assert torch.equal(targets_a, targets_b)


def record_reads(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Append every label read to ``log``, from whichever process reads (workers included)."""
    original = LabelStore.read_rows

    def recording(self: LabelStore, start: int, stop: int, **options: bool) -> Any:
        with log.open("a") as file:
            file.write(f"{start} {stop}\n")
        return original(self, start, stop, **options)

    monkeypatch.setattr(LabelStore, "read_rows", recording)


def reads(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [
        (int(start), int(stop)) for start, stop in (line.split() for line in log.read_text().splitlines())
    ]


@BUDGETS
def test_batches_do_not_depend_on_the_number_of_workers(
    digits_store: Path, digits_train: DatasetSource, budget: int
) -> None:
    logits = row_coded_logits(len(digits_train), 10)
    runs = []
    for num_workers in (0, 1, 2):
        dataset = SoftLabelDataset(digits_store, digits_train, seed=6, memory_budget_bytes=budget)
        with SoftLabelLoader(dataset, 100, num_workers=num_workers) as loader:
            runs.append([epoch_batches(loader, epoch) for epoch in (0, 1)])
    for run in runs[1:]:
        for epoch in (0, 1):
            assert_same_batches(runs[0][epoch], run[epoch])
    for epoch, batches in enumerate(runs[0]):
        dataset.set_epoch(epoch)
        assert rows_of(batches) == dataset.plan.rows(epoch).tolist()  # the plan's order, cut into batches
        sizes = [len(targets) for _, _, targets in batches]
        assert sizes == [100] * (len(digits_train) // 100) + [len(digits_train) % 100]
        for inputs, labels, targets in batches:
            rows = labels[:, 0].long().tolist()
            np.testing.assert_array_equal(labels.numpy(), logits[rows])
            expected = [digits_train.dataset[row] for row in rows]
            assert torch.equal(inputs, torch.stack([image for image, _ in expected]))
            assert targets.tolist() == [label for _, label in expected]
    assert rows_of(runs[0][0]) != rows_of(runs[0][1])


def test_in_memory_labels_are_read_once_per_run_by_the_main_process(
    tmp_path: Path, digits_store: Path, digits_train: DatasetSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reads.txt"
    record_reads(monkeypatch, log)
    dataset = SoftLabelDataset(digits_store, digits_train)
    assert dataset.in_memory
    with SoftLabelLoader(dataset, 128, num_workers=2) as loader:
        for epoch in range(3):
            assert len(rows_of(epoch_batches(loader, epoch))) == len(digits_train)
    assert reads(log) == [(0, len(digits_train))]


def test_streamed_labels_are_read_by_whole_chunks_once_per_epoch(
    tmp_path: Path, digits_store: Path, digits_train: DatasetSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reads.txt"
    record_reads(monkeypatch, log)
    dataset = SoftLabelDataset(digits_store, digits_train, memory_budget_bytes=0, buffer_chunks=3)
    with SoftLabelLoader(dataset, 50, num_workers=2) as loader:
        epoch_batches(loader, 0)
        first = reads(log)
        epoch_batches(loader, 1)
    assert all(start % 64 == 0 and (stop % 64 == 0 or stop == len(digits_train)) for start, stop in first)
    covered = sorted(row for start, stop in first for row in range(start, stop))
    assert covered == list(range(len(digits_train)))  # every chunk once in the epoch
    assert len(reads(log)) > len(first)  # streamed again in the next epoch


def test_workers_persist_and_close_stops_them(digits_store: Path, digits_train: DatasetSource) -> None:
    loader = SoftLabelLoader(SoftLabelDataset(digits_store, digits_train), 256, num_workers=2)
    before = set(multiprocessing.active_children())
    epoch_batches(loader, 0)
    workers = set(multiprocessing.active_children()) - before
    assert len(workers) == 2
    epoch_batches(loader, 1)
    assert set(multiprocessing.active_children()) - before == workers  # the same processes
    loader.close()
    deadline = time.monotonic() + 10
    while any(worker.is_alive() for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(worker.is_alive() for worker in workers)


def test_ranks_take_disjoint_shares(digits_store: Path, digits_train: DatasetSource) -> None:
    shares = []
    for rank in (0, 1):
        dataset = SoftLabelDataset(digits_store, digits_train, rank=rank, world_size=2, memory_budget_bytes=0)
        shares.append(rows_of(epoch_batches(SoftLabelLoader(dataset, 64), 2)))
        assert len(shares[-1]) == len(dataset) == 719
    # 1,437 samples: one is visited by both ranks (the padding that equalises their shares).
    assert len(set(shares[0]) & set(shares[1])) == 1
    assert set(shares[0]) | set(shares[1]) == set(range(len(digits_train)))


def test_compact_encodings_come_as_dicts_of_decoded_fields(
    tmp_path: Path, digits_train: DatasetSource
) -> None:
    logits = np.random.default_rng(0).normal(size=(len(digits_train), 10)).astype(np.float32)
    path = write_store(
        tmp_path / "topk.zarr", digits_train, encoding=TopKEncoding(3, "float16"), logits=logits
    )
    stored = open_store(path).read_all().fields
    dataset = SoftLabelDataset(path, digits_train, shuffle=False, memory_budget_bytes=0)
    (_, labels, _), *_ = epoch_batches(SoftLabelLoader(dataset, len(digits_train)), 0)
    assert set(labels) == {"values", "indices", "log_normalizer"}
    for name, values in labels.items():
        assert values.dtype == (torch.int64 if name == "indices" else torch.float32)
        np.testing.assert_array_equal(values.numpy(), stored[name])


def test_without_a_store_batches_carry_hard_labels(digits_train: DatasetSource) -> None:
    dataset = SoftLabelDataset(None, digits_train, seed=3)
    seen = []
    for _, labels, targets in epoch_batches(SoftLabelLoader(dataset, 100, num_workers=2), 0):
        assert labels.shape == (len(targets), 0) and labels.dtype == torch.float32
        seen += targets.tolist()
    expected = [int(digits_train.dataset[row][1]) for row in dataset.plan.rows(0).tolist()]
    assert seen == expected


def test_stops_on_a_batch_whose_labels_differ_from_the_store(
    tmp_path: Path, digits_train: DatasetSource
) -> None:
    targets = np.array([digits_train.dataset[i][1] for i in range(len(digits_train))])
    original = int(targets[100])
    targets[100] = (original + 1) % 10
    store = write_store(tmp_path / "relabelled.zarr", digits_train, targets=targets)
    loader = SoftLabelLoader(SoftLabelDataset(store, digits_train), 64)
    message = rf"sample 100 of digits \[train\] has label {original} but the store .* has {targets[100]}"
    with pytest.raises(DataError, match=message):
        epoch_batches(loader, 0)


def make_image_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)).save(
                folder / f"{index}.png"
            )
    return root


def test_augmentation_depends_on_seed_epoch_and_row_only(tmp_path: Path) -> None:
    spec = f"imagefolder:{make_image_folder(tmp_path / 'images')}"
    plain = load_dataset(spec, "train")
    runs = []
    for num_workers in (0, 2):
        dataset = SoftLabelDataset(None, spec, augment=True, seed=1)
        with SoftLabelLoader(dataset, 5, num_workers=num_workers) as loader:
            state = torch.get_rng_state()
            runs.append([epoch_batches(loader, epoch) for epoch in (0, 1)])
            assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    for epoch in (0, 1):
        assert_same_batches(runs[0][epoch], runs[1][epoch])
    augmented = torch.cat([inputs for inputs, _, _ in runs[0][0]])
    unaugmented = torch.stack([plain.dataset[row][0] for row in dataset.plan.rows(0).tolist()])
    assert not torch.equal(augmented, unaugmented)
    assert Counter(targets for _, _, batch in runs[0][1] for targets in batch.tolist()) == Counter(
        {0: 6, 1: 6}
    )


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"batch_size": 8, "num_workers": -1}])
def test_refuses_bad_settings(
    digits_store: Path, digits_train: DatasetSource, options: dict[str, int]
) -> None:
    with pytest.raises(InvalidArgumentError):
        SoftLabelLoader(SoftLabelDataset(digits_store, digits_train), **options)
