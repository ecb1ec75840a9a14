"""Token samples (language models): SoftLabelDataset and SoftLabelLoader on a store with per-position labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_stores import synthetic_header, token_rows, write_rows
from torch.utils.data import Dataset

from softlabels.errors import DataError
from softlabels.format.encodings import Encoding, SampledEncoding, TopKEncoding
from softlabels.format.identity import dataset_info
from softlabels.format.schema import IGNORED_TARGET
from softlabels.sources import DatasetSource
from softlabels.store import FullEncoding, default_chunk_rows
from softlabels.streaming.dataset import SoftLabelDataset
from softlabels.streaming.loader import SoftLabelLoader

NUM_SAMPLES, LENGTH, VOCABULARY = 40, 6, 11


class TokenWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Token-id inputs ``[L]`` with per-position targets ``[L]``, as a text source yields them."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.inputs[index].copy()), torch.from_numpy(self.targets[index].copy())


def token_source(targets: np.ndarray) -> DatasetSource:
    inputs = np.random.default_rng(1).integers(0, VOCABULARY, size=targets.shape).astype(np.int64)
    return DatasetSource(
        spec="tokens",
        split="train",
        dataset=TokenWindows(inputs, targets),
        num_classes=VOCABULARY,
        class_names=tuple(f"w{i}" for i in range(VOCABULARY)),
        input_shape=(LENGTH,),
        fingerprint="e" * 64,
        preprocessing=None,
        num_samples=len(targets),
        input_dtype=torch.int64,
        positions=LENGTH,
    )


def token_store(
    tmp_path: Path, encoding: Encoding, source: DatasetSource, values: np.ndarray, targets: np.ndarray
) -> Path:
    header = synthetic_header(
        encoding, len(values), VOCABULARY, chunk_rows=8, dataset=dataset_info(source), positions=LENGTH
    )
    path = tmp_path / f"{encoding.name}.zarr"
    write_rows(path, header, encoding, values, targets)
    return path


def expected_fields(encoding: Encoding, values: np.ndarray, row: int) -> dict[str, np.ndarray]:
    """One sample's decoded label fields ``[L, ...]``: each position encoded as its own row."""
    encoded = encoding.encode(values[row], row * LENGTH)
    return encoding.decode(encoded)


ENCODINGS = [FullEncoding(), TopKEncoding(3), SampledEncoding(4, seed=7)]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda encoding: encoding.name)
@pytest.mark.parametrize("budget", [0, 1 << 30], ids=["streamed", "in-memory"])
def test_token_samples_yield_per_position_targets_and_label_rows(
    tmp_path: Path, encoding: Encoding, budget: int
) -> None:
    values, targets = token_rows(NUM_SAMPLES, LENGTH, VOCABULARY)
    source = token_source(targets)
    dataset = SoftLabelDataset(
        token_store(tmp_path, encoding, source, values, targets), source, memory_budget_bytes=budget
    )
    seen = []
    for sample_input, labels, target in dataset:
        row = next(i for i in range(NUM_SAMPLES) if torch.equal(target, torch.from_numpy(targets[i])))
        assert sample_input.dtype == torch.int64 and sample_input.shape == (LENGTH,)
        assert target.dtype == torch.int64 and target.shape == (LENGTH,)
        expected = expected_fields(encoding, values, row)
        got = {"logits": labels} if isinstance(labels, torch.Tensor) else labels
        assert set(got) == set(expected)
        for name, array in expected.items():
            assert got[name].shape[0] == LENGTH
            np.testing.assert_allclose(got[name].numpy(), array, rtol=0, atol=0)
        seen.append(row)
    assert sorted(seen) == list(range(NUM_SAMPLES))


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda encoding: encoding.name)
def test_loader_batches_token_samples_to_batch_by_length(tmp_path: Path, encoding: Encoding) -> None:
    values, targets = token_rows(NUM_SAMPLES, LENGTH, VOCABULARY)
    source = token_source(targets)
    dataset = SoftLabelDataset(token_store(tmp_path, encoding, source, values, targets), source)
    batches = list(SoftLabelLoader(dataset, batch_size=16))
    assert [len(batch[2]) for batch in batches] == [16, 16, 8]
    for inputs, labels, batch_targets in batches:
        assert inputs.shape == (len(batch_targets), LENGTH) and batch_targets.shape == (len(inputs), LENGTH)
        fields = {"logits": labels} if isinstance(labels, torch.Tensor) else labels
        assert all(field.shape[:2] == (len(inputs), LENGTH) for field in fields.values())
    every_target = torch.cat([batch[2] for batch in batches])
    assert int((every_target == IGNORED_TARGET).sum()) == int((targets == IGNORED_TARGET).sum())


def test_store_less_loader_yields_token_batches_planned_like_a_default_store() -> None:
    _, targets = token_rows(NUM_SAMPLES, LENGTH, VOCABULARY)
    baseline = SoftLabelDataset(None, token_source(targets))
    # A default full float16 store chunks by the bytes of a whole sample: every position's row.
    assert baseline.plan.chunk_rows == default_chunk_rows(LENGTH * VOCABULARY * 2)
    assert baseline.label_bytes == NUM_SAMPLES * LENGTH * (VOCABULARY * 4 + 8)
    inputs, labels, batch_targets = next(iter(SoftLabelLoader(baseline, batch_size=8)))
    assert inputs.shape == (8, LENGTH) and batch_targets.shape == (8, LENGTH) and labels.shape == (8, 0)


def test_memory_budget_counts_every_position_of_a_sample(tmp_path: Path) -> None:
    values, targets = token_rows(NUM_SAMPLES, LENGTH, VOCABULARY)
    source = token_source(targets)
    store = token_store(tmp_path, FullEncoding(), source, values, targets)
    one_position = VOCABULARY * 4 + 8  # float32 logits and an int64 target
    dataset = SoftLabelDataset(store, source)
    assert dataset.label_bytes == NUM_SAMPLES * LENGTH * one_position
    assert not SoftLabelDataset(store, source, memory_budget_bytes=dataset.label_bytes - 1).in_memory


def test_a_changed_target_at_one_position_is_refused_naming_it(tmp_path: Path) -> None:
    values, targets = token_rows(NUM_SAMPLES, LENGTH, VOCABULARY)
    store = token_store(tmp_path, TopKEncoding(3), token_source(targets), values, targets)
    changed = targets.copy()
    changed[5, 3] = (changed[5, 3] + 1) % VOCABULARY if changed[5, 3] >= 0 else 0
    dataset = SoftLabelDataset(store, token_source(changed), shuffle=False)
    with pytest.raises(
        DataError, match=r"sample 5 of tokens \[train\] has label \d+ at position 3 but the store"
    ):
        list(dataset)
    with pytest.raises(
        DataError, match=r"sample 5 of tokens \[train\] has label \d+ at position 3 but the store"
    ):
        list(SoftLabelLoader(dataset, batch_size=16))
