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
from softlabels.errors import IncompleteStoreError, InvalidArgumentError, StoreMismatchError, UnknownNameError
from softlabels.format.schema import ATTRIBUTE_KEY, SHARDS_DONE_ARRAY
from softlabels.processing.convert import convert_store
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.sources import build_model, save_checkpoint
from softlabels.store import open_store, read_header
from softlabels.store.info import describe_store, format_description

SETTINGS: dict[str, Any] = {"dataset": "digits", "teacher": "mlp", "temperature": 3.0, "progress": False}
CHUNK_ROWS = 256


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
    generate(GenerateConfig(out=str(made["full"]), dtype="float32", chunk_rows=CHUNK_ROWS, **teacher))
    generate(GenerateConfig(out=str(made["topk"]), label_format="topk", format_options={"k": 3}, **teacher))
    generate(
        GenerateConfig(
            out=str(made["sampled"]),
            label_format="sampled",
            format_options={"samples": 16, "seed": 7},
            **teacher,
        )
    )
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
    summary = convert_store(stores["full"], tmp_path / "topk.zarr", to="topk", k=3)
    assert summary.shards_written == summary.shards_total and summary.encoding == "topk"
    assert_same_arrays(tmp_path / "topk.zarr", stores["topk"])


def test_sampled_conversion_equals_direct_generation(stores: dict[str, Path], tmp_path: Path) -> None:
    convert_store(stores["full"], tmp_path / "sampled.zarr", to="sampled", samples=16, seed=7, workers=2)
    assert_same_arrays(tmp_path / "sampled.zarr", stores["sampled"])


def test_processes_scheduler_gives_the_same_store(stores: dict[str, Path], tmp_path: Path) -> None:
    convert_store(
        stores["full"],
        tmp_path / "topk.zarr",
        to="topk",
        k=3,
        chunk_rows=CHUNK_ROWS,
        chunks_per_shard=2,
        scheduler="processes",
        workers=2,
    )
    assert open_store(tmp_path / "topk.zarr").layout.num_shards == 3
    assert_same_arrays(tmp_path / "topk.zarr", stores["topk"])


def test_provenance_is_the_sources_plus_a_conversion_record(stores: dict[str, Path], tmp_path: Path) -> None:
    convert_store(
        stores["full"], tmp_path / "q.zarr", to="full", dtype="int8", command="softlabels convert ..."
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
    options: dict[str, Any] = {"to": "topk", "k": 3, "chunk_rows": CHUNK_ROWS, "scheduler": "synchronous"}
    with pytest.raises(OSError, match="disk went away"):
        convert_store(stores["full"], out, **options)
    with pytest.raises(IncompleteStoreError):
        open_store(out)
    done = set(calls)
    assert 3 not in done

    def recording(source: str, target: str, header: Any, shard: int) -> int:
        calls.append(shard)
        return original(source, target, header, shard)

    calls.clear()
    monkeypatch.setattr(convert_module, "convert_shard", recording)
    summary = convert_store(stores["full"], out, **options)
    assert sorted(calls) == sorted(set(range(summary.shards_total)) - done)
    assert summary.shards_written == summary.shards_total - len(done)
    assert_same_arrays(out, stores["topk"])


def test_non_full_and_incomplete_sources_are_refused(stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="holds topk labels; convert derives compact stores"):
        convert_store(stores["topk"], tmp_path / "x.zarr", to="sampled", samples=4)
    partial = tmp_path / "partial.zarr"
    shutil.copytree(stores["full"], partial)
    zarr.open_array(str(partial / SHARDS_DONE_ARRAY), mode="r+")[2] = 0
    header = replace(read_header(str(partial)), complete=False)
    zarr.open_group(str(partial), mode="r+").attrs[ATTRIBUTE_KEY] = header.to_json()
    with pytest.raises(IncompleteStoreError, match="5 of 6 shards"):
        convert_store(partial, tmp_path / "x.zarr", to="topk", k=2)
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"to": "topk", "k": 11}, InvalidArgumentError, "--k 11 exceeds the number of classes \\(10\\)"),
        ({"to": "topk", "k": 0}, InvalidArgumentError, "--k must be >= 1"),
        ({"to": "topk"}, InvalidArgumentError, "--to topk needs --k"),
        ({"to": "sampled", "samples": 0}, InvalidArgumentError, "--samples must be >= 1"),
        ({"to": "sampled", "samples": 4, "k": 2}, InvalidArgumentError, "--k applies only to --to topk"),
        ({"to": "sampled", "samples": 4, "dtype": "int8"}, InvalidArgumentError, "does not apply to format"),
        ({"to": "dense"}, UnknownNameError, "unknown label format 'dense'"),
        ({"to": "topk", "k": 2, "scheduler": "cluster"}, InvalidArgumentError, "scheduler 'cluster' is not"),
        ({"to": "topk", "k": 2, "workers": 0}, InvalidArgumentError, "--workers must be >= 1"),
        (
            {"to": "topk", "k": 2, "chunks_per_shard": 0},
            InvalidArgumentError,
            "--chunks-per-shard must be >= 1",
        ),
    ],
)
def test_impossible_arguments_are_refused_before_work(
    stores: dict[str, Path], tmp_path: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        convert_store(stores["full"], tmp_path / "x.zarr", **options)
    assert not (tmp_path / "x.zarr").exists()


def test_output_must_not_be_the_source_or_another_store(stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="is the source store itself"):
        convert_store(stores["full"], stores["full"], to="topk", k=2, overwrite=True)
    assert open_store(stores["full"]).complete
    convert_store(stores["full"], tmp_path / "t.zarr", to="topk", k=2)
    with pytest.raises(StoreMismatchError, match="pass --overwrite"):
        convert_store(stores["full"], tmp_path / "t.zarr", to="topk", k=4)
    summary = convert_store(stores["full"], tmp_path / "t.zarr", to="topk", k=4, overwrite=True)
    assert open_store(summary.out).encoding.params() == {"k": 4, "dtype": "float16"}
    again = convert_store(stores["full"], tmp_path / "t.zarr", to="topk", k=4)
    assert again.shards_written == 0


def test_resume_from_a_source_of_another_dtype_is_refused(stores: dict[str, Path], tmp_path: Path) -> None:
    half = tmp_path / "half.zarr"
    convert_store(stores["full"], half, to="full", dtype="float16", chunk_rows=CHUNK_ROWS)
    convert_store(stores["full"], tmp_path / "t.zarr", to="topk", k=2, chunk_rows=CHUNK_ROWS)
    with pytest.raises(StoreMismatchError, match="derived otherwise"):
        convert_store(half, tmp_path / "t.zarr", to="topk", k=2, chunk_rows=CHUNK_ROWS)
