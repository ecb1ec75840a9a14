"""Stores with label axes (format version 2): token positions ``[N, L, ...]`` and views ``[N, V, ...]``.

Every format is stored per cell, read back equal to encoding each cell on its own, converted equal to
writing directly, and measured (inspect, compare, verify) over labelled positions only.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from synthetic_stores import (
    synthetic_dataset,
    synthetic_header,
    token_rows,
    write_rows,
    write_synthetic_store,
)

from softlabels.errors import InvalidArgumentError, StoreFormatError, StoreMismatchError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import Encoding, FullEncoding, SampledEncoding, TopKEncoding, softmax
from softlabels.format.schema import ATTRIBUTE_KEY, IGNORED_TARGET, default_chunk_rows
from softlabels.processing.convert import convert_store
from softlabels.store import LabelStore, StoreWriter, open_store
from softlabels.store import inspect as inspect_module
from softlabels.store.compare import compare_stores
from softlabels.store.export import export_store
from softlabels.store.info import describe_store, format_description
from softlabels.store.inspect import format_inspection, inspect_store
from softlabels.store.verify import verify_store

SAMPLES, POSITIONS, VIEWS, CLASSES, CHUNK = 50, 6, 3, 12, 16
FORMATS: dict[str, Encoding] = {
    "full": FullEncoding("float32"),
    "topk": TopKEncoding(4),
    "sampled": SampledEncoding(5, seed=9),
}


@pytest.fixture(scope="module")
def tokens() -> tuple[np.ndarray, np.ndarray]:
    return token_rows(SAMPLES, POSITIONS, CLASSES, seed=1)


@pytest.fixture(scope="module")
def token_stores(
    tmp_path_factory: pytest.TempPathFactory, tokens: tuple[np.ndarray, np.ndarray]
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokens")
    values, targets = tokens
    return {
        name: write_synthetic_store(
            root / f"{name}.zarr", encoding, values, targets, chunk_rows=CHUNK, positions=POSITIONS
        )
        for name, encoding in FORMATS.items()
    }


def cellwise(encoding: Encoding, values: np.ndarray) -> dict[str, np.ndarray]:
    """Every cell encoded as a row of its own (cell index = row * cells + cell), then decoded."""
    flat = values.reshape(-1, values.shape[-1])
    return encoding.decode(encoding.encode(flat, 0))


@pytest.mark.parametrize("name", FORMATS)
def test_a_token_store_reads_back_every_cell_as_encoded_alone(
    name: str, token_stores: dict[str, Path], tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    values, targets = tokens
    store = open_store(token_stores[name])
    assert store.header.version == 2 and store.layout.label_axes == (POSITIONS,)
    chunk = store.read_all()
    expected = cellwise(FORMATS[name], values)
    assert chunk.fields.keys() == expected.keys()
    for field, cells in expected.items():
        assert chunk.fields[field].shape == (SAMPLES, POSITIONS, *cells.shape[1:])
        np.testing.assert_array_equal(chunk.fields[field].reshape(cells.shape), cells)
    np.testing.assert_array_equal(chunk.targets, targets)
    assert (chunk.targets == IGNORED_TARGET).any()
    group = zarr.open_group(str(token_stores[name]), mode="r")
    for spec in store.encoding.fields(CLASSES):
        array = group[spec.name]
        assert array.chunks == (CHUNK, POSITIONS, *spec.row_shape[1:])  # chunked along samples only
        assert array.metadata.dimension_names[:2] == ("sample", "position")  # type: ignore[union-attr]
    assert group["targets"].shape == (SAMPLES, POSITIONS)
    assert group["targets"].metadata.dimension_names == ("sample", "position")  # type: ignore[union-attr]


@pytest.mark.parametrize("axes", [{"views": VIEWS}, {"views": VIEWS, "positions": POSITIONS}])
@pytest.mark.parametrize("name", ["topk", "sampled"])
def test_a_views_store_reads_back_every_view_as_encoded_alone(
    tmp_path: Path, name: str, axes: dict[str, int], tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    shape = tuple(axes.values())
    values = np.random.default_rng(2).normal(size=(SAMPLES, *shape, CLASSES)).astype(np.float32)
    targets = tokens[1] if "positions" in axes else tokens[1][:, 0].clip(0)
    path = write_synthetic_store(
        tmp_path / "v.zarr", FORMATS[name], values, targets, chunk_rows=CHUNK, **axes
    )
    chunk = open_store(path).read_all()
    for field, cells in cellwise(FORMATS[name], values).items():
        np.testing.assert_array_equal(chunk.fields[field].reshape(cells.shape), cells)
    np.testing.assert_array_equal(chunk.targets, targets)  # views share their sample's targets


@pytest.mark.parametrize("name", ["topk", "sampled"])
@pytest.mark.parametrize("axes", ["positions", "views"])
def test_converting_a_full_store_with_label_axes_equals_writing_directly(
    tmp_path: Path, name: str, axes: str, tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    values, targets = tokens
    if axes == "views":
        targets = targets[:, 0].clip(0)
    settings = {axes: POSITIONS}
    full = write_synthetic_store(
        tmp_path / "full.zarr", FORMATS["full"], values, targets, chunk_rows=CHUNK, **settings
    )
    direct = write_synthetic_store(
        tmp_path / "direct.zarr", FORMATS[name], values, targets, chunk_rows=CHUNK, **settings
    )
    spec = EncodingSpec.from_layout(FORMATS[name].name, FORMATS[name].params())
    convert_store(full, tmp_path / "converted.zarr", spec, scheduler="synchronous")
    converted, written = open_store(tmp_path / "converted.zarr"), open_store(direct)
    assert converted.layout.label_axes == written.layout.label_axes == (POSITIONS,)
    assert getattr(converted.layout, axes) == POSITIONS
    got = converted.read_rows(0, SAMPLES, raw=True)
    want = written.read_rows(0, SAMPLES, raw=True)
    for field in want.fields:
        np.testing.assert_array_equal(got.fields[field], want.fields[field])
    np.testing.assert_array_equal(got.targets, want.targets)


def test_the_writer_refuses_blocks_without_the_label_axes(
    tmp_path: Path, tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    values, targets = tokens
    encoding = FORMATS["topk"]
    header = synthetic_header(encoding, SAMPLES, CLASSES, chunk_rows=CHUNK, positions=POSITIONS)
    writer = StoreWriter.open(tmp_path / "t.zarr", header, encoding)
    flat = encoding.encode(values[:CHUNK, 0], 0)
    with pytest.raises(
        InvalidArgumentError, match=r"'values' of a shard .* must have shape \(16, 6, 4\), got \(16, 4\)"
    ):
        writer.write_shard(0, flat, targets[:CHUNK])
    fields = writer.encoding.encode(values[:CHUNK], 0)
    with pytest.raises(
        InvalidArgumentError, match=r"'targets' of a shard .* must have shape \(16, 6\), got \(16,\)"
    ):
        writer.write_shard(0, fields, targets[:CHUNK, 0])
    with pytest.raises(InvalidArgumentError, match="holds the fields"):
        writer.write_shard(0, {"values": fields["values"]}, targets[:CHUNK])
    assert writer.pending_shards() == list(range(header.layout.num_shards))


def test_resuming_with_another_vocabulary_names_the_difference(
    tmp_path: Path, tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    values, targets = tokens
    words = [f"w{i}" for i in range(CLASSES)]
    dataset = replace(synthetic_dataset(SAMPLES, CLASSES), class_names=tuple(words))
    header = synthetic_header(FORMATS["full"], SAMPLES, CLASSES, dataset=dataset, positions=POSITIONS)
    write_rows(tmp_path / "t.zarr", header, FORMATS["full"], values, targets, shards=[0])
    other = replace(dataset, class_names=(*words[:3], "<unk>", *words[4:]))
    again = synthetic_header(FORMATS["full"], SAMPLES, CLASSES, dataset=other, positions=POSITIONS)
    with pytest.raises(
        StoreMismatchError,
        match="class names \\(vocabulary\\) differ: store has 12, this run has 12; first difference at index 3: "
        "store has 'w3', this run has '<unk>'",
    ):
        StoreWriter.open(tmp_path / "t.zarr", again, FORMATS["full"])
    longer = synthetic_header(FORMATS["full"], SAMPLES, CLASSES, dataset=dataset, positions=POSITIONS + 1)
    with pytest.raises(
        StoreMismatchError, match="labelled positions per sample: store has 6, this run has 7"
    ):
        StoreWriter.open(tmp_path / "t.zarr", longer, FORMATS["full"])


def test_a_header_edited_to_other_label_axes_is_refused_when_read(
    token_stores: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "edited.zarr"
    write_synthetic_store(
        path, FORMATS["topk"], *token_rows(SAMPLES, POSITIONS, CLASSES), positions=POSITIONS
    )
    group = zarr.open_group(str(path), mode="r+")
    document = group.attrs[ATTRIBUTE_KEY]
    document["layout"]["positions"] = POSITIONS + 2
    group.attrs[ATTRIBUTE_KEY] = document
    with pytest.raises(
        StoreFormatError,
        match="the 'values' array holds rows of shape \\(6, 4\\), but the header's layout implies \\(8, 4\\)",
    ):
        open_store(path).read_all()
    problems = verify_store(path).problems
    assert any(
        p.where == "values" and "shape is (50, 6, 4), the layout implies (50, 8, 4)" in p.problem
        for p in problems
    )


def test_info_shows_the_label_axes(token_stores: dict[str, Path]) -> None:
    description = describe_store(token_stores["topk"])
    assert (description["version"], description["positions"], description["views"]) == (2, POSITIONS, None)
    assert description["arrays"]["values"]["row_shape"] == [POSITIONS, 4]
    assert f"{SAMPLES} samples x {POSITIONS} positions x {CLASSES} classes" in format_description(description)


def test_inspect_reports_per_position_figures_over_labelled_positions(
    token_stores: dict[str, Path], tokens: tuple[np.ndarray, np.ndarray]
) -> None:
    values, targets = tokens
    labelled = targets.reshape(-1) != IGNORED_TARGET
    teacher = softmax(values.reshape(-1, CLASSES))[labelled]
    report = inspect_store(token_stores["topk"], token_stores["full"])
    decoded = cellwise(FORMATS["topk"], values)
    kept = np.exp(decoded["values"].astype(np.float64)).sum(axis=1)[labelled]
    probs = FORMATS["topk"].reconstruct(decoded, CLASSES)[labelled]
    positions = report["positions"]
    assert positions["labelled_positions"] == labelled.sum()
    assert positions["ignored_positions"] == (~labelled).sum()
    assert positions["label_bytes_per_token"] == pytest.approx(
        report["size"]["label_bytes_per_sample"] * SAMPLES / labelled.sum()
    )
    assert positions["kept_mass"] == pytest.approx(kept.mean())
    assert positions["top1_agreement_with_targets"] == pytest.approx(
        (probs.argmax(axis=1) == targets.reshape(-1)[labelled]).mean()
    )
    kl = (teacher * (np.log(teacher) - np.log(probs))).sum(axis=1).mean()
    assert report["reference"]["mean_kl"] == pytest.approx(kl, rel=1e-6)
    assert report["size"]["fp32_full_bytes_per_sample"] == 4 * CLASSES * POSITIONS
    assert "label B/token" in format_inspection(report)
    assert inspect_store(token_stores["full"])["positions"]["kept_mass"] == pytest.approx(1.0)


def test_verify_accepts_ignored_targets_and_names_a_bad_one(
    token_stores: dict[str, Path], tmp_path: Path
) -> None:
    assert verify_store(token_stores["sampled"]).ok
    values, targets = token_rows(SAMPLES, POSITIONS, CLASSES, seed=3)
    targets[20, 4] = CLASSES
    path = write_synthetic_store(
        tmp_path / "bad.zarr", FORMATS["topk"], values, targets, chunk_rows=CHUNK, positions=POSITIONS
    )
    (problem,) = verify_store(path).problems
    assert problem.where == "targets/c/1/0"
    assert problem.problem == (
        f"1 rows (1 label cells) hold a target outside [0, {CLASSES}) and not -100 (ignored) (first: row 20, cell 4: {CLASSES})"
    )


def test_compare_measures_labelled_positions_and_refuses_other_axes(
    token_stores: dict[str, Path], tokens: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    values, targets = tokens
    labelled = targets.reshape(-1) != IGNORED_TARGET
    report = compare_stores([token_stores["full"], token_stores["topk"]])
    predicted = values.reshape(-1, CLASSES).argmax(axis=1)[labelled]
    assert report["stores"][0]["accuracy"] == pytest.approx(
        (predicted == targets.reshape(-1)[labelled]).mean()
    )
    assert report["agreement"][0]["top1_agreement"] == 1.0  # top-k keeps the most probable class
    plain_values = values[:, 0]
    plain = write_synthetic_store(
        tmp_path / "plain.zarr", FORMATS["full"], plain_values, targets[:, 0].clip(0)
    )
    with pytest.raises(StoreMismatchError, match="must have the same label axes"):
        compare_stores([token_stores["full"], plain])


def test_export_keeps_the_label_axes(
    token_stores: dict[str, Path], tokens: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    export_store(token_stores["sampled"], tmp_path / "s.npz")
    exported = np.load(tmp_path / "s.npz")
    assert exported["indices"].shape == exported["counts"].shape == (SAMPLES, POSITIONS, 5)
    np.testing.assert_array_equal(exported["targets"], tokens[1])


def test_chunks_of_long_samples_stay_bounded() -> None:
    # Full float16 logits of 128 tokens over an 18,000-word vocabulary: 4.6 MB per sample.
    per_sample = 128 * 18_000 * 2
    rows = default_chunk_rows(per_sample)
    assert rows * per_sample <= 1 << 26 and rows == 8
    assert default_chunk_rows(2 * 10) == 16384 and default_chunk_rows(2_000) == 512
    assert default_chunk_rows(200_000) == 64 and math.log2(default_chunk_rows(1 << 30)) == 0


def test_inspect_bounds_the_reference_block_of_long_samples(
    token_stores: dict[str, Path],
    tokens: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values, targets = tokens
    wide = write_synthetic_store(
        tmp_path / "wide.zarr", FORMATS["topk"], values, targets, chunk_rows=2 * CHUNK, positions=POSITIONS
    )
    whole = inspect_store(wide, token_stores["full"])
    monkeypatch.setattr(inspect_module, "MAX_BLOCK_BYTES", 1)  # blocks of one reference chunk each
    read: list[tuple[int, int]] = []
    original = LabelStore.read_rows

    def recording(self: LabelStore, start: int, stop: int, *, raw: bool = False) -> Any:
        read.append((start, stop))
        return original(self, start, stop, raw=raw)

    monkeypatch.setattr(LabelStore, "read_rows", recording)
    bounded = inspect_store(wide, token_stores["full"])
    assert max(stop - start for start, stop in read) == CHUNK
    for section in ("teacher", "reference", "positions"):
        for key, value in whole[section].items():
            expected = value if isinstance(value, str) else pytest.approx(value, rel=1e-9)
            assert bounded[section][key] == expected, key
