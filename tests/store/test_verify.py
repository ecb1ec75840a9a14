"""``verify_store``: every chunk read and checked, every problem named by its chunk key, none hidden by another."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic_stores import synthetic_dataset, synthetic_header, write_rows, write_synthetic_store

from softlabels.errors import StoreNotFoundError
from softlabels.format.encodings import Encoding, FullEncoding, SampledEncoding, TopKEncoding
from softlabels.format.schema import SHARD_RUNS_ARRAY
from softlabels.store.verify import KEPT_MASS_TOLERANCE, VerifyReport, verify_store

ROWS, CLASSES, CHUNK = 300, 7, 64  # 5 chunks, one shard each; the last chunk holds 44 rows


def logits_and_targets() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, CLASSES)).astype(np.float32), rng.integers(0, CLASSES, ROWS)


def make_store(path: Path, encoding: Encoding | None = None, shards: list[int] | None = None) -> Path:
    values, targets = logits_and_targets()
    return write_synthetic_store(path, encoding or FullEncoding("float16"), values, targets, shards=shards)


def flip_a_byte(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def problems_at(report: VerifyReport) -> dict[str, str]:
    return {problem.where: problem.problem for problem in report.problems}


@pytest.mark.parametrize(
    "encoding",
    [
        FullEncoding("float16"),
        FullEncoding("float32"),
        FullEncoding("bfloat16"),
        FullEncoding("int8"),
        TopKEncoding(3, "float16"),
        TopKEncoding(3, "int8"),
        TopKEncoding(3, "bfloat16"),
        SampledEncoding(16, seed=1),
    ],
    ids=lambda encoding: f"{encoding.name}-{encoding.params()}",
)
def test_a_sound_store_of_every_format_verifies(tmp_path: Path, encoding: Encoding) -> None:
    report = verify_store(make_store(tmp_path / "s.zarr", encoding))
    assert report.ok, report.describe()
    row_arrays = len(encoding.fields(CLASSES)) + 1  # and the targets
    assert report.chunks_read == 5 * row_arrays + 2 * 5  # every chunk, and both records of 5 shards
    assert report.shards_done == report.shards_total == 5
    assert report.describe().splitlines()[-1].startswith("ok: checksums")


def test_flipped_bytes_are_each_named_by_their_chunk_key(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    flip_a_byte(store / "logits" / "c" / "1" / "0")
    flip_a_byte(store / "targets" / "c" / "3")
    found = problems_at(verify_store(store))
    assert set(found) == {"logits/c/1/0", "targets/c/3"}
    assert all("cannot be read" in problem and "\\x" not in problem for problem in found.values())


def test_a_deleted_chunk_is_named(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    (store / "logits" / "c" / "2" / "0").unlink()
    (store / "targets" / "c" / "4").unlink()
    found = problems_at(verify_store(store))
    assert found == {
        "logits/c/2/0": "the chunk is missing (rows [128, 192) would read as zeros)",
        "targets/c/4": "the chunk is missing (rows [256, 300) would read as zeros)",
    }


def test_a_chunk_that_holds_only_zeros_is_written_so_a_missing_chunk_is_always_damage(tmp_path: Path) -> None:
    # zarr skips all-zero chunks by default: a chunk of class-0 targets (an image folder's first
    # class) would be absent and verify could not tell it from a deleted one.
    values, targets = logits_and_targets()
    targets[:CHUNK] = 0
    values[CHUNK : 2 * CHUNK] = 0.0
    store = write_synthetic_store(tmp_path / "s.zarr", FullEncoding("float32"), values, targets)
    assert (store / "targets" / "c" / "0").is_file() and (store / "logits" / "c" / "1" / "0").is_file()
    assert verify_store(store).ok


def test_truncated_metadata_is_named(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    array_metadata = store / "logits" / "zarr.json"
    array_metadata.write_bytes(array_metadata.read_bytes()[:100])
    report = verify_store(store)
    assert set(problems_at(report)) == {"logits/zarr.json"}
    assert "the array's metadata cannot be read" in report.problems[0].problem
    group_metadata = store / "zarr.json"
    group_metadata.write_bytes(group_metadata.read_bytes()[:200])
    report = verify_store(store)
    assert [problem.where for problem in report.problems] == ["zarr.json"]
    assert not report.ok and "the header cannot be read" in report.describe()


def test_a_damaged_header_field_is_named(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(store), mode="r+")
    document = dict(group.attrs["softlabels"])
    document["layout"] = {**document["layout"], "shard_rows": 0}
    group.attrs["softlabels"] = document
    found = problems_at(verify_store(store))
    assert (
        list(found) == ["zarr.json"] and "layout.shard_rows must be a positive integer" in found["zarr.json"]
    )


def test_values_out_of_range_written_with_plain_zarr_are_named(tmp_path: Path) -> None:
    topk = make_store(tmp_path / "topk.zarr", TopKEncoding(3, "float32"))
    group = zarr.open_group(str(topk), mode="r+")
    group["indices"][70] = np.array([1, 2, CLASSES], dtype="uint8")  # chunk 1: a class that does not exist
    group["indices"][140] = np.array([4, 4, 5], dtype="uint8")  # chunk 2: a class kept twice
    group["values"][200] = np.array([0.5, -1.0, -2.0], dtype="float32")  # chunk 3: log-probability > 0
    group["values"][260] = np.log(np.array([0.6, 0.3, 0.2], dtype="float32"))  # chunk 4: mass 1.1
    group["log_normalizer"][10] = np.nan  # chunk 0
    group["targets"][299] = CLASSES  # chunk 4
    found = [problem.describe() for problem in verify_store(topk).problems]
    expected = [
        "log_normalizer/c/0: 1 rows hold a non-finite log-normalizer (first: row 10: nan)",
        f"indices/c/1/0: 1 rows hold a class index outside [0, {CLASSES}) (first: row 70: 7)",
        "indices/c/2/0: 1 rows keep a class twice (first: row 140)",
        "values/c/3/0: 1 rows hold a log-probability above 0 (first: row 200: 0.5)",
        f"values/c/3/0: 1 rows keep a probability mass above 1 + {KEPT_MASS_TOLERANCE:g} (first: row 200: 2.15",
        f"targets/c/4: 1 rows hold a target outside [0, {CLASSES}) (first: row 299: 7)",
        f"values/c/4/0: 1 rows keep a probability mass above 1 + {KEPT_MASS_TOLERANCE:g} (first: row 260: 1.1",
    ]
    assert len(found) == len(expected)
    for line in expected:
        assert any(problem.startswith(line) for problem in found), (line, found)

    full = make_store(tmp_path / "full.zarr", FullEncoding("float16"))
    zarr.open_group(str(full), mode="r+")["logits"][5, 3] = np.inf
    assert problems_at(verify_store(full)) == {"logits/c/0/0": "1 rows hold non-finite values (first: row 5)"}

    sampled = make_store(tmp_path / "sampled.zarr", SampledEncoding(8))
    group = zarr.open_group(str(sampled), mode="r+")
    counts = group["counts"][100]
    counts[0] += 1
    group["counts"][100] = counts
    assert problems_at(verify_store(sampled)) == {
        "counts/c/1/0": "1 rows hold counts that do not sum to S = 8 (first: row 100: 9)"
    }


def test_an_array_of_another_dtype_or_shape_is_named_and_not_read(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(store), mode="r+")
    targets = group["targets"][:]
    del group["targets"]
    group.create_array("targets", shape=(ROWS,), chunks=(CHUNK,), dtype="int64", fill_value=0)[:] = targets
    del group["logits"]
    found = problems_at(verify_store(store))
    assert found == {"logits": "the array is missing", "targets": found["targets"]}
    report = [problem.problem for problem in verify_store(store).problems if problem.where == "targets"]
    assert report == [
        "dtype is int64, the layout implies int32",
        "has no crc32c checksum codec, so damaged chunks cannot be detected",
    ]


def test_unwritten_and_foreign_shards_are_named_without_calling_their_chunks_missing(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", shards=[0, 2, 3])
    found = problems_at(verify_store(store))
    assert found == {
        "shards": "the store is incomplete: 2 of 5 shards are not recorded as written by run "
        f"{zarr.open_group(str(store)).attrs['softlabels']['run_id']} (1, 4)"
    }
    zarr.open_group(str(store), mode="r+")[SHARD_RUNS_ARRAY][2] = 12345
    found = problems_at(verify_store(store))
    assert found[SHARD_RUNS_ARRAY].startswith("shards 2 were written by another run than the header's")
    assert "3 of 5 shards" in found["shards"]


def test_a_complete_flag_over_a_missing_shard_record_is_named(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    shutil.rmtree(store / "shards_done" / "c")
    (store / "shards_done" / "c").mkdir()
    found = problems_at(verify_store(store))
    assert list(found) == ["shards"] and found["shards"].startswith(
        "the store says complete, but 5 of 5 shards"
    )


def test_answered_rows_only_are_held_to_their_format(tmp_path: Path) -> None:
    encoding = SampledEncoding(samples=1)
    answered = np.arange(ROWS) % 3 != 0
    header = synthetic_header(encoding, ROWS, CLASSES, chunk_rows=CHUNK, temperature=1.0)
    header = dataclasses.replace(header, layout=dataclasses.replace(header.layout, answered_mask=True))
    labels = np.arange(ROWS) % CLASSES
    writer = write_rows(
        tmp_path / "m.zarr", header, encoding, np.zeros((ROWS, CLASSES), np.float32), labels, []
    )
    for shard in writer.pending_shards():
        start, stop = header.layout.shard_bounds(shard)
        fields = {
            "indices": labels[start:stop, None].astype("uint8"),
            "counts": answered[start:stop, None].astype("uint8"),  # unanswered rows hold count 0
        }
        writer.write_shard(shard, fields, labels[start:stop], answered[start:stop])
    writer.mark_complete()
    assert verify_store(tmp_path / "m.zarr").ok
    zarr.open_group(str(tmp_path / "m.zarr"), mode="r+")["answered"][65] = 2
    assert problems_at(verify_store(tmp_path / "m.zarr")) == {
        "answered/c/1": "1 rows hold an answered flag other than 0 or 1 (first: row 65: 2)"
    }


def test_the_data_identity_is_compared_when_given(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    assert verify_store(store, synthetic_dataset(ROWS, CLASSES)).data_checked
    assert verify_store(store, synthetic_dataset(ROWS, CLASSES)).ok
    other = verify_store(store, synthetic_dataset(ROWS, CLASSES, fingerprint="0" * 64))
    assert [problem.where for problem in other.problems] == ["provenance.dataset"]
    assert "dataset fingerprint: store has 'ffff" in other.problems[0].problem


def test_nothing_at_the_location_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="no label store at"):
        verify_store(tmp_path / "absent.zarr")


def test_every_problem_is_in_the_json_report(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    flip_a_byte(store / "logits" / "c" / "0" / "0")
    document = verify_store(store).to_json()
    assert document["ok"] is False and document["encoding"] == "full float16"
    assert document["problems"][0]["where"] == "logits/c/0/0"
