"""Property tests of the row encodings: random rows of any scale, encoded and decoded, keep their invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from softlabels.defaults import VALUE_DTYPES
from softlabels.format.encodings import FullEncoding, SampledEncoding, TopKEncoding, index_dtype

FAST = settings(max_examples=40, deadline=None)
# Largest error of one decoded value, relative to the row's largest magnitude.
RELATIVE_ERROR = {"float32": 1e-7, "float16": 1e-3, "bfloat16": 8e-3}
# Below the normal range, half of the dtype's smallest step (float32 stores every input exactly).
SUBNORMAL_ERROR = {"float32": 0.0, "float16": 2.0**-25, "bfloat16": 2.0**-134}


@st.composite
def scaled_rows(draw: st.DrawFn, min_classes: int = 1) -> np.ndarray:
    """A float32 ``[n, C]`` block of finite scaled logits at a scale from 1e-3 to 1e3 (ties included)."""
    num_rows = draw(st.integers(1, 6))
    num_classes = draw(st.integers(min_classes, 40))
    unit = draw(
        arrays(
            np.float64,
            (num_rows, num_classes),
            elements=st.one_of(st.floats(-4.0, 4.0), st.sampled_from([0.0, 1.0, -1.0])),
        )
    )
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 60.0, 1e3]))
    return (unit * scale).astype(np.float32)


@FAST
@given(rows=scaled_rows(), dtype=st.sampled_from(VALUE_DTYPES))
@example(rows=np.array([[3.90625e-06]], dtype=np.float32), dtype="float16")  # float16 subnormal
@example(rows=np.array([[1.1755e-41]], dtype=np.float32), dtype="bfloat16")  # float32 subnormal
def test_full_round_trip(rows: np.ndarray, dtype: str) -> None:
    encoding = FullEncoding(dtype)
    decoded = encoding.decode(encoding.encode(rows, 0))["logits"]
    assert decoded.shape == rows.shape and decoded.dtype == np.float32
    error = np.abs(decoded.astype(np.float64) - rows)
    if dtype == "int8":
        step = (rows.max(axis=1) - rows.min(axis=1)).astype(np.float64) / 255
        assert (error <= step[:, None] / 2 + 1e-6 * np.abs(rows).max(axis=1, keepdims=True) + 1e-30).all()
    else:
        bound = RELATIVE_ERROR[dtype] * np.abs(rows).max(axis=1, keepdims=True) + SUBNORMAL_ERROR[dtype]
        assert (error <= bound).all()


@FAST
@given(rows=scaled_rows(), dtype=st.sampled_from(VALUE_DTYPES), data=st.data())
def test_topk_round_trip(rows: np.ndarray, dtype: str, data: st.DataObject) -> None:
    num_rows, num_classes = rows.shape
    k = data.draw(st.integers(1, num_classes))
    encoding = TopKEncoding(k, dtype)
    stored = encoding.encode(rows, 0)
    assert stored["indices"].dtype == np.dtype(index_dtype(num_classes))
    decoded = encoding.decode(stored)
    assert decoded["values"].shape == decoded["indices"].shape == (num_rows, k)
    assert decoded["values"].dtype == np.float32 and decoded["indices"].dtype == np.int64
    assert decoded["log_normalizer"].shape == (num_rows,)
    indices = decoded["indices"]
    assert ((indices >= 0) & (indices < num_classes)).all()
    assert all(len(set(row)) == k for row in indices.tolist())
    # The kept classes are the top classes up to ties: their values are the k largest of the row.
    kept = np.sort(np.take_along_axis(rows, indices, axis=1), axis=1)
    np.testing.assert_array_equal(kept, np.sort(rows, axis=1)[:, num_classes - k :])
    assert (np.exp(decoded["values"].astype(np.float64)).sum(axis=1) <= 1.0 + 1e-3).all()
    probs = encoding.reconstruct(decoded, num_classes)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


@FAST
@given(
    rows=scaled_rows(),
    samples=st.integers(1, 40),
    seed=st.integers(0, 2**64 - 1),
    first_row=st.integers(0, 10**9),
)
def test_sampled_round_trip(rows: np.ndarray, samples: int, seed: int, first_row: int) -> None:
    num_rows, num_classes = rows.shape
    encoding = SampledEncoding(samples, seed=seed)
    decoded = encoding.decode(encoding.encode(rows, first_row))
    assert decoded["indices"].shape == decoded["counts"].shape == (num_rows, samples)
    assert decoded["indices"].dtype == np.int64 and decoded["counts"].dtype == np.float32
    assert (decoded["counts"].sum(axis=1) == samples).all()
    assert ((decoded["indices"] >= 0) & (decoded["indices"] < num_classes)).all()
    drawn = decoded["counts"] > 0
    assert (np.take_along_axis(rows, decoded["indices"], axis=1)[drawn] > -np.inf).all()
    probs = encoding.reconstruct(decoded, num_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
