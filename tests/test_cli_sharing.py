"""``softlabels ls``, ``verify``, ``export`` and ``import`` on the command line: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from softlabels.store import open_store

ROWS, CLASSES = 1437, 10  # digits [train]


def flip_a_byte(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_ls_lists_stores_and_their_damage(tmp_path: Path, digits_store: Path, softlabels_main: Any) -> None:
    shutil.copytree(digits_store, tmp_path / "team" / "digits.zarr")
    broken = shutil.copytree(digits_store, tmp_path / "broken.zarr")
    (broken / "zarr.json").write_text("{")
    result = softlabels_main("ls", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:4] == ["team/digits.zarr", "cnn", "digits", "[train]"]
    assert lines[2].startswith("broken.zarr  DAMAGED: is not a readable Zarr v3 group")
    listed = json.loads(softlabels_main("ls", str(tmp_path), "--json").stdout)
    assert [entry["name"] for entry in listed] == ["broken.zarr", "team/digits.zarr"]
    assert (
        listed[1]["rows"] == ROWS and listed[1]["complete"] is True and listed[1]["format"] == "full float32"
    )


def test_verify_passes_a_sound_store_and_checks_its_data(digits_store: Path, softlabels_main: Any) -> None:
    result = softlabels_main("verify", str(digits_store), "--dataset", "digits")
    assert result.exit_code == 0, result.stderr
    assert (
        result.stdout.splitlines()[-1]
        == "ok: checksums, shapes and dtypes, values, completeness, data identity"
    )
    result = softlabels_main("verify", str(digits_store), "--dataset", "digits", "--split", "test")
    assert result.exit_code == 1
    assert (
        "provenance.dataset: made from other data: split: store has 'train', the data has 'test'"
        in result.stdout
    )


def test_verify_names_every_bad_chunk_and_exits_1(
    tmp_path: Path, digits_store: Path, softlabels_main: Any
) -> None:
    store = shutil.copytree(digits_store, tmp_path / "digits.zarr")
    flip_a_byte(store / "logits" / "c" / "3" / "0")
    (store / "targets" / "c" / "5").unlink()
    result = softlabels_main("verify", str(store))
    assert result.exit_code == 1
    assert (
        "  logits/c/3/0: the chunk cannot be read (Stored and computed checksum do not match)"
        in result.stdout
    )
    assert "  targets/c/5: the chunk is missing (rows [320, 384) would read as zeros)" in result.stdout
    assert result.stderr == f"error: {store} failed verification: 2 problems (listed above)\n"
    report = json.loads(softlabels_main("verify", str(store), "--json").stdout)
    assert [problem["where"] for problem in report["problems"]] == ["logits/c/3/0", "targets/c/5"]


def test_export_then_import_on_the_command_line(
    tmp_path: Path, digits_store: Path, softlabels_main: Any
) -> None:
    exported = tmp_path / "digits.npz"
    result = softlabels_main("export", str(digits_store), str(exported))
    assert result.exit_code == 0 and result.stdout.startswith(f"Exported {digits_store} to {exported}")
    assert softlabels_main("export", str(digits_store), str(exported)).stderr.startswith("error: ")
    out = tmp_path / "imported.zarr"
    common = ["--dataset", "digits", "--out", str(out), "--teacher-name", "served", "--temperature", "2"]
    result = softlabels_main(
        "import", str(exported), "--kind", "scaled-logits", "--dtype", "float32", *common
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(
        f"Imported {exported} into {out}: full float32, 1437 samples x 10 classes"
    )
    assert np.array_equal(
        open_store(out).read_all().fields["logits"], open_store(digits_store).read_all().fields["logits"]
    )
    record = open_store(out).provenance.derived_from[-1]
    assert record["operation"] == "import" and record["teacher_name"] == "served"


def test_json_lines_import_into_topk_by_default(tmp_path: Path, softlabels_main: Any) -> None:
    source = tmp_path / "served.jsonl"
    source.write_text("".join(json.dumps({"logprobs": [{"3": -0.2, "1": -1.9}]}) + "\n" for _ in range(ROWS)))
    out = tmp_path / "s.zarr"
    result = softlabels_main(
        "import",
        str(source),
        "--dataset",
        "digits",
        "--out",
        str(out),
        "--teacher-name",
        "vllm",
        "--temperature",
        "1",
    )
    assert result.exit_code == 0, result.stderr
    assert open_store(out).layout.encoding_spec.describe() == "topk k=2 float16"


@pytest.mark.parametrize(
    "write, args, message",
    [
        (None, ["--kind", "logits"], "cannot import"),
        ("npy", [], "error: --kind is required for"),
        ("nan", ["--kind", "logits"], "holds NaN or infinite values in 1437 rows, e.g. rows [0, 1, 2, 3, 4]"),
        ("npy", ["--kind", "logits", "--k", "3"], "error: --k: k does not apply to format full"),
        ("two", [], "record 0, position 1: class id 'x' is not a non-negative integer"),
        ("two", ["--kind", "logits"], "kind logits does not apply"),
        ("npy", ["--kind", "logits", "--temperature", "0"], "temperature must be a positive number, got 0.0"),
    ],
)
def test_bad_imports_are_one_line_before_torch_is_imported(
    tmp_path: Path, fresh_cli: Any, write: str | None, args: list[str], message: str
) -> None:
    paths = {
        None: tmp_path / "labels.csv",
        "npy": tmp_path / "a.npy",
        "nan": tmp_path / "a.npy",
        "two": tmp_path / "a.jsonl",
    }
    path = paths[write]
    if write in ("npy", "nan"):
        np.save(path, np.full((ROWS, CLASSES), np.nan if write == "nan" else 0.0, np.float32))
    elif write == "two":
        path.write_text(json.dumps({"logprobs": [{"1": -0.1}, {"x": -0.1}]}) + "\n")
    else:
        path.write_text("1,2\n")
    settings = ["--dataset", "digits", "--out", str(tmp_path / "s.zarr"), "--teacher-name", "t"]
    temperature = [] if "--temperature" in args else ["--temperature", "2"]
    result = fresh_cli("import", str(path), *settings, *temperature, *args)
    assert result.exit_code == 1 and not result.imported_torch
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_rows_that_do_not_match_the_data_are_one_line(tmp_path: Path, softlabels_main: Any) -> None:
    np.save(tmp_path / "a.npy", np.zeros((10, CLASSES), np.float32))
    result = softlabels_main(
        "import",
        str(tmp_path / "a.npy"),
        "--kind",
        "logits",
        "--dataset",
        "digits",
        "--out",
        str(tmp_path / "s.zarr"),
        "--teacher-name",
        "t",
        "--temperature",
        "2",
    )
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("error: ")
        and "holds 10 rows but digits [train] has 1437 samples" in result.stderr
    )
    assert len(result.stderr.splitlines()) == 1


def test_per_position_logits_import_for_a_text_corpus_with_seq_len(
    tmp_path: Path, softlabels_main: Any
) -> None:
    from softlabels.sources import load_dataset

    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("the cat sat on the mat\nthe dog sat down\n" * 3)
    data = load_dataset(f"text:{tmp_path}", "train", seq_len=4)
    logits = np.random.default_rng(0).normal(size=(len(data), 4, data.num_classes)).astype(np.float32)
    np.save(tmp_path / "rows.npy", logits)
    np.save(tmp_path / "short.npy", logits[:, :3])
    common = [
        "--kind",
        "logits",
        "--dataset",
        f"text:{tmp_path}",
        "--seq-len",
        "4",
        "--temperature",
        "2",
        "--dtype",
        "float32",
    ]
    out = tmp_path / "s.zarr"
    result = softlabels_main(
        "import", str(tmp_path / "rows.npy"), *common, "--out", str(out), "--teacher-name", "t"
    )
    assert result.exit_code == 0, result.stderr
    store = open_store(out)
    assert store.layout.positions == 4
    assert np.array_equal(store.read_all().targets, np.stack([data.dataset[i][1] for i in range(len(data))]))
    assert np.allclose(store.read_all().fields["logits"], logits / 2)
    result = softlabels_main(
        "import",
        str(tmp_path / "short.npy"),
        *common,
        "--out",
        str(tmp_path / "b.zarr"),
        "--teacher-name",
        "t",
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "positions that do not line up" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_store_commands_refuse_in_one_line_before_torch(tmp_path: Path, fresh_cli: Any) -> None:
    cases = {
        ("ls", "https://example.org/labels"): "HTTP(S) servers offer no listing",
        ("ls", str(tmp_path / "absent")): "no folder at",
        ("verify", str(tmp_path / "absent.zarr")): "no label store at",
        ("verify", str(tmp_path), "--split", "test"): "--split and --data-root apply only with --dataset",
        ("export", str(tmp_path / "absent.zarr"), str(tmp_path / "a.npz")): "no label store at",
    }
    for args, message in cases.items():
        result = fresh_cli(*args)
        assert result.exit_code == 1 and not result.imported_torch, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
