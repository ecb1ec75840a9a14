"""``inspect_store``: size, teacher quality and fidelity metrics against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from synthetic_stores import synthetic_header, write_rows, write_synthetic_store

from softlabels.errors import IncompleteStoreError, InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import FullEncoding, SampledEncoding, TopKEncoding
from softlabels.format.schema import TeacherInfo
from softlabels.store import Encoding
from softlabels.store import inspect as inspect_module
from softlabels.store.inspect import format_inspection, inspect_store

ROWS, CLASSES = 150, 5


def write_store(
    path: Path,
    encoding: Encoding,
    values: np.ndarray,
    targets: np.ndarray,
    *,
    chunk_rows: int = 64,
    temperature: float = 2.0,
    complete: bool = True,
) -> Path:
    return write_synthetic_store(
        path,
        encoding,
        values,
        targets,
        chunk_rows=chunk_rows,
        temperature=temperature,
        shards=None if complete else [0],
    )


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    targets = rng.integers(0, CLASSES, ROWS)
    values = rng.normal(0.0, 1.5, (ROWS, CLASSES))
    values[np.arange(ROWS), targets] += rng.uniform(0.0, 4.0, ROWS)  # right most of the time, not always
    return values.astype(np.float32), targets


def softmax_rows(values: np.ndarray) -> np.ndarray:
    out = []
    for row in values.astype(np.float64):
        weights = [math.exp(v - max(row)) for v in row]
        out.append([w / sum(weights) for w in weights])
    return np.array(out)


def hand_ece(probs: np.ndarray, targets: np.ndarray, bins: int) -> float:
    total = 0.0
    for b in range(bins):
        lower, upper = b / bins, (b + 1) / bins
        members = [i for i, p in enumerate(probs) if lower < p.max() <= upper]
        if members:
            accuracy = np.mean([probs[i].argmax() == targets[i] for i in members])
            confidence = np.mean([probs[i].max() for i in members])
            total += len(members) / len(probs) * abs(accuracy - confidence)
    return total


def test_teacher_metrics_of_a_full_store(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    report = inspect_store(write_store(tmp_path / "f.zarr", FullEncoding("float32"), values, targets))
    probs = softmax_rows(values)
    teacher = report["teacher"]
    assert teacher["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == targets))
    hand_entropy = np.mean([-sum(p * math.log(p) for p in row) for row in probs])
    assert teacher["mean_entropy"] == pytest.approx(hand_entropy, rel=1e-9)
    assert teacher["mean_confidence"] == pytest.approx(probs.max(axis=1).mean())
    assert teacher["ece"] == pytest.approx(hand_ece(probs, targets, 15), abs=1e-12)
    assert 0 < teacher["ece"] < 1 and 0 < teacher["accuracy"] < 1
    assert report["reference"] is None and report["note"] is None
    assert (report["num_rows"], report["num_classes"], report["temperature"]) == (ROWS, CLASSES, 2.0)


def test_size_and_compression_ratio(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    report = inspect_store(write_store(tmp_path / "t.zarr", TopKEncoding(2, "float16"), values, targets))
    size = report["size"]
    assert size["uncompressed_label_bytes_per_sample"] == 2 * 2 + 2 * 1 + 4
    assert size["fp32_full_bytes_per_sample"] == 4 * CLASSES
    assert size["compression_ratio"] == pytest.approx(4 * CLASSES / size["label_bytes_per_sample"])
    files = sum(p.stat().st_size for p in (tmp_path / "t.zarr").rglob("*") if p.is_file())
    assert size["bytes_per_sample"] == pytest.approx(files / ROWS)
    assert size["label_bytes_per_sample"] < size["bytes_per_sample"]


def test_topk_fidelity_against_a_reference(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    reference = write_store(tmp_path / "f.zarr", FullEncoding("float32"), values, targets, chunk_rows=48)
    store = write_store(tmp_path / "t.zarr", TopKEncoding(2, "float32"), values, targets, chunk_rows=64)
    report = inspect_store(store, reference)
    exact = softmax_rows(values)
    kls, kept_masses, agreements, distances = [], [], [], []
    for p in exact:
        kept = np.argsort(-p)[:2]
        q = np.full(CLASSES, (1 - p[kept].sum()) / (CLASSES - 2))
        q[kept] = p[kept]
        kls.append(sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True)))
        kept_masses.append(p[kept].sum())
        agreements.append(q.argmax() == p.argmax())
        distances.append(0.5 * np.abs(p - q).sum())
    fidelity = report["reference"]
    assert fidelity["location"] == str(reference)
    assert fidelity["mean_kl"] == pytest.approx(np.mean(kls), rel=1e-4)
    assert fidelity["kept_mass"] == pytest.approx(np.mean(kept_masses), rel=1e-6)
    assert fidelity["top1_agreement"] == pytest.approx(np.mean(agreements)) == 1.0
    assert fidelity["total_variation"] == pytest.approx(np.mean(distances), rel=1e-4)
    assert fidelity["mean_kl"] > 0 and fidelity["kept_mass"] < 1


def test_a_full_store_is_perfect_against_itself(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    store = write_store(tmp_path / "f.zarr", FullEncoding("float32"), values, targets)
    fidelity = inspect_store(store, store)["reference"]
    assert fidelity["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    assert fidelity["top1_agreement"] == fidelity["kept_mass"] == 1.0


def test_sampled_fidelity_has_infinite_kl(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    encoding = SampledEncoding(3, seed=1)
    reference = write_store(tmp_path / "f.zarr", FullEncoding("float32"), values, targets)
    report = inspect_store(write_store(tmp_path / "s.zarr", encoding, values, targets), reference)
    stored = encoding.encode(values, 0)
    exact = softmax_rows(values)
    kept_mass = np.mean(
        [
            sum(p[c] for c, n in zip(ix, counts, strict=True) if n > 0)
            for p, ix, counts in zip(exact, stored["indices"], stored["counts"], strict=True)
        ]
    )
    assert report["reference"]["mean_kl"] is None
    assert report["reference"]["kept_mass"] == pytest.approx(kept_mass)
    assert "infinite" in format_inspection(report) and "sampled" in report["note"]
    json.dumps(report, allow_nan=False)


def test_small_work_blocks_give_the_same_report(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    values, targets = data
    reference = write_store(tmp_path / "f.zarr", FullEncoding("float32"), values, targets, chunk_rows=50)
    store = write_store(tmp_path / "t.zarr", TopKEncoding(3, "int8"), values, targets, chunk_rows=64)
    whole = inspect_store(store, reference)
    monkeypatch.setattr(inspect_module, "MAX_DENSE_ELEMENTS", 3 * CLASSES)
    monkeypatch.setattr(inspect_module, "MAX_BLOCK_ROWS", 16)
    pieces = inspect_store(store, reference)
    for section in ("teacher", "reference"):
        for key, value in whole[section].items():
            assert pieces[section][key] == pytest.approx(value), key


def test_reference_must_fit(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    store = write_store(tmp_path / "t.zarr", TopKEncoding(2), values, targets)
    hotter = write_store(tmp_path / "hot.zarr", FullEncoding(), values, targets, temperature=4.0)
    with pytest.raises(StoreMismatchError, match="temperature: store has 2.0, reference has 4.0"):
        inspect_store(store, hotter)
    fewer = write_store(tmp_path / "few.zarr", FullEncoding(), values[:100], targets[:100])
    with pytest.raises(StoreMismatchError, match="number of samples: store has 150, reference has 100"):
        inspect_store(store, fewer)
    with pytest.raises(InvalidArgumentError, match="reference must be a full store"):
        inspect_store(store, store)
    partial = write_store(tmp_path / "p.zarr", FullEncoding(), values, targets, complete=False)
    with pytest.raises(IncompleteStoreError):
        inspect_store(store, partial)
    with pytest.raises(InvalidArgumentError, match="bins"):
        inspect_store(store, bins=0)


def test_plug_in_teachers_with_other_parameters_are_not_references(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    # Plug-in teachers have no weights file; only the parameters' digest tells two of them apart.
    values, targets = data
    stores = []
    for name, digest in (("one", "a" * 64), ("other", "b" * 64)):
        encoding = FullEncoding("float32") if name == "other" else TopKEncoding(2)
        teacher = TeacherInfo("my_teacher.py:net", 10, None, None, digest)
        header = synthetic_header(encoding, ROWS, CLASSES, teacher=teacher)
        write_rows(tmp_path / f"{name}.zarr", header, encoding, values, targets)
        stores.append(tmp_path / f"{name}.zarr")
    with pytest.raises(
        StoreMismatchError, match="teacher parameters sha256: store has 'a{64}', reference has 'b{64}'"
    ):
        inspect_store(*stores)


def test_format_inspection_lines(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    values, targets = data
    reference = write_store(tmp_path / "f.zarr", FullEncoding("float32"), values, targets)
    report = inspect_store(write_store(tmp_path / "t.zarr", TopKEncoding(2), values, targets), reference)
    text = format_inspection(report)
    assert f"{report['teacher']['accuracy']:.2%}" in text
    assert "smaller than float32 full logits (20 B/sample)" in text
    agreement = report["reference"]["top1_agreement"]
    assert f"top-1 agreement {agreement:.2%}" in text and "residual" in text
    assert agreement >= 0.99  # float16 may round a near-tie of the two top classes into a tie
    remote = {**report, "size": {**report["size"], "bytes_per_sample": None}}
    assert "unknown B/sample on disk" in format_inspection(remote)
