"""``train-teacher`` -> ``generate`` -> ``train-student`` on digits via the CLI, and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import softlabels.cli.commands  # noqa: F401  (attaches every command)
from softlabels.cli import cli, main
from softlabels.sources import read_weights
from softlabels.training.config import TrainConfig
from softlabels.training.train import train_student

SLOW_STUDENT = f"{Path(__file__).parent / 'training' / 'plugins_for_student_tests.py'}:slow_mlp"
CONTRACT_OPTIONS = (
    "--labels",
    "--dataset",
    "--seq-len",
    "--split",
    "--val-split",
    "--student",
    "--student-weights",
    "--epochs",
    "--batch-size",
    "--lr",
    "--optimizer",
    "--alpha",
    "--temperature",
    "--no-kd",
    "--num-workers",
    "--device",
    "--seed",
    "--out",
)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def summary(run: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((run / "summary.json").read_text())
    return document


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained by ``train-teacher`` and its labels written by ``generate``, all on digits."""
    root = tmp_path_factory.mktemp("workflow")
    invoke(
        "train-teacher",
        "--dataset",
        "digits",
        "--teacher",
        "cnn",
        "--epochs",
        "4",
        "--device",
        "cpu",
        "--out",
        str(root / "teacher"),
    )
    invoke(
        "generate",
        "--dataset",
        "digits",
        "--teacher",
        "cnn",
        "--teacher-weights",
        str(root / "teacher" / "final.pt"),
        "--temperature",
        "4",
        "--out",
        str(root / "labels.zarr"),
        "--device",
        "cpu",
    )
    return root


def test_teacher_generate_student_on_digits(workflow: Path) -> None:
    teacher = summary(workflow / "teacher")
    assert teacher["kind"] == "teacher" and float(teacher["best_val_accuracy"]) > 0.9
    common = ("--dataset", "digits", "--student", "mlp", "--epochs", "6", "--device", "cpu")
    output = invoke(
        "train-student",
        "--labels",
        str(workflow / "labels.zarr"),
        *common,
        "--out",
        str(workflow / "student"),
    )
    assert output.strip().splitlines()[-1].startswith("Best validation accuracy")
    baseline = invoke("train-student", "--no-kd", *common, "--out", str(workflow / "baseline"))
    assert "Best validation accuracy" in baseline
    for run in ("student", "baseline"):
        assert float(summary(workflow / run)["final_val_accuracy"]) > 0.85
        metrics = json.loads((workflow / run / "metrics.json").read_text())
        assert [row["epoch"] for row in metrics] == list(range(1, 7))
    config = json.loads((workflow / "student" / "config.json").read_text())
    assert config["config"]["temperature"] == config["inputs"]["labels"]["temperature"] == 4.0
    # The student's weights are a checkpoint that generate accepts as a teacher in turn.
    invoke(
        "generate",
        "--dataset",
        "digits",
        "--teacher",
        "mlp",
        "--teacher-weights",
        str(workflow / "student" / "final.pt"),
        "--temperature",
        "2",
        "--out",
        str(workflow / "again.zarr"),
        "--device",
        "cpu",
    )


def metrics_rows(run: Path) -> int:
    try:
        return len(json.loads((run / "metrics.json").read_text()))
    except FileNotFoundError:
        return 0


def test_student_killed_mid_run_resumes_to_the_uninterrupted_weights(workflow: Path, tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "labels": str(workflow / "labels.zarr"),
        "dataset": "digits",
        "student": SLOW_STUDENT,
        "epochs": 5,
        "batch_size": 64,
        "device": "cpu",
        "seed": 3,
    }
    args = ["train-student", *(f"--{name.replace('_', '-')}={value}" for name, value in options.items())]
    command = [
        sys.executable,
        "-c",
        "from softlabels.cli import main; main()",
        *args,
        f"--out={tmp_path / 'run'}",
    ]
    # 23 batches of 20 ms: about half a second per epoch, so the kill lands in the middle of the run.
    slow = {**os.environ, "SOFTLABELS_TEST_DELAY": "0.02"}
    process = subprocess.Popen(command, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while metrics_rows(tmp_path / "run") < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert 1 <= metrics_rows(tmp_path / "run") < 5
    resumed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch" in resumed.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics] == [1, 2, 3, 4, 5]
    train_student(TrainConfig(**options, out=str(tmp_path / "reference"), progress=False))
    expected = read_weights(tmp_path / "reference" / "final.pt")[0]
    got = read_weights(tmp_path / "run" / "final.pt")[0]
    assert expected.keys() == got.keys() and all(torch.equal(got[key], expected[key]) for key in expected)
    assert [row["val_accuracy"] for row in metrics] == [
        row["val_accuracy"] for row in json.loads((tmp_path / "reference" / "metrics.json").read_text())
    ]


def test_ctrl_c_says_how_many_epochs_were_kept(workflow: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-c",
        "from softlabels.cli import main; main()",
        "train-student",
        f"--labels={workflow / 'labels.zarr'}",
        "--dataset=digits",
        f"--student={SLOW_STUDENT}",
        "--epochs=5",
        "--batch-size=64",
        "--device=cpu",
        f"--out={run}",
    ]
    slow = {**os.environ, "SOFTLABELS_TEST_DELAY": "0.02"}
    process = subprocess.Popen(
        command, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while metrics_rows(run) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    kept = metrics_rows(run)
    assert 1 <= kept < 5
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: kept {kept} of 5 epochs in {run}; re-run the same command to resume"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--dataset", "digits", "--student", "mlp"],
            "a label store (--labels) is required unless the student trains on hard labels only (--no-kd)",
        ),
        (
            ["--dataset", "digits", "--student", "mlp", "--no-kd", "--alpha", "0.5"],
            "--alpha: alpha has no effect when training on hard labels only (--no-kd)",
        ),
        (
            ["--dataset", "digits", "--student", "mlp", "--no-kd", "--epochs", "0"],
            "--epochs: epochs must be an integer >= 1, got 0",
        ),
        (["--dataset", "digits", "--student", "nosuchnet", "--no-kd"], "nosuchnet"),
        (
            [
                "--dataset",
                "digits",
                "--student",
                "mlp",
                "--labels",
                "{labels}",
                "--split",
                "test",
                "--val-split",
                "train",
            ],
            "split: store has 'train', data has 'test'",
        ),
        (["--dataset", "digits", "--student", "mlp", "--labels", "{missing}"], "no label store"),
    ],
)
def test_bad_input_is_one_line_error(
    workflow: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    paths = {"labels": str(workflow / "labels.zarr"), "missing": str(tmp_path / "missing.zarr")}
    argv = [arg.format(**paths) for arg in args]
    if "--epochs" not in argv:
        argv += ["--epochs", "1"]
    monkeypatch.setattr(
        sys, "argv", ["softlabels", "train-student", *argv, "--device", "cpu", "--out", str(tmp_path / "run")]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1, error
    assert message in error


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("train-student", ["--epochs", "0", "--no-kd"], "--epochs: epochs must be an integer >= 1, got 0"),
        (
            "train-student",
            ["--epochs", "2", "--lr", "-1", "--no-kd"],
            "--lr: learning rate must be a positive number, got -1.0",
        ),
        (
            "train-student",
            ["--epochs", "2", "--labels", "x.zarr", "--device", "gpu"],
            "--device: device 'gpu' is not one of auto, cpu, cuda (or cuda:N)",
        ),
        (
            "train-student",
            ["--epochs", "2", "--no-kd", "--val-split", "train"],
            "--val-split: the validation split must be a held-out split, not the training split 'train'",
        ),
        (
            "train-teacher",
            ["--epochs", "2", "--batch-size", "0"],
            "--batch-size: batch size must be an integer >= 1, got 0",
        ),
        (
            "train-teacher",
            ["--epochs", "1", "--seq-len", "0"],
            "--seq-len: sequence length must be an integer >= 1, got 0",
        ),
    ],
)
def test_bad_settings_are_refused_before_torch_is_imported(
    fresh_cli: Any, tmp_path: Path, command: str, args: list[str], message: str
) -> None:
    model = "--student" if command == "train-student" else "--teacher"
    result = fresh_cli(command, "--dataset", "digits", model, "mlp", *args, "--out", str(tmp_path / "run"))
    assert (result.exit_code, result.stderr) == (1, f"error: {message}\n")
    assert not result.imported_torch
    assert not (tmp_path / "run").exists()


def test_help_names_the_contract_options_without_importing_torch(fresh_help: Any) -> None:
    help_text, heavy = fresh_help("train-student")
    assert heavy == set()
    assert all(option in help_text for option in CONTRACT_OPTIONS)
    assert "train-teacher" in invoke("--help")
