"""``softlabels merge --mechanism gnmax`` and ``softlabels train-teacher --partition`` on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pate_helpers import member_stores

from softlabels.sources import DatasetSource
from softlabels.store import open_store


def test_merge_with_gnmax_writes_private_labels(
    tmp_path: Path, softlabels_main: Any, digits_train: DatasetSource
) -> None:
    members = member_stores(tmp_path, digits_train, count=3)
    out = tmp_path / "p.zarr"
    result = softlabels_main(
        "merge", *members, "--out", str(out), "--mechanism", "gnmax", "--sigma", "1", "--queries", "100",
        "--delta", "1e-5", "--threshold", "2", "--sigma1", "1", "--noise-seed", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "queries answered" in result.stdout and "epsilon" in result.stdout
    record = open_store(out).provenance.derived_from[-1]
    assert record["queries"] == 100 and record["mechanism"] == "confident-gnmax"


def test_gnmax_options_without_the_mechanism_are_refused(tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main("merge", "a.zarr", "b.zarr", "--out", str(tmp_path / "o"), "--sigma", "3")
    assert result.exit_code == 1
    assert "--sigma apply only with --mechanism gnmax" in result.stderr


@pytest.mark.parametrize(
    "averaging_option",
    [("--mode", "logits"), ("--dtype", "float32"), ("--chunk-rows", "64"), ("--workers", "2")],
)
def test_averaging_options_are_refused_with_the_mechanism(
    tmp_path: Path, softlabels_main: Any, averaging_option: tuple[str, str]
) -> None:
    result = softlabels_main(
        "merge", "a.zarr", "b.zarr", "--out", str(tmp_path / "o"), "--mechanism", "gnmax",
        "--sigma", "1", "--queries", "10", "--delta", "1e-5", *averaging_option,
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{averaging_option[0]} do not apply with --mechanism gnmax" in result.stderr


def test_gnmax_needs_its_settings(tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main(
        "merge", "a.zarr", "b.zarr", "--out", str(tmp_path / "o"), "--mechanism", "gnmax"
    )
    assert result.exit_code == 1
    assert "--sigma/--queries/--delta required with --mechanism gnmax" in result.stderr


def test_a_bad_partition_is_one_line(tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main(
        "train-teacher", "--dataset", "digits", "--teacher", "mlp", "--epochs", "1",
        "--out", str(tmp_path / "t"), "--partition", "0/5",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "partition part 0 is outside 1..5" in result.stderr and "Traceback" not in result.stderr
