"""Padding samples of varying length into batches."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from softlabels.errors import InvalidArgumentError
from softlabels.sources import IGNORE_INDEX, PadCollate, pad_collate


def test_token_ids_pad_with_the_pad_id_and_targets_with_ignore_index() -> None:
    batch = [
        (torch.tensor([5, 6, 7]), torch.tensor([6, 7, 8])),
        (torch.tensor([1]), torch.tensor([2])),
    ]
    inputs, targets = pad_collate(batch, pad_id=3)
    assert inputs.dtype == torch.int64 and inputs.tolist() == [[5, 6, 7], [1, 3, 3]]
    assert targets.dtype == torch.int64 and targets.tolist() == [[6, 7, 8], [2, IGNORE_INDEX, IGNORE_INDEX]]


def test_float_sequences_pad_with_zeros_and_keep_int_labels() -> None:
    batch = [(torch.ones(2, 3), 1), (torch.ones(4, 3), 0)]
    inputs, targets = pad_collate(batch)
    assert inputs.shape == (2, 4, 3) and inputs[0, 2:].abs().sum() == 0 and inputs[1].sum() == 12
    assert targets.tolist() == [1, 0] and targets.dtype == torch.int64


def test_a_fixed_length_pads_every_batch_alike() -> None:
    inputs, targets = pad_collate([(torch.tensor([1, 2]), torch.tensor([2, 3]))], length=4)
    assert inputs.tolist() == [[1, 2, 0, 0]] and targets.tolist() == [[2, 3, IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(InvalidArgumentError, match="length 5 does not fit a padded length of 4"):
        pad_collate([(torch.zeros(5), 0)], length=4)


def test_empty_batches_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="empty batch"):
        pad_collate([])


def test_pad_collate_serves_a_dataloader_with_workers() -> None:
    samples = [(torch.arange(length), torch.arange(1, length + 1)) for length in (1, 3, 2, 4)]
    collate = pickle.loads(pickle.dumps(PadCollate(pad_id=9, length=4)))
    loader = DataLoader(samples, batch_size=2, collate_fn=collate, num_workers=1)
    first, second = list(loader)
    assert first[0].tolist() == [[0, 9, 9, 9], [0, 1, 2, 9]]
    assert second[1].tolist() == [[1, 2, IGNORE_INDEX, IGNORE_INDEX], [1, 2, 3, 4]]
