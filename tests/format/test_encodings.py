"""Row encodings: value types, top-k, sampled draws, reconstruction and refusals (pure numpy, no teacher)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_stores import write_synthetic_store

from softlabels.errors import InvalidArgumentError, InvalidSettingError, UnknownNameError
from softlabels.format.encodings import (
    VALUE_DTYPES,
    Encoding,
    FullEncoding,
    SampledEncoding,
    TopKEncoding,
    bfloat16_bits_to_float32,
    count_dtype,
    encoding_from_params,
    float32_to_bfloat16_bits,
    index_dtype,
    softmax,
)
from softlabels.store import (
    open_store,
)
from softlabels.training.losses import distillation_loss, kd_loss

CLASSES = 7


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 3.0, (200, CLASSES)).astype(np.float32)


def dense_softmax(row: np.ndarray) -> np.ndarray:
    weights = np.exp(row.astype(np.float64) - row.max())
    probs: np.ndarray = weights / weights.sum()
    return probs


# ---- value types -----------------------------------------------------------------------------


def test_bfloat16_rounds_to_nearest_even_like_torch() -> None:
    one = 1.0
    halfway_down, halfway_up = one + 2.0**-8, one + 3 * 2.0**-8  # ties between bf16 neighbours
    above_halfway = one + 2.0**-7 + 2.0**-9
    values = np.array([[halfway_down, halfway_up, above_halfway, -2.5e-3, 3.0e38]], dtype=np.float32)
    bits = float32_to_bfloat16_bits(values)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(bfloat16_bits_to_float32(bits)[0, :2], [1.0, one + 2.0**-6])
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, expected)


def test_bfloat16_overflow_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="overflow bfloat16 at rows \\[4\\]"):
        FullEncoding("bfloat16").encode(np.array([[3.4e38, 0.0]], dtype=np.float32), 4)


def test_int8_error_is_at_most_half_a_step(rows: np.ndarray) -> None:
    encoding = FullEncoding("int8")
    stored = encoding.encode(rows, 0)
    assert stored["logits"].dtype == np.uint8
    assert stored["scale"].shape == stored["offset"].shape == (len(rows),)
    decoded = encoding.decode(stored)["logits"]
    step = (rows.max(axis=1) - rows.min(axis=1)) / 255
    assert (np.abs(decoded - rows) <= step[:, None] / 2 + 1e-5).all()
    np.testing.assert_allclose(decoded.min(axis=1), rows.min(axis=1), atol=1e-6)
    constant = encoding.decode(encoding.encode(np.full((1, 4), 2.5, dtype=np.float32), 0))["logits"]
    np.testing.assert_array_equal(constant, np.full((1, 4), 2.5, dtype=np.float32))


@pytest.mark.parametrize(
    "dtype, tolerance", [("float32", 0.0), ("float16", 5e-3), ("bfloat16", 4e-2), ("int8", 4e-2)]
)
def test_full_round_trip_decodes_to_float32(rows: np.ndarray, dtype: str, tolerance: float) -> None:
    encoding = FullEncoding(dtype)
    decoded = encoding.decode(encoding.encode(rows, 0))
    assert set(decoded) == {"logits"} and decoded["logits"].dtype == np.float32
    np.testing.assert_allclose(decoded["logits"], rows, atol=tolerance * np.abs(rows).max())


# ---- top-k -----------------------------------------------------------------------------------


def test_topk_keeps_log_probabilities_of_the_largest_with_exact_normaliser(rows: np.ndarray) -> None:
    encoding = TopKEncoding(3, "float32")
    stored = encoding.encode(rows, 0)
    assert stored["indices"].dtype == np.uint8 and stored["log_normalizer"].dtype == np.float32
    assert encoding.params() == {"k": 3, "dtype": "float32", "values": "logprobs"}
    for row, values, indices, normalizer in zip(
        rows, stored["values"], stored["indices"], stored["log_normalizer"], strict=True
    ):
        expected = np.argsort(-row, kind="stable")[:3]
        np.testing.assert_array_equal(indices, expected)
        exact = np.log(np.exp(row.astype(np.float64)).sum())
        assert normalizer == pytest.approx(exact, rel=1e-6)
        log_probs = row[expected].astype(np.float64) - exact
        np.testing.assert_allclose(values, log_probs, rtol=1e-6, atol=1e-6)
        assert (values.astype(np.float64) <= log_probs).all()  # rounded toward -inf


def test_topk_ties_resolve_by_class_index() -> None:
    stored = TopKEncoding(2, "float32").encode(np.array([[1.0, 3.0, 3.0, 3.0]], dtype=np.float32), 0)
    np.testing.assert_array_equal(stored["indices"], [[1, 2]])


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_topk_fields_match_specs_and_decode_for_the_losses(rows: np.ndarray, dtype: str) -> None:
    encoding = TopKEncoding(4, dtype)
    stored = encoding.encode(rows, 0)
    specs = {spec.name: spec for spec in encoding.fields(CLASSES)}
    assert set(stored) == set(specs)
    for name, values in stored.items():
        assert values.dtype == np.dtype(specs[name].dtype) and values.shape[1:] == specs[name].row_shape
    decoded = encoding.decode(stored)
    assert set(decoded) == {"values", "indices", "log_normalizer"}
    assert decoded["values"].dtype == np.float32 and decoded["indices"].dtype == np.int64
    log_probs = np.log(softmax(rows))
    kept = np.take_along_axis(log_probs, decoded["indices"], axis=1)
    np.testing.assert_allclose(decoded["values"], kept, atol=0.05 * np.abs(log_probs).max())
    assert (np.exp(decoded["values"].astype(np.float64)).sum(axis=1) <= 1.0 + 1e-9).all()
    if dtype != "int8":  # floats round each value toward -inf; int8 lowers the row's offset instead
        assert (decoded["values"].astype(np.float64) <= kept).all()


def test_topk_reconstruction_matches_dense_hand_computation(rows: np.ndarray) -> None:
    encoding = TopKEncoding(2, "float32")
    probs = encoding.reconstruct(encoding.decode(encoding.encode(rows[:5], 0)), CLASSES)
    for row, reconstructed in zip(rows[:5], probs, strict=True):
        exact = dense_softmax(row)
        kept = np.argsort(-row)[:2]
        expected = np.full(CLASSES, (1 - exact[kept].sum()) / (CLASSES - 2))
        expected[kept] = exact[kept]
        np.testing.assert_allclose(reconstructed, expected, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_topk_with_every_class_feeds_the_loss_like_full_logits(rows: np.ndarray) -> None:
    encoding = TopKEncoding(CLASSES, "float32")
    decoded = encoding.decode(encoding.encode(rows, 0))
    np.testing.assert_allclose(encoding.reconstruct(decoded, CLASSES), softmax(rows), atol=1e-6)
    student = torch.from_numpy(np.random.default_rng(1).normal(size=rows.shape).astype(np.float32))
    labels = {name: torch.from_numpy(values) for name, values in decoded.items()}
    topk = distillation_loss(student, labels, None, encoding="topk", temperature=2.0, alpha=1.0)
    full = kd_loss(student, torch.from_numpy(rows), temperature=2.0)
    assert float(topk) == pytest.approx(float(full), rel=1e-5)


@pytest.mark.parametrize(
    "num_classes, dtype", [(2, "uint8"), (256, "uint8"), (257, "uint16"), (65536, "uint16"), (65537, "int32")]
)
def test_index_dtype_is_the_smallest_that_fits(num_classes: int, dtype: str) -> None:
    assert index_dtype(num_classes) == dtype
    assert {spec.name: spec.dtype for spec in TopKEncoding(1).fields(num_classes)}["indices"] == dtype
    assert {spec.name: spec.dtype for spec in SampledEncoding(4).fields(num_classes)}["indices"] == dtype


def test_largest_class_index_survives_the_index_dtype() -> None:
    row = np.zeros((1, 256), dtype=np.float32)
    row[0, 255] = 5.0
    assert int(TopKEncoding(1).encode(row, 0)["indices"][0, 0]) == 255


@pytest.mark.parametrize("samples, dtype", [(1, "uint8"), (255, "uint8"), (256, "uint16"), (70000, "uint32")])
def test_count_dtype_holds_every_count(samples: int, dtype: str) -> None:
    assert count_dtype(samples) == dtype


# ---- sampled ---------------------------------------------------------------------------------


def test_sampled_counts_are_unbiased_within_statistical_tolerance() -> None:
    probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03, 0.0])
    with np.errstate(divide="ignore"):
        logits = np.log(probs).astype(np.float32)  # the last class has probability exactly 0
    num_rows, samples = 20000, 8
    encoding = SampledEncoding(samples, seed=11)
    decoded = encoding.decode(encoding.encode(np.tile(logits, (num_rows, 1)), 0))
    estimate = encoding.reconstruct(decoded, len(probs))
    mean = estimate.mean(axis=0)
    # Each row's counts/S has variance p(1-p)/S; the mean over rows is within 5 standard errors.
    bound = 5 * np.sqrt(probs * (1 - probs) / (samples * num_rows))
    assert (np.abs(mean - probs) <= bound).all(), (mean, probs)
    assert mean[-1] == 0.0  # a class of probability 0 is never drawn


def test_sampled_layout_is_distinct_classes_first_then_zero_padding(rows: np.ndarray) -> None:
    samples = 12
    stored = SampledEncoding(samples, seed=3).encode(rows, 0)
    assert stored["counts"].dtype == np.uint8 and stored["indices"].dtype == np.uint8
    assert (stored["counts"].sum(axis=1) == samples).all()
    for indices, counts in zip(stored["indices"], stored["counts"], strict=True):
        distinct = int((counts > 0).sum())
        assert (counts[:distinct] > 0).all() and (counts[distinct:] == 0).all()
        assert (np.diff(indices[:distinct].astype(int)) > 0).all()
        assert (indices[distinct:] == 0).all()


def test_sampled_draws_are_reproducible_and_independent_of_shard_boundaries(rows: np.ndarray) -> None:
    encoding = SampledEncoding(16, seed=5)
    whole = encoding.encode(rows, 1000)
    pieces = [encoding.encode(rows[start : start + 64], 1000 + start) for start in range(0, len(rows), 64)]
    for name in whole:
        np.testing.assert_array_equal(np.concatenate([piece[name] for piece in pieces]), whole[name])
    np.testing.assert_array_equal(SampledEncoding(16, seed=5).encode(rows, 1000)["indices"], whole["indices"])
    other_seed = SampledEncoding(16, seed=6).encode(rows, 1000)
    other_rows = encoding.encode(rows, 0)
    assert not np.array_equal(other_seed["counts"], whole["counts"])
    assert not np.array_equal(other_rows["counts"], whole["counts"])


def test_sampled_decode_feeds_the_loss_and_reconstruction(rows: np.ndarray) -> None:
    encoding = SampledEncoding(6, seed=0)
    decoded = encoding.decode(encoding.encode(rows, 0))
    assert decoded["indices"].dtype == np.int64 and decoded["counts"].dtype == np.float32
    probs = encoding.reconstruct(decoded, CLASSES)
    for indices, counts, reconstructed in zip(decoded["indices"], decoded["counts"], probs, strict=True):
        expected = np.zeros(CLASSES)
        np.add.at(expected, indices, counts / 6)
        np.testing.assert_allclose(reconstructed, expected)
    student = torch.zeros(len(rows), CLASSES)
    labels = {name: torch.from_numpy(values) for name, values in decoded.items()}
    loss = distillation_loss(student, labels, None, encoding="sampled", temperature=1.0, alpha=1.0)
    assert float(loss) == pytest.approx(np.log(CLASSES), rel=1e-6)  # CE against a uniform student


def test_stored_classes_masks(rows: np.ndarray) -> None:
    full, topk, sampled = FullEncoding(), TopKEncoding(2), SampledEncoding(3)
    for encoding, expected in ((full, CLASSES), (topk, 2)):
        mask = encoding.stored_classes(encoding.decode(encoding.encode(rows, 0)), CLASSES)
        assert (mask.sum(axis=1) == expected).all()
    decoded = sampled.decode(sampled.encode(rows, 0))
    mask = sampled.stored_classes(decoded, CLASSES)
    np.testing.assert_array_equal(mask.sum(axis=1), (decoded["counts"] > 0).sum(axis=1))


# ---- stores and refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding",
    [
        FullEncoding("int8"),
        FullEncoding("bfloat16"),
        TopKEncoding(3, "int8"),
        TopKEncoding(3, "bfloat16"),
        SampledEncoding(5, seed=2),
    ],
    ids=lambda e: f"{e.name}-{e.params()}",
)
def test_store_round_trip(tmp_path: Path, rows: np.ndarray, encoding: Encoding) -> None:
    write_synthetic_store(tmp_path / "s.zarr", encoding, rows, np.zeros(len(rows), dtype=int))
    store = open_store(tmp_path / "s.zarr")
    assert store.encoding.params() == encoding.params()
    raw = store.read_rows(0, len(rows), raw=True).fields
    direct = encoding.encode(rows, 0)
    for name in direct:
        np.testing.assert_array_equal(raw[name], direct[name])
    decoded = store.read_all().fields
    for name, values in encoding.decode(direct).items():
        np.testing.assert_array_equal(decoded[name], values)


def test_k_larger_than_the_classes_is_refused(rows: np.ndarray) -> None:
    encoding = TopKEncoding(CLASSES + 1)
    with pytest.raises(InvalidSettingError, match="^k = 8 exceeds the number of classes \\(7\\)") as raised:
        encoding.fields(CLASSES)
    assert raised.value.setting == "k"
    with pytest.raises(InvalidSettingError, match="k = 8 exceeds"):
        encoding.encode(rows, 0)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("topk", {"k": 0}, "^k must be >= 1"),
        ("topk", {"k": 2.5}, "^k must be an integer"),
        ("topk", {"k": 2, "dtype": "int4"}, "^value dtype 'int4' is not one of"),
        ("topk", {"k": 2, "values": "probs"}, "top-k values 'probs' is not one of"),
        ("sampled", {"samples": 0}, "^samples must be >= 1"),
        ("sampled", {"samples": 4, "seed": -1}, "^seed must be in"),
        ("sampled", {"samples": 4, "dtype": "int8"}, "^value dtype int8 does not apply to format sampled"),
        ("full", {"dtype": "float64"}, "^value dtype 'float64' is not one of"),
        ("topk", {"samples": 3}, "bad parameters"),
    ],
)
def test_impossible_arguments_are_refused(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        encoding_from_params(name, params)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="'dense'; known formats: full, sampled, topk"):
        encoding_from_params("dense", {})


def test_sampled_accepts_the_default_dtype() -> None:
    encoding = encoding_from_params("sampled", {"dtype": "float16", "samples": 4, "seed": 1})
    assert encoding.params() == {"samples": 4, "seed": 1}
    assert encoding_from_params("sampled", encoding.params()).params() == encoding.params()
