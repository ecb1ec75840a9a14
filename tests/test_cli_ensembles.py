"""``softlabels merge`` and ``softlabels compare`` on the command line (synthetic stores, no teacher)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic_stores import synthetic_dataset, synthetic_header, write_rows

from softlabels.format.encodings import FullEncoding, TopKEncoding
from softlabels.store import Encoding, open_store

ROWS, CLASSES = 130, 6


def make_store(
    path: Path, encoding: Encoding, seed: int, *, temperature: float = 4.0, fingerprint: str = "f" * 64
) -> Path:
    rng = np.random.default_rng(seed)
    targets = np.random.default_rng(0).integers(0, CLASSES, ROWS)
    logits = rng.normal(0.0, 3.0, (ROWS, CLASSES))
    logits[np.arange(ROWS), targets] += 3.0
    header = synthetic_header(
        encoding,
        ROWS,
        CLASSES,
        chunk_rows=32,
        temperature=temperature,
        dataset=synthetic_dataset(ROWS, CLASSES, fingerprint),
    )
    write_rows(path, header, encoding, (logits / temperature).astype(np.float32), targets)
    return path


@pytest.fixture
def members(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": make_store(tmp_path / "a.zarr", FullEncoding("float32"), 1, temperature=2.0),
        "b": make_store(tmp_path / "b.zarr", FullEncoding("float16"), 2),
        "k": make_store(tmp_path / "k.zarr", TopKEncoding(3), 3),
        "other": make_store(tmp_path / "o.zarr", FullEncoding("float32"), 4, fingerprint="e" * 64),
    }


def test_help_lists_the_commands(fresh_help: Any) -> None:
    text, heavy = fresh_help("merge")
    assert "--weights" in text and "probs | logits" in text and "--scheduler" in text
    assert not heavy  # --help imports neither torch nor zarr
    text, heavy = fresh_help("compare")
    assert "--json" in text and "--temperatures" in text and not heavy


def test_merge_then_compare(members: dict[str, Path], tmp_path: Path, softlabels_main: Any) -> None:
    out = tmp_path / "ens.zarr"
    result = softlabels_main(
        "merge", str(members["a"]), str(members["b"]), str(members["k"]), "--out", str(out),
        "--weights", "2,1,1", "--temperature", "4", "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Merged 3 stores into {out} (probs mode, T=4, weights 0.5, 0.25, 0.25)")
    merged = open_store(out)
    assert merged.provenance.command.startswith("softlabels merge") and merged.layout.encoding == "full"
    result = softlabels_main("compare", str(members["a"]), str(out), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [entry["location"] for entry in report["stores"]] == [str(members["a"]), str(out)]
    assert report["stores"][1]["teacher"] == "ensemble(cnn, cnn, cnn)"
    assert 0.0 <= report["agreement"][0]["top1_agreement"] <= 1.0
    text = softlabels_main("compare", str(members["a"]), str(members["k"]), "--temperatures", "1,3").stdout
    assert "top-1 agreement" in text and "T=1: " in text and "T=3: " in text
    assert "note: topk store: NLL and ECE are of the reconstructed distribution" in text


@pytest.mark.parametrize(
    "names, args, message",
    [
        (["a", "other"], [], "error: member stores must label the same data; "),
        (["a", "b"], ["--weights", "1,x"], "error: --weights: weights must be comma-separated numbers"),
        (["a", "b"], ["--weights", "1,2,3"], "error: --weights: 2 member stores need 2 weights, got 3"),
        (["a", "b"], ["--weights", "1,0"], "error: --weights: weights must be finite numbers > 0, got 0.0"),
        (["a", "b"], ["--mode", "median"], "error: --mode: mode 'median' is not one of probs, logits"),
        (["a", "b"], [], "error: --temperature: the member stores have different temperatures"),
        (["b", "k"], ["--mode", "logits"], "error: --mode: mode logits averages full members' logits"),
        (["a", "k"], ["--temperature", "2"], "error: --temperature: "),
        (["b"], [], "error: merge needs at least two member stores, got 1"),
    ],
)
def test_merge_refusals_are_one_line_errors(
    members: dict[str, Path],
    tmp_path: Path,
    softlabels_main: Any,
    names: list[str],
    args: list[str],
    message: str,
) -> None:
    out = tmp_path / "ens.zarr"
    result = softlabels_main("merge", *(str(members[name]) for name in names), "--out", str(out), *args)
    assert result.exit_code == 1 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_mismatched_members_are_named(members: dict[str, Path], tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main(
        "merge", str(members["a"]), str(members["other"]), "--out", str(tmp_path / "x.zarr")
    )
    assert f"{members['other']} differs from {members['a']}" in result.stderr
    assert "dataset fingerprint" in result.stderr


def test_resume_refuses_other_weights_until_overwritten(
    members: dict[str, Path], tmp_path: Path, softlabels_main: Any
) -> None:
    out = str(tmp_path / "ens.zarr")
    pair = [str(members["b"]), str(members["k"])]
    assert softlabels_main("merge", *pair, "--out", out).exit_code == 0
    result = softlabels_main("merge", *pair, "--out", out, "--weights", "3,1")
    assert (
        result.exit_code == 1
        and "was made with other settings" in result.stderr
        and "weights" in result.stderr
    )
    assert softlabels_main("merge", *pair, "--out", out, "--weights", "3,1", "--overwrite").exit_code == 0
    assert open_store(out).provenance.derived_from[0]["weights"] == [0.75, 0.25]


def test_compare_refusals(members: dict[str, Path], tmp_path: Path, softlabels_main: Any) -> None:
    result = softlabels_main("compare", str(members["a"]), str(members["other"]))
    assert result.exit_code == 1 and result.stderr.startswith(
        "error: compared stores must label the same data"
    )
    result = softlabels_main("compare", str(members["a"]), "--temperatures", "1,0")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --temperatures: advisory temperatures must be finite numbers > 0")
    result = softlabels_main("compare", str(tmp_path / "missing.zarr"))
    assert result.exit_code == 1 and result.stderr.startswith("error: no label store at")


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("merge", ["--weights", "1,x"], "--weights: weights must be comma-separated"),
        ("merge", ["--mode", "median"], "--mode: mode 'median'"),
        ("compare", ["--temperatures", "a"], "--temperatures: temperatures must be comma-separated"),
    ],
)
def test_bad_options_are_refused_before_torch_is_imported(
    fresh_cli: Any, members: dict[str, Path], tmp_path: Path, command: str, args: list[str], message: str
) -> None:
    stores = [str(members["a"]), str(members["b"])]
    extra = ["--out", str(tmp_path / "x.zarr")] if command == "merge" else []
    result = fresh_cli(command, *stores, *extra, *args)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not result.imported_torch
