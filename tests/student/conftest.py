"""Fixtures of the student tests: the digits training split and a row-coded store of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from student_helpers import write_store

from softlabels.sources import DatasetSource, load_dataset


@pytest.fixture(scope="session")
def digits_train() -> DatasetSource:
    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource) -> Path:
    """A complete, row-coded float32 store of digits [train] in chunks of 64 rows (23 chunks)."""
    return write_store(tmp_path_factory.mktemp("stores") / "digits.zarr", digits_train)
