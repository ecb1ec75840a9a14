"""Fingerprints and preprocessing versions change whenever what a store's rows describe changes."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from student_helpers import write_store

import softlabels
from softlabels.errors import PluginError, StoreMismatchError
from softlabels.sources import DatasetSource, load_dataset
from softlabels.sources.torchvision_datasets import fingerprint_torchvision_dataset
from softlabels.store import open_store
from softlabels.streaming.dataset import SoftLabelDataset

PLUGINS = textwrap.dedent(
    '''
    import torch
    from torch.utils.data import Dataset


    class Pairs(Dataset):
        """Sample i is a [1, 2, 2] tensor filled with i; labels, classes, fingerprint as given."""

        def __init__(self, labels, classes=None, fingerprint=None, preprocessing=None, targets=False):
            self._labels = labels
            if classes is not None:
                self.classes = classes
            if fingerprint is not None:
                self.fingerprint = fingerprint
            if preprocessing is not None:
                self.preprocessing = preprocessing
            if targets:
                self.targets = list(labels)

        def __len__(self):
            return len(self._labels)

        def __getitem__(self, index):
            if index >= len(self._labels):
                raise IndexError(index)
            return torch.full((1, 2, 2), float(index)), self._labels[index]


    def cats_dogs(split):
        return Pairs([0, 1, 0, 1], classes=["cat", "dog"])


    def dogs_cats(split):
        return Pairs([0, 1, 0, 1], classes=["dog", "cat"])


    def declared(split):
        return Pairs([0, 1, 0, 1], classes=["cat", "dog"], fingerprint="my-data-v1")


    def declared_other_labels(split):
        return Pairs([1, 1, 0, 0], classes=["cat", "dog"], fingerprint="my-data-v1")


    def declared_other_names(split):
        return Pairs([0, 1, 0, 1], classes=["dog", "cat"], fingerprint="my-data-v1")


    def declared_with_targets(split):
        return Pairs([0, 1, 0, 1], classes=["cat", "dog"], fingerprint="my-data-v1", targets=True)


    def declared_bad_target(split):
        return Pairs([0, 5, 0, 1], classes=["cat", "dog"], fingerprint="my-data-v1", targets=True)


    def preprocessed(split):
        return Pairs([0, 1, 0, 1], preprocessing="crop-224/v2")


    def bad_preprocessing(split):
        return Pairs([0, 1, 0, 1], preprocessing=7)
    '''
)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    path = tmp_path / "fingerprint_plugins.py"
    path.write_text(PLUGINS)
    return path


def plugin(plugins: Path, name: str) -> DatasetSource:
    return load_dataset(f"{plugins}:{name}", "train")


def test_class_names_are_part_of_a_plugin_fingerprint(plugins: Path) -> None:
    assert plugin(plugins, "cats_dogs").fingerprint != plugin(plugins, "dogs_cats").fingerprint


def test_declared_fingerprint_is_combined_with_labels_and_class_names(plugins: Path) -> None:
    declared = plugin(plugins, "declared").fingerprint
    assert plugin(plugins, "declared_other_labels").fingerprint != declared
    assert plugin(plugins, "declared_other_names").fingerprint != declared
    # Labels from a ``targets`` attribute hash like labels read from the samples.
    assert plugin(plugins, "declared_with_targets").fingerprint == declared


def test_declared_targets_are_checked_against_the_classes(plugins: Path) -> None:
    with pytest.raises(PluginError, match=r"label 5 outside \[0, 2\)"):
        plugin(plugins, "declared_bad_target")


def test_class_names_are_part_of_a_torchvision_fingerprint() -> None:
    dataset = SimpleNamespace(data=np.zeros((4, 2, 2), dtype=np.uint8))
    labels = np.array([0, 1, 0, 1], dtype=np.int64)
    cats_dogs = fingerprint_torchvision_dataset("MNIST", "test", dataset, labels, ("cat", "dog"))
    dogs_cats = fingerprint_torchvision_dataset("MNIST", "test", dataset, labels, ("dog", "cat"))
    assert cats_dogs != dogs_cats


def test_every_source_names_its_preprocessing(plugins: Path, tmp_path: Path) -> None:
    assert load_dataset("digits", "test").preprocessing == "digits-8x8-[0,1]/v1"
    assert plugin(plugins, "preprocessed").preprocessing == "crop-224/v2"
    assert plugin(plugins, "cats_dogs").preprocessing is None
    image_root = tmp_path / "images" / "train" / "cat"
    image_root.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(image_root / "a.png")
    assert load_dataset(f"imagefolder:{tmp_path / 'images'}", "train").preprocessing == (
        "imagefolder-rgb-[-1,1]/v1"
    )


def test_a_plugin_preprocessing_must_be_text(plugins: Path) -> None:
    with pytest.raises(PluginError, match="preprocessing must be a non-empty str"):
        plugin(plugins, "bad_preprocessing")


def test_generate_records_the_preprocessing(tmp_path: Path) -> None:
    summary = softlabels.generate(
        dataset="digits",
        split="test",
        teacher="mlp",
        random_weights=True,
        temperature=2.0,
        out=str(tmp_path / "labels.zarr"),
        device="cpu",
        progress=False,
    )
    stored = open_store(summary.out).provenance.dataset
    assert stored.preprocessing == load_dataset("digits", "test").preprocessing is not None


def test_store_of_another_preprocessing_is_refused(tmp_path: Path, digits_train: DatasetSource) -> None:
    relabelled = dataclasses.replace(digits_train, preprocessing="digits-8x8-[0,1]/v0")
    store = write_store(tmp_path / "labels.zarr", relabelled)
    with pytest.raises(StoreMismatchError, match="preprocessing"):
        SoftLabelDataset(store, digits_train)
