"""``softlabels convert`` and ``softlabels inspect`` on the command line (synthetic stores, no teacher)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_stores import write_synthetic_store

from softlabels.cli import commands  # noqa: F401  (attaches the commands)
from softlabels.cli.main import cli
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.store import (
    FullEncoding,
    open_store,
)

ROWS, CLASSES = 130, 6


@pytest.fixture
def full_store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 2.0, (ROWS, CLASSES)).astype(np.float32)
    targets = values.argmax(axis=1)
    return write_synthetic_store(
        tmp_path / "full.zarr", FullEncoding("float32"), values, targets, chunk_rows=32
    )


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "convert" in result.output and "inspect" in result.output
    result = CliRunner().invoke(cli, ["convert", "--help"])
    assert "--to [full|topk|sampled]" in result.output and "--scheduler" in result.output


def test_convert_then_inspect(full_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "topk.zarr"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(full_store),
            str(out),
            "--to",
            "topk",
            "--k",
            "2",
            "--dtype",
            "int8",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"Converted {full_store} to {out}: topk k=2 int8, 130 samples x 6 classes" in result.output
    store = open_store(out)
    assert store.layout.encoding_spec == EncodingSpec.create("topk", k=2, dtype="int8")
    assert store.provenance.derived_from[0]["command"].startswith("softlabels")

    result = CliRunner().invoke(cli, ["inspect", str(out), "--reference", str(full_store)])
    assert result.exit_code == 0, result.output
    for label in ("store", "format", "size", "compression", "teacher", "reference", "fidelity", "note"):
        assert any(line.startswith(label) for line in result.output.splitlines()), label
    assert "top-1 agreement 100.00%" in result.output

    result = CliRunner().invoke(cli, ["inspect", str(out), "--json"])
    report = json.loads(result.output)
    assert report["encoding"] == "topk" and report["reference"] is None
    assert report["teacher"]["accuracy"] == pytest.approx(1.0)  # targets are the argmax of the rows


def test_convert_to_sampled(full_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(full_store),
            str(out),
            "--to",
            "sampled",
            "--samples",
            "9",
            "--seed",
            "4",
            "--scheduler",
            "synchronous",
        ],
    )
    assert result.exit_code == 0, result.output
    counts = open_store(out).read_all().fields["counts"]
    assert (counts.sum(axis=1) == 9).all()
    # The accuracy of a sampled store is that of the draws, not the teacher's.
    inspected = CliRunner().invoke(cli, ["inspect", str(out)]).output
    assert "drawn sample accuracy " in inspected and "teacher" not in inspected.split("note")[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--to", "topk", "--k", "7"],
            "error: --k: k = 7 exceeds the number of classes (6); choose 1 <= k <= 6",
        ),
        (["--to", "sampled", "--samples", "0"], "error: --samples: samples must be >= 1, got 0"),
        (["--to", "sampled"], "error: --samples: format sampled needs samples (draws per row)"),
        (["--to", "full", "--k", "2"], "error: --k: k does not apply to format full"),
        (
            ["--to", "sampled", "--samples", "4", "--dtype", "int8"],
            "error: --dtype: a value dtype (int8) does not",
        ),
    ],
)
def test_convert_refusals_are_one_line_errors(
    full_store: Path,
    tmp_path: Path,
    softlabels_main: Any,
    args: list[str],
    message: str,
) -> None:
    result = softlabels_main("convert", str(full_store), str(tmp_path / "x.zarr"), *args)
    assert result.exit_code == 1 and result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.zarr").exists()


def test_unknown_format_is_a_usage_error(full_store: Path, tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main("convert", str(full_store), str(tmp_path / "x.zarr"), "--to", "dense")
    assert result.exit_code == 2 and "'dense' is not one of 'full', 'topk', 'sampled'" in result.stderr


def test_inspect_refusals(full_store: Path, tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main("inspect", str(tmp_path / "missing.zarr"))
    assert result.exit_code == 1 and result.stderr.startswith("error: no label store at")
    sampled = tmp_path / "s.zarr"
    CliRunner().invoke(cli, ["convert", str(full_store), str(sampled), "--to", "sampled", "--samples", "3"])
    result = softlabels_main("inspect", str(full_store), "--reference", str(sampled))
    assert result.exit_code == 1 and "a reference must be a full store" in result.stderr


def test_the_library_accepts_exactly_the_choices_the_cli_offers() -> None:
    # The CLI and the pipeline schema offer softlabels.defaults' lists; the library must accept the same.
    from softlabels import defaults
    from softlabels.processing import convert
    from softlabels.store import VALUE_DTYPES, encoding_names

    assert sorted(encoding_names()) == sorted(defaults.LABEL_FORMATS)
    assert VALUE_DTYPES == defaults.VALUE_DTYPES
    assert convert.SCHEDULERS == defaults.SCHEDULERS


@pytest.mark.parametrize(
    "args, message",
    [
        (["--to", "topk"], "--k: format topk needs k"),
        (["--to", "topk", "--k", "0"], "--k: k must be >= 1"),
        (["--to", "sampled", "--samples", "2", "--seed", "-1"], "--seed: seed must be >= 0"),
        (["--to", "full", "--k", "2"], "--k: k does not apply to format full"),
    ],
)
def test_bad_options_are_refused_before_torch_is_imported(
    fresh_cli: Any, full_store: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = fresh_cli("convert", str(full_store), str(tmp_path / "out.zarr"), *args)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not result.imported_torch
    assert not (tmp_path / "out.zarr").exists()
