"""A student on a store of views replays, for each (epoch, sample), the exact input of the view it shows."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from softlabels.errors import DataError, InvalidArgumentError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.schema import ATTRIBUTE_KEY
from softlabels.format.views import ViewRecipe
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.sources import DatasetSource, load_dataset
from softlabels.sources.augment import ViewsOf
from softlabels.store import open_store
from softlabels.streaming import SoftLabelDataset, SoftLabelLoader

VIEWS = 4
SEED = 3


def _generate(out: Path, encoding: EncodingSpec) -> Path:
    generate(
        GenerateConfig(
            dataset="digits",
            split="test",
            teacher="cnn-small",
            random_weights=True,
            temperature=2.0,
            out=str(out),
            chunk_rows=64,
            batch_size=60,
            progress=False,
            encoding=encoding,
            views=VIEWS,
            view_seed=11,
        )
    )
    return out


@pytest.fixture(scope="module")
def views_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(
        tmp_path_factory.mktemp("views") / "full.zarr", EncodingSpec.create("full", dtype="float32")
    )


@pytest.fixture(scope="module")
def digits_test() -> DatasetSource:
    return load_dataset("digits", "test")


def _teacher_inputs(source: DatasetSource) -> ViewsOf:
    """Exactly what generate ran the teacher on."""
    return ViewsOf(source.dataset, ViewRecipe.parse("crop=0.35:1,flip"), 11, VIEWS, (8, 8))


def test_the_students_input_is_the_teachers_input_of_the_view_bit_for_bit(
    views_store: Path, digits_test: DatasetSource
) -> None:
    dataset = SoftLabelDataset(views_store, digits_test, seed=SEED, shuffle=False)  # store order: row = index
    logits = open_store(views_store).read_all().fields["logits"]
    teacher = _teacher_inputs(digits_test)
    shown = np.zeros((2, len(digits_test)), dtype=np.int64)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for row, (image, label, target) in enumerate(dataset):
            # The view whose label came (views drawn with the same crop and flip share their label).
            views = np.flatnonzero((logits[row] == label.numpy()).all(axis=-1))
            teachers_input, teachers_target = teacher[row]
            assert views.size and all(torch.equal(image, teachers_input[view]) for view in views), (
                epoch,
                row,
            )
            assert target == teachers_target
            shown[epoch, row] = views[0]
    # One view per sample per epoch, drawn afresh each epoch, covering every view.
    assert set(shown.ravel()) == set(range(VIEWS))
    assert (shown[0] != shown[1]).mean() > 0.5


def test_the_loader_pairs_the_same_inputs_and_labels_with_any_number_of_workers(
    views_store: Path, digits_test: DatasetSource
) -> None:
    in_order = SoftLabelDataset(views_store, digits_test, seed=SEED, shuffle=False)
    in_order.set_epoch(2)
    samples = list(in_order)
    expected_inputs = torch.stack([image for image, _, _ in samples])
    expected_labels = torch.stack([label for _, label, _ in samples])
    for workers in (0, 2):
        with SoftLabelLoader(in_order, 64, num_workers=workers) as loader:
            inputs, labels, _ = (torch.cat(parts) for parts in zip(*loader, strict=True))
        assert torch.equal(inputs, expected_inputs)
        assert torch.equal(labels, expected_labels)


def test_a_resumed_epoch_shows_the_same_views(views_store: Path, digits_test: DatasetSource) -> None:
    def epoch_3(dataset: SoftLabelDataset) -> list[torch.Tensor]:
        dataset.set_epoch(3)
        with SoftLabelLoader(dataset, 50) as loader:
            return [images for images, _, _ in loader]

    first = epoch_3(SoftLabelDataset(views_store, digits_test, seed=SEED))
    again = epoch_3(SoftLabelDataset(views_store, digits_test, seed=SEED))  # a new process after a resume
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_compact_formats_give_the_label_of_the_shown_view(tmp_path: Path, digits_test: DatasetSource) -> None:
    store = _generate(tmp_path / "topk.zarr", EncodingSpec.create("topk", k=3))
    dataset = SoftLabelDataset(store, digits_test, seed=SEED, shuffle=False)
    dataset.set_epoch(0)
    indices = open_store(store).read_all().fields["indices"]
    views = dataset.views.views_of(0, np.arange(len(digits_test))) if dataset.views else None
    assert views is not None
    with SoftLabelLoader(dataset, 100) as loader:
        got = torch.cat([labels["indices"] for _, labels, _ in loader]).numpy()  # type: ignore[index]
    np.testing.assert_array_equal(got, indices[np.arange(len(digits_test)), views])


def test_augmenting_the_data_as_well_is_refused(views_store: Path, digits_test: DatasetSource) -> None:
    augmented = dataclasses.replace(digits_test, augmented=True)
    with pytest.raises(InvalidArgumentError, match="holds augmented views that the student replays"):
        SoftLabelDataset(views_store, augmented)


def test_a_store_of_views_without_parameters_is_refused(
    tmp_path: Path, views_store: Path, digits_test: DatasetSource
) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(views_store, store)
    group = zarr.open_group(str(store), mode="r+")
    header = group.attrs[ATTRIBUTE_KEY]
    del header["layout"]["view_recipe"], header["layout"]["view_seed"]
    group.attrs[ATTRIBUTE_KEY] = header
    with pytest.raises(DataError, match="holds 4 views per sample but no view parameters"):
        SoftLabelDataset(store, digits_test)


def test_views_of_images_of_another_size_are_refused(views_store: Path, digits_test: DatasetSource) -> None:
    smaller = dataclasses.replace(digits_test, input_shape=(1, 6, 6))
    with pytest.raises(
        DataError, match=r"outside the data's 6x6 images; the store was made from images of another size"
    ):
        SoftLabelDataset(views_store, smaller)
