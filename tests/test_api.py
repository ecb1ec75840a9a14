"""The Python API re-exported from ``softlabels``: the same work as the CLI, callable directly."""

from __future__ import annotations

from pathlib import Path

import pytest

import softlabels


def test_generate_open_and_train_through_the_package(tmp_path: Path) -> None:
    options = {
        "dataset": "digits",
        "teacher": "mlp",
        "random_weights": True,
        "temperature": 2.0,
        "progress": False,
    }
    first = softlabels.generate(out=str(tmp_path / "a.zarr"), **options)
    # A second call must still reach the function, not a submodule that shadows it.
    second = softlabels.generate(softlabels.GenerateConfig(out=str(tmp_path / "b.zarr"), **options))
    assert first.num_rows == second.num_rows == softlabels.open_store(tmp_path / "a.zarr").num_rows
    summary = softlabels.train_student(
        labels=str(tmp_path / "a.zarr"),
        dataset="digits",
        student="mlp",
        epochs=1,
        out=str(tmp_path / "student"),
        progress=False,
    )
    assert 0.0 <= summary.best_val_accuracy <= 1.0 and summary.epochs_run == 1


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="nosuch"):
        softlabels.nosuch  # noqa: B018
