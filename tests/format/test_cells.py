"""Encodings of samples with label axes (views, positions): every format per cell, keyed by flat cell index."""

from __future__ import annotations

import numpy as np
import pytest

from softlabels.errors import InvalidArgumentError
from softlabels.format.encodings import (
    CellEncoding,
    Encoding,
    FullEncoding,
    SampledEncoding,
    TopKEncoding,
    cell_encoding,
    cell_targets,
    flatten_cells,
    layout_encoding,
    row_encoding,
)
from softlabels.format.schema import IGNORED_TARGET, Layout

SAMPLES, VIEWS, POSITIONS, CLASSES = 9, 2, 5, 11
ENCODINGS = {
    "full float16": FullEncoding("float16"),
    "full int8": FullEncoding("int8"),
    "full bfloat16": FullEncoding("bfloat16"),
    "topk float16": TopKEncoding(3),
    "topk int8": TopKEncoding(4, "int8"),
    "sampled": SampledEncoding(6, seed=3),
}


def block(*axes: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(SAMPLES, *axes, CLASSES)) * 3).astype(np.float32)


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("axes", [(POSITIONS,), (VIEWS,), (VIEWS, POSITIONS)])
def test_every_cell_is_encoded_as_its_own_row(name: str, axes: tuple[int, ...]) -> None:
    encoding = ENCODINGS[name]
    cells = cell_encoding(encoding, axes)
    values = block(*axes)
    first_row = 7
    stored = cells.encode(values, first_row)
    cell_count = int(np.prod(axes))
    # Cell c of sample r is row (first_row + r) * cells + c of the row encoding.
    expected = encoding.encode(values.reshape(-1, CLASSES), first_row * cell_count)
    specs = {spec.name: spec for spec in cells.fields(CLASSES)}
    assert stored.keys() == expected.keys() == specs.keys()
    for field, values_stored in stored.items():
        assert values_stored.shape == (SAMPLES, *specs[field].row_shape)
        np.testing.assert_array_equal(values_stored.reshape(expected[field].shape), expected[field])
    decoded = cells.decode(stored)
    for field, values_decoded in encoding.decode(expected).items():
        assert decoded[field].shape == (SAMPLES, *axes, *values_decoded.shape[1:])
        np.testing.assert_array_equal(decoded[field].reshape(values_decoded.shape), values_decoded)
    probs = cells.reconstruct(decoded, CLASSES)
    assert probs.shape == (SAMPLES, *axes, CLASSES)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    kept = cells.stored_classes(decoded, CLASSES)
    flat_expected = encoding.stored_classes(encoding.decode(expected), CLASSES)
    np.testing.assert_array_equal(kept.reshape(flat_expected.shape), flat_expected)
    assert cells.bytes_per_row(CLASSES) == cell_count * encoding.bytes_per_row(CLASSES)


def test_sampled_draws_do_not_depend_on_how_samples_are_cut() -> None:
    cells = cell_encoding(SampledEncoding(8, seed=1), (POSITIONS,))
    values = block(POSITIONS)
    whole = cells.encode(values, 100)
    pieces = [cells.encode(values[start : start + 4], 100 + start) for start in range(0, SAMPLES, 4)]
    for field in whole:
        np.testing.assert_array_equal(np.concatenate([piece[field] for piece in pieces]), whole[field])


def test_fields_put_the_label_axes_before_the_row() -> None:
    layout = Layout("topk", {"k": 3, "dtype": "float16"}, 10, CLASSES, 4, 4, views=VIEWS, positions=POSITIONS)
    specs = {spec.name: spec for spec in layout_encoding(layout).fields(CLASSES)}
    assert specs["values"].row_shape == (VIEWS, POSITIONS, 3)
    assert specs["values"].dimension_names() == ("sample", "view", "position", "rank")
    assert specs["log_normalizer"].row_shape == (VIEWS, POSITIONS)
    assert specs["log_normalizer"].dimension_names() == ("sample", "view", "position")


def test_plain_stores_keep_their_row_encoding() -> None:
    encoding = TopKEncoding(2)
    assert cell_encoding(encoding, ()) is encoding
    assert layout_encoding(Layout("full", {"dtype": "float16"}, 10, CLASSES, 4, 4)).name == "full"
    assert not isinstance(
        layout_encoding(Layout("full", {"dtype": "float16"}, 10, CLASSES, 4, 4)), CellEncoding
    )
    cells = cell_encoding(encoding, (POSITIONS,))
    assert cell_encoding(cells, (POSITIONS,)) is cells
    assert row_encoding(cells) is encoding and row_encoding(encoding) is encoding
    assert (cells.name, cells.params()) == (encoding.name, encoding.params())
    fields = {"values": np.zeros((2, 3))}
    assert flatten_cells(encoding, fields)["values"] is fields["values"]


def test_shapes_that_do_not_fit_are_refused() -> None:
    cells: Encoding = cell_encoding(FullEncoding(), (POSITIONS,))
    with pytest.raises(InvalidArgumentError, match=r"expected a \[samples, 5, classes\] block"):
        cells.encode(block(POSITIONS + 1), 0)
    with pytest.raises(InvalidArgumentError, match=r"expected a \[samples, 5, classes\] block"):
        cells.encode(block()[:, :CLASSES], 0)
    with pytest.raises(InvalidArgumentError, match="field 'logits' has shape"):
        cells.decode({"logits": np.zeros((2, POSITIONS + 1, CLASSES), dtype=np.float16)})
    with pytest.raises(InvalidArgumentError, match="holds label axes"):
        cell_encoding(cells, (VIEWS,))
    with pytest.raises(InvalidArgumentError, match="label axes must be"):
        CellEncoding(FullEncoding(), (0,))


def test_cell_targets_share_a_sample_target_across_views() -> None:
    views_and_positions = Layout("full", {"dtype": "float16"}, 2, 4, 2, 2, views=2, positions=3)
    targets = np.array([[0, 1, IGNORED_TARGET], [2, IGNORED_TARGET, 3]])
    assert cell_targets(views_and_positions, targets).tolist() == [
        *[0, 1, -100, 0, 1, -100],
        *[2, -100, 3, 2, -100, 3],
    ]
    views_only = Layout("full", {"dtype": "float16"}, 2, 4, 2, 2, views=3)
    assert cell_targets(views_only, np.array([1, 2])).tolist() == [1, 1, 1, 2, 2, 2]
    with pytest.raises(InvalidArgumentError, match=r"targets must have shape \[samples, 3\]"):
        cell_targets(views_and_positions, np.array([1, 2]))


def test_an_overflow_names_the_cell_numbering() -> None:
    values = np.zeros((2, POSITIONS, CLASSES), dtype=np.float32)
    values[1, 2, 0] = 1e6
    with pytest.raises(
        InvalidArgumentError, match=r"overflow float16 at rows \[17\].*numbered sample \* 5 \+ cell"
    ):
        cell_encoding(FullEncoding("float16"), (POSITIONS,)).encode(values, 2)
