"""Stores on object storage, against a real S3-protocol server on loopback (moto, one per module).

Covers what two teams sharing a bucket rely on: every command that takes a store takes an
``s3://`` location, nothing half-written is ever read or listed, nothing is overwritten by
surprise, a run whose store was replaced stops, and no credential reaches a store.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from object_storage import BUCKET, SECRET_ACCESS_KEY, s3_server
from slow_generate import slow_generate_args, start_cli
from student_helpers import header_for, row_coded_logits, write_store

from softlabels.errors import (
    IncompleteStoreError,
    InvalidArgumentError,
    StoreConflictError,
    StoreFormatError,
    StoreMismatchError,
    StoreNotFoundError,
)
from softlabels.sources import DatasetSource
from softlabels.store import FullEncoding, StoreWriter, TopKEncoding, open_store
from softlabels.store import location as location_module
from softlabels.store import writer as writer_module
from softlabels.store.catalogue import list_stores
from softlabels.store.location import GROUP_METADATA, UNFINISHED_MARKER, RemoteFolder

REMOTE_CHUNK_ROWS = 256
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture
def prefix(endpoint: str, request: pytest.FixtureRequest) -> str:
    """A prefix of the bucket no other test uses."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}"


def write_remote(location: str, source: DatasetSource, **options: Any) -> str:
    """A row-coded store of ``source`` at ``location`` in 6 shards of 256 rows (each object is a round trip)."""
    write_store(location, source, **{"chunk_rows": REMOTE_CHUNK_ROWS, **options})  # type: ignore[arg-type]
    return location


def objects(location: str) -> dict[str, bytes]:
    folder = RemoteFolder(location)
    return {key: folder.read(key) or b"" for key in folder.keys()}


def test_a_store_written_to_s3_reads_back_as_written(
    prefix: str, digits_train: DatasetSource, digits_store: Path
) -> None:
    remote = write_remote(f"{prefix}/digits.zarr", digits_train)
    store, local = open_store(remote), open_store(digits_store)
    assert store.complete and store.location == f"{prefix}/digits.zarr"
    np.testing.assert_array_equal(store.read_all().fields["logits"], local.read_all().fields["logits"])
    np.testing.assert_array_equal(store.read_all().targets, local.read_all().targets)
    assert store.bytes_on_disk() == sum(len(data) for data in objects(str(remote)).values()) > 0


def test_a_store_not_yet_complete_is_refused_by_readers(prefix: str, digits_train: DatasetSource) -> None:
    location = f"{prefix}/half.zarr"
    write_remote(location, digits_train, shards=[0, 1, 2])
    with pytest.raises(IncompleteStoreError, match=r"half.zarr is incomplete \(3 of 6 shards written\)"):
        open_store(location)
    assert open_store(location, allow_incomplete=True).shards_done().sum() == 3


def test_a_half_created_store_is_no_store_and_the_next_run_clears_it(
    prefix: str, digits_train: DatasetSource
) -> None:
    location = f"{prefix}/interrupted.zarr"
    write_remote(location, digits_train, shards=[])
    folder = RemoteFolder(location)
    # What a creation killed before its last step leaves: the arrays' metadata and the marker.
    folder.write(UNFINISHED_MARKER, b"")
    folder.remove(GROUP_METADATA)
    folder.write("indices/c/0/0", b"a chunk of the store an interrupted overwrite was removing")
    with pytest.raises(StoreNotFoundError, match="no label store at"):
        open_store(location, allow_incomplete=True)
    assert [entry.name for entry in list_stores(prefix)] == []
    write_remote(location, digits_train)
    assert open_store(location).complete
    assert not [key for key in folder.keys() if key == UNFINISHED_MARKER or key.startswith("indices/")]


def test_foreign_objects_are_never_touched(prefix: str, digits_train: DatasetSource) -> None:
    location = f"{prefix}/someone-elses"
    RemoteFolder(location).write("results.csv", b"a,b\n")
    with pytest.raises(StoreFormatError, match="holds objects and is not a softlabels store; refusing"):
        write_remote(location, digits_train)
    assert objects(location) == {"results.csv": b"a,b\n"}


def test_a_store_of_other_settings_is_replaced_only_with_overwrite(
    prefix: str, digits_train: DatasetSource
) -> None:
    location = f"{prefix}/labels.zarr"
    first = write_remote(location, digits_train)
    run_id = open_store(first).header.run_id
    other = header_for(digits_train, FullEncoding("float32"), chunk_rows=128)
    with pytest.raises(StoreMismatchError, match=r"chunk rows: store has 256, this run has 128"):
        StoreWriter.open(location, other, FullEncoding("float32"))
    assert open_store(location).header.run_id == run_id
    replaced = StoreWriter.open(location, other, FullEncoding("float32"), overwrite=True)
    assert replaced.header.run_id != run_id and replaced.pending_shards() == list(range(12))


def test_a_run_whose_store_was_overwritten_stops(prefix: str, digits_train: DatasetSource) -> None:
    location, encoding = f"{prefix}/labels.zarr", FullEncoding("float32")
    header = header_for(digits_train, encoding, chunk_rows=REMOTE_CHUNK_ROWS)
    old = StoreWriter.open(location, header, encoding)
    new = StoreWriter.open(location, header, encoding, overwrite=True)
    values = row_coded_logits(REMOTE_CHUNK_ROWS, 10)
    with pytest.raises(StoreConflictError, match=r"was replaced by another run .* stopped without writing"):
        old.write_shard(0, old.encoding.encode(values, 0), np.zeros(REMOTE_CHUNK_ROWS, dtype=np.int64))
    with pytest.raises(StoreConflictError, match="was replaced by another run"):
        old.mark_complete()
    assert new.pending_shards() == list(range(6))


def test_two_runs_creating_one_store_at_once_share_it(
    prefix: str, digits_train: DatasetSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, encoding = f"{prefix}/labels.zarr", FullEncoding("float32")
    header = header_for(digits_train, encoding, chunk_rows=REMOTE_CHUNK_ROWS)
    winner = StoreWriter.open(location, header, encoding)
    # The loser looked before the winner's metadata arrived: its conditional create then fails.
    looks = iter([None])
    real = writer_module._remote_header
    monkeypatch.setattr(writer_module, "_remote_header", lambda remote: next(looks, None) or real(remote))
    monkeypatch.setattr(writer_module, "_holds_foreign_objects", lambda remote: False)
    loser = StoreWriter.open(location, header, encoding)
    assert loser.header.run_id == winner.header.run_id
    assert open_store(location, allow_incomplete=True).header.run_id == winner.header.run_id


def test_locations_holding_credentials_or_unknown_schemes_are_refused(digits_train: DatasetSource) -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"holds credentials; give them through the AWS variables"
    ) as caught:
        open_store(f"s3://key:{SECRET_ACCESS_KEY}@{BUCKET}/x.zarr")
    assert SECRET_ACCESS_KEY not in str(caught.value)
    with pytest.raises(InvalidArgumentError, match=r"'gs://' locations are not supported"):
        write_remote("gs://bucket/x.zarr", digits_train)


def test_ls_lists_the_stores_under_a_prefix(
    prefix: str, digits_train: DatasetSource, softlabels_main: Any
) -> None:
    write_remote(f"{prefix}/team/digits.zarr", digits_train)
    write_remote(f"{prefix}/team/top3.zarr", digits_train, encoding=TopKEncoding(3, "float16"))
    write_remote(f"{prefix}/wip.zarr", digits_train, shards=[0])
    RemoteFolder(f"{prefix}/notes").write("readme.txt", b"hello")
    listed = json.loads(softlabels_main("ls", prefix, "--json").stdout)
    assert [(entry["name"], entry["complete"]) for entry in listed] == [
        ("team/digits.zarr", True),
        ("team/top3.zarr", True),
        ("wip.zarr", False),
    ]
    assert listed[0]["location"] == f"{prefix}/team/digits.zarr" and listed[0]["bytes"] > 0
    table = softlabels_main("ls", f"{prefix}/team/digits.zarr")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[1].split()[:4] == ["digits.zarr", "cnn", "digits", "[train]"]
    assert softlabels_main("ls", f"s3://{BUCKET}/nothing-here").stdout.startswith("no label stores under")


def test_info_inspect_and_verify_read_s3_stores(
    prefix: str, digits_train: DatasetSource, softlabels_main: Any
) -> None:
    location = f"{prefix}/digits.zarr"
    write_remote(location, digits_train)
    for command in ("info", "inspect"):
        result = softlabels_main(command, location)
        assert result.exit_code == 0, result.stderr
        assert location in result.stdout
    assert softlabels_main("verify", location, "--dataset", "digits").exit_code == 0
    assert softlabels_main("info", f"{prefix}/missing.zarr").exit_code != 0


def test_convert_between_s3_stores_equals_a_local_conversion(
    prefix: str, tmp_path: Path, digits_store: Path, digits_train: DatasetSource, softlabels_main: Any
) -> None:
    source = write_remote(f"{prefix}/digits.zarr", digits_train)
    for out in (f"{prefix}/top3.zarr", str(tmp_path / "top3.zarr")):
        result = softlabels_main("convert", str(source), out, "--to", "topk", "--k", "3")
        assert result.exit_code == 0, result.stderr
    local = open_store(tmp_path / "top3.zarr").read_rows(0, 1437, raw=True).fields
    remote = open_store(f"{prefix}/top3.zarr")
    assert remote.header.provenance.derived_from[-1]["source"] == str(source)
    for name, values in remote.read_rows(0, 1437, raw=True).fields.items():
        np.testing.assert_array_equal(values, local[name])


def wait_for_remote_shards(location: str, count: int, run: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()[1]
        try:
            if open_store(location, allow_incomplete=True).shards_done().sum() >= count:
                return
        except StoreNotFoundError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{location} did not reach {count} shards within {timeout} s")


SHARDS_OF_256 = ("--chunk-rows", "256")  # given after slow_generate_args' own: the last one counts


def test_generate_killed_then_resumed_on_s3_equals_a_local_run(prefix: str, tmp_path: Path) -> None:
    location = f"{prefix}/digits.zarr"
    # 6 shards of 256 rows (each object written is a round trip), 1.6 s per shard with the delay.
    killed = start_cli(*slow_generate_args(location), *SHARDS_OF_256, env={"SOFTLABELS_TEST_DELAY": "0.2"})
    wait_for_remote_shards(location, 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    with pytest.raises(IncompleteStoreError):
        open_store(location)
    partial = open_store(location, allow_incomplete=True)
    assert 2 <= partial.shards_done().sum() < partial.layout.num_shards, "the kill must land mid-run"

    runs = [
        start_cli(*slow_generate_args(out), *SHARDS_OF_256)
        for out in (location, str(tmp_path / "local.zarr"))
    ]
    for finished in runs:  # the resumed run and an uninterrupted local one, side by side
        _, err = finished.communicate(timeout=180)
        assert finished.returncode == 0, err
    resumed, fresh = open_store(location), open_store(tmp_path / "local.zarr")
    assert resumed.header.run_id == partial.header.run_id
    np.testing.assert_array_equal(resumed.read_all().fields["logits"], fresh.read_all().fields["logits"])
    # The secret given through AWS_SECRET_ACCESS_KEY is nowhere in the store, its header included.
    stored = objects(location)
    assert not [key for key, data in stored.items() if SECRET_ACCESS_KEY.encode() in data]
    assert location in json.dumps(resumed.header.to_json())


def test_a_student_streams_its_labels_from_s3_with_dataloader_workers(
    prefix: str, tmp_path: Path, digits_train: DatasetSource, digits_store: Path, softlabels_main: Any
) -> None:
    location = f"{prefix}/digits.zarr"
    write_remote(location, digits_train)
    common = (
        "--dataset",
        "digits",
        "--student",
        "mlp",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--num-workers",
        "2",
    )
    streamed = ("--memory-budget-mb", "0", "--buffer-chunks", "4")
    for labels, out in ((location, "remote"), (str(digits_store), "local")):
        result = softlabels_main(
            "train-student", "--labels", labels, *common, *streamed, "--out", str(tmp_path / out)
        )
        assert result.exit_code == 0, result.stderr
    remote, local = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("remote", "local"))
    assert [row["val_accuracy"] for row in remote] == [row["val_accuracy"] for row in local]


def test_train_student_refuses_an_incomplete_s3_store(
    prefix: str, tmp_path: Path, digits_train: DatasetSource, softlabels_main: Any
) -> None:
    location = f"{prefix}/half.zarr"
    write_remote(location, digits_train, shards=[0])
    result = softlabels_main(
        "train-student", "--labels", location, "--dataset", "digits", "--student", "mlp", "--epochs", "1",
        "--device", "cpu", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code != 0 and "is incomplete (1 of 6 shards written)" in result.stderr


def test_a_pipeline_keeps_its_store_on_s3() -> None:
    from softlabels.pipelines.spec import parse_override, parse_pipeline

    document = "\n".join(
        (
            "[dataset]",
            'spec = "digits"',
            "[teacher]",
            'model = "cnn"',
            "epochs = 1",
            "[generate]",
            "temperature = 4",
        )
        + ("[students.kd]", 'model = "mlp"', "epochs = 1")
        + ("[students.baseline]", 'model = "mlp"', "epochs = 1", "kd = false")
    )
    store = f"s3://{BUCKET}/team/labels.zarr"
    spec = parse_pipeline(
        document, source="x.toml", default_name="x", overrides=[parse_override(f"generate.store={store}")]
    )
    assert spec.generate.store == store


def test_a_missing_client_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(location_module.CLIENT_PACKAGES, "s3", "an_uninstalled_client")
    with pytest.raises(
        InvalidArgumentError, match=r"s3:// locations need the an_uninstalled_client package \(pip"
    ):
        open_store(f"s3://{BUCKET}/x.zarr")
