"""Top-k rows keep at most all of the teacher's mass in every value dtype, and the loss and
``inspect`` read the same target distribution from them, for new stores and old ones alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_stores import synthetic_header

from softlabels.defaults import VALUE_DTYPES
from softlabels.format.encodings import TopKEncoding, logsumexp, softmax, top_classes, topk_target
from softlabels.format.encodings.values import encode_values
from softlabels.store import StoreWriter, open_store
from softlabels.training.losses import topk_kd_loss

K = 5
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)


def confident_rows(num_classes: int, num_rows: int = 400, seed: int = 0) -> np.ndarray:
    """Unscaled teacher logits with one class 30 to 60 above the others."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (num_rows, num_classes))
    logits[np.arange(num_rows), rng.integers(0, num_classes, num_rows)] += rng.uniform(30.0, 60.0, num_rows)
    return logits


def kept_mass(log_probs: np.ndarray) -> np.ndarray:
    mass: np.ndarray = np.exp(log_probs.astype(np.float64)).sum(axis=1)
    return mass


@pytest.mark.parametrize("num_classes", [100, 1000])
@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_kept_mass_never_exceeds_one(dtype: str, num_classes: int) -> None:
    encoding = TopKEncoding(K, dtype)
    for temperature in TEMPERATURES:
        scaled = (confident_rows(num_classes) / temperature).astype(np.float32)
        decoded = encoding.decode(encoding.encode(scaled, 0))
        mass = kept_mass(decoded["values"])
        assert mass.max() <= 1.0 + 1e-3, (temperature, mass.max())
        exact = np.take_along_axis(softmax(scaled), decoded["indices"], axis=1).sum(axis=1)
        assert np.abs(mass - exact).max() <= 5e-3  # rounding moves the kept mass only a little
        _, share = topk_target(decoded["values"].astype(np.float64), num_classes, np)
        assert (share >= 0).all()
        np.testing.assert_allclose(encoding.reconstruct(decoded, num_classes).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
@pytest.mark.parametrize("residual", ["uniform", "renormalize"])
def test_loss_and_reconstruction_use_the_same_target(dtype: str, residual: str) -> None:
    num_classes, temperature = 100, 4.0
    encoding = TopKEncoding(K, dtype)
    scaled = (confident_rows(num_classes, 64) / temperature).astype(np.float32)
    decoded = encoding.decode(encoding.encode(scaled, 0))
    student = np.random.default_rng(1).normal(0.0, 3.0, (len(scaled), num_classes))
    loss = topk_kd_loss(
        torch.from_numpy(student),
        torch.from_numpy(decoded["values"]),
        torch.from_numpy(decoded["indices"]),
        temperature=temperature,
        residual=residual,
    )
    teacher = encoding.reconstruct(decoded, num_classes)
    if residual == "renormalize":  # the reconstruction restricted to the kept classes
        teacher = np.take_along_axis(teacher, decoded["indices"], axis=1)
        student = np.take_along_axis(student, decoded["indices"], axis=1)
        teacher = teacher / teacher.sum(axis=1, keepdims=True)
    log_student = np.log(softmax(student / temperature))
    positive = teacher > 0
    kl = np.where(positive, teacher * (np.log(np.where(positive, teacher, 1.0)) - log_student), 0.0)
    expected = temperature**2 * kl.sum(axis=1).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def write_old_store(path: Path, scaled: np.ndarray, dtype: str) -> None:
    """A top-k store as softlabels wrote it before: raw kept scaled logits, no ``values`` parameter."""
    legacy = TopKEncoding(K, dtype, values="logits")
    header = synthetic_header(legacy, len(scaled), scaled.shape[1], chunk_rows=64)
    assert "values" not in header.layout.encoding_params
    writer = StoreWriter.open(path, header, legacy)
    kept = top_classes(scaled, K)
    fields = {
        **encode_values("values", np.take_along_axis(scaled, kept, axis=1), dtype, 0),
        "indices": kept.astype(np.uint8),
        "log_normalizer": logsumexp(scaled).astype(np.float32),
    }
    for shard in writer.pending_shards():
        start, stop = header.layout.shard_bounds(shard)
        writer.write_shard(
            shard, {name: values[start:stop] for name, values in fields.items()}, np.zeros(stop - start)
        )
    writer.mark_complete()


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_old_top_k_stores_decode_into_the_same_form(tmp_path: Path, dtype: str) -> None:
    scaled = (confident_rows(100, 200) / 2.0).astype(np.float32)
    write_old_store(tmp_path / "old.zarr", scaled, dtype)
    old = open_store(tmp_path / "old.zarr")
    assert old.encoding.params() == {"k": K, "dtype": dtype}
    decoded = old.read_all().fields
    assert set(decoded) == {"values", "indices", "log_normalizer"}
    assert kept_mass(decoded["values"]).max() <= 1.0 + 1e-3
    new = TopKEncoding(K, dtype)
    fresh = new.decode(new.encode(scaled, 0))
    np.testing.assert_array_equal(decoded["indices"], fresh["indices"])
    tolerance = {"float32": 1e-5, "float16": 0.05, "bfloat16": 0.3, "int8": 0.5}[dtype]
    np.testing.assert_allclose(decoded["values"], fresh["values"], atol=tolerance)
    # inspect and the loss agree on old stores too: the reconstruction is the one the loss trains towards
    probs = old.encoding.reconstruct(decoded, 100)
    np.testing.assert_allclose(
        np.take_along_axis(probs, decoded["indices"], 1), np.exp(decoded["values"]), rtol=1e-6
    )
