"""``imagefolder:ROOT`` datasets: layout, fingerprints, corrupt files, CIFAR-10."""

from __future__ import annotations

import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from softlabels.errors import DataError
from softlabels.sources import ensure_cifar10, load_dataset

CLASSES = ("cat", "ant", "bee")  # deliberately unsorted


def write_image_folder(root: Path, per_class: int = 3, size: int = 16) -> Path:
    """Write ``root/{train,test}/<class>/<n>.png|jpg`` with distinct pixel content."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for _class_index, class_name in enumerate(CLASSES):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for item in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                suffix = "png" if item % 2 == 0 else "jpg"
                Image.fromarray(pixels).save(folder / f"{item:02d}.{suffix}")
            (folder / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


def test_image_folder_layout(image_root: Path) -> None:
    source = load_dataset(f"imagefolder:{image_root}", "train")
    assert source.class_names == ("ant", "bee", "cat")
    assert source.num_classes == 3 and len(source) == 9
    assert source.input_shape == (3, 16, 16) and source.in_channels == 3
    image, label = source.dataset[0]
    assert image.dtype == torch.float32 and -1.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert label == 0
    assert [source.dataset[i][1] for i in range(len(source))] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_image_folder_pickles(image_root: Path) -> None:
    source = load_dataset(f"imagefolder:{image_root}", "test")
    copy = pickle.loads(pickle.dumps(source.dataset))
    assert torch.equal(copy[4][0], source.dataset[4][0])


def test_fingerprint_ignores_location(image_root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(image_root, tmp_path / "elsewhere" / "copy")
    original = load_dataset(f"imagefolder:{image_root}", "train")
    moved = load_dataset(f"imagefolder:{copy}", "train")
    assert moved.fingerprint == original.fingerprint


def test_fingerprint_changes_with_split(image_root: Path) -> None:
    train = load_dataset(f"imagefolder:{image_root}", "train")
    test = load_dataset(f"imagefolder:{image_root}", "test")
    assert train.fingerprint != test.fingerprint


def test_fingerprint_changes_with_file_content(image_root: Path) -> None:
    before = load_dataset(f"imagefolder:{image_root}", "train").fingerprint
    changed = image_root / "train" / "bee" / "00.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(changed)
    assert load_dataset(f"imagefolder:{image_root}", "train").fingerprint != before


def test_fingerprint_changes_with_file_name(image_root: Path) -> None:
    before = load_dataset(f"imagefolder:{image_root}", "train").fingerprint
    folder = image_root / "train" / "ant"
    (folder / "00.png").rename(folder / "99.png")
    assert load_dataset(f"imagefolder:{image_root}", "train").fingerprint != before


def test_corrupt_image_raises_data_error_naming_it(image_root: Path) -> None:
    corrupt = image_root / "train" / "cat" / "01.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a JPEG")
    source = load_dataset(f"imagefolder:{image_root}", "train")
    with pytest.raises(DataError, match="01.jpg") as raised:
        source.dataset[7]
    assert "\n" not in str(raised.value)


def test_truncated_image_raises_data_error(image_root: Path) -> None:
    truncated = image_root / "train" / "cat" / "02.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    source = load_dataset(f"imagefolder:{image_root}", "train")
    with pytest.raises(DataError, match="02.png"):
        source.dataset[8]


def test_missing_split_lists_available_ones(image_root: Path) -> None:
    with pytest.raises(DataError, match="available: test, train"):
        load_dataset(f"imagefolder:{image_root}", "validation")


def test_missing_root_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", "train")


def test_split_without_images_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "train" / "empty-class").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"imagefolder:{tmp_path}", "train")


def test_augmentation_keeps_shape_and_fingerprint(image_root: Path) -> None:
    plain = load_dataset(f"imagefolder:{image_root}", "train")
    augmented = load_dataset(f"imagefolder:{image_root}", "train", augment=True)
    assert augmented.augmented and not plain.augmented
    assert augmented.fingerprint == plain.fingerprint
    torch.manual_seed(0)
    views = [augmented.dataset[0][0] for _ in range(8)]
    assert all(view.shape == (3, 16, 16) for view in views)
    assert any(not torch.equal(view, views[0]) for view in views[1:])


def test_cifar10_image_folder(cifar10_root: Path) -> None:
    train = load_dataset(f"imagefolder:{cifar10_root}", "train")
    test = load_dataset(f"imagefolder:{cifar10_root}", "test")
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.class_names == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    assert train.input_shape == (3, 32, 32)
    image, label = test.dataset[9_999]
    assert image.shape == (3, 32, 32) and label == 9
    assert train.fingerprint != test.fingerprint


def test_ensure_cifar10_unpacks_once(image_root: Path, tmp_path: Path) -> None:
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(image_root / split, arcname=split)
    cache = tmp_path / "cache" / "cifar10"
    assert ensure_cifar10(archive, cache) == cache
    assert sorted(entry.name for entry in cache.parent.iterdir()) == ["cifar10"]  # no staging left
    source = load_dataset(f"imagefolder:{cache}", "train")
    assert source.fingerprint == load_dataset(f"imagefolder:{image_root}", "train").fingerprint
    archive.unlink()  # a complete cache is reused without the archive
    assert ensure_cifar10(archive, cache) == cache


def test_ensure_cifar10_refuses_foreign_folder_and_missing_archive(tmp_path: Path) -> None:
    (tmp_path / "occupied").mkdir()
    with pytest.raises(DataError, match="no train/ and test/"):
        ensure_cifar10(tmp_path / "any.tar.gz", tmp_path / "occupied")
    with pytest.raises(DataError, match="does not exist"):
        ensure_cifar10(tmp_path / "absent.tar.gz", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
