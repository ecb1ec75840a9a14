"""``import_labels`` on token data: ``[N, L, C]`` arrays and per-position JSON Lines, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from slow_generate import PLUGINS

from softlabels.errors import DataError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.schema import IGNORED_TARGET
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.processing.imports import NORMALISATION_TOLERANCE, import_labels, read_source
from softlabels.sources import load_dataset
from softlabels.store import open_store, read_header
from softlabels.store.export import export_store
from softlabels.store.verify import verify_store

T = 2.0
DATASET, TEACHER = f"{PLUGINS}:token_windows", f"{PLUGINS}:tiny_lm"
FULL = EncodingSpec.create("full", dtype="float32")
TOPK = EncodingSpec.create("topk", k=5, dtype="float16")
SAMPLED = EncodingSpec.create("sampled", samples=7, seed=3)


def generated(out: Path, encoding: EncodingSpec) -> Path:
    generate(
        GenerateConfig(
            dataset=DATASET,
            teacher=TEACHER,
            random_weights=True,
            temperature=T,
            out=str(out),
            encoding=encoding,
            chunk_rows=4,
            batch_size=4,
            progress=False,
        )
    )
    return out


def imported(out: Path, source: Path, kind: str | None, encoding: EncodingSpec, **options: Any) -> Path:
    import_labels(
        read_source(source, kind, T, k=options.pop("k", None)),
        dataset=DATASET,
        split="train",
        out=out,
        teacher_name="served",
        temperature=T,
        encoding=encoding,
        chunk_rows=4,
        **options,
    )
    return out


def data_targets() -> np.ndarray:
    data = load_dataset(DATASET, "train")
    return np.stack([data.dataset[i][1].numpy() for i in range(len(data))])


def assert_same_labels(a: Path, b: Path) -> None:
    first, second = open_store(a).read_all(), open_store(b).read_all()
    np.testing.assert_array_equal(first.targets, second.targets)
    assert sorted(first.fields) == sorted(second.fields)
    for name, values in first.fields.items():
        np.testing.assert_array_equal(values, second.fields[name], err_msg=name)


def by_class(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's kept classes in class order: values tied after rounding may come in either order."""
    order = np.argsort(indices, axis=-1)
    return np.take_along_axis(indices, order, axis=-1), np.take_along_axis(values, order, axis=-1)


@pytest.mark.parametrize("encoding", [FULL, TOPK, SAMPLED], ids=["full", "topk", "sampled"])
def test_generate_export_import_gives_the_same_token_labels(tmp_path: Path, encoding: EncodingSpec) -> None:
    teacher = generated(tmp_path / "teacher.zarr", encoding)
    export_store(generated(tmp_path / "full.zarr", FULL), tmp_path / "full.npz")
    again = imported(tmp_path / "imported.zarr", tmp_path / "full.npz", "scaled-logits", encoding)
    layout = read_header(again).layout
    assert (layout.positions, layout.target_axes) == (read_header(teacher).layout.positions, (6,))
    assert_same_labels(teacher, again)
    assert verify_store(str(again)).ok


def test_served_top_logprobs_per_position_import_as_the_generated_topk_labels(tmp_path: Path) -> None:
    teacher = generated(tmp_path / "teacher.zarr", TOPK)
    export_store(teacher, tmp_path / "topk.npz")
    exported = np.load(tmp_path / "topk.npz", allow_pickle=False)
    values, indices = exported["values"], exported["indices"]  # [N, L, K]
    records = [
        {
            "index": row,
            "logprobs": [
                dict(zip(map(str, ids.tolist()), kept.tolist(), strict=True))
                for ids, kept in zip(i, v, strict=True)
            ],
        }
        for row, (i, v) in enumerate(zip(indices, values, strict=True))
    ]
    source = tmp_path / "served.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    fields = open_store(imported(tmp_path / "s.zarr", source, None, TOPK, k=5)).read_all().fields
    assert fields["values"].shape == values.shape
    for stored, served in zip(
        by_class(fields["indices"], fields["values"]), by_class(indices, values), strict=True
    ):
        np.testing.assert_array_equal(stored, served)
    assert not fields["log_normalizer"].any()


def log_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows.astype(np.float64) - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_logprobs() -> np.ndarray:
    return log_softmax(np.random.default_rng(0).normal(size=(10, 6, 23)))


def test_logprobs_off_at_an_ignored_position_are_stored_at_a_labelled_one_refused(tmp_path: Path) -> None:
    targets = data_targets()
    ignored = np.argwhere(targets == IGNORED_TARGET)[0]
    rows = token_logprobs()
    rows[tuple(ignored)] += 1.0  # mass e, but the data never trains on this position
    np.save(tmp_path / "ignored.npy", rows)
    store = open_store(imported(tmp_path / "a.zarr", tmp_path / "ignored.npy", "logprobs", FULL))
    np.testing.assert_array_equal(store.read_all().fields["logits"], rows.astype(np.float32))
    np.testing.assert_array_equal(store.read_all().targets, targets)
    rows[3, 2] += 2 * NORMALISATION_TOLERANCE
    np.save(tmp_path / "labelled.npy", rows)
    with pytest.raises(
        DataError, match="do not normalise .* at row 3, position 2; .*\\(positions \\[2\\] of row 3\\)"
    ):
        imported(tmp_path / "b.zarr", tmp_path / "labelled.npy", "logprobs", FULL)
    assert not (tmp_path / "b.zarr").exists()


@pytest.mark.parametrize(
    "shape, message",
    [
        (
            (10, 5, 23),
            "holds \\[N, L, C\\] with L = 5 but .* has 6 labelled positions per sample: positions that do not line up",
        ),
        ((10, 23), "holds \\[N, C\\], one row per sample but .* has 6 labelled positions per sample"),
        ((9, 6, 23), "holds 9 rows but .* has 10 samples"),
        ((10, 6, 22), "rows of 22 classes but .* has 23"),
    ],
)
def test_arrays_that_do_not_fit_the_token_data_are_refused(
    tmp_path: Path, shape: tuple[int, ...], message: str
) -> None:
    np.save(tmp_path / "s.npy", np.zeros(shape, np.float32))
    with pytest.raises(DataError, match=message):
        imported(tmp_path / "s.zarr", tmp_path / "s.npy", "logits", FULL)
    assert not (tmp_path / "s.zarr").exists()


def test_nan_at_a_position_is_refused_naming_row_and_position(tmp_path: Path) -> None:
    rows = np.zeros((10, 6, 23), np.float32)
    rows[4, 1, 7] = np.nan
    np.save(tmp_path / "s.npy", rows)
    with pytest.raises(
        DataError,
        match="NaN or infinite values in 1 rows, e.g. rows \\[4\\] \\(positions \\[1\\] of row 4\\)",
    ):
        read_source(tmp_path / "s.npy", "logits", T)


def test_a_record_with_other_positions_than_the_data_is_refused(tmp_path: Path) -> None:
    position = {"1": -0.5, "2": -1.5}
    records = [{"logprobs": [position] * 6} for _ in range(10)]
    records[7] = {"logprobs": [position] * 5}
    source = tmp_path / "s.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(
        DataError,
        match="record 7 holds 5 positions but .* has 6 labelled positions per sample .*: positions that do not line up",
    ):
        imported(tmp_path / "s.zarr", source, None, EncodingSpec.create("topk", k=2, dtype="float32"))
    assert not (tmp_path / "s.zarr").exists()
