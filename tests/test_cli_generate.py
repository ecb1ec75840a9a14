"""The command line of ``generate`` and ``info``: one-line errors, exit codes, fast help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from softlabels.cli import cli
from softlabels.cli.commands import store_commands  # noqa: F401  (attaches the commands)

PLUGINS = Path(__file__).parent / "processing" / "generation" / "plugins_for_tests.py"
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nosuch", "--teacher", "mlp", "--random-weights"], "nosuch"),
        (["--dataset", "digits", "--teacher", "nosuchnet", "--random-weights"], "nosuchnet"),
        (["--dataset", "digits", "--teacher", "mlp"], "random-weights"),
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
