"""``merge`` and ``pate`` on stores of token positions: refused in one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_stores import token_rows, write_synthetic_store

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings import FullEncoding
from softlabels.processing.merge import merge_stores
from softlabels.processing.pate import GNMaxSettings, pate_labels


def token_stores(tmp_path: Path) -> list[str]:
    values, targets = token_rows(12, 4, 7)
    return [
        str(
            write_synthetic_store(
                tmp_path / f"{name}.zarr", FullEncoding("float32"), values, targets, positions=4
            )
        )
        for name in ("a", "b")
    ]


def test_merge_refuses_stores_of_token_positions(tmp_path: Path) -> None:
    members = token_stores(tmp_path)
    with pytest.raises(
        InvalidArgumentError, match="a.zarr holds 4 labelled positions per sample; merge combines"
    ):
        merge_stores(members, tmp_path / "merged.zarr")
    assert not (tmp_path / "merged.zarr").exists()


def test_pate_refuses_stores_of_token_positions(tmp_path: Path) -> None:
    members = token_stores(tmp_path)
    with pytest.raises(
        InvalidArgumentError, match="a.zarr holds 4 labelled positions per sample; PATE counts"
    ):
        pate_labels(members, str(tmp_path / "p.zarr"), GNMaxSettings(sigma=2.0, queries=5, delta=1e-5))
    assert not (tmp_path / "p.zarr").exists()
