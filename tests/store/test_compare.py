"""``compare_stores``: per-store quality, agreement and the temperature advisory against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from synthetic_stores import synthetic_dataset, synthetic_header, write_rows

from softlabels.errors import IncompleteStoreError, InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import Encoding, FullEncoding, SampledEncoding, TopKEncoding
from softlabels.store.compare import NEAR_UNIFORM_SHARE, compare_stores, format_comparison

ROWS, CLASSES = 200, 5
FLOAT32 = FullEncoding("float32")


def softmax(rows: np.ndarray) -> np.ndarray:
    wide = rows.astype(np.float64)
    weights = np.exp(wide - wide.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def hand_ece(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for low in range(bins):
        inside = (confidence > low / bins) & (confidence <= (low + 1) / bins)
        if inside.any():
            total += inside.sum() * abs(
                (predicted[inside] == targets[inside]).mean() - confidence[inside].mean()
            )
    return total / len(probs)


def hand_entropy(probs: np.ndarray) -> float:
    return float(-(probs * np.log(np.where(probs > 0, probs, 1.0))).sum(axis=1).mean())


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    targets = rng.integers(0, CLASSES, ROWS)
    strong = rng.normal(0.0, 2.0, (ROWS, CLASSES))
    strong[np.arange(ROWS), targets] += 5.0
    weak = rng.normal(0.0, 2.0, (ROWS, CLASSES))
    weak[np.arange(ROWS), targets] += 1.0
    return {"targets": targets, "strong": strong, "weak": weak}


def make_store(
    path: Path,
    encoding: Encoding,
    teacher_logits: np.ndarray,
    targets: np.ndarray,
    *,
    temperature: float,
    fingerprint: str = "f" * 64,
    complete: bool = True,
) -> Path:
    header = synthetic_header(
        encoding,
        ROWS,
        CLASSES,
        chunk_rows=64,
        temperature=temperature,
        dataset=synthetic_dataset(ROWS, CLASSES, fingerprint),
    )
    stored = (teacher_logits / temperature).astype(np.float32)
    write_rows(path, header, encoding, stored, targets, None if complete else [0])
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    targets = data["targets"]
    return {
        "strong": make_store(root / "strong.zarr", FLOAT32, data["strong"], targets, temperature=2.0),
        "weak": make_store(root / "weak.zarr", FLOAT32, data["weak"], targets, temperature=4.0),
        "topk": make_store(
            root / "topk.zarr", TopKEncoding(2, "float32"), data["strong"], targets, temperature=2.0
        ),
        "sampled": make_store(
            root / "s.zarr", SampledEncoding(2, seed=1), data["weak"], targets, temperature=4.0
        ),
    }


def test_full_store_figures_match_hand_computations(
    stores: dict[str, Path], data: dict[str, np.ndarray]
) -> None:
    report = compare_stores([stores["strong"]])
    (entry,) = report["stores"]
    logits, targets = data["strong"], data["targets"]
    at_one = softmax(logits)
    assert entry["accuracy"] == pytest.approx((at_one.argmax(axis=1) == targets).mean())
    assert entry["nll"] == pytest.approx(-np.log(at_one[np.arange(ROWS), targets]).mean(), rel=1e-5)
    assert entry["ece"] == pytest.approx(hand_ece(at_one, targets), abs=1e-6)
    assert entry["nll_temperature"] == entry["ece_temperature"] == 1.0 and entry["note"] is None
    assert entry["mean_entropy"] == pytest.approx(hand_entropy(softmax(logits / 2.0)), rel=1e-5)
    advisory = {point["temperature"]: point for point in entry["advisory"]}
    assert sorted(advisory) == [1.0, 2.0, 4.0, 8.0]
    for t, point in advisory.items():
        probs = softmax(logits / t)
        assert point["mean_entropy"] == pytest.approx(hand_entropy(probs), rel=1e-5)
        assert point["mean_top_probability"] == pytest.approx(probs.max(axis=1).mean(), rel=1e-5)
    assert report["uniform_entropy"] == pytest.approx(math.log(CLASSES))


def test_the_stored_temperature_joins_the_candidates(stores: dict[str, Path]) -> None:
    (entry,) = compare_stores([stores["strong"]], temperatures=[1.0, 3.0])["stores"]
    assert [point["temperature"] for point in entry["advisory"]] == [1.0, 2.0, 3.0]


def test_compact_stores_are_measured_at_their_stored_temperature(
    stores: dict[str, Path], data: dict[str, np.ndarray]
) -> None:
    report = compare_stores([stores["topk"], stores["sampled"]])
    topk, sampled = report["stores"]
    probs = softmax(data["strong"] / 2.0)
    kept = np.argsort(-probs, axis=1)[:, :2]
    reconstructed = np.zeros_like(probs)
    for row in range(ROWS):
        reconstructed[row] = (1.0 - probs[row, kept[row]].sum()) / (CLASSES - 2)
        reconstructed[row, kept[row]] = probs[row, kept[row]]
    targets = data["targets"]
    assert topk["nll"] == pytest.approx(-np.log(reconstructed[np.arange(ROWS), targets]).mean(), rel=1e-5)
    assert topk["nll_temperature"] == topk["ece_temperature"] == 2.0
    assert "cannot be re-tempered" in topk["note"]
    assert [point["temperature"] for point in topk["advisory"]] == [2.0]
    assert sampled["nll"] is None  # two draws per row miss the target class somewhere
    assert "NLL and ECE at T=1 (* at the stored T" in format_comparison(report)


def test_pairwise_agreement_and_ranking(stores: dict[str, Path], data: dict[str, np.ndarray]) -> None:
    report = compare_stores([stores["weak"], stores["strong"], stores["topk"]])
    strong, weak = data["strong"].argmax(axis=1), data["weak"].argmax(axis=1)
    pairs = {(pair["a"], pair["b"]): pair["top1_agreement"] for pair in report["agreement"]}
    assert pairs[(str(stores["weak"]), str(stores["strong"]))] == pytest.approx((strong == weak).mean())
    assert pairs[(str(stores["strong"]), str(stores["topk"]))] == 1.0
    assert len(pairs) == 3
    assert report["ranking_by_nll"][-1] == str(stores["weak"])
    json.dumps(report)  # --json prints it as it is


def test_nearly_uniform_temperatures_are_flagged(stores: dict[str, Path]) -> None:
    (entry,) = compare_stores([stores["weak"]])["stores"]
    flat = [point["temperature"] for point in entry["advisory"] if point["near_uniform"]]
    limit = NEAR_UNIFORM_SHARE * math.log(CLASSES)
    assert flat and all(
        (point["mean_entropy"] > limit) == point["near_uniform"] for point in entry["advisory"]
    )
    assert 1.0 not in flat
    report = compare_stores([stores["weak"]])
    (warning,) = report["warnings"]
    assert "weak.zarr is nearly uniform at T=4" in warning and "T=4 is the stored temperature" in warning
    assert "2.11 of 2.30 nats" in report["failure_mode"]
    assert "note: nearly uniform labels teach little" in format_comparison(report)
    calm = compare_stores([stores["strong"]], temperatures=[1.0])
    assert calm["warnings"] == [] and calm["failure_mode"] is None


def test_stores_of_other_data_are_refused_naming_what_differs(
    stores: dict[str, Path], data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    other = make_store(
        tmp_path / "o.zarr", FLOAT32, data["weak"], data["targets"], temperature=4.0, fingerprint="e" * 64
    )
    with pytest.raises(
        StoreMismatchError, match="compared stores must label the same data.*dataset fingerprint"
    ):
        compare_stores([stores["strong"], other])


def test_bad_input_is_refused(stores: dict[str, Path], data: dict[str, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="at least one store"):
        compare_stores([])
    with pytest.raises(InvalidArgumentError, match="finite numbers > 0, got 0"):
        compare_stores([stores["strong"]], temperatures=[0.0])
    partial = make_store(
        tmp_path / "p.zarr", FLOAT32, data["weak"], data["targets"], temperature=4.0, complete=False
    )
    with pytest.raises(IncompleteStoreError):
        compare_stores([partial])
