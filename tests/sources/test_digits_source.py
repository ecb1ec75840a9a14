"""The bundled ``digits`` dataset: split sizes, determinism, fingerprints."""

from __future__ import annotations

import pickle

import pytest
import torch

from softlabels.errors import InvalidArgumentError
from softlabels.sources import DatasetSource, load_dataset


@pytest.fixture(scope="module")
def digits_train() -> DatasetSource:
    return load_dataset("digits", "train")


def test_digits_splits_are_80_20_and_disjoint(digits_train: DatasetSource) -> None:
    test = load_dataset("digits", "test")
    assert (len(digits_train), len(test)) == (1437, 360)
    train_rows = {digits_train.dataset[i][0].numpy().tobytes() for i in range(len(digits_train))}
    assert not any(test.dataset[i][0].numpy().tobytes() in train_rows for i in range(len(test)))


def test_digits_describes_itself(digits_train: DatasetSource) -> None:
    image, label = digits_train.dataset[0]
    assert digits_train.spec == "digits" and digits_train.split == "train"
    assert digits_train.num_classes == 10
    assert digits_train.class_names == tuple("0123456789")
    assert digits_train.input_shape == (1, 8, 8) and digits_train.in_channels == 1
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert isinstance(label, int) and 0 <= label < 10
    assert not digits_train.augmented


def class_counts(source: DatasetSource) -> torch.Tensor:
    labels = torch.tensor([source.dataset[i][1] for i in range(len(source))])
    return torch.bincount(labels, minlength=10)


def test_digits_split_is_stratified(digits_train: DatasetSource) -> None:
    train_counts = class_counts(digits_train)
    train_share = train_counts / (train_counts + class_counts(load_dataset("digits", "test")))
    assert float(train_share.min()) > 0.79 and float(train_share.max()) < 0.81


def test_digits_is_deterministic_and_fingerprint_stable(digits_train: DatasetSource) -> None:
    again = load_dataset("digits", "train", augment=True)  # augmentation never applies to digits
    assert again.fingerprint == digits_train.fingerprint
    assert len(digits_train.fingerprint) == 64 and int(digits_train.fingerprint, 16) >= 0
    assert torch.equal(again.dataset[5][0], digits_train.dataset[5][0])
    assert not again.augmented


def test_fingerprint_differs_between_splits(digits_train: DatasetSource) -> None:
    assert load_dataset("digits", "test").fingerprint != digits_train.fingerprint


def test_digits_dataset_pickles(digits_train: DatasetSource) -> None:
    copy = pickle.loads(pickle.dumps(digits_train.dataset))
    assert torch.equal(copy[3][0], digits_train.dataset[3][0])


def test_unknown_digits_split_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="'validation'"):
        load_dataset("digits", "validation")
