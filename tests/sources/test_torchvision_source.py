"""``torchvision:NAME`` datasets read from local files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softlabels.errors import DataError, InvalidArgumentError, UnknownNameError
from softlabels.sources import load_dataset


def test_mnist_test_split(mnist_root: Path) -> None:
    source = load_dataset("torchvision:MNIST", "test", data_root=str(mnist_root))
    assert len(source) == 10_000
    assert source.num_classes == 10 and source.input_shape == (1, 28, 28)
    image, label = source.dataset[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert float(image.min()) == -1.0 and label == 7
    counts = torch.bincount(torch.tensor([source.dataset[i][1] for i in range(len(source))]), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_fingerprint_ignores_data_root(mnist_root: Path, shared_datasets: Path) -> None:
    via_torchvision_layout = load_dataset("torchvision:MNIST", "test", data_root=str(mnist_root))
    via_plain_folder = load_dataset("torchvision:MNIST", "test", data_root=str(shared_datasets / "mnist"))
    assert via_plain_folder.fingerprint == via_torchvision_layout.fingerprint


def test_missing_files_are_a_one_line_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="never downloads") as raised:
        load_dataset("torchvision:CIFAR10", "train", data_root=str(tmp_path))
    assert "\n" not in str(raised.value)


def test_missing_split_of_mnist_is_a_data_error(mnist_root: Path) -> None:
    with pytest.raises(DataError, match="MNIST"):
        load_dataset("torchvision:MNIST", "train", data_root=str(mnist_root))


def test_data_root_is_required() -> None:
    with pytest.raises(InvalidArgumentError, match="data root"):
        load_dataset("torchvision:MNIST", "test")


def test_only_train_and_test_splits(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="'val'"):
        load_dataset("torchvision:FashionMNIST", "val", data_root=str(tmp_path))


def test_unknown_torchvision_dataset_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="CIFAR10"):
        load_dataset("torchvision:NoSuchSet", "train", data_root=str(tmp_path))


def test_unknown_spec_lists_accepted_forms() -> None:
    with pytest.raises(UnknownNameError, match=r"imagefolder:ROOT.*torchvision:NAME"):
        load_dataset("cifar")
