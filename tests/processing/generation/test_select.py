"""On-device selection (run here on the CPU) gives exactly the host encoding's fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings import Encoding, FullEncoding, SampledEncoding, TopKEncoding
from softlabels.format.encodings.cells import cell_encoding
from softlabels.format.encodings.sampled import row_uniforms
from softlabels.format.encodings.topk import top_classes
from softlabels.processing.generation import select
from softlabels.processing.generation.select import (
    DRAWS,
    KEPT_CLASSES,
    SCALED,
    encode_selected,
    row_uniforms_on_device,
    select_on_device,
    top_classes_on_device,
)

BATCH, POSITIONS, VOCAB = 4, 6, 300


def token_logits(seed: int, *, ties: bool) -> np.ndarray:
    """Scaled logits ``[B, L, V]``; with ``ties``, coarse values so that many classes tie, at the k-th place too."""
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-3, 4, size=(BATCH, POSITIONS, VOCAB)).astype(np.float32)
    return (rng.standard_normal((BATCH, POSITIONS, VOCAB)) * 4).astype(np.float32)


def through_the_device(encoding: Encoding, scaled: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
    selected = select_on_device(encoding, torch.from_numpy(scaled), first_row)
    return encode_selected(encoding, {name: t.numpy() for name, t in selected.items()}, first_row, VOCAB)


ENCODINGS = {
    "topk float16": TopKEncoding(8, "float16"),
    "topk float32": TopKEncoding(5, "float32"),
    "topk bfloat16": TopKEncoding(3, "bfloat16"),
    "topk int8": TopKEncoding(16, "int8"),
    "topk every class": TopKEncoding(VOCAB, "float32"),
    "sampled": SampledEncoding(12, seed=7),
    "sampled seed near 2**64": SampledEncoding(64, seed=(1 << 64) - 3),
    "full": FullEncoding("float16"),
}


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("encoding", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_device_selection_encodes_exactly_as_the_host_per_position(encoding: Encoding, ties: bool) -> None:
    scaled = token_logits(1, ties=ties)
    cells = cell_encoding(encoding, (POSITIONS,))
    host = cells.encode(scaled, first_row=37)
    device = through_the_device(cells, scaled, first_row=37)
    assert device.keys() == host.keys()
    for name, values in host.items():
        assert device[name].dtype == values.dtype, name
        np.testing.assert_array_equal(device[name], values, err_msg=name)


@pytest.mark.parametrize("encoding", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_device_selection_encodes_exactly_as_the_host_per_sample(encoding: Encoding) -> None:
    scaled = token_logits(2, ties=False)[:, 0]
    host = encoding.encode(scaled, first_row=5)
    device = through_the_device(encoding, scaled, first_row=5)
    for name, values in host.items():
        np.testing.assert_array_equal(device[name], values, err_msg=name)


@pytest.mark.parametrize("encoding", [TopKEncoding(8), SampledEncoding(16, seed=3)], ids=["topk", "sampled"])
def test_compact_formats_never_hand_over_the_logits(encoding: Encoding) -> None:
    scaled = torch.from_numpy(token_logits(3, ties=False))
    selected = select_on_device(cell_encoding(encoding, (POSITIONS,)), scaled, 0)
    assert SCALED not in selected
    for tensor in selected.values():
        assert tensor.shape[:2] == (BATCH, POSITIONS) and tensor.numel() <= BATCH * POSITIONS * 16


def test_draws_are_keyed_by_flat_cell_index() -> None:
    """Sample r's position l draws from the stream of cell r * L + l, whichever batch it comes in."""
    scaled = token_logits(4, ties=False)
    cells = cell_encoding(SampledEncoding(10, seed=11), (POSITIONS,))
    whole = select_on_device(cells, torch.from_numpy(scaled), 20)[DRAWS]
    second_half = select_on_device(cells, torch.from_numpy(scaled[2:]), 22)[DRAWS]
    torch.testing.assert_close(second_half, whole[2:])


def test_uniforms_equal_the_host_stream_across_the_sign_bit() -> None:
    for seed in (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        host = row_uniforms(seed, (1 << 40) - 3, 7, 9)
        device = row_uniforms_on_device(seed, (1 << 40) - 3, 7, 9, torch.device("cpu"))
        np.testing.assert_array_equal(device.numpy(), host)


def test_top_classes_keep_the_lowest_classes_among_ties_at_the_cut() -> None:
    rows = np.array([[2, 1, 0, 0, 2, 1, 1, 1, 2, 1]], dtype=np.float32)
    expected = [[0, 4, 8, 1]]  # the three 2s, then the lowest class among the five 1s
    np.testing.assert_array_equal(top_classes(rows, 4), expected)
    kept_values, kept_classes = top_classes_on_device(torch.from_numpy(rows), 4)
    np.testing.assert_array_equal(kept_classes.numpy(), expected)
    np.testing.assert_array_equal(kept_values.numpy(), [[2.0, 2.0, 2.0, 1.0]])


def test_a_selection_for_another_format_is_refused() -> None:
    selected = {KEPT_CLASSES: np.zeros((2, 3), dtype=np.int64)}
    with pytest.raises(InvalidArgumentError, match="cannot be encoded in format sampled"):
        encode_selected(SampledEncoding(3), selected, 0, VOCAB)


@pytest.mark.parametrize("encoding", [TopKEncoding(8), SampledEncoding(16, seed=3)], ids=["topk", "sampled"])
def test_selecting_in_blocks_of_rows_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, encoding: Encoding
) -> None:
    monkeypatch.setattr(select, "BLOCK_ELEMENTS", VOCAB * 5)  # 24 cells in blocks of 5 rows
    scaled = token_logits(5, ties=True)
    cells = cell_encoding(encoding, (POSITIONS,))
    host = cells.encode(scaled, first_row=3)
    device = through_the_device(cells, scaled, first_row=3)
    for name, values in host.items():
        np.testing.assert_array_equal(device[name], values, err_msg=name)
