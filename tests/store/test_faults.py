"""Fault injection at the store boundary: damaged chunks, failing writes, leftovers of killed writers.

Every fault a user can meet ends in a specific error that names what is wrong (and, on the
command line, in one line ``error: ...`` and exit status 1), and a store whose write failed is
finished by running the same command again, equal to a store that never failed.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from synthetic_stores import synthetic_header, write_rows

from softlabels.errors import DataError, StoreCorruptError, StoreFormatError, StoreWriteError
from softlabels.sources import ensure_cifar10
from softlabels.store import FullEncoding, StoreWriter, open_store

ROWS, CLASSES, CHUNK = 300, 7, 64
PARTIAL = "0.0123456789abcdef0123456789abcdef.partial"  # how zarr names a chunk file it is writing


def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, CLASSES)).astype(np.float32), rng.integers(0, CLASSES, ROWS)


def write_store(path: Path, shards: list[int] | None = None) -> Path:
    values, targets = rows()
    header = synthetic_header(FullEncoding(), ROWS, CLASSES, chunk_rows=CHUNK)
    write_rows(path, header, FullEncoding(), values, targets, shards)
    return path


def damage(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


# ---- damaged chunks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, spoil",
    [
        ("logits/c/1/0", damage),
        ("targets/c/3", damage),
        ("logits/c/2/0", lambda chunk: chunk.write_bytes(chunk.read_bytes()[:5])),  # truncated
        ("logits/c/4/0", lambda chunk: chunk.write_bytes(b"")),
    ],
)
def test_a_damaged_chunk_is_named_by_its_key(tmp_path: Path, key: str, spoil: Any) -> None:
    store = write_store(tmp_path / "s.zarr")
    spoil(store / key)
    reader = open_store(store)
    with pytest.raises(StoreCorruptError, match=f"chunk {key} cannot be read") as raised:
        reader.read_all()
    assert str(store) in str(raised.value) and "\\x" not in str(raised.value)
    chunk = int(key.split("/")[2])
    with pytest.raises(StoreCorruptError, match=f"chunk {key}"):
        reader.read_chunk(chunk)
    reader.read_chunk(0 if chunk else 1)  # the other chunks still read


def test_truncated_metadata_is_a_format_error(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s.zarr")
    metadata = store / "logits" / "zarr.json"
    metadata.write_bytes(metadata.read_bytes()[:100])
    with pytest.raises(StoreFormatError, match="the metadata of the 'logits' array cannot be read"):
        open_store(store).read_all()
    group = store / "zarr.json"
    group.write_bytes(group.read_bytes()[:200])
    with pytest.raises(StoreFormatError, match="is not a readable Zarr v3 group"):
        open_store(store)


def test_a_damaged_shard_record_is_named(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s.zarr")
    (store / "shards_done" / "c" / "2").write_bytes(b"\x01\x02")  # the record of one shard, one byte long
    with pytest.raises(StoreCorruptError, match="chunk shards_done/c/2"):
        open_store(store, allow_incomplete=True).shards_done()


def test_a_damaged_chunk_is_one_line_on_the_command_line(
    tmp_path: Path, digits_store: Path, softlabels_main: Any
) -> None:
    store = shutil.copytree(digits_store, tmp_path / "digits.zarr")
    damage(store / "logits" / "c" / "3" / "0")
    commands = {
        "inspect": ["inspect", str(store)],
        "train-student": [
            "train-student",
            "--labels",
            str(store),
            "--dataset",
            "digits",
            "--student",
            "mlp",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "kd"),
        ],
        "convert": ["convert", str(store), str(tmp_path / "top.zarr"), "--to", "topk", "--k", "2"],
    }
    for name, command in commands.items():
        result = softlabels_main(*command)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("error: ") and "chunk logits/c/3/0 cannot be read" in lines[0], name


# ---- failing writes --------------------------------------------------------------------------


def test_a_chunk_path_that_turned_into_a_folder_is_named(tmp_path: Path) -> None:
    path = write_store(tmp_path / "s.zarr", shards=[])
    (path / "logits" / "c" / "1" / "0").mkdir(parents=True)
    writer = StoreWriter.open(
        path, synthetic_header(FullEncoding(), ROWS, CLASSES, chunk_rows=CHUNK), FullEncoding()
    )
    values, targets = rows()
    writer.write_shard(0, FullEncoding().encode(values[:CHUNK], 0), targets[:CHUNK])
    with pytest.raises(StoreWriteError, match=r"cannot write .*logits/c/1/0: Is a directory") as raised:
        writer.write_shard(
            1, FullEncoding().encode(values[CHUNK : 2 * CHUNK], CHUNK), targets[CHUNK : 2 * CHUNK]
        )
    assert raised.value.__cause__ is not None and isinstance(raised.value, OSError)
    assert writer.pending_shards() == [1, 2, 3, 4]  # shard 1 is not recorded


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EFBIG])
def test_an_os_error_while_writing_names_the_path_and_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = write_store(tmp_path / "s.zarr", shards=[])
    writer = StoreWriter.open(
        path, synthetic_header(FullEncoding(), ROWS, CLASSES, chunk_rows=CHUNK), FullEncoding()
    )

    async def failing_set(*_: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(zarr.storage.LocalStore, "set", failing_set)
    values, targets = rows()
    with pytest.raises(StoreWriteError, match=f"cannot write {path / 'logits'}: {os.strerror(code)}"):
        writer.write_shard(0, FullEncoding().encode(values[:CHUNK], 0), targets[:CHUNK])


GENERATE = [
    "generate",
    "--dataset",
    "digits",
    "--split",
    "test",
    "--teacher",
    "mlp",
    "--random-weights",
    "--temperature",
    "4",
    "--dtype",
    "float32",
    "--chunk-rows",
    "512",  # one chunk of 360 x 10 float32 logits, about 13 kB compressed; headers stay under 4 kB
]
FILE_SIZE_LIMIT = 8_000


def generate_past_the_file_size_limit(out: Path) -> subprocess.CompletedProcess[str]:
    """``softlabels generate`` in a process that may not write files larger than :data:`FILE_SIZE_LIMIT`."""

    def limit_file_size() -> None:
        # Ignoring SIGXFSZ turns a write past the limit into an EFBIG error instead of a kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    return subprocess.run(
        [sys.executable, "-c", "from softlabels.cli import main; main()", *GENERATE, "--out", str(out)],
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_past_the_file_size_limit_fails_in_one_line_and_resumes_to_the_same_store(
    tmp_path: Path, softlabels_main: Any
) -> None:
    failed = generate_past_the_file_size_limit(tmp_path / "a.zarr")
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines() == [
        f"error: cannot write {tmp_path / 'a.zarr' / 'logits'}: File too large (shard 0 of "
        f"{tmp_path / 'a.zarr'} is not recorded; make room or fix the path, then run the same command "
        "again to finish the store)"
    ]
    assert not open_store(tmp_path / "a.zarr", allow_incomplete=True).complete
    for out in ("a.zarr", "b.zarr"):  # the same command without the limit; and an uninterrupted run
        finished = softlabels_main(*GENERATE, "--out", str(tmp_path / out))
        assert finished.exit_code == 0, finished.stderr
    resumed, fresh = (zarr.open_group(str(tmp_path / out), mode="r") for out in ("a.zarr", "b.zarr"))
    names = sorted(name for name, _ in resumed.arrays())
    assert names == sorted(name for name, _ in fresh.arrays()) and "logits" in names
    for name in names:
        if name == "shard_runs":  # each store records its own run id in every shard
            continue
        np.testing.assert_array_equal(resumed[name][:], fresh[name][:], err_msg=name)
        assert resumed[name].dtype == fresh[name].dtype


def test_convert_translates_an_os_error_of_a_shard_task(
    tmp_path: Path, digits_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from softlabels.format.encoding_spec import EncodingSpec
    from softlabels.processing import convert as convert_module

    def disk_full(*_: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "top.zarr" / "values"))

    monkeypatch.setattr(convert_module, "convert_shard", disk_full)
    with pytest.raises(
        StoreWriteError, match=f"cannot write {tmp_path / 'top.zarr' / 'values'}: No space left"
    ):
        convert_module.convert_store(
            digits_store,
            tmp_path / "top.zarr",
            encoding=EncodingSpec.create("topk", k=2),
            scheduler="synchronous",
        )


# ---- leftovers of killed writers ---------------------------------------------------------------


def test_resuming_removes_the_partial_files_of_a_killed_writer(tmp_path: Path) -> None:
    path = write_store(tmp_path / "s.zarr", shards=[0])
    leftovers = [path / "logits" / "c" / "1" / PARTIAL, path / "targets" / "c" / PARTIAL]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half a chunk")
    unrelated = path / "notes.partial"
    unrelated.write_text("not zarr's")
    writer = StoreWriter.open(
        path, synthetic_header(FullEncoding(), ROWS, CLASSES, chunk_rows=CHUNK), FullEncoding()
    )
    assert not any(leftover.exists() for leftover in leftovers) and unrelated.exists()
    assert writer.pending_shards() == [1, 2, 3, 4]


def test_convert_resume_removes_partial_files(tmp_path: Path, digits_store: Path) -> None:
    from softlabels.format.encoding_spec import EncodingSpec
    from softlabels.processing.convert import convert_store

    out = tmp_path / "top.zarr"
    options: dict[str, Any] = {"encoding": EncodingSpec.create("topk", k=2), "scheduler": "synchronous"}
    convert_store(digits_store, out, **options)
    leftover = out / "values" / "c" / "0" / PARTIAL
    leftover.write_bytes(b"half a chunk")
    convert_store(digits_store, out, **options)
    assert not leftover.exists() and open_store(out).complete


# ---- archives --------------------------------------------------------------------------------


def test_unpacking_an_archive_under_a_file_is_one_error(tmp_path: Path, softlabels_main: Any) -> None:
    staging = tmp_path / "staging"
    for split in ("train", "test"):
        (staging / split / "a").mkdir(parents=True)
        (staging / split / "a" / "x.txt").write_text("x")
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(staging / split, arcname=split)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        DataError,
        match=f"cannot unpack '{archive}' into '{blocker / 'images'}': '{blocker}' is a file, not a folder",
    ):
        ensure_cifar10(archive, blocker / "images")
    settings = [
        "dataset.spec=imagefolder",
        f"dataset.root={blocker / 'images'}",
        f"dataset.archive={archive}",
    ]
    result = softlabels_main(
        "run", *(part for setting in settings for part in ("--set", setting)), "--out", str(tmp_path / "out")
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("error: stage data: cannot unpack"), result.stderr
    assert f"'{blocker}' is a file, not a folder" in lines[-1]
