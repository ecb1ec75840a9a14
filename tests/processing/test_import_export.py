"""``export_store`` and ``import_labels``: the round trip, what import refuses, provenance and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from student_helpers import write_store

from softlabels.errors import (
    DataError,
    Interrupted,
    InvalidArgumentError,
    InvalidSettingError,
    StoreMismatchError,
)
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import SampledEncoding, TopKEncoding, encoding_from_params
from softlabels.format.identity import Scope, store_identity
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.processing.imports import NORMALISATION_TOLERANCE, import_labels, read_source
from softlabels.sources import DatasetSource
from softlabels.store import StoreWriter, open_store
from softlabels.store.export import export_store
from softlabels.store.info import describe_store, format_description
from softlabels.store.verify import verify_store

ROWS, CLASSES, T = 1437, 10, 4.0
FLOAT32 = EncodingSpec.create("full", dtype="float32")


def into(out: Path, source: Path, kind: str | None, encoding: EncodingSpec = FLOAT32, **options: Any) -> Path:
    k = options.pop("k", None)
    rows = read_source(source, kind, T, k=k)
    import_labels(
        rows,
        dataset="digits",
        split="train",
        out=out,
        teacher_name="served",
        temperature=T,
        encoding=encoding,
        chunk_rows=256,
        **options,
    )
    return out


def logits(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(ROWS, CLASSES)) * 3).astype(np.float32)


def log_softmax(rows: np.ndarray) -> np.ndarray:
    wide = rows.astype(np.float64)
    shifted = wide - wide.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_generate_export_import_gives_the_same_labels_bit_for_bit(tmp_path: Path) -> None:
    generated = tmp_path / "teacher.zarr"
    generate(
        GenerateConfig(
            dataset="digits",
            teacher="mlp",
            random_weights=True,
            temperature=T,
            out=str(generated),
            encoding=FLOAT32,
            chunk_rows=256,
            progress=False,
        )
    )
    summary = export_store(generated, tmp_path / "teacher.npz")
    assert summary.arrays == {"logits": (ROWS, CLASSES), "targets": (ROWS,)}
    imported = into(tmp_path / "imported.zarr", tmp_path / "teacher.npz", "scaled-logits")
    before, after = open_store(generated).read_all(), open_store(imported).read_all()
    assert np.array_equal(before.fields["logits"].view(np.uint32), after.fields["logits"].view(np.uint32))
    assert np.array_equal(before.targets, after.targets)
    assert store_identity(open_store(generated).header, Scope.DATA) == store_identity(
        open_store(imported).header, Scope.DATA
    )
    assert verify_store(imported).ok


def test_import_records_the_source_teacher_and_temperature(tmp_path: Path) -> None:
    source = tmp_path / "served.npy"
    np.save(source, logits())
    store = open_store(into(tmp_path / "s.zarr", source, "logits"))
    record = store.provenance.derived_from[-1]
    import hashlib

    assert record["operation"] == "import" and store.provenance.origin() == "import"
    assert record["source"] == str(source.resolve()) and record["source_kind"] == "logits"
    assert record["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (record["teacher_name"], record["temperature"]) == ("served", T)
    assert store.provenance.teacher.spec == "served" and store.temperature == T
    assert store.provenance.teacher.weights_sha256 is None
    shown = format_description(describe_store(store.location)).splitlines()[-1]
    assert shown.startswith(
        f"derived     import of {source.resolve()} (sha256 {record['source_sha256'][:16]}..., logits)"
    )
    assert "from teacher served at T=4.0 -> full {'dtype': 'float32'}" in shown


def test_logits_are_divided_by_t_and_logprobs_stored_as_they_are(tmp_path: Path) -> None:
    raw = logits()
    np.save(tmp_path / "logits.npy", raw)
    stored = open_store(into(tmp_path / "a.zarr", tmp_path / "logits.npy", "logits")).read_all()
    assert np.array_equal(stored.fields["logits"], raw / np.float32(T))
    probs = log_softmax(raw / T).astype(np.float32)
    np.savez(tmp_path / "logprobs.npz", probs)  # the only array of the file, under numpy's own name
    topk = EncodingSpec.create("topk", k=3)
    store = open_store(into(tmp_path / "b.zarr", tmp_path / "logprobs.npz", "logprobs", topk))
    expected = TopKEncoding(3).decode(TopKEncoding(3).encode(probs, 0))
    assert np.array_equal(store.read_all().fields["indices"], expected["indices"])
    assert np.array_equal(store.read_all().fields["values"], expected["values"])


def jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def served_records(rows: int = ROWS, k: int = 4) -> tuple[list[dict[str, Any]], np.ndarray]:
    probs = log_softmax(logits() / T)
    top = np.argsort(-probs, axis=1, kind="stable")[:, : k + 1]  # a server may send one more than asked
    records = [
        {"index": row, "logprobs": [{str(int(c)): float(probs[row, c]) for c in top[row][::-1]}]}
        for row in range(rows)
    ]
    return records, probs


def test_json_lines_of_top_logprobs_become_a_topk_store(tmp_path: Path) -> None:
    records, probs = served_records()
    source = jsonl(tmp_path / "served.jsonl", records)
    rows = read_source(source, None, T, k=4)
    assert rows.k == 4
    store = open_store(
        into(tmp_path / "s.zarr", source, None, EncodingSpec.create("topk", k=4, dtype="float32"), k=4)
    )
    fields = store.read_all().fields
    kept = np.argsort(-probs, axis=1, kind="stable")[:, :4]
    assert np.array_equal(fields["indices"], kept)
    assert np.allclose(fields["values"], np.take_along_axis(probs, kept, axis=1), atol=1e-6)
    assert (np.exp(fields["values"].astype(np.float64)).sum(axis=1) <= 1).all()
    assert not fields["log_normalizer"].any()
    assert verify_store(store.location).ok


def test_a_kept_mass_above_one_within_the_tolerance_is_scaled_to_one(tmp_path: Path) -> None:
    records = [
        {"logprobs": [{"1": float(np.log(0.6)), "2": float(np.log(0.4 + NORMALISATION_TOLERANCE / 2))}]}
    ]
    values, _ = read_source(jsonl(tmp_path / "a.jsonl", records), None, T).kept_rows()
    assert np.exp(values).sum() == pytest.approx(1.0)
    served, _ = served_records(k=2)
    served[9] = {
        "logprobs": [{"1": float(np.log(0.6)), "2": float(np.log(0.4 + 2 * NORMALISATION_TOLERANCE))}]
    }
    with pytest.raises(DataError, match="do not normalise .* at record 9; allowed: at most 1 \\+ 0.001"):
        into(
            tmp_path / "b.zarr",
            jsonl(tmp_path / "b.jsonl", served),
            None,
            EncodingSpec.create("topk", k=2),
            k=2,
        )


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"logprobs": []}], "record 0 holds no positions"),
        ([{"logprobs": [{"1": -0.1}]}, {"index": 5, "logprobs": [{"1": -0.1}]}], "record 1 carries index 5"),
        ([{"logprobs": [{"one": -0.1}]}], "class id 'one' is not a non-negative integer"),
        ([{"logprobs": [{"1": float("nan")}]}], "the log-probability of class 1 is nan, not a finite number"),
        ([{"probs": []}], 'must be an object with "logprobs"'),
        (
            [{"logprobs": [{"1": -0.1, "2": -3.0}]}, {"logprobs": [{"1": -0.1}]}],
            "1 records hold fewer than k = 2 classes at a position",
        ),
    ],
)
def test_bad_json_lines_are_refused(tmp_path: Path, records: list[Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_source(jsonl(tmp_path / "s.jsonl", records), None, T)


def test_a_broken_json_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "s.jsonl").write_text('{"logprobs": [{"1": -0.1}]}\n{"logprobs": [\n')
    with pytest.raises(DataError, match="record 1 is not JSON"):
        read_source(tmp_path / "s.jsonl", None, T)


@pytest.mark.parametrize(
    "values, kind, error, message",
    [
        (np.full((3, 4), np.nan, np.float32), "logits", DataError, "NaN or infinite values in 3 rows"),
        (
            np.zeros((3, 0, 4), np.float32),
            "logits",
            DataError,
            "per position, \\[N, L, C\\], with C >= 2; got",
        ),
        (np.zeros((3, 2, 2, 4), np.float32), "logits", DataError, "got shape \\[3, 2, 2, 4\\]"),
        (np.zeros((3, 4), np.int64), "logits", DataError, "holds int64 values"),
        (np.log(np.full((3, 4), 0.3)), "logprobs", DataError, "do not normalise \\(probabilities sum to 1.2"),
        (
            np.zeros((3, 4), np.float32),
            "probabilities",
            InvalidArgumentError,
            "must be one of logits, scaled",
        ),
    ],
)
def test_bad_arrays_are_refused(
    tmp_path: Path, values: np.ndarray, kind: str, error: type, message: str
) -> None:
    np.save(tmp_path / "s.npy", values)
    with pytest.raises(error, match=message):
        read_source(tmp_path / "s.npy", kind, T)


def test_rows_that_do_not_match_the_data_are_refused(tmp_path: Path, digits_train: DatasetSource) -> None:
    np.save(tmp_path / "short.npy", logits()[:-1])
    with pytest.raises(DataError, match="holds 1436 rows but digits \\[train\\] has 1437 samples"):
        into(tmp_path / "a.zarr", tmp_path / "short.npy", "logits")
    np.save(tmp_path / "wide.npy", np.zeros((ROWS, 11), np.float32))
    with pytest.raises(DataError, match="rows of 11 classes but digits \\[train\\] has 10"):
        into(tmp_path / "b.zarr", tmp_path / "wide.npy", "logits")
    targets = np.array([digits_train.dataset[i][1] for i in range(ROWS)])
    np.savez(tmp_path / "shuffled.npz", logits=logits(), targets=np.roll(targets, 1))
    with pytest.raises(DataError, match="do not line up with digits \\[train\\]: its targets differ"):
        into(tmp_path / "c.zarr", tmp_path / "shuffled.npz", "scaled-logits")
    np.save(tmp_path / "positions.npy", np.zeros((ROWS, 2, CLASSES), np.float32))
    with pytest.raises(
        DataError, match="L = 2 but digits \\[train\\] has one label per sample: positions that do"
    ):
        into(tmp_path / "e.zarr", tmp_path / "positions.npy", "logits")
    records, _ = served_records()
    records[3] = {"logprobs": records[3]["logprobs"] * 2}
    with pytest.raises(
        DataError, match="record 3 holds 2 positions but digits \\[train\\] has one label per sample"
    ):
        into(
            tmp_path / "f.zarr",
            jsonl(tmp_path / "two.jsonl", records),
            None,
            EncodingSpec.create("topk", k=4),
            k=4,
        )
    records, _ = served_records()
    records[7] = {"logprobs": [{"10": -0.1, "3": -3.0, "2": -4.0, "1": -5.0}]}
    with pytest.raises(DataError, match="1 records name a class id >= 10 .*records \\[7\\]"):
        into(
            tmp_path / "d.zarr",
            jsonl(tmp_path / "s.jsonl", records),
            None,
            EncodingSpec.create("topk", k=4),
            k=4,
        )
    assert not any(path.suffix == ".zarr" for path in tmp_path.iterdir())  # nothing was written


def test_top_logprobs_import_into_topk_of_their_k_only(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "s.jsonl", served_records(rows=ROWS, k=2)[0])
    with pytest.raises(InvalidSettingError, match="cannot hold .* format topk with k = 2"):
        into(tmp_path / "s.zarr", source, None, FLOAT32, k=2)
    np.save(tmp_path / "rows.npy", logits())
    with pytest.raises(InvalidSettingError, match="k applies to .jsonl sources only"):
        read_source(tmp_path / "rows.npy", "logits", T, k=2)


def test_an_interrupted_import_resumes_and_another_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "a.npy", logits(0))
    into(tmp_path / "whole.zarr", tmp_path / "a.npy", "logits")
    original = StoreWriter.write_shard
    calls = []

    def write_two_then_stop(self: StoreWriter, shard: int, *args: Any, **kwargs: Any) -> None:
        calls.append(shard)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original(self, shard, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write_shard", write_two_then_stop)
    with pytest.raises(Interrupted, match="kept 2 of 6 shards"):
        into(tmp_path / "resumed.zarr", tmp_path / "a.npy", "logits")
    monkeypatch.setattr(StoreWriter, "write_shard", original)
    np.save(tmp_path / "b.npy", logits(1))
    with pytest.raises(StoreMismatchError, match="derived from"):
        into(tmp_path / "resumed.zarr", tmp_path / "b.npy", "logits")
    into(tmp_path / "resumed.zarr", tmp_path / "a.npy", "logits")
    whole, resumed = (
        zarr.open_group(str(tmp_path / "whole.zarr")),
        zarr.open_group(str(tmp_path / "resumed.zarr")),
    )
    assert np.array_equal(whole["logits"][:], resumed["logits"][:])


def test_export_writes_the_decoded_fields_of_every_format(
    tmp_path: Path, digits_train: DatasetSource
) -> None:
    for encoding in (TopKEncoding(3, "int8"), SampledEncoding(8, seed=2)):
        store = write_store(
            tmp_path / f"{encoding.name}.zarr", digits_train, encoding=encoding, logits=logits()
        )
        export_store(store, tmp_path / f"{encoding.name}.npz")
        exported = np.load(tmp_path / f"{encoding.name}.npz", allow_pickle=False)
        rows = open_store(store).read_all()
        assert sorted(exported.files) == sorted([*rows.fields, "targets", "header"])
        for name, values in rows.fields.items():
            assert np.array_equal(exported[name], values)
        header = json.loads(str(exported["header"]))
        assert encoding_from_params(
            header["layout"]["encoding"], header["layout"]["encoding_params"]
        ).params() == (encoding.params())
    assert exported["counts"].dtype == np.int64 and (exported["counts"].sum(axis=1) == 8).all()


def test_export_refuses_to_overwrite_and_other_suffixes(tmp_path: Path, digits_store: Path) -> None:
    export_store(digits_store, tmp_path / "a.npz")
    with pytest.raises(InvalidArgumentError, match="exists; set overwrite to replace it"):
        export_store(digits_store, tmp_path / "a.npz")
    export_store(digits_store, tmp_path / "a.npz", overwrite=True)
    with pytest.raises(InvalidArgumentError, match="must end in .npz"):
        export_store(digits_store, tmp_path / "a.npy")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.npz"]  # no temporary file left
