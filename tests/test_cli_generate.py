"""The command line of ``generate`` and ``info``: one-line errors, exit codes, fast help."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from slow_generate import CLI, PLUGINS, slow_generate_args, start_cli, wait_for_shards

from softlabels.cli import cli
from softlabels.cli.commands import store_commands  # noqa: F401  (attaches the commands)
from softlabels.store import open_store

GENERATE_MLP = (
    "generate",
    "--dataset",
    "digits",
    "--teacher",
    "mlp",
    "--random-weights",
    "--temperature",
    "2",
)


def test_help_does_not_import_torch(fresh_help: Any) -> None:
    text, heavy = fresh_help("generate")
    assert heavy == set() and "--teacher-weights" in text


def test_generate_then_info(tmp_path: Path, softlabels_main: Any) -> None:
    out = tmp_path / "s.zarr"
    result = softlabels_main(
        *GENERATE_MLP,
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    assert "1437 samples x 10 classes" in result.stdout and "B/sample" in result.stdout
    result = softlabels_main("info", str(out), "--json")
    description = json.loads(result.stdout)
    assert description["complete"] and description["provenance"]["temperature"] == 2.0
    assert description["provenance"]["command"].startswith(
        "softlabels generate --dataset digits --teacher mlp"
    )
    text = CliRunner().invoke(cli, ["info", str(out)]).output
    assert "complete: 1 of 1 shards" in text and "mlp" in text


def test_generate_views_then_info(tmp_path: Path, softlabels_main: Any) -> None:
    out = tmp_path / "s.zarr"
    result = softlabels_main(
        *GENERATE_MLP, "--out", str(out), "--views", "2", "--augment", "crop=0.5:1,flip", "--view-seed", "3"
    )
    assert result.exit_code == 0, result.stderr
    store = open_store(out)
    assert (store.layout.views, store.layout.view_recipe, store.layout.view_seed) == (2, "crop=0.5:1,flip", 3)
    text = softlabels_main("info", str(out)).stdout
    assert "1437 samples x 2 views x 10 classes" in text
    assert "views       2 per sample, recipe crop=0.5:1,flip, seed 3" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nosuch", "--teacher", "mlp", "--random-weights"], "nosuch"),
        (["--dataset", "digits", "--teacher", "nosuchnet", "--random-weights"], "nosuchnet"),
        (
            ["--dataset", "digits", "--teacher", "mlp"],
            "(--teacher-weights) or accept random weights (--random-weights)",
        ),
        (["--dataset", "digits", "--teacher", f"{PLUGINS}:three_class_teacher"], "10 classes"),
        (["--dataset", "digits", "--teacher", f"{PLUGINS}:nan_teacher"], "NaN"),
        (
            ["--dataset", "digits", "--teacher", "mlp", "--random-weights", "--temperature", "0"],
            "temperature",
        ),
    ],
)
def test_bad_input_is_one_line_error(
    tmp_path: Path, softlabels_main: Any, args: list[str], message: str
) -> None:
    if "--temperature" not in args:
        args = [*args, "--temperature", "2"]
    result = softlabels_main("generate", *args, "--out", str(tmp_path / "s.zarr"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unwritable_destination(tmp_path: Path, softlabels_main: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = softlabels_main(
        *GENERATE_MLP,
        "--out",
        str(blocker / "s.zarr"),
    )
    assert (
        result.exit_code == 1 and "cannot write a store" in result.stderr and "Traceback" not in result.stderr
    )


def test_unreadable_image_names_the_file(tmp_path: Path, softlabels_main: Any) -> None:
    from PIL import Image

    for label in ("a", "b"):
        folder = tmp_path / "images" / "train" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "images" / "train" / "b" / "1.png").write_bytes(b"not an image")
    for workers in ("0", "2"):
        result = softlabels_main(
            "generate",
            "--dataset",
            f"imagefolder:{tmp_path / 'images'}",
            "--teacher",
            "mlp",
            "--random-weights",
            "--temperature",
            "2",
            "--num-workers",
            workers,
            "--out",
            str(tmp_path / f"s{workers}.zarr"),
        )
        assert result.exit_code == 1 and "1.png" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_info_on_missing_store(tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main("info", str(tmp_path / "nothing.zarr"))
    assert result.exit_code == 1 and result.stderr.startswith("error: no label store")


def test_ctrl_c_says_what_was_kept_and_a_rerun_finishes(tmp_path: Path) -> None:
    args = slow_generate_args(tmp_path / "s.zarr")
    # stderr is a pipe, not a terminal: progress comes as plain lines, here every 0.2 s.
    # 0.2 s per batch of 32: about 9 s in all, so the interrupt lands mid-run even on a busy machine.
    process = start_cli(*args, env={"SOFTLABELS_TEST_DELAY": "0.2", "SOFTLABELS_PROGRESS_INTERVAL": "0.2"})
    wait_for_shards(tmp_path / "s.zarr", 2, process, timeout=60)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert re.fullmatch(
        rf"interrupted: kept (\d+) of 23 shards in {re.escape(str(tmp_path / 's.zarr'))}; "
        "re-run the same command to finish",
        lines[-1],
    ), stderr
    kept = int(lines[-1].split()[2])
    assert kept == open_store(tmp_path / "s.zarr", allow_incomplete=True).shards_done().sum() >= 2
    progress = [line for line in lines if line.startswith("generate: ")]
    assert progress and all(
        re.search(r"/1\.4k samples \(.*\), .* samples/s, ETA ", line) for line in progress
    )
    assert "Traceback" not in stderr

    finished = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    assert f"{23 - kept} of 23 shards this run" in finished.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "0"], "--temperature: temperature must be a positive number"),
        (["--temperature", "2", "--batch-size", "0"], "--batch-size: batch size must be >= 1"),
        (["--temperature", "2", "--format", "topk"], "--k: format topk needs k"),
        (["--temperature", "2", "--k", "3"], "--k: k does not apply to format full"),
        (["--temperature", "2", "--device", "tpu"], "--device: device 'tpu' is not one of auto, cpu, cuda"),
        (
            ["--temperature", "2", "--augment", "flip"],
            "an augmentation recipe needs a number of views (--views)",
        ),
        (
            ["--temperature", "2", "--views", "2", "--augment", "blur"],
            "--augment: augmentation step 'blur' is not one of crop=LO:HI, flip",
        ),
    ],
)
def test_bad_options_are_refused_before_torch_is_imported(
    fresh_cli: Any, tmp_path: Path, args: list[str], message: str
) -> None:
    result = fresh_cli(*GENERATE_MLP[:-2], *args, "--out", str(tmp_path / "s.zarr"))
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not result.imported_torch
    assert not (tmp_path / "s.zarr").exists()
