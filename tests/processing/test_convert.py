"""``convert_store``: conversion equals direct generation, provenance, resume and refusals."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

import softlabels.processing.convert as convert_module
from softlabels.errors import IncompleteStoreError, InvalidArgumentError, StoreMismatchError, StoreWriteError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.schema import ATTRIBUTE_KEY, SHARD_RUNS_ARRAY, SHARDS_DONE_ARRAY
from softlabels.processing.convert import convert_store
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.sources import build_model, save_checkpoint
from softlabels.store import open_store, read_header
from softlabels.store.info import describe_store, format_description

SETTINGS: dict[str, Any] = {"dataset": "digits", "teacher": "mlp", "temperature": 3.0, "progress": False}
CHUNK_ROWS = 256
TOPK2 = EncodingSpec.create("topk", k=2)
FLOAT32 = EncodingSpec.create("full", dtype="float32")
TOPK3 = EncodingSpec.create("topk", k=3)
SAMPLED16 = EncodingSpec.create("sampled", samples=16, seed=7)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A float32 full store and direct top-k / sampled stores of the same teacher and data.

    The full store is float32 because direct generation encodes the teacher's float32 rows: a
    conversion from float32 stored rows sees the very same numbers, whereas from float16 rows
    the kept values and normalisers would differ by float16 rounding.
    """
    root = tmp_path_factory.mktemp("convert")
    # One set of random weights for every store: --random-weights would draw new ones per run.
    torch.manual_seed(0)
    weights = root / "teacher.pt"
    model = build_model("mlp", num_classes=10, in_channels=1)
    save_checkpoint(weights, model, model_spec="mlp", num_classes=10, in_channels=1)
    teacher = {**SETTINGS, "teacher_weights": str(weights)}
    made = {"full": root / "full.zarr", "topk": root / "topk.zarr", "sampled": root / "sampled.zarr"}
    generate(GenerateConfig(out=str(made["full"]), encoding=FLOAT32, chunk_rows=CHUNK_ROWS, **teacher))
    generate(GenerateConfig(out=str(made["topk"]), encoding=TOPK3, **teacher))
    generate(GenerateConfig(out=str(made["sampled"]), encoding=SAMPLED16, **teacher))
    return made


def raw_arrays(location: Path) -> dict[str, np.ndarray]:
    store = open_store(location)
    chunk = store.read_rows(0, store.num_rows, raw=True)
    return {**chunk.fields, "targets": chunk.targets}


def assert_same_arrays(left: Path, right: Path) -> None:
    ours, theirs = raw_arrays(left), raw_arrays(right)
    assert ours.keys() == theirs.keys()
    for name, values in ours.items():
        assert values.dtype == theirs[name].dtype, name
        np.testing.assert_array_equal(values, theirs[name], err_msg=name)


def test_topk_conversion_equals_direct_generation(stores: dict[str, Path], tmp_path: Path) -> None:
    summary = convert_store(stores["full"], tmp_path / "topk.zarr", TOPK3)
    assert summary.shards_written == summary.shards_total and summary.encoding == TOPK3
    assert_same_arrays(tmp_path / "topk.zarr", stores["topk"])


def test_sampled_conversion_equals_direct_generation(stores: dict[str, Path], tmp_path: Path) -> None:
    convert_store(stores["full"], tmp_path / "sampled.zarr", SAMPLED16, workers=2)
    assert_same_arrays(tmp_path / "sampled.zarr", stores["sampled"])


def test_processes_scheduler_gives_the_same_store(stores: dict[str, Path], tmp_path: Path) -> None:
    convert_store(
        stores["full"],
        tmp_path / "topk.zarr",
        TOPK3,
        chunk_rows=CHUNK_ROWS,
        chunks_per_shard=2,
        scheduler="processes",
        workers=2,
    )
    assert open_store(tmp_path / "topk.zarr").layout.num_shards == 3
    assert_same_arrays(tmp_path / "topk.zarr", stores["topk"])


def test_provenance_is_the_sources_plus_a_conversion_record(stores: dict[str, Path], tmp_path: Path) -> None:
    convert_store(
        stores["full"],
        tmp_path / "q.zarr",
        EncodingSpec.create("full", dtype="int8"),
        command="softlabels convert ...",
    )
    source, derived = open_store(stores["full"]), open_store(tmp_path / "q.zarr")
    assert derived.provenance.teacher == source.provenance.teacher
    assert derived.provenance.dataset == source.provenance.dataset
    assert derived.provenance.created == source.provenance.created
    assert derived.temperature == source.temperature
    (record,) = derived.provenance.derived_from
    assert record["operation"] == "convert" and record["source"] == str(stores["full"].resolve())
    assert record["source_encoding"] == {"name": "full", "params": {"dtype": "float32"}}
    assert record["encoding"] == {"name": "full", "params": {"dtype": "int8"}}
    assert record["command"] == "softlabels convert ..." and record["softlabels"] and record["created"]
    shown = format_description(describe_store(tmp_path / "q.zarr"))
    assert (
        f"derived     convert of {stores['full'].resolve()} (full {{'dtype': 'float32'}} -> full {{'dtype': 'int8'}})"
        in shown
    )
    assert derived.layout.chunk_rows % source.layout.chunk_rows == 0
    decoded = derived.read_all().fields["logits"]
    np.testing.assert_allclose(decoded, source.read_all().fields["logits"], atol=0.05)


def test_interrupted_conversion_resumes_with_pending_shards_only(
    stores: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "topk.zarr"
    original = convert_module.convert_shard
    calls: list[int] = []

    def failing(source: str, target: str, header: Any, shard: int) -> int:
        if shard == 3:
            raise OSError("disk went away")
        calls.append(shard)
        return original(source, target, header, shard)

    monkeypatch.setattr(convert_module, "convert_shard", failing)
    options: dict[str, Any] = {"chunk_rows": CHUNK_ROWS, "scheduler": "synchronous"}
    with pytest.raises(StoreWriteError, match="disk went away"):
        convert_store(stores["full"], out, TOPK3, **options)
    with pytest.raises(IncompleteStoreError):
        open_store(out)
    done = set(calls)
    assert 3 not in done

    def recording(source: str, target: str, header: Any, shard: int) -> int:
        calls.append(shard)
        return original(source, target, header, shard)

    calls.clear()
    monkeypatch.setattr(convert_module, "convert_shard", recording)
    summary = convert_store(stores["full"], out, TOPK3, **options)
    assert sorted(calls) == sorted(set(range(summary.shards_total)) - done)
    assert summary.shards_written == summary.shards_total - len(done)
    assert_same_arrays(out, stores["topk"])


def test_non_full_and_incomplete_sources_are_refused(stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="holds topk labels; convert derives compact stores"):
        convert_store(stores["topk"], tmp_path / "x.zarr", EncodingSpec.create("sampled", samples=4))
    partial = tmp_path / "partial.zarr"
    shutil.copytree(stores["full"], partial)
    zarr.open_array(str(partial / SHARDS_DONE_ARRAY), mode="r+")[2] = 0
    header = replace(read_header(str(partial)), complete=False)
    zarr.open_group(str(partial), mode="r+").attrs[ATTRIBUTE_KEY] = header.to_json()
    with pytest.raises(IncompleteStoreError, match="5 of 6 shards"):
        convert_store(partial, tmp_path / "x.zarr", TOPK2)
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize(
    "encoding, options, message",
    [
        (EncodingSpec.create("topk", k=11), {}, "k = 11 exceeds the number of classes \\(10\\)"),
        (TOPK2, {"scheduler": "cluster"}, "scheduler 'cluster' is not"),
        (TOPK2, {"workers": 0}, "workers must be >= 1"),
        (TOPK2, {"chunks_per_shard": 0}, "chunks.per.shard must be >= 1"),
    ],
)
def test_impossible_arguments_are_refused_before_work(
    stores: dict[str, Path], tmp_path: Path, encoding: EncodingSpec, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        convert_store(stores["full"], tmp_path / "x.zarr", encoding, **options)
    assert not (tmp_path / "x.zarr").exists()


def test_output_must_not_be_the_source_or_another_store(stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="is the source store itself"):
        convert_store(stores["full"], stores["full"], TOPK2, overwrite=True)
    assert open_store(stores["full"]).complete
    convert_store(stores["full"], tmp_path / "t.zarr", TOPK2)
    topk4 = EncodingSpec.create("topk", k=4)
    with pytest.raises(StoreMismatchError, match="other settings"):
        convert_store(stores["full"], tmp_path / "t.zarr", topk4)
    summary = convert_store(stores["full"], tmp_path / "t.zarr", topk4, overwrite=True)
    assert open_store(summary.out).layout.encoding_spec == topk4
    again = convert_store(stores["full"], tmp_path / "t.zarr", topk4)
    assert again.shards_written == 0


def test_resume_from_a_source_of_another_dtype_is_refused(stores: dict[str, Path], tmp_path: Path) -> None:
    half = tmp_path / "half.zarr"
    convert_store(stores["full"], half, EncodingSpec.create("full", dtype="float16"), chunk_rows=CHUNK_ROWS)
    convert_store(stores["full"], tmp_path / "t.zarr", TOPK2, chunk_rows=CHUNK_ROWS)
    with pytest.raises(StoreMismatchError, match="derived from"):
        convert_store(half, tmp_path / "t.zarr", TOPK2, chunk_rows=CHUNK_ROWS)


def interrupt_after_first_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``convert_shard`` fail from the second shard on, leaving an incomplete conversion."""
    original = convert_module.convert_shard
    done: list[int] = []

    def failing(source: str, target: str, header: Any, shard: int) -> int:
        if done:
            raise OSError("disk went away")
        done.append(shard)
        return original(source, target, header, shard)

    monkeypatch.setattr(convert_module, "convert_shard", failing)


def test_resume_from_a_regenerated_source_is_refused(
    stores: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The source is regenerated between the interruption and the resume: same settings, same path,
    # even the same values, but another run; the derived store must not mix the two runs.
    source, out = tmp_path / "source.zarr", tmp_path / "t.zarr"
    shutil.copytree(stores["full"], source)
    options: dict[str, Any] = {"chunk_rows": CHUNK_ROWS, "scheduler": "synchronous"}
    with monkeypatch.context() as patch:
        interrupt_after_first_shard(patch)
        with pytest.raises(StoreWriteError, match="disk went away"):
            convert_store(source, out, TOPK3, **options)
    first_run = read_header(str(source)).run_id
    record = read_header(str(out)).provenance.derived_from[-1]
    assert record["source_run_id"] == first_run is not None
    regenerated = source.with_name("regenerated.zarr")
    shutil.copytree(stores["full"], regenerated)
    header = read_header(str(regenerated))
    zarr.open_group(str(regenerated), mode="r+").attrs[ATTRIBUTE_KEY] = replace(
        header, run_id="00000000000000ff"
    ).to_json()
    shard_runs = zarr.open_array(str(regenerated / SHARD_RUNS_ARRAY), mode="r+")
    shard_runs[:] = 0xFF
    shutil.rmtree(source)
    regenerated.rename(source)
    with pytest.raises(StoreMismatchError, match="source_run_id"):
        convert_store(source, out, TOPK3, **options)
    convert_store(source, out, TOPK3, overwrite=True, **options)
    assert_same_arrays(out, stores["topk"])
    assert open_store(out).provenance.derived_from[-1]["source_run_id"] == "00000000000000ff"


def test_generate_does_not_resume_a_store_that_convert_started(
    stores: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A float16 full store that convert started has every setting generate would give it, but not its origin.
    out = tmp_path / "half.zarr"
    with monkeypatch.context() as patch:
        interrupt_after_first_shard(patch)
        with pytest.raises(StoreWriteError, match="disk went away"):
            convert_store(
                stores["full"],
                out,
                EncodingSpec.create("full", dtype="float16"),
                chunk_rows=CHUNK_ROWS,
                scheduler="synchronous",
            )
    source = open_store(stores["full"])
    config = dict(source.provenance.config)
    with pytest.raises(StoreMismatchError, match="origin: store has 'convert', this run has 'generate'"):
        generate(
            GenerateConfig(
                out=str(out),
                encoding=EncodingSpec.create("full", dtype="float16"),
                chunk_rows=CHUNK_ROWS,
                teacher_weights=config["teacher_weights"],
                **SETTINGS,
            )
        )
    assert not open_store(out, allow_incomplete=True).complete
