"""Datasets that fetch whole batches (a plug-in's ``get_batch``): the same batches as sample by sample, one call each."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from student_helpers import write_store

from softlabels.errors import PluginError
from softlabels.sources import DatasetSource, load_dataset
from softlabels.streaming import SoftLabelDataset, SoftLabelLoader

PLUGINS = textwrap.dedent(
    '''
    import torch

    ROWS = 150


    class Features:
        """float64 [3] features (cast to float32) labelled row % 4, loaded one by one or a batch at a time."""

        def __init__(self):
            self.inputs = torch.arange(ROWS * 3, dtype=torch.float64).reshape(ROWS, 3) / 7
            self.labels = torch.arange(ROWS) % 4
            self.item_calls = 0
            self.batch_calls = []

        def __len__(self):
            return ROWS

        def __getitem__(self, index):
            self.item_calls += 1
            return self.inputs[index], int(self.labels[index])

        def get_batch(self, indices):
            self.batch_calls.append(list(indices))
            at = torch.as_tensor(indices)
            return self.inputs[at], self.labels[at]


    class OneByOne(Features):
        get_batch = None


    class Tokens(Features):
        """int32 token ids [5] with next-token targets [5] (-100 at the end)."""

        def __init__(self):
            super().__init__()
            self.inputs = (torch.arange(ROWS)[:, None] + torch.arange(5)).to(torch.int32) % 11
            self.targets = torch.cat([self.inputs[:, 1:].long(), torch.full((ROWS, 1), -100)], dim=1)

        def __getitem__(self, index):
            return self.inputs[index], self.targets[index]

        def get_batch(self, indices):
            at = torch.as_tensor(indices)
            return self.inputs[at], self.targets[at]


    class TokensOneByOne(Tokens):
        get_batch = None


    class Broken(Features):
        """get_batch answers wrongly, as the mode (an attribute set by the test) says."""

        mode = "shape"

        def get_batch(self, indices):
            inputs, labels = super().get_batch(indices)
            if self.mode == "shape":
                return inputs[:, :2], labels
            if self.mode == "count":
                return inputs[1:], labels[1:]
            if self.mode == "label":
                return inputs, labels + 3
            if self.mode == "float labels":
                return inputs, labels.float()
            if self.mode == "single":
                return inputs
            raise RuntimeError("the batch server is down")


    def features(split):
        return Features()


    def one_by_one(split):
        return OneByOne()


    def tokens(split):
        return Tokens()


    def tokens_one_by_one(split):
        return TokensOneByOne()


    def broken(split):
        return Broken()
    '''
)

BUDGETS = pytest.mark.parametrize("budget", [0, 1 << 30], ids=["streamed", "in-memory"])
Batches = list[tuple[torch.Tensor, Any, torch.Tensor]]


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugins") / "batch_plugins.py"
    path.write_text(PLUGINS)
    return path


def source(plugins: Path, name: str) -> DatasetSource:
    return load_dataset(f"{plugins}:{name}", "train")


def epochs(dataset: SoftLabelDataset, num_workers: int = 0) -> list[Batches]:
    with SoftLabelLoader(dataset, 32, num_workers=num_workers) as loader:
        runs = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            runs.append(list(loader))
    return runs


def assert_same(first: list[Batches], second: list[Batches]) -> None:
    assert [len(batches) for batches in first] == [len(batches) for batches in second]
    for batches_a, batches_b in zip(first, second, strict=True):
        for (inputs_a, labels_a, targets_a), (inputs_b, labels_b, targets_b) in zip(
            batches_a, batches_b, strict=True
        ):
            assert inputs_a.dtype == inputs_b.dtype and torch.equal(inputs_a, inputs_b)
            assert torch.equal(labels_a, labels_b)
            assert targets_a.dtype == targets_b.dtype and torch.equal(targets_a, targets_b)


@BUDGETS
@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_fetched_whole_equal_batches_read_sample_by_sample(
    tmp_path: Path, plugins: Path, budget: int, num_workers: int
) -> None:
    batched, one_by_one = source(plugins, "features"), source(plugins, "one_by_one")
    store = write_store(tmp_path / "features.zarr", batched, chunk_rows=16)
    runs = {
        name: epochs(SoftLabelDataset(store, data, seed=5, memory_budget_bytes=budget), num_workers)
        for name, data in (("batched", batched), ("one by one", one_by_one))
    }
    assert_same(runs["batched"], runs["one by one"])
    reference = SoftLabelDataset(store, one_by_one, seed=5, memory_budget_bytes=budget)
    for epoch, batches in enumerate(runs["batched"]):
        rows = torch.cat([labels[:, 0] for _, labels, _ in batches]).long()  # row-coded store
        assert rows.tolist() == reference.plan.rows(epoch).tolist()
        assert torch.equal(
            torch.cat([inputs for inputs, _, _ in batches]), batched.dataset.inner.inputs[rows].float()
        )


def test_a_batch_is_fetched_in_one_call_and_no_sample_alone(tmp_path: Path, plugins: Path) -> None:
    batched = source(plugins, "features")
    store = write_store(tmp_path / "features.zarr", batched, chunk_rows=16)
    inner = batched.dataset.inner
    inner.item_calls, inner.batch_calls = 0, []
    dataset = SoftLabelDataset(store, batched, seed=1)
    (batches, _) = epochs(dataset)
    assert inner.item_calls == 0
    expected = [
        rows.tolist()
        for epoch in (0, 1)
        for rows in np.array_split(dataset.plan.rows(epoch), [32, 64, 96, 128])
    ]
    assert inner.batch_calls == expected
    assert len(batches) == 5


def test_labels_per_position_fetched_whole_equal_sample_by_sample(plugins: Path) -> None:
    batched, one_by_one = source(plugins, "tokens"), source(plugins, "tokens_one_by_one")
    assert batched.dataset.fetches_batches
    # Without a store: what is compared is the inputs and the per-position targets.
    runs = [epochs(SoftLabelDataset(None, data, seed=2)) for data in (batched, one_by_one)]
    assert_same(runs[0], runs[1])
    inputs, _, targets = runs[0][0][0]
    assert inputs.dtype == torch.int64 and targets.shape == (32, 5) and targets.dtype == torch.int64


def test_augmented_inputs_are_never_fetched_whole(plugins: Path) -> None:
    dataset = SoftLabelDataset(None, source(plugins, "features"))
    assert dataset.inputs.fetches_batches
    dataset.inputs.augmented = True  # what an augmented image source sets: per-sample seeds decide the crops
    assert not dataset.inputs.fetches_batches


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            "shape",
            r"of samples \[\d+, .*\] \.\.\. returned inputs a torch.float64 tensor of shape \[32, 2\] where float32 \[32, 3\] belong",
        ),
        (
            "count",
            r"of samples .* returned inputs a torch.float64 tensor of shape \[31, 3\] where float32 \[32, 3\] belong",
        ),
        ("label", r"of samples .* returned label [4-6] outside \[0, 4\)"),
        (
            "float labels",
            r"of samples .* returned targets a torch.float32 tensor of shape \[32\] where integer labels \[32\]",
        ),
        ("single", r"of samples .* returned a Tensor, not an \(inputs, targets\) pair"),
        (
            "fail",
            r"failed on samples \[\d+, \d+, \d+, \d+, \d+\] \.\.\.: RuntimeError: the batch server is down",
        ),
    ],
)
def test_a_bad_batch_is_refused_naming_the_plugin_and_the_samples(
    plugins: Path, mode: str, message: str
) -> None:
    broken = source(plugins, "broken")
    broken.dataset.inner.mode = mode
    loader = SoftLabelLoader(SoftLabelDataset(None, broken), 32)
    with pytest.raises(
        PluginError, match=rf"^dataset plug-in '\S+batch_plugins.py:broken' get_batch {message}"
    ):
        next(iter(loader))
