"""Several runs on one store: a lock on ``.NAME.lock`` and run ids (fencing tokens) in every shard.

A run that was overwritten never writes into its successor, two identical runs give the exact
store, a killed run never leaves the lock stuck, and a mixed store is never called complete.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from slow_generate import CLI, PLUGINS, slow_generate_args, start_cli, wait_for_shards
from synthetic_stores import synthetic_header, write_rows

from softlabels.errors import IncompleteStoreError, StoreConflictError, StoreFormatError, StoreMismatchError
from softlabels.format.schema import ATTRIBUTE_KEY, SHARD_RUNS_ARRAY
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.store import FullEncoding, StoreHeader, StoreWriter, open_store, read_header
from softlabels.store.info import describe_store

ROWS, CLASSES, CHUNK = 256, 4, 64
ENCODING = FullEncoding("float32")


def rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.random.default_rng(seed).normal(size=(ROWS, CLASSES)).astype(np.float32)
    return values, values.argmax(axis=1)


def header(temperature: float = 2.0) -> StoreHeader:
    return synthetic_header(ENCODING, ROWS, CLASSES, chunk_rows=CHUNK, temperature=temperature)


def write(writer: StoreWriter, shard: int, values: np.ndarray, targets: np.ndarray) -> None:
    start, stop = writer.header.layout.shard_bounds(shard)
    writer.write_shard(shard, ENCODING.encode(values[start:stop], start), targets[start:stop])


def test_an_overwritten_run_never_writes_into_its_successor(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    old_values, old_targets = rows(0)
    first = StoreWriter.open(path, header(temperature=8.0), ENCODING)
    write(first, 0, old_values, old_targets)
    second = StoreWriter.open(path, header(temperature=2.0), ENCODING, overwrite=True)
    assert second.header.run_id != first.header.run_id
    with pytest.raises(StoreConflictError, match="replaced by another run"):
        write(first, 1, old_values, old_targets)
    with pytest.raises(StoreConflictError, match="replaced by another run"):
        first.mark_complete()
    assert second.pending_shards() == [0, 1, 2, 3]
    assert not open_store(path, allow_incomplete=True).read_all().fields["logits"].any()


def test_a_shard_written_by_another_run_keeps_the_store_incomplete(tmp_path: Path) -> None:
    # What a writer that ignored the lock would leave: a complete header, one shard of another run.
    path = tmp_path / "s.zarr"
    values, targets = rows(1)
    write_rows(path, header(), ENCODING, values, targets)
    assert open_store(path).complete
    zarr.open_array(str(path / SHARD_RUNS_ARRAY), mode="r+")[2] = 12345
    with pytest.raises(IncompleteStoreError, match="3 of 4 shards"):
        open_store(path)
    description = describe_store(path)
    assert not description["complete"] and description["shards_done"] == 3
    resumed = StoreWriter.open(path, header(), ENCODING)
    assert resumed.pending_shards() == [2]
    write(resumed, 2, values, targets)
    resumed.mark_complete()
    assert open_store(path).complete


def test_stores_without_run_ids_still_open_for_reading(tmp_path: Path) -> None:
    path = tmp_path / "old.zarr"
    values, targets = rows(2)
    write_rows(path, header(), ENCODING, values, targets)
    group = zarr.open_group(str(path), mode="r+")
    document = dict(group.attrs[ATTRIBUTE_KEY])
    del document["run_id"]
    group.attrs[ATTRIBUTE_KEY] = document
    del group[SHARD_RUNS_ARRAY]
    store = open_store(path)
    assert store.complete and store.header.run_id is None
    np.testing.assert_array_equal(store.read_all().fields["logits"], values)
    with pytest.raises(StoreMismatchError, match="without run ids"):
        StoreWriter.open(path, header(), ENCODING)


def test_a_killed_lock_holder_never_leaves_the_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    lock = tmp_path / ".s.zarr.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        opened: list[StoreWriter] = []
        opener = threading.Thread(target=lambda: opened.append(StoreWriter.open(path, header(), ENCODING)))
        opener.start()
        opener.join(timeout=1.0)
        assert opener.is_alive() and not path.exists(), "a held lock must make the next run wait"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        opener.join(timeout=30)
        assert not opener.is_alive() and opened and opened[0].pending_shards() == [0, 1, 2, 3]
    finally:
        holder.kill()
        holder.wait()


def test_no_lock_file_beside_a_refused_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(StoreFormatError, match="not a softlabels store"):
        StoreWriter.open(tmp_path / "photos", header(), ENCODING, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat.jpg"]


# Real processes: the command line, as a user would run it twice on one --out.


def start_generate(out: Path, temperature: str, *extra: str, delay: str = "0") -> subprocess.Popen[str]:
    args = slow_generate_args(out, temperature=temperature)
    return start_cli(*args, "--device", "cpu", *extra, env={"SOFTLABELS_TEST_DELAY": delay})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[float, np.ndarray]:
    """The rows of uninterrupted single runs at T=2 and T=8 (same teacher, batches and chunks)."""
    root = tmp_path_factory.mktemp("reference")
    made = {}
    for temperature in (2.0, 8.0):
        out = root / f"t{temperature:g}.zarr"
        generate(
            GenerateConfig(
                dataset="digits",
                teacher=f"{PLUGINS}:slow_linear",
                temperature=temperature,
                out=str(out),
                chunk_rows=64,
                batch_size=32,
                device="cpu",
                progress=False,
            )
        )
        made[temperature] = open_store(out).read_all().fields["logits"]
    return made


def info_json(out: Path) -> dict[str, Any]:
    result = subprocess.run(
        [*CLI, "info", str(out), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    described: dict[str, Any] = json.loads(result.stdout)
    return described


def test_overwrite_race_paused_with_sigstop_never_mixes(
    tmp_path: Path, reference: dict[float, np.ndarray]
) -> None:
    # A (T=8) is paused mid-run; B overwrites the store with T=2 and finishes; then A continues.
    out = tmp_path / "s.zarr"
    first = start_generate(out, "8", delay="0.05")
    try:
        wait_for_shards(out, 3, first)
        first.send_signal(signal.SIGSTOP)
        second = start_generate(out, "2", "--overwrite")
        try:
            # B finishes, or waits for the lock if A was paused in the middle of a shard write.
            second.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        first.send_signal(signal.SIGCONT)
        _, second_err = second.communicate(timeout=180)
        _, first_err = first.communicate(timeout=180)
    finally:  # never leave a paused process behind when an assertion above fails
        first.send_signal(signal.SIGCONT)
        first.kill()
    assert second.returncode == 0, second_err
    assert first.returncode == 0 or "was replaced by another run" in first_err, first_err
    store = open_store(out)
    assert store.complete and store.temperature == 2.0
    np.testing.assert_array_equal(store.read_all().fields["logits"], reference[2.0])
    described = info_json(out)
    assert described["complete"] is True and described["provenance"]["temperature"] == 2.0


def test_two_identical_runs_at_once_give_the_exact_store(
    tmp_path: Path, reference: dict[float, np.ndarray]
) -> None:
    out = tmp_path / "s.zarr"
    runs = [start_generate(out, "8", delay="0.02") for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, err
    store = open_store(out)
    assert store.complete
    np.testing.assert_array_equal(store.read_all().fields["logits"], reference[8.0])
    assert read_header(str(out)).run_id is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.lock", "s.zarr"]


def test_a_resumed_run_keeps_the_run_id_and_an_overwrite_makes_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    values, targets = rows(3)
    first = write_rows(path, header(), ENCODING, values, targets, shards=[0])
    resumed = StoreWriter.open(path, header(), ENCODING)
    assert resumed.header.run_id == first.header.run_id and resumed.pending_shards() == [1, 2, 3]
    replaced = StoreWriter.open(path, replace(header(), run_id=first.header.run_id), ENCODING, overwrite=True)
    assert replaced.header.run_id != first.header.run_id
