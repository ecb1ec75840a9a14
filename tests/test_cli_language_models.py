"""``train-teacher`` -> ``generate`` -> ``train-student`` on a text corpus via the CLI, with ``--seq-len``."""

from __future__ import annotations

import random
from pathlib import Path

from click.testing import CliRunner

import softlabels.cli.commands  # noqa: F401  (attaches every command)
from softlabels.cli import cli

WORDS = "the cat sat on a mat and dog ran in park big red house".split()


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_language_model_workflow_reports_perplexity(tmp_path: Path) -> None:
    generator = random.Random(2)
    for name, count in (("train", 40), ("test", 12)):
        lines = (" ".join(generator.choices(WORDS, k=generator.randint(3, 9))) for _ in range(count))
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    data = ["--dataset", f"text:{tmp_path}", "--seq-len", "8"]
    training = ["--val-split", "test", "--epochs", "1", "--device", "cpu", "--optimizer", "adamw"]
    teacher = invoke(
        "train-teacher", *data, "--teacher", "lm-transformer-small", *training, "--out", str(tmp_path / "t")
    )
    assert "perplexity" in teacher
    store = str(tmp_path / "labels.zarr")
    invoke(
        "generate", *data, "--teacher", "lm-transformer-small", "--teacher-weights", str(tmp_path / "t" / "final.pt"),
        "--temperature", "1", "--format", "topk", "--k", "4", "--out", store, "--device", "cpu",
    )  # fmt: skip
    student = invoke(
        "train-student",
        *data,
        "--labels",
        store,
        "--student",
        "lm-lstm",
        *training,
        "--out",
        str(tmp_path / "s"),
    )
    assert student.startswith("Final validation perplexity ") and "next-token accuracy" in student
