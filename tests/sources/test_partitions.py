"""Disjoint, deterministic, fingerprinted parts of a split (``train-teacher --partition I/N``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.errors import InvalidArgumentError
from softlabels.partitions import Partition, parse_partition
from softlabels.sources import DatasetSource
from softlabels.sources.partitions import partition_source


@pytest.mark.parametrize(("num_rows", "count"), [(10, 2), (1437, 7), (1000, 25)])
def test_parts_are_disjoint_and_cover_the_split(num_rows: int, count: int) -> None:
    parts = [Partition(index, count).rows(num_rows) for index in range(1, count + 1)]
    together = np.concatenate(parts)
    assert len(together) == num_rows
    assert np.array_equal(np.sort(together), np.arange(num_rows))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_parts_are_the_same_every_time_and_change_with_the_seed() -> None:
    assert np.array_equal(Partition(3, 10).rows(500), Partition(3, 10).rows(500))
    assert not np.array_equal(Partition(3, 10).rows(500), Partition(3, 10, seed=1).rows(500))
    # Not a plain slice of the split: a part mixes rows from everywhere.
    assert Partition(1, 10).rows(500).max() > 100


def test_each_part_has_its_own_fingerprint_tied_to_the_split() -> None:
    fingerprints = {
        Partition(index, 4).fingerprint("s" * 64, Partition(index, 4).rows(100)) for index in range(1, 5)
    }
    assert len(fingerprints) == 4
    part = Partition(1, 4)
    assert part.fingerprint("s" * 64, part.rows(100)) != part.fingerprint("t" * 64, part.rows(100))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("0/4", "outside 1..4"), ("5/4", "outside 1..4"), ("1/1", "at least 2 parts"), ("a/b", "must be I/N")],
)
def test_bad_partitions_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        parse_partition(text)


def test_a_split_smaller_than_the_number_of_parts_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be cut into 8"):
        Partition(1, 8).rows(5)


def test_a_part_source_holds_the_parts_rows_under_its_own_fingerprint(digits_train: DatasetSource) -> None:
    part = partition_source(digits_train, Partition(2, 3))
    rows = Partition(2, 3).rows(len(digits_train))
    assert len(part.source) == len(rows) == part.record["num_samples"]
    assert part.source.fingerprint == part.record["fingerprint"] != digits_train.fingerprint
    assert part.record["split_fingerprint"] == digits_train.fingerprint
    first, label = part.source.dataset[0]
    expected, expected_label = digits_train.dataset[int(rows[0])]
    assert torch.equal(first, expected) and label == expected_label


def test_train_teacher_records_its_part_in_the_checkpoint(tmp_path: Path) -> None:
    from softlabels import train_teacher

    summary = train_teacher(
        dataset="digits", teacher="mlp", epochs=1, partition="1/4", out=str(tmp_path / "t"), progress=False
    )
    record = torch.load(summary.final_weights, weights_only=False)["extra"]["partition"]
    assert (record["index"], record["count"], record["seed"]) == (1, 4, 0)
    assert record["num_samples"] == len(Partition(1, 4).rows(1437))


def test_a_bad_partition_is_refused_before_training() -> None:
    from softlabels.training.config import TeacherConfig

    with pytest.raises(InvalidArgumentError, match="outside 1..3"):
        TeacherConfig(dataset="digits", teacher="mlp", epochs=1, out="x", partition="4/3")
